"""The watch cache's pure logic: event translation, the event ring and Gone, watcher
buffers, keys and the codec; and the cache fed batches by hand (no store, no sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from services.apiserver.cacher import (
    ADDED,
    DELETED,
    MODIFIED,
    CacheEvent,
    Cacher,
    CacheWatcher,
    EventRing,
    HistoryHole,
    WatchEvent,
    translate,
)
from services.apiserver.storage_types import (
    Change,
    ListResult,
    StoredObject,
    WatchBatch,
    decode,
    encode,
    key_after,
    kind_prefix,
    object_key,
    prefix_end,
)
from skiff.api import errors
from skiff.api.kinds import lookup
from skiff.api.v1 import core_pb2, meta_pb2

PODS = lookup("pods")
NODES = lookup("nodes")


def pod(name: str, *, namespace: str = "default", rv: int = 0, **labels: str) -> core_pb2.Pod:
    return core_pb2.Pod(metadata=meta_pb2.ObjectMeta(
        name=name, namespace=namespace, labels=labels, resource_version=str(rv) if rv else ""))


def web(obj: core_pb2.Pod) -> bool:
    return obj.metadata.labels.get("app") == "web"


def event(type_: str, new: core_pb2.Pod, prev: core_pb2.Pod | None = None, *,
          revision: int = 10) -> CacheEvent:
    key = object_key(PODS, new.metadata.namespace, new.metadata.name)
    return CacheEvent(type_, key, new, prev, revision)  # type: ignore[arg-type]


# ------------------------------------------------------------------- translate


def test_added_and_deleted_pass_only_when_they_match():
    a, b = pod("a", app="web"), pod("b", app="db")
    assert translate(event(ADDED, a), web) == WatchEvent(ADDED, a)
    assert translate(event(ADDED, b), web) is None
    assert translate(event(DELETED, a, a), web) == WatchEvent(DELETED, a)
    assert translate(event(DELETED, b, b), web) is None


def test_modified_is_seen_through_the_selector_as_kubernetes_does():
    old_web, new_web = pod("a", app="web"), pod("a", app="web", tier="1")
    old_db, new_db = pod("a", app="db"), pod("a", app="db", tier="1")
    # Matched before and after: a modification.
    assert translate(event(MODIFIED, new_web, old_web), web) == WatchEvent(MODIFIED, new_web)
    # Stops matching: the watcher sees it deleted (the new state is what it gets).
    assert translate(event(MODIFIED, new_db, old_web), web) == WatchEvent(DELETED, new_db)
    # Starts matching: added.
    assert translate(event(MODIFIED, new_web, old_db), web) == WatchEvent(ADDED, new_web)
    # Neither: nothing.
    assert translate(event(MODIFIED, new_db, old_db), web) is None


def test_everything_predicate_passes_each_type_unchanged():
    a, a2 = pod("a"), pod("a", x="1")
    for type_, prev in ((ADDED, None), (MODIFIED, a), (DELETED, a)):
        assert translate(event(type_, a2, prev), lambda o: True) == WatchEvent(type_, a2)


def test_watchers_of_one_event_share_its_encodings_by_type():
    # Two watchers see one change differently (a modification to one, an addition to
    # the other): each type is encoded once, in the event, for every watcher.
    old_db, new_web = pod("a", app="db"), pod("a", app="web")
    change = event(MODIFIED, new_web, old_db)
    to_all, to_web = translate(change, lambda o: True), translate(change, web)
    assert to_all is not None and to_web is not None
    assert (to_all.type, to_web.type) == (MODIFIED, ADDED)
    assert to_all.encoded is change.encoded and to_web.encoded is change.encoded
    assert translate(event(ADDED, new_web), web).encoded is not change.encoded  # type: ignore[union-attr]


# ------------------------------------------------------------------------- ring


def ring_event(revision: int, name: str = "p") -> CacheEvent:
    return event(ADDED, pod(name), revision=revision)


def revisions(events: list[CacheEvent]) -> list[int]:
    return [e.revision for e in events]


def test_ring_replays_what_follows_a_revision():
    ring = EventRing(10, floor=5)
    for revision in (6, 7, 9):
        ring.append(ring_event(revision))
    assert revisions(ring.since(5)) == [6, 7, 9]
    assert revisions(ring.since(6)) == [7, 9]
    assert revisions(ring.since(8)) == [9]
    assert ring.since(9) == [] and ring.since(100) == []


def test_ring_below_its_floor_is_gone_with_kubernetes_message():
    ring = EventRing(10, floor=5)
    assert ring.since(5) == []  # the list's own revision: nothing after it yet
    with pytest.raises(errors.Gone, match=r"too old resource version: 4 \(5\)"):
        ring.since(4)


def test_ring_eviction_raises_the_floor():
    ring = EventRing(3, floor=1)
    for revision in range(2, 8):  # 2..7; keeps 5, 6, 7
        ring.append(ring_event(revision))
    assert len(ring) == 3 and ring.oldest_revision == 5 and ring.floor == 4
    assert revisions(ring.since(4)) == [5, 6, 7]
    with pytest.raises(errors.Gone, match=r"too old resource version: 3 \(4\)"):
        ring.since(3)


def test_ring_partly_evicted_revision_is_not_replayable():
    # One transaction at revision 5 changed two keys; only the second is left.
    ring = EventRing(2, floor=4)
    for e in (ring_event(5, "a"), ring_event(5, "b"), ring_event(6, "c")):
        ring.append(e)
    assert ring.floor == 5
    with pytest.raises(errors.Gone):
        ring.since(4)  # would need both events of revision 5
    assert revisions(ring.since(5)) == [6]


def test_ring_stays_bounded_over_many_events():
    ring = EventRing(100, floor=0)
    for revision in range(1, 10_001):
        ring.append(ring_event(revision))
    assert len(ring) == 100 and len(ring._events) <= 200
    assert revisions(ring.since(9_950)) == list(range(9_951, 10_001))


# --------------------------------------------------------------------- watchers


def watcher(*, queue_size: int = 3, after: int = 0, initial: tuple[WatchEvent, ...] = (),
            allow_bookmarks: bool = False) -> CacheWatcher:
    return CacheWatcher(matches=lambda o: True, key_prefix=kind_prefix(PODS), initial=initial,
                        after=after, allow_bookmarks=allow_bookmarks, queue_size=queue_size)


async def drain(w: CacheWatcher) -> list[WatchEvent]:
    return [e async for e in w]


async def test_watcher_gets_initial_events_first_and_they_do_not_count_against_the_bound():
    initial = tuple(WatchEvent(ADDED, pod(f"i{i}")) for i in range(10))
    w = watcher(queue_size=2, initial=initial)
    assert w.offer(ring_event(1, "x")) and w.offer(ring_event(2, "y"))
    w.terminate("test over")
    got = await drain(w)
    assert [e.object.metadata.name for e in got] == [f"i{i}" for i in range(10)] + ["x", "y"]


async def test_watcher_that_falls_behind_is_terminated_but_keeps_what_it_holds():
    w = watcher(queue_size=3)
    taken = [w.offer(ring_event(r, f"p{r}")) for r in range(1, 6)]
    assert taken == [True, True, True, False, False]
    assert w.done and w.terminated is not None and "fell behind" in w.terminated
    assert [e.object.metadata.name for e in await drain(w)] == ["p1", "p2", "p3"]
    # The client resumes from the last version it read: 3.
    assert w.last_revision == 3


async def test_watcher_skips_events_it_already_has_and_other_prefixes():
    w = watcher(after=5)
    assert not w.offer(ring_event(5))
    node_key = object_key(NODES, "", "n1")
    assert not w.offer(CacheEvent(ADDED, node_key, pod("n1"), None, 6))
    assert w.offer(ring_event(6))


async def test_close_ends_iteration_at_once_and_detaches():
    closed: list[CacheWatcher] = []
    w = CacheWatcher(matches=lambda o: True, key_prefix="", initial=(), after=0,
                     on_close=closed.append)
    reader = asyncio.create_task(drain(w))
    await asyncio.sleep(0)  # the reader is now waiting for an event
    w.offer(ring_event(1))
    w.close()
    assert await asyncio.wait_for(reader, 1.0) == []
    assert closed == [w]
    assert not w.offer(ring_event(2))


async def test_bookmarks_only_when_allowed_and_moving_and_never_fatal():
    obj = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(resource_version="9"))
    assert not watcher(after=3).bookmark(9, obj)
    w = watcher(after=3, allow_bookmarks=True, queue_size=1)
    assert not w.bookmark(3, obj)  # nothing new
    assert w.bookmark(9, obj) and w.last_revision == 9
    assert not w.bookmark(12, obj)  # buffer full: skipped, watcher alive
    assert not w.done


# ------------------------------------------------------------------- keys, codec


def test_keys():
    assert object_key(PODS, "default", "a") == "/registry/pods/default/a"
    assert object_key(NODES, "", "n1") == "/registry/nodes/n1"
    assert kind_prefix(PODS) == "/registry/pods/"
    assert kind_prefix(PODS, "default") == "/registry/pods/default/"
    assert kind_prefix(NODES, "ignored") == "/registry/nodes/"
    assert prefix_end("/registry/pods/") == "/registry/pods0"
    assert key_after("/a") == "/a\0"


def test_codec_keeps_resource_version_out_of_the_stored_bytes():
    original = pod("a", rv=41, app="web", tier="x")
    stored = encode(original)
    assert original.metadata.resource_version == "41"  # the caller's object is untouched
    assert stored == encode(pod("a", app="web", tier="x"))
    back = decode(PODS, stored, 42)
    assert back.metadata.resource_version == "42" and back.metadata.labels["app"] == "web"


# ------------------------------------------------------- the cache, fed by hand


class FakeStorage:
    """Lists a fixed set of objects; the watch yields batches a test puts in."""

    def __init__(self, objects: dict[str, bytes], revision: int) -> None:
        self.objects, self.rev = objects, revision
        self.batches: asyncio.Queue[WatchBatch] = asyncio.Queue()

    async def list(self, prefix: str, *, revision: int = 0, start_key: str = "",
                   limit: int = 0) -> ListResult:
        items = tuple(StoredObject(k, v, self.rev, self.rev)
                      for k, v in sorted(self.objects.items()))
        return ListResult(items, self.rev, False)

    def watch(self, prefix: str, start_revision: int) -> _FakeWatch:
        return _FakeWatch(self.batches)


class _FakeWatch:
    def __init__(self, batches: asyncio.Queue[WatchBatch]) -> None:
        self._batches = batches

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchBatch]:
        while True:
            yield await self._batches.get()

    def request_progress(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def put(name: str, revision: int, *, prev: bytes | None = None, **labels: str) -> Change:
    return Change("PUT", object_key(PODS, "default", name), encode(pod(name, **labels)),
                  prev, revision)


async def started_cacher(capacity: int = 100) -> tuple[Cacher, FakeStorage]:
    storage = FakeStorage({object_key(PODS, "default", "a"): encode(pod("a", app="web"))}, 5)
    cacher = Cacher(storage, PODS, capacity=capacity, bookmark_interval=60)  # type: ignore[arg-type]
    await asyncio.wait_for(cacher.start(), 1.0)
    return cacher, storage


async def test_cacher_applies_changes_and_deleted_carries_the_deletion_revision():
    cacher, _ = await started_cacher()
    try:
        assert cacher.revision == 5 and cacher.get("/registry/pods/default/a") is not None
        w = cacher.watch(start_revision=None, predicate=web)
        old = encode(pod("a", app="web"))
        cacher.apply(WatchBatch(6, (put("b", 6, app="web"),)))
        cacher.apply(WatchBatch(7, (put("a", 7, prev=old, app="db"),)))
        cacher.apply(WatchBatch(8, (Change("DELETE", "/registry/pods/default/b", b"",
                                           encode(pod("b", app="web")), 8),)))
        cacher.apply(WatchBatch(12))  # progress only
        assert cacher.revision == 12
        w.terminate("done")
        got = [(e.type, e.object.metadata.name, e.object.metadata.resource_version)
               for e in await drain(w)]
        assert got == [(ADDED, "a", "5"), (ADDED, "b", "6"), (DELETED, "a", "7"),
                       (DELETED, "b", "8")]
        objects, revision = cacher.list()
        assert [o.metadata.name for o in objects] == ["a"] and revision == 12
        # Replay from a revision: what followed it, through the same filter.
        replay = cacher.watch(start_revision=6, predicate=web)
        replay.terminate("done")
        assert [(e.type, e.object.metadata.name) for e in await drain(replay)] == [
            (DELETED, "a"), (DELETED, "b")]
    finally:
        await cacher.stop()


async def test_a_change_below_what_the_store_watch_reported_is_never_skipped_silently():
    # The store reported everything up to 12 (progress), then a change at 11 comes: the
    # cache has moved past it, and so may have its watchers (a bookmark at 12). Skipping
    # it would lose it for every client; the cache re-lists instead.
    cacher, storage = await started_cacher()
    try:
        w = cacher.watch(start_revision=5)
        cacher.apply(WatchBatch(12))
        late = WatchBatch(13, (put("late", 11), put("b", 13)))
        with pytest.raises(HistoryHole, match=r"late at 11 after .* up to 12"):
            cacher.apply(late)
        assert cacher.get("/registry/pods/default/b") is None  # nothing of it applied
        relists = cacher.relists
        storage.rev = 13
        await storage.batches.put(late)  # as the store watch would deliver it
        for _ in range(200):
            if cacher.relists > relists and cacher.ready:
                break
            await asyncio.sleep(0.01)
        assert cacher.relists == relists + 1 and cacher.revision == 13
        assert w.terminated == "the watch cache re-listed"
    finally:
        await cacher.stop()


async def test_cacher_watch_older_than_its_ring_is_gone():
    cacher, _ = await started_cacher(capacity=2)
    try:
        for revision in range(6, 10):
            cacher.apply(WatchBatch(revision, (put(f"p{revision}", revision),)))
        assert cacher.oldest_revision == 7
        with pytest.raises(errors.Gone, match=r"too old resource version: 6 \(7\)"):
            cacher.watch(start_revision=6)
        cacher.watch(start_revision=7).close()
    finally:
        await cacher.stop()


async def test_cacher_wait_fresh_waits_for_the_revision_or_says_too_large():
    cacher, _ = await started_cacher()
    try:
        await cacher.wait_fresh(5, timeout=0.5)
        waiting = asyncio.create_task(cacher.wait_fresh(9, timeout=5))
        await asyncio.sleep(0)
        cacher.apply(WatchBatch(9))
        await asyncio.wait_for(waiting, 1.0)
        with pytest.raises(errors.Unavailable, match="too large resource version"):
            await cacher.wait_fresh(100, timeout=0.01)
    finally:
        await cacher.stop()


async def test_dispatch_to_500_watchers_is_cheap():
    cacher, _ = await started_cacher()
    try:
        watchers = [cacher.watch(start_revision=5, predicate=web) for _ in range(500)]
        started = time.perf_counter()
        for revision in range(6, 26):
            cacher.apply(WatchBatch(revision, (put(f"p{revision}", revision, app="web"),)))
        per_event = (time.perf_counter() - started) / 20
        assert all(w.pending == 20 for w in watchers)
        assert cacher.events_dispatched == 500 * 20 and cacher.watcher_count == 500
        # Far below a millisecond per watcher (it is a few microseconds).
        assert per_event < 500 * 0.0001, per_event
    finally:
        await cacher.stop()
    assert cacher.watcher_count == 0
