"""Watch: list-then-watch from the list's resource version (every later event exactly
once, in order), synthetic ADDED events for a watch from "0" or unset, selectors
(an object that stops matching is DELETED to the watcher, one that starts is ADDED),
namespaces, bookmarks, timeouts, and OUT_OF_RANGE (Kubernetes' 410 Gone) for a version
the watch cache no longer holds.
"""

from __future__ import annotations

import asyncio

from apiclient import (
    ADDED,
    BOOKMARK,
    DELETED,
    MODIFIED,
    OK,
    OUT_OF_RANGE,
    Client,
    Watch,
    namespace,
    node,
    pod,
    rv,
    summary,
    unique,
)
from backends import ON_BOTH_BACKENDS, UNORDERED_PROGRESS, skiff_store_only

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.testing.processes import APIServer

pytestmark = ON_BOTH_BACKENDS


async def _relabel(api: Client, name: str, ns: str, **labels: str) -> core_pb2.Pod:
    current = await api.pods.get(name, ns)
    current.metadata.labels.clear()
    current.metadata.labels.update(labels)
    return await api.pods.update(current)


async def _version(api: Client, ns: str) -> str:
    """The resource version of a consistent list of pods: "now", to watch from."""
    return (await api.pods.list(ns)).metadata.resource_version


async def _next_is(watch: Watch, api: Client, ns: str, **labels: str) -> None:
    """Nothing else is queued on ``watch``: a new sentinel pod is its very next event."""
    sentinel = await api.pods.create(pod(unique("sentinel"), ns, labels=labels))
    assert summary(await watch.take(1)) == [(ADDED, sentinel.metadata.name, rv(sentinel))]


async def test_list_then_watch_sees_every_later_event_once_in_order(api: Client, ns: str):
    await api.pods.create(pod("before", ns))
    listed = await api.pods.list(ns)
    assert [p.metadata.name for p in listed.items] == ["before"]

    expected: list[tuple[str, str, int]] = []
    a = await api.pods.create(pod("a", ns))
    expected.append((ADDED, "a", rv(a)))
    a = await _relabel(api, "a", ns, app="web")
    expected.append((MODIFIED, "a", rv(a)))
    # The watch starts now, from the list's version: what happened since is replayed.
    async with api.pods.watch(ns, resource_version=listed.metadata.resource_version) as watch:
        a.status.phase = "Running"
        a = await api.pods.update_status(a)
        expected.append((MODIFIED, "a", rv(a)))
        gone = await api.pods.delete("before", ns)
        expected.append((DELETED, "before", rv(gone)))
        # Many writers at once: each event once, in resource-version order.
        created = await asyncio.gather(*(api.pods.create(pod(f"c{i:02}", ns))
                                         for i in range(30)))
        expected += sorted((ADDED, c.metadata.name, rv(c)) for c in created)
        gone = await api.pods.delete("a", ns)
        expected.append((DELETED, "a", rv(gone)))

        events = await watch.take(len(expected))
        assert summary(events) == sorted(expected, key=lambda e: e[2])
        assert [rv for _, _, rv in summary(events)] == sorted({e[2] for e in expected})
        # A DELETED event carries the object's last state.
        assert events[-1].object.metadata.labels["app"] == "web"
        assert events[-1].object.status.phase == "Running"
        assert events[-1].object.api_version == "v1" and events[-1].object.kind == "Pod"
        await _next_is(watch, api, ns)


async def test_watch_from_zero_or_unset_starts_with_the_existing_objects(api: Client, ns: str):
    await api.pods.create(pod("a", ns))
    await api.pods.create(pod("b", ns))
    for version in ("0", ""):
        existing = (await api.pods.list(ns)).items  # (round two: and a sentinel)
        async with api.pods.watch(ns, resource_version=version) as watch:
            assert summary(await watch.take(len(existing))) == [
                (ADDED, p.metadata.name, rv(p)) for p in existing]
            a = await _relabel(api, "a", ns, round=version or "unset")
            assert summary(await watch.take(1)) == [(MODIFIED, "a", rv(a))]
            await _next_is(watch, api, ns)


async def test_a_selected_watch_sees_objects_enter_and_leave_the_selection(
        api: Client, ns: str):
    # Each watch starts at a list's version, so it misses nothing however late the
    # server registers it.
    now = await _version(api, ns)
    async with api.pods.watch(ns, resource_version=now, label_selector="app=web") as watch:
        a = await api.pods.create(pod("a", ns, labels={"app": "web"}))
        await api.pods.create(pod("other", ns, labels={"app": "db"}))
        leaves = await _relabel(api, "a", ns, app="db")
        returns = await _relabel(api, "a", ns, app="web", v="2")
        stays = await _relabel(api, "a", ns, app="web", v="3")
        await _relabel(api, "other", ns, app="cache")  # never matches: nothing
        gone = await api.pods.delete("a", ns)
        events = await watch.take(5)
        assert summary(events) == [(ADDED, "a", rv(a)), (DELETED, "a", rv(leaves)),
                                   (ADDED, "a", rv(returns)), (MODIFIED, "a", rv(stays)),
                                   (DELETED, "a", rv(gone))]
        assert events[1].object.metadata.labels["app"] == "db"  # the state that left
        await _next_is(watch, api, ns, app="web")

    # Field selectors too: a pod enters spec.nodeName=n1 when it is bound there.
    n1 = unique("n1")
    await api.nodes.create(node(n1))
    now = await _version(api, ns)
    async with api.pods.watch(ns, resource_version=now,
                              field_selector=f"spec.nodeName={n1}") as on_node, \
            api.pods.watch(ns, resource_version=now,
                           field_selector="status.phase=Running") as running:
        await api.pods.create(pod("p", ns))
        bound = int((await api.bind("p", n1, ns)).metadata.resource_version)
        assert summary(await on_node.take(1)) == [(ADDED, "p", bound)]
        p = await api.pods.get("p", ns)
        p.status.phase = "Running"
        p = await api.pods.update_status(p)
        assert summary(await on_node.take(1)) == [(MODIFIED, "p", rv(p))]
        assert summary(await running.take(1)) == [(ADDED, "p", rv(p))]
        p.status.phase = "Succeeded"
        p = await api.pods.update_status(p)
        assert summary(await running.take(1)) == [(DELETED, "p", rv(p))]
        sentinel = await api.pods.create(pod("q", ns, node=n1))
        assert summary(await on_node.take(2)) == [(MODIFIED, "p", rv(p)),
                                                  (ADDED, "q", rv(sentinel))]


async def test_a_watch_of_one_namespace_or_of_all(api: Client, ns: str):
    other = (await api.namespaces.create(namespace(unique("other")))).metadata.name
    marker = {"run": ns}
    now = await _version(api, "")
    async with api.pods.watch(ns, resource_version=now) as mine, \
            api.pods.watch("", resource_version=now, label_selector=f"run={ns}") as everywhere:
        theirs = await api.pods.create(pod("x", other, labels=marker))
        ours = await api.pods.create(pod("x", ns, labels=marker))
        assert [(e.object.metadata.namespace, e.type) for e in await everywhere.take(2)] == [
            (other, ADDED), (ns, ADDED)]
        assert summary(await mine.take(1)) == [(ADDED, "x", rv(ours))]
        assert rv(theirs) < rv(ours)
        await _next_is(mine, api, ns)


@skiff_store_only(UNORDERED_PROGRESS)
async def test_bookmarks_carry_only_a_resource_version(api: Client, ns: str):
    now = await _version(api, ns)
    async with api.pods.watch(ns, resource_version=now, allow_bookmarks=True) as bookmarked, \
            api.pods.watch(ns, resource_version=now) as plain:
        # No pod changes; another kind's write moves the store's revision on.
        elsewhere = await api.nodes.create(node(unique("n")))
        events = await bookmarked.until(lambda e: e.type == BOOKMARK
                                        and rv(e.object) >= rv(elsewhere))
        assert {e.type for e in events} == {BOOKMARK}
        for event in events:
            assert event.object == core_pb2.Pod(metadata=meta_pb2.ObjectMeta(
                resource_version=event.object.metadata.resource_version))
        versions = [rv(e.object) for e in events]
        assert versions == sorted(set(versions))
        # A bookmark's version is a place to resume from: nothing is missed after it.
        async with api.pods.watch(ns, resource_version=str(versions[-1])) as resumed:
            created = await api.pods.create(pod("after", ns))
            assert summary(await resumed.take(1)) == [(ADDED, "after", rv(created))]
        assert summary(await bookmarked.take(1)) == [(ADDED, "after", rv(created))]
        # Without allow_bookmarks there are none: the pod is its first event.
        assert summary(await plain.take(1, skip_bookmarks=False)) == [
            (ADDED, "after", rv(created))]


async def test_bookmarks_follow_the_kinds_events_outside_the_selection(api: Client, ns: str):
    # On every backend: a pod written in another namespace moves the pods' watch cache,
    # and a watcher of this namespace hears of it only as a bookmark it can resume from.
    other = (await api.namespaces.create(namespace(unique("other")))).metadata.name
    now = await _version(api, ns)
    async with api.pods.watch(ns, resource_version=now, allow_bookmarks=True) as bookmarked:
        theirs = await api.pods.create(pod("x", other))
        events = await bookmarked.until(lambda e: e.type == BOOKMARK
                                        and rv(e.object) >= rv(theirs))
        assert {e.type for e in events} == {BOOKMARK}
        assert events[-1].object == core_pb2.Pod(metadata=meta_pb2.ObjectMeta(
            resource_version=events[-1].object.metadata.resource_version))
        async with api.pods.watch(ns, resource_version=str(rv(events[-1].object))) as resumed:
            created = await api.pods.create(pod("after", ns))
            assert summary(await resumed.take(1)) == [(ADDED, "after", rv(created))]
        assert summary(await bookmarked.take(1)) == [(ADDED, "after", rv(created))]


async def test_a_watch_ends_after_its_timeout(api: Client, ns: str):
    async with api.pods.watch(ns, timeout_seconds=1) as watch:
        assert await watch.status(timeout=10) == (OK, "")


async def test_watching_a_version_the_cache_no_longer_holds_is_out_of_range(
        ns: str, api_cluster, tmp_path):
    small = APIServer(tmp_path / "small", api_cluster.store.endpoints,
                      name="apiserver-small-cache", extra_args=["--watch-cache-size", "5"])
    small.start()
    try:
        await small.wait_healthy()
        async with Client(small.address) as client:
            first = await client.pods.create(pod("p00", ns))
            for i in range(1, 10):
                last = await client.pods.create(pod(f"p{i:02}", ns))
            listed = await client.pods.list(ns)  # the cache has seen everything
            assert int(listed.metadata.resource_version) >= rv(last)
            async with client.pods.watch(ns, resource_version=str(rv(first))) as old:
                code, details = await old.status()
            assert code == OUT_OF_RANGE and "too old resource version" in details
            # The client re-lists and watches from the list's version: that works.
            async with client.pods.watch(
                    ns, resource_version=listed.metadata.resource_version) as fresh:
                created = await client.pods.create(pod("new", ns))
                assert summary(await fresh.take(1)) == [(ADDED, "new", rv(created))]
    finally:
        small.stop()
