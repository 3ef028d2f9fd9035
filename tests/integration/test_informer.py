"""Informers against real processes: three store replicas and one or two apiservers.

What is checked is what a controller relies on:

- the cache equals a fresh consistent List after churn from concurrent writers, while
  the apiserver the informer watches is SIGKILLed and restarted and a store replica
  (the leader) is SIGKILLed and restarted;
- the handlers saw every change exactly once, in order per object: replaying their
  history (:class:`History`) from nothing gives the store's final state, and per object
  the resource versions only go up (an update's old state is the state the handlers
  had; a delete comes only for an object they had);
- a watch whose version fell out of the apiserver's watch cache (``--watch-cache-size
  5``) re-lists and delivers exactly the difference.

All but the churn (which kills Skiff's store leader) run on Skiff's store and on a real
etcd (tests/integration/backends.py).

Every wait polls a condition with a deadline (:func:`skiff.health.wait_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from backends import ON_BOTH_BACKENDS

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.informer import Informer, SharedInformerFactory
from skiff.client.store import index_by_label, key_of
from skiff.health import wait_for
from skiff.testing.fixtures import failed
from skiff.testing.processes import APIServer, ProcessCluster

#: How long a test waits for something that should happen soon (the host is shared).
DEADLINE = 60.0


def new_pod(name: str, **labels: str) -> core_pb2.Pod:
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=name, namespace="default", labels=labels),
        spec=core_pb2.PodSpec(containers=[core_pb2.Container(name="c", image="busybox")]))


def relabelled(obj: core_pb2.Pod, **labels: str) -> core_pb2.Pod:
    """``obj`` (as the server returned it) with labels changed, for an unconditional update."""
    changed = core_pb2.Pod()
    changed.CopyFrom(obj)
    changed.metadata.resource_version = ""
    changed.metadata.labels.update(labels)
    return changed


async def store_state(client: Client) -> dict[str, str]:
    """key -> resource version of every pod, from a consistent List."""
    page = await client.pods.list()
    return {key_of(obj): obj.metadata.resource_version for obj in page.items}


def cache_state(informer: Informer) -> dict[str, str]:
    return {key: obj.metadata.resource_version for key, obj in informer.store.items().items()}


@dataclass
class History:
    """Everything the handlers were given, and the checks a correct history passes."""

    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def register(self, informer: Informer) -> Any:
        def on_add(obj: Any) -> None:
            self.events.append(("add", key_of(obj), "", obj.metadata.resource_version))

        def on_update(old: Any, new: Any) -> None:
            self.events.append(("update", key_of(new), old.metadata.resource_version,
                                new.metadata.resource_version))

        def on_delete(obj: Any) -> None:
            self.events.append(("delete", key_of(obj), obj.metadata.resource_version, ""))

        return informer.add_handler(on_add, on_update, on_delete, name="history")

    def versions(self) -> set[tuple[str, str]]:
        """(key, resource version) of every state the handlers were given."""
        return {(key, new or old) for _, key, old, new in self.events}

    def replay(self, events: list[tuple[str, str, str, str]] | None = None) -> dict[str, str]:
        """key -> resource version the handlers were left with; asserts the order rules."""
        model: dict[str, str] = {}
        highest: dict[str, int] = {}  # per key, over its lifetimes
        for type_, key, old, new in self.events if events is None else events:
            if type_ == "add":
                assert key not in model, f"added twice without a delete: {key}"
                assert int(new) > highest.get(key, 0), f"add of {key} went back in time"
                model[key] = new
            elif type_ == "update":
                assert model.get(key) == old, f"update of {key} from {old}, had {model.get(key)}"
                assert int(new) > int(old), f"update of {key} went back: {old} -> {new}"
                model[key] = new
            else:
                assert key in model, f"delete of {key}, which the handlers did not have"
                # After a re-list a delete carries the last state known: the same version.
                assert int(old) >= int(model.pop(key)), f"delete of {key} went back"
            highest[key] = max(highest.get(key, 0), int(new or old))
        return model


@pytest.fixture
async def store_apiserver(store: ProcessCluster, tmp_path: Path, request
                          ) -> AsyncIterator[APIServer]:
    """An apiserver on the test's ``store`` (either backend), healthy; stopped after."""
    server = APIServer(tmp_path / "apiserver", store.endpoints)
    server.start()
    try:
        await server.wait_healthy()
        yield server
    finally:
        server.stop()
        if failed(request):
            print(server.logs())


@contextlib.asynccontextmanager
async def extra_apiserver(store_cluster: ProcessCluster, base: Path, name: str,
                          extra_args: list[str] | None = None) -> AsyncIterator[APIServer]:
    server = APIServer(base / name, store_cluster.endpoints, name=name, extra_args=extra_args)
    server.start()
    try:
        await server.wait_healthy()
        yield server
    except BaseException:
        print(server.logs())
        raise
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    await informer.start()
    try:
        assert await informer.wait_synced(DEADLINE), "informer did not sync"
        yield informer
    finally:
        await informer.stop()


# ------------------------------------------------------------------------- churn


class Churn:
    """Writers that create, relabel and delete pods of their own until told to stop.

    Outcomes are not tracked: during a failover a write may fail, or succeed without
    its answer arriving. The test compares the informer with the store, not with this.
    """

    def __init__(self, client: Client, writers: int, names_each: int = 8) -> None:
        self.client = client
        self.writes = 0
        #: (key, resource version) of every write whose answer arrived.
        self.acked: list[tuple[str, str]] = []
        self.failures = 0
        self.last_error: Exception | None = None
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write(i, names_each), name=f"writer {i}")
                       for i in range(writers)]

    async def _write(self, writer: int, names_each: int) -> None:
        rng = random.Random(writer)
        pods = self.client.pods
        known: dict[str, core_pb2.Pod] = {}
        generation = 0
        while not self._stop.is_set():
            name = f"w{writer}-{rng.randrange(names_each)}"
            generation += 1
            try:
                if name not in known:
                    done = known[name] = await pods.create(
                        new_pod(name, app=f"a{generation % 3}"))
                elif rng.random() < 0.6:
                    done = known[name] = await pods.update(
                        relabelled(known[name], app=f"a{generation % 3}"))
                else:
                    known.pop(name)
                    done = await pods.delete(name)
                self.writes += 1
                self.acked.append((key_of(done), done.metadata.resource_version))
            except errors.AlreadyExists:
                # A create retried after its first attempt succeeded unanswered.
                found = await _get_or_none(pods, name)
                if found is None:
                    known.pop(name, None)
                else:
                    known[name] = found
                self.failures += 1
            except errors.APIError as e:  # NotFound after a delete retried likewise, ...
                known.pop(name, None)
                self.failures += 1
                self.last_error = e

    async def progress(self, writes: int, timeout: float = DEADLINE) -> None:
        """Wait until ``writes`` more writes have succeeded."""
        target = self.writes + writes

        async def done() -> bool:
            return self.writes >= target

        try:
            await wait_for(done, timeout=timeout, what=f"{writes} more writes")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; the last failed write: {self.last_error!r}") from None

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _get_or_none(pods: Any, name: str) -> Any:
    with contextlib.suppress(errors.NotFound, errors.Unavailable):
        return await pods.get(name)
    return None


async def converged(informer: Informer, client: Client, history: History) -> bool:
    """Whether the cache and the handlers' model both equal a fresh consistent List."""
    state = await store_state(client)
    return cache_state(informer) == state and history.replay() == state


async def test_cache_equals_the_store_after_churn_through_apiserver_and_store_kills(
        store_cluster, apiserver, tmp_path):
    async with extra_apiserver(store_cluster, tmp_path, "apiserver-2") as second, \
            Client([apiserver.address, second.address], retry_deadline=DEADLINE) as watching, \
            Client([second.address, apiserver.address], retry_deadline=DEADLINE) as writing:
        informer = Informer(watching, "pods", indexers={"app": index_by_label("app")})
        history = History()
        history.register(informer)
        async with running(informer):
            churn = Churn(writing, writers=3)
            try:
                await churn.progress(40)
                apiserver.kill()  # the one the informer watches
                await churn.progress(40)
                apiserver.restart()
                await apiserver.wait_healthy(DEADLINE)
                await churn.progress(40)
                leader = await store_cluster.leader()
                store_cluster.kill(leader)
                await churn.progress(40)
                store_cluster.restart(leader)
                await store_cluster.wait_healthy(DEADLINE, members=[leader])
                await churn.progress(40)
            finally:
                await churn.stop()
            await wait_for(lambda: converged(informer, writing, history), timeout=DEADLINE,
                           what="the informer's cache and handlers equal the store")
            assert informer.watches >= 2, "the watch was never resumed"
            assert churn.writes >= 200 and informer.events > 0
            # Nothing fell out of a watch cache, so nothing was coalesced by a re-list:
            # every acknowledged write reached the handlers (and none twice: replay).
            assert informer.relists == 0
            missing = set(churn.acked) - history.versions()
            assert not missing, f"writes the handlers never saw: {sorted(missing)[:10]}"
            # The indexes moved with the objects.
            for value in ("a0", "a1", "a2"):
                assert sorted(informer.store.index_keys("app", value)) == sorted(
                    key for key, obj in informer.store.items().items()
                    if obj.metadata.labels["app"] == value)


# ---------------------------------------------------------------- relist on Gone


async def gap_writes(pods: Any, before: dict[str, core_pb2.Pod]) -> None:
    """Nine changes while the informer does not watch (more than a cache of five)."""
    await pods.delete("p0")
    await pods.delete("p1")
    await pods.update(relabelled(before["p2"], app="changed"))
    once = await pods.update(relabelled(before["p3"], app="changed"))
    await pods.update(relabelled(once, app="twice"))
    await pods.create(new_pod("n0"))
    await pods.create(new_pod("n1"))
    await pods.create(new_pod("brief"))
    await pods.delete("brief")


def expected_diff(before: dict[str, core_pb2.Pod], after: dict[str, str]
                  ) -> list[tuple[str, str, str, str]]:
    """What the handlers must get for :func:`gap_writes`: deletes first, with the last
    state the cache knew."""
    def rv(name: str) -> str:
        return before[name].metadata.resource_version

    # Then the rest in the list's (key) order; nothing for p4 and p5, nor for "brief".
    return [("delete", "default/p0", rv("p0"), ""), ("delete", "default/p1", rv("p1"), ""),
            ("add", "default/n0", "", after["default/n0"]),
            ("add", "default/n1", "", after["default/n1"]),
            ("update", "default/p2", rv("p2"), after["default/p2"]),
            ("update", "default/p3", rv("p3"), after["default/p3"])]


@ON_BOTH_BACKENDS
@pytest.mark.parametrize("gap", ["apiserver-killed", "informer-stopped"])
async def test_a_watch_too_far_behind_relists_and_delivers_the_difference(
        store, store_apiserver, tmp_path, gap):
    async with extra_apiserver(store, tmp_path, "small-cache",
                               ["--watch-cache-size", "5"]) as small, \
            Client([small.address], retry_deadline=DEADLINE) as watching, \
            Client([store_apiserver.address], retry_deadline=DEADLINE) as writing:
        before = {f"p{i}": await writing.pods.create(new_pod(f"p{i}")) for i in range(6)}
        informer = Informer(watching, "pods")
        history = History()
        history.register(informer)
        async with running(informer):
            await wait_for(lambda: converged(informer, writing, history), timeout=DEADLINE,
                           what="the first sync delivered")
            synced_at = len(history.events)
            if gap == "apiserver-killed":
                small.kill()
                await gap_writes(writing.pods, before)
                small.restart()  # its cache starts after the gap: our version is too old
                await small.wait_healthy(DEADLINE)
            else:
                await informer.stop()
                await gap_writes(writing.pods, before)
                await informer.start()  # resumes from its version: out of the 5 kept
            await wait_for(lambda: converged(informer, writing, history), timeout=DEADLINE,
                           what="the informer recovered")
            after = await store_state(writing)
            assert informer.relists == 1
            assert history.events[synced_at:] == expected_diff(before, after)


# ------------------------------------------------------------------------ shared


@ON_BOTH_BACKENDS
async def test_shared_informers_with_selectors_indexes_and_late_handlers(store_apiserver):
    async with Client(store_apiserver.address, retry_deadline=DEADLINE) as client:
        factory = SharedInformerFactory(client)
        web = factory.informer("pods", label_selector="app=web",
                               indexers={"tier": index_by_label("tier")})
        assert factory.informer("po", label_selector="app=web") is web
        history = History()
        history.register(web)
        a = await client.pods.create(new_pod("a", app="web", tier="front"))
        await client.pods.create(new_pod("b", app="db"))
        await factory.start_all()
        try:
            assert await factory.wait_for_cache_sync(DEADLINE)
            assert web.store.keys() == ["default/a"]
            # Leaving the selector is a delete to this informer; coming back, an add.
            a = await client.pods.update(relabelled(a, app="db"))
            a = await client.pods.update(relabelled(a, app="web", tier="back"))

            async def back() -> bool:
                # Handlers run after the store is updated (as in client-go): wait for both.
                return (web.store.index_keys("tier", "back") == ["default/a"]
                        and len(history.events) >= 3)

            await wait_for(back, timeout=DEADLINE, what="the pod back in the selector")
            assert [e[0] for e in history.events] == ["add", "delete", "add"]
            late = History()
            registration = late.register(web)
            assert await registration.wait_synced(DEADLINE)
            assert late.events == [("add", "default/a", "", a.metadata.resource_version)]
        finally:
            await factory.stop_all()
