"""The informer's store and indexes, the relist diff, and the informer against a fake API.

No sockets and no sleeps: the fake API (:class:`FakePods`) keeps objects and a history
of changes in memory and serves lists and watches from them; time is a
:class:`FakeClock` the tests move; ``settle`` only lets the event loop run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.kinds import lookup
from skiff.api.v1 import core_pb2, meta_pb2, services_pb2
from skiff.client import informer as informer_module
from skiff.client.informer import Informer, SharedInformerFactory
from skiff.client.store import (
    ADDED,
    DELETED,
    NAMESPACE_INDEX,
    UPDATED,
    Delta,
    Store,
    index_by_label,
    key_of,
    relist_diff,
    split_key,
)

PODS = lookup("pods")
_uids = itertools.count(1)


def pod(name: str, rv: int, *, namespace: str = "default", node: str = "",
        uid: str | None = None, **labels: str) -> core_pb2.Pod:
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace, resource_version=str(rv),
                                     uid=uid or f"uid-{name}", labels=labels),
        spec=core_pb2.PodSpec(node_name=node))


def by_node(obj: Any) -> list[str]:
    return [obj.spec.node_name] if obj.spec.node_name else []


def names(objects: list[Any]) -> list[str]:
    return sorted(o.metadata.name for o in objects)


# ========================================================================= keys


def test_key_of_and_split_key_round_trip():
    assert key_of(pod("a", 1, namespace="ns")) == "ns/a"
    assert key_of(core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"))) == "n1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("n1") == ("", "n1")
    for bad in ("/a", "ns/", "a/b/c"):
        with pytest.raises(ValueError):
            split_key(bad)


# ======================================================================== store


def test_store_put_get_delete_and_namespace_index():
    store = Store()
    assert store.put(pod("a", 1)) is None
    assert store.put(pod("b", 2, namespace="kube-system")) is None
    previous = store.put(pod("a", 3))
    assert previous is not None and previous.metadata.resource_version == "1"
    assert store.get("default/a").metadata.resource_version == "3"
    assert store.get_by("kube-system", "b") is not None and store.get_by("default", "b") is None
    assert sorted(store.keys()) == ["default/a", "kube-system/b"] and len(store) == 2
    assert "default/a" in store and names(store.list()) == ["a", "b"]
    assert names(store.by_index(NAMESPACE_INDEX, "default")) == ["a"]
    assert sorted(store.index_values(NAMESPACE_INDEX)) == ["default", "kube-system"]

    assert store.delete("kube-system/b").metadata.name == "b"
    assert store.delete("kube-system/b") is None
    # A value that files nothing any more is gone from the index, not an empty set.
    assert store.index_values(NAMESPACE_INDEX) == ["default"]
    assert store.by_index(NAMESPACE_INDEX, "kube-system") == []


def test_custom_indexes_follow_updates_and_replace():
    store = Store({"by_node": by_node, "app": index_by_label("app")})
    store.put(pod("a", 1, node="n1", app="web"))
    store.put(pod("b", 2, node="n1"))
    store.put(pod("c", 3))
    assert names(store.by_index("by_node", "n1")) == ["a", "b"]
    assert store.index_keys("app", "web") == ["default/a"]

    store.put(pod("b", 4, node="n2", app="web"))  # moves between values
    assert names(store.by_index("by_node", "n1")) == ["a"]
    assert names(store.by_index("by_node", "n2")) == ["b"]
    assert names(store.by_index("app", "web")) == ["a", "b"]
    store.put(pod("a", 5, node="n1"))  # loses the label
    assert names(store.by_index("app", "web")) == ["b"]

    store.replace({"default/d": pod("d", 6, node="n3")})
    assert store.keys() == ["default/d"]
    assert store.index_values("by_node") == ["n3"] and store.index_values("app") == []
    assert names(store.by_index(NAMESPACE_INDEX, "default")) == ["d"]


def test_indexes_added_later_file_existing_objects_and_conflicts_are_refused():
    store = Store()
    store.put(pod("a", 1, node="n1"))
    store.add_indexers({"by_node": by_node})
    assert names(store.by_index("by_node", "n1")) == ["a"]
    store.add_indexers({"by_node": by_node})  # the same function again: fine
    with pytest.raises(ValueError, match="already defined"):
        store.add_indexers({"by_node": lambda obj: []})
    with pytest.raises(KeyError, match="no index named"):
        store.by_index("by_zone", "z")


def test_items_view_is_read_only_and_live():
    store = Store()
    view = store.items()
    store.put(pod("a", 1))
    assert list(view) == ["default/a"] and len(view) == 1
    with pytest.raises(TypeError):
        view["default/b"] = pod("b", 2)  # type: ignore[index]


# ================================================================== relist diff


def summary(deltas: list[Delta]) -> list[tuple[str, str, str | None, str | None]]:
    def rv(obj: Any) -> str | None:
        return None if obj is None else obj.metadata.resource_version

    return [(d.type, d.key, rv(d.old), rv(d.new)) for d in deltas]


def listed(*objects: core_pb2.Pod) -> list[tuple[str, Any]]:
    return [(key_of(o), o) for o in objects]


def test_relist_diff_adds_updates_and_deletes_with_the_last_known_object():
    cached = {key_of(o): o for o in (pod("same", 1), pod("changed", 2), pod("gone", 3))}
    deltas = relist_diff(cached, listed(pod("same", 1), pod("changed", 7), pod("new", 8)))
    assert summary(deltas) == [
        (DELETED, "default/gone", "3", None),  # deletions first, last known state
        (UPDATED, "default/changed", "2", "7"),
        (ADDED, "default/new", None, "8"),
    ]


def test_relist_diff_of_an_empty_cache_is_all_adds_and_of_the_same_state_nothing():
    objects = [pod(f"p{i}", i) for i in range(5)]
    assert [d.type for d in relist_diff({}, listed(*objects))] == [ADDED] * 5
    assert relist_diff({key_of(o): o for o in objects}, listed(*objects)) == []
    assert [d.type for d in relist_diff({key_of(o): o for o in objects}, [])] == [DELETED] * 5


def test_relist_diff_of_a_recreated_object_is_delete_then_add():
    cached = {"default/a": pod("a", 1, uid="first")}
    deltas = relist_diff(cached, listed(pod("a", 9, uid="second")))
    assert summary(deltas) == [(DELETED, "default/a", "1", None),
                               (ADDED, "default/a", None, "9")]
    assert deltas[0].old.metadata.uid == "first" and deltas[1].new.metadata.uid == "second"


# ==================================================================== fake API


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    @property
    def sleeping(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [f for t, f in self._sleepers if t <= self.now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now]
        for future in due:
            if not future.done():
                future.set_result(None)


class FakePods:
    """An in-memory pods API: objects, a change history, paged lists and watches.

    A watch from version N replays the history after N, then follows live changes;
    N below ``floor`` is Gone. ``watch_failures`` are raised by the next watch calls;
    :meth:`break_watches` makes the open streams fail with Unavailable.
    """

    kind = PODS

    def __init__(self) -> None:
        self.revision = 1
        self.floor = 0
        self.objects: dict[str, core_pb2.Pod] = {}
        self.history: list[tuple[int, str, core_pb2.Pod]] = []
        self.watch_failures: deque[Exception] = deque()
        self.lists: list[str] = []  # the continue token of each list call
        self.watch_versions: list[str] = []
        self._streams: list[asyncio.Queue[Any]] = []
        self._snapshots: dict[int, tuple[int, list[core_pb2.Pod]]] = {}

    # ---- client side (what the informer calls)

    def resource(self, kind: Any) -> FakePods:
        return self

    async def list(self, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> services_pb2.PodList:
        self.lists.append(continue_token)
        if continue_token:
            snapshot_id, offset = map(int, continue_token.split(":"))
        else:
            snapshot_id, offset = len(self._snapshots), 0
            self._snapshots[snapshot_id] = (self.revision, [self.objects[k]
                                                           for k in sorted(self.objects)])
        revision, objects = self._snapshots[snapshot_id]
        end = offset + limit if limit else len(objects)
        result = services_pb2.PodList(items=objects[offset:end])
        result.metadata.resource_version = str(revision)
        if end < len(objects):
            result.metadata.continue_token = f"{snapshot_id}:{end}"
        return result

    async def watch(self, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "",
                    allow_bookmarks: bool = False, timeout_seconds: int = 0
                    ) -> AsyncIterator[services_pb2.PodWatchEvent]:
        self.watch_versions.append(resource_version)
        if self.watch_failures:
            raise self.watch_failures.popleft()
        start = int(resource_version)
        if start < self.floor:
            raise errors.Gone(f"too old resource version: {start} ({self.floor})")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for revision, type_, obj in self.history:  # replay and register with no await
            if revision > start:
                queue.put_nowait((type_, obj))
        self._streams.append(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if item is None:
                    return
                yield services_pb2.PodWatchEvent(type=item[0], object=item[1])
        finally:
            self._streams.remove(queue)

    # ---- test side (writes and faults)

    def _record(self, type_: str, obj: core_pb2.Pod) -> core_pb2.Pod:
        self.history.append((self.revision, type_, obj))
        for queue in self._streams:
            queue.put_nowait((type_, obj))
        return obj

    def put(self, name: str, **fields: Any) -> core_pb2.Pod:
        self.revision += 1
        key = f"default/{name}"
        type_ = "MODIFIED" if key in self.objects else "ADDED"
        uid = self.objects[key].metadata.uid if key in self.objects else f"uid-{next(_uids)}"
        obj = pod(name, self.revision, uid=uid, **fields)
        self.objects[key] = obj
        return self._record(type_, obj)

    def delete(self, name: str) -> core_pb2.Pod:
        self.revision += 1
        last = core_pb2.Pod()
        last.CopyFrom(self.objects.pop(f"default/{name}"))
        last.metadata.resource_version = str(self.revision)
        return self._record("DELETED", last)

    def bookmark(self) -> None:
        self.revision += 1  # another kind's write moved the store on
        obj = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(resource_version=str(self.revision)))
        for queue in self._streams:
            queue.put_nowait(("BOOKMARK", obj))

    def send_raw(self, type_: str, obj: core_pb2.Pod) -> None:
        """Put an event on the open streams without changing the objects."""
        for queue in self._streams:
            queue.put_nowait((type_, obj))

    def break_watches(self) -> None:
        for queue in self._streams:
            queue.put_nowait(errors.Unavailable("connection reset"))

    def end_watches(self) -> None:
        for queue in self._streams:
            queue.put_nowait(None)

    def compact(self) -> None:
        """Forget the history: a watch from any older version is now Gone."""
        self.floor = self.revision
        self.history.clear()

    @property
    def streams(self) -> int:
        return len(self._streams)


class Recorder:
    """Handlers that record (event, name, resource versions) as plain functions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def on_add(self, obj: Any) -> None:
        self.events.append(("add", obj.metadata.name, obj.metadata.resource_version))

    def on_update(self, old: Any, new: Any) -> None:
        self.events.append(("update", new.metadata.name,
                            f"{old.metadata.resource_version}->{new.metadata.resource_version}"))

    def on_delete(self, obj: Any) -> None:
        self.events.append(("delete", obj.metadata.name, obj.metadata.resource_version))

    def register(self, informer: Informer) -> Any:
        return informer.add_handler(self.on_add, self.on_update, self.on_delete)


async def settle(condition: Callable[[], Any], *, rounds: int = 2000) -> None:
    """Let the event loop run until ``condition()`` holds (no time passes)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def idle(rounds: int = 100) -> None:
    """Let the event loop run a while (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def api() -> FakePods:
    return FakePods()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def started(api: FakePods, clock: FakeClock):
    """``await started(**options)``: a started informer on ``api``; stopped after."""
    informers: list[Informer] = []

    async def start(**options: Any) -> tuple[Informer, Recorder]:
        informer = Informer(api, "pods", clock=clock, **options)
        recorder = Recorder()
        recorder.register(informer)
        informers.append(informer)
        await informer.start()
        await settle(lambda: informer.has_synced and api.streams)
        return informer, recorder

    yield start
    for informer in informers:
        await informer.stop()


# ===================================================================== informer


async def test_lists_in_pages_at_one_version_then_follows_the_watch(api, started):
    for i in range(5):
        api.put(f"p{i}", node="n1" if i % 2 else "n2")
    informer, recorder = await started(page_size=2, indexers={"by_node": by_node})
    assert api.lists == ["", "0:2", "0:4"]
    assert informer.last_sync_resource_version == "6" and api.watch_versions == ["6"]
    assert names(informer.store.by_index("by_node", "n1")) == ["p1", "p3"]
    await settle(lambda: len(recorder.events) == 5)
    assert recorder.events == [("add", f"p{i}", str(i + 2)) for i in range(5)]

    api.put("p1", node="n2")
    api.delete("p0")
    api.put("p9")
    await settle(lambda: len(recorder.events) == 8)
    assert recorder.events[5:] == [("update", "p1", "3->7"), ("delete", "p0", "8"),
                                   ("add", "p9", "9")]
    assert names(informer.store.by_index("by_node", "n2")) == ["p1", "p2", "p4"]
    assert informer.last_sync_resource_version == "9"


async def test_bookmarks_move_the_version_without_touching_cache_or_handlers(api, started):
    api.put("a")
    informer, recorder = await started()
    await settle(lambda: len(recorder.events) == 1)
    api.bookmark()
    await settle(lambda: informer.bookmarks == 1)
    assert informer.last_sync_resource_version == "3"
    assert recorder.events == [("add", "a", "2")] and informer.store.keys() == ["default/a"]


async def test_a_broken_watch_resumes_from_the_last_version_without_relisting(api, clock,
                                                                              started):
    api.put("a")
    informer, recorder = await started()
    api.put("a", app="x")
    await settle(lambda: len(recorder.events) == 2)
    api.break_watches()
    api.watch_failures.append(errors.Unavailable("apiserver down"))
    await settle(lambda: clock.sleeping)  # backing off
    api.put("b")  # written while nobody watches
    api.delete("a")
    clock.advance(informer_module.BACKOFF_CAP)
    await settle(lambda: clock.sleeping)  # the next watch failed too: backing off again
    clock.advance(informer_module.BACKOFF_CAP)
    await settle(lambda: len(recorder.events) == 4)
    assert api.watch_versions == ["2", "3", "3"] and api.lists == [""]
    assert recorder.events == [("add", "a", "2"), ("update", "a", "2->3"), ("add", "b", "4"),
                               ("delete", "a", "5")]
    assert informer.relists == 0 and informer.store.keys() == ["default/b"]


async def test_a_watch_that_ends_is_resumed_at_once(api, started):
    _, recorder = await started()
    api.put("a")
    await settle(lambda: len(recorder.events) == 1)
    api.end_watches()  # the server's timeout, or it dropped us for falling behind
    await settle(lambda: len(api.watch_versions) == 2 and api.streams)
    api.put("b")
    await settle(lambda: len(recorder.events) == 2)
    assert api.watch_versions == ["1", "2"] and recorder.events[-1] == ("add", "b", "3")


async def test_gone_relists_and_delivers_only_the_difference(api, clock, started):
    for name in ("keep", "change", "drop", "recreate"):
        api.put(name)
    informer, recorder = await started()
    await settle(lambda: len(recorder.events) == 4)
    old_uid = informer.store.get("default/recreate").metadata.uid
    api.break_watches()
    await settle(lambda: clock.sleeping)
    api.put("change", app="x")  # 6
    api.put("change", app="y")  # 7: handlers see one update, to the final state
    api.delete("drop")  # 8
    api.delete("recreate")  # 9
    api.put("recreate")  # 10, a new uid
    api.put("new")  # 11
    api.put("brief")  # 12 and 13: never seen, never reported
    api.delete("brief")
    api.compact()
    clock.advance(informer_module.BACKOFF_CAP)
    await settle(lambda: informer.relists == 1 and api.streams)
    await settle(lambda: len(recorder.events) == 9)
    assert recorder.events[4:] == [
        ("delete", "drop", "4"),  # first, and with the last state the cache knew
        ("update", "change", "3->7"),
        ("add", "new", "11"),
        ("delete", "recreate", "5"),
        ("add", "recreate", "10"),
    ]
    assert informer.store.get("default/recreate").metadata.uid != old_uid
    assert sorted(informer.store.keys()) == sorted(api.objects)
    assert api.watch_versions == ["5", "5", "13"]


async def test_on_list_comes_before_each_lists_notifications(api, clock, started):
    api.put("a")
    api.put("b")
    informer, _ = await started()
    seen = Recorder()
    registration = informer.add_handler(
        seen.on_add, seen.on_update, seen.on_delete,
        on_list=lambda version: seen.events.append(("list", "", version)))
    await settle(lambda: len(seen.events) == 3 and not registration.pending)
    # Registered late: the version its adds are at, then the adds.
    assert seen.events == [("list", "", "3"), ("add", "a", "2"), ("add", "b", "3")]
    api.break_watches()
    await settle(lambda: clock.sleeping)
    api.put("a", app="x")  # 4
    api.delete("b")  # 5
    api.compact()
    clock.advance(informer_module.BACKOFF_CAP)
    await settle(lambda: informer.relists == 1 and len(seen.events) == 6)
    # The re-list's version, then its difference; then the watch again.
    assert seen.events[3:] == [("list", "", "5"), ("delete", "b", "3"), ("update", "a", "2->4")]
    api.put("c")
    await settle(lambda: len(seen.events) == 7)
    assert seen.events[-1] == ("add", "c", "6")


async def test_events_already_seen_are_not_delivered_twice(api, started):
    api.put("a")
    informer, recorder = await started()
    newer = api.put("a", app="x")
    await settle(lambda: len(recorder.events) == 2)
    api.send_raw("MODIFIED", newer)  # a duplicate
    api.send_raw("ADDED", pod("a", 2))  # an older state
    api.send_raw("DELETED", pod("other", 4))  # an object we never had (stopped matching)
    api.put("b")
    await settle(lambda: len(recorder.events) == 3)
    assert recorder.events == [("add", "a", "2"), ("update", "a", "2->3"), ("add", "b", "4")]
    assert informer.store.get("default/a").metadata.resource_version == "3"


async def test_handler_failures_are_logged_and_do_not_stop_anything(api, started):
    informer, recorder = await started()
    seen: list[str] = []

    def broken(obj: Any) -> None:
        seen.append(obj.metadata.name)
        raise RuntimeError("handler bug")

    async def broken_async(obj: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async handler bug")

    first = informer.add_handler(on_add=broken)
    second = informer.add_handler(on_add=broken_async)
    api.put("a")
    api.put("b")
    await settle(lambda: len(recorder.events) == 2 and first.failures == 2
                 and second.failures == 2)
    assert seen == ["a", "b"] and informer.running


async def test_async_handlers_get_events_in_order(api, started):
    informer, _ = await started()
    got: list[str] = []

    async def on_add(obj: Any) -> None:
        await asyncio.sleep(0)
        got.append(obj.metadata.name)

    informer.add_handler(on_add=on_add)
    for i in range(20):
        api.put(f"p{i:02}")
    await settle(lambda: len(got) == 20)
    assert got == sorted(got)


async def test_a_late_handler_gets_the_cached_objects_first(api, started):
    api.put("a")
    api.put("b")
    informer, _ = await started()
    late = Recorder()
    registration = late.register(informer)
    api.put("c")
    await settle(lambda: registration.has_synced and len(late.events) == 3)
    assert sorted(late.events[:2]) == [("add", "a", "2"), ("add", "b", "3")]
    assert late.events[2] == ("add", "c", "4")
    assert await registration.wait_synced(1.0)


async def test_registration_synced_after_delivering_the_first_list(api, clock):
    for i in range(3):
        api.put(f"p{i}")
    informer = Informer(api, "pods", clock=clock)
    gate = asyncio.Event()

    async def slow(obj: Any) -> None:
        await gate.wait()

    registration = informer.add_handler(on_add=slow)
    await informer.start()
    try:
        await settle(lambda: informer.has_synced)
        assert await informer.wait_synced(1.0) and not registration.has_synced
        gate.set()
        await settle(lambda: registration.has_synced)
    finally:
        await informer.stop()


async def test_resync_updates_every_object_with_itself(api, clock, started):
    api.put("a")
    api.put("b")
    informer, recorder = await started(resync_period=30)
    await settle(lambda: len(recorder.events) == 2)
    clock.advance(29)
    await idle()  # nothing is due yet
    assert len(recorder.events) == 2
    clock.advance(1)
    await settle(lambda: len(recorder.events) == 4)
    assert sorted(recorder.events[2:]) == [("update", "a", "2->2"), ("update", "b", "3->3")]
    assert informer.store.keys() == ["default/a", "default/b"]


async def test_stopped_and_started_again_it_resumes_from_where_it_stopped(api, started):
    api.put("a")
    informer, recorder = await started()
    await informer.stop()
    api.put("b")
    await informer.start()
    await settle(lambda: len(recorder.events) == 2)
    assert api.lists == [""] and api.watch_versions == ["2", "2"]
    assert recorder.events[-1] == ("add", "b", "3")


async def test_a_handler_cancelled_by_stop_gets_its_notification_again(api, started):
    informer, _ = await started()
    calls: list[str] = []
    done: list[str] = []
    gate = asyncio.Event()

    async def on_add(obj: Any) -> None:
        calls.append(obj.metadata.name)
        await gate.wait()
        done.append(obj.metadata.name)

    informer.add_handler(on_add=on_add)
    api.put("a")
    await settle(lambda: calls == ["a"])
    await informer.stop()  # cancels the handler half-way through "a"
    gate.set()
    await informer.start()
    api.put("b")
    await settle(lambda: done == ["a", "b"])
    assert calls == ["a", "a", "b"]


async def test_removed_handlers_get_nothing_more(api, started):
    informer, recorder = await started()
    other = Recorder()
    registration = other.register(informer)
    api.put("a")
    await settle(lambda: len(other.events) == 1)
    await informer.remove_handler(registration)
    api.put("b")
    await settle(lambda: len(recorder.events) == 2)
    assert other.events == [("add", "a", "2")]


# ====================================================================== factory


async def test_factory_shares_one_informer_per_kind_namespace_and_selectors(api, clock):
    factory = SharedInformerFactory(api, clock=clock)
    pods = factory.informer("pods")
    assert factory.informer("po") is pods
    assert factory.informer("Pod", indexers={"by_node": by_node}) is pods
    assert "by_node" in pods.store.indexers
    assert factory.informer("pods", namespace="ns") is not pods
    assert factory.informer("pods", label_selector="app=web") is not pods
    nodes = factory.informer("nodes", namespace="ignored")  # cluster-scoped
    assert nodes.namespace == "" and factory.informer("nodes") is nodes
    with pytest.raises(ValueError):
        factory.informer("pods", indexers={"by_node": lambda obj: []})
    assert len(factory.informers) == 4


async def test_factory_starts_waits_for_and_stops_all(api, clock):
    api.put("a")
    factory = SharedInformerFactory(api, clock=clock)
    first = factory.informer("pods")
    second = factory.informer("pods", label_selector="app=web")
    await factory.start_all()
    try:
        assert await factory.wait_for_cache_sync(5.0)
        assert first.has_synced and second.has_synced and first.running
    finally:
        await factory.stop_all()
    assert not first.running and not second.running


async def test_factory_wait_for_cache_sync_times_out(clock):
    never = FakePods()

    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    never.list = hang  # type: ignore[method-assign]
    factory = SharedInformerFactory(never, clock=clock)
    factory.informer("pods")
    await factory.start_all()
    try:
        assert not await factory.wait_for_cache_sync(0.01)
    finally:
        await factory.stop_all()
