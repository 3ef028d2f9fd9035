"""The apiserver's storage layer and watch cache against three real store members:
Skiff's store replicas, and (the same tests) a real etcd 3.4 cluster.

Objects are real API messages; writes go through :class:`Storage` (which fails over
between replicas), and what watchers see is checked against the revisions those writes
returned. Every wait has a deadline; nothing sleeps in place of a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from backends import ON_BOTH_BACKENDS, UNORDERED_PROGRESS, skiff_store_only

from services.apiserver.cacher import ADDED, BOOKMARK, DELETED, MODIFIED, Cacher, WatchEvent
from services.apiserver.storage import Storage
from services.apiserver.storage_types import (
    KeyConflict,
    KeyExists,
    KeyNotFound,
    decode,
    encode,
    key_after,
    kind_prefix,
    object_key,
)
from skiff.api import errors
from skiff.api.kinds import lookup
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc
from skiff.testing.processes import LOOPBACK, Daemon, ProcessCluster, free_port

pytestmark = ON_BOTH_BACKENDS

PODS = lookup("pods")
NODES = lookup("nodes")
PREFIX = kind_prefix(PODS)
#: How long a test waits for something the cluster should do at once.
DEADLINE = 15.0


def pod(name: str, *, namespace: str = "default", **labels: str) -> core_pb2.Pod:
    return core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace,
                                                     labels=labels))


def key(name: str, namespace: str = "default") -> str:
    return object_key(PODS, namespace, name)


async def create(storage: Storage, name: str, **labels: str) -> int:
    return await storage.create(key(name), encode(pod(name, **labels)))


def web(obj: core_pb2.Pod) -> bool:
    return obj.metadata.labels.get("app") == "web"


async def take(watcher: AsyncIterator[WatchEvent], count: int, *,
               timeout: float = DEADLINE) -> list[WatchEvent]:
    """Exactly the next ``count`` events, each within ``timeout``."""
    return [await asyncio.wait_for(anext(watcher), timeout) for _ in range(count)]


def summary(events: list[WatchEvent]) -> list[tuple[str, str, int]]:
    return [(e.type, e.object.metadata.name, int(e.object.metadata.resource_version))
            for e in events]


async def compact(endpoint: str, revision: int) -> None:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        await rpc_pb2_grpc.KVStub(channel).Compact(
            rpc_pb2.CompactionRequest(revision=revision), timeout=DEADLINE)


@pytest.fixture
async def storage(store: ProcessCluster) -> AsyncIterator[Storage]:
    storage = Storage(store.endpoints, timeout=20.0, progress_interval=0.2)
    try:
        yield storage
    finally:
        await storage.close()


@contextlib.asynccontextmanager
async def running(cacher: Cacher) -> AsyncIterator[Cacher]:
    await asyncio.wait_for(cacher.start(), DEADLINE)
    try:
        yield cacher
    finally:
        await cacher.stop()


# ----------------------------------------------------------------------- storage


async def test_create_get_update_delete_with_their_errors(storage):
    assert await storage.get(key("a")) is None
    created = await create(storage, "a", app="web")
    got = await storage.get(key("a"))
    assert got is not None and (got.mod_revision, got.create_revision) == (created, created)
    obj = decode(PODS, got.value, got.mod_revision)
    assert obj.metadata.resource_version == str(created) and web(obj)

    with pytest.raises(KeyExists) as exists:
        await create(storage, "a")
    assert isinstance(exists.value, errors.AlreadyExists) and exists.value.key == key("a")

    # Extra keys go in the same transaction, and an ``absent`` key that exists names
    # itself and creates nothing.
    ip = "/registry/ranges/serviceips/127.10.0.1"
    both = await storage.create(key("b"), encode(pod("b")), puts=[(ip, b"b")])
    assert (await storage.get(ip)).mod_revision == both  # type: ignore[union-attr]
    with pytest.raises(KeyExists) as taken:
        await storage.create(key("c"), encode(pod("c")), absent=[ip])
    assert taken.value.key == ip and await storage.get(key("c")) is None

    updated = await storage.update(key("a"), encode(pod("a", app="db")), mod_revision=created)
    assert updated > created
    with pytest.raises(KeyConflict) as conflict:
        await storage.update(key("a"), encode(pod("a")), mod_revision=created)
    assert isinstance(conflict.value, errors.Conflict)
    assert conflict.value.current.mod_revision == updated
    with pytest.raises(KeyNotFound):
        await storage.update(key("nope"), encode(pod("nope")), mod_revision=created)
    with pytest.raises(KeyExists):
        await storage.update(key("a"), encode(pod("a")), mod_revision=updated, absent=[ip])

    with pytest.raises(errors.Conflict):
        await storage.delete(key("a"), mod_revision=created)
    deleted = await storage.delete(key("a"), mod_revision=updated, deletes=[ip])
    assert deleted > updated and await storage.get(key("a")) is None
    assert await storage.get(ip) is None
    with pytest.raises(errors.NotFound):
        await storage.delete(key("a"), mod_revision=updated)
    assert await storage.revision() >= deleted


async def test_list_pages_at_one_revision(storage):
    for i in range(5):
        await create(storage, f"p{i}")
    await storage.create(object_key(NODES, "", "n1"), encode(core_pb2.Node()))
    first = await storage.list(PREFIX, limit=2)
    await create(storage, "p5")  # after the list's revision: not in its pages
    pages = [first]
    while pages[-1].more:
        pages.append(await storage.list(PREFIX, revision=first.revision, limit=2,
                                        start_key=key_after(pages[-1].items[-1].key)))
    assert [[item.key for item in page.items] for page in pages] == [
        [key("p0"), key("p1")], [key("p2"), key("p3")], [key("p4")]]
    assert {page.revision for page in pages} == {first.revision}
    latest = await storage.list(PREFIX)
    assert [item.key for item in latest.items][-1] == key("p5") and not latest.more
    assert latest.revision > first.revision
    assert len((await storage.list(kind_prefix(PODS, "other"))).items) == 0


async def test_list_of_a_compacted_revision_is_gone_and_of_a_future_one_unavailable(
        storage, store):
    old = await create(storage, "a")
    now = await create(storage, "b")
    await compact(store.endpoints[0], now)
    with pytest.raises(errors.Gone):
        await storage.list(PREFIX, revision=old)
    with pytest.raises(errors.Unavailable, match="too large resource version"):
        await storage.list(PREFIX, revision=now + 1000)
    with pytest.raises(errors.Gone):
        await anext(storage.watch(PREFIX, old))


async def test_calls_fail_over_to_a_live_replica_and_give_up_when_none_is(store):
    storage = Storage(store.endpoints, timeout=DEADLINE)
    try:
        revision = await create(storage, "a")
        dead = store.endpoints.index(storage.endpoint)
        store.kill(dead)
        got = await storage.get(key("a"))  # answered by another replica
        assert got is not None and got.mod_revision == revision
        assert storage.endpoint != store.endpoints[dead]
        storage.timeout = 2.0
        for i in range(len(store.members)):
            store.kill(i)
        with pytest.raises(errors.Unavailable, match="store unavailable"):
            await storage.get(key("a"))
    finally:
        await storage.close()


LostAnswer = Callable[[rpc_pb2_grpc.KVStub, rpc_pb2.TxnRequest], Awaitable[None]]


@contextlib.asynccontextmanager
async def losing_delete_answers(endpoint: str, on_delete: LostAnswer) -> AsyncIterator[str]:
    """A front for the KV Txn of the replica at ``endpoint`` (the address it yields).

    Txns are passed on, except that one that deletes is handed to ``on_delete`` (which
    may or may not apply it) and then answered UNAVAILABLE, as when a replica dies
    between committing a write and answering it.
    """
    channel = grpc.aio.insecure_channel(endpoint)
    kv = rpc_pb2_grpc.KVStub(channel)

    async def txn(request: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext
                  ) -> rpc_pb2.TxnResponse:
        if any(op.HasField("request_delete_range") for op in request.success):
            await on_delete(kv, request)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the answer was lost")
        return await kv.Txn(request, timeout=DEADLINE)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "etcdserverpb.KV", {"Txn": grpc.unary_unary_rpc_method_handler(
            txn, request_deserializer=rpc_pb2.TxnRequest.FromString,
            response_serializer=rpc_pb2.TxnResponse.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await channel.close()


async def test_a_retried_delete_reports_the_revision_its_lost_attempt_deleted_at(store):
    # The revision a delete returns is the deleted object's last resource version as
    # watchers see it; a client resuming a watch from a later one would skip changes.
    deleted_at: list[int] = []

    async def apply_then_move_on(kv: rpc_pb2_grpc.KVStub, request: rpc_pb2.TxnRequest) -> None:
        deleted_at.append((await kv.Txn(request, timeout=DEADLINE)).header.revision)
        await kv.Put(rpc_pb2.PutRequest(key=key("other").encode(), value=b"x"),
                     timeout=DEADLINE)

    async with losing_delete_answers(store.endpoints[0], apply_then_move_on) as front:
        storage = Storage([front, *store.endpoints[1:]], timeout=DEADLINE)
        try:
            created = await create(storage, "a")
            watch = storage.watch(PREFIX, created + 1)
            revision = await storage.delete(key("a"), mod_revision=created)
            assert deleted_at and revision == deleted_at[0]
            assert revision < await storage.revision()  # the store had moved on
            batch = await asyncio.wait_for(anext(watch), DEADLINE)
            while not batch.changes:  # progress notifications
                batch = await asyncio.wait_for(anext(watch), DEADLINE)
            first = batch.changes[0]
            assert (first.type, first.key, first.mod_revision) == ("DELETE", key("a"), revision)
            await watch.aclose()
        finally:
            await storage.close()


async def test_a_retried_delete_of_what_someone_else_changed_then_deleted_is_not_found(
        store):
    async def changed_and_deleted_by_someone_else(kv: rpc_pb2_grpc.KVStub,
                                                  request: rpc_pb2.TxnRequest) -> None:
        # The attempt itself never reaches the store.
        name = key("a").encode()
        await kv.Put(rpc_pb2.PutRequest(key=name, value=encode(pod("a", app="db"))),
                     timeout=DEADLINE)
        await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=name), timeout=DEADLINE)

    async with losing_delete_answers(store.endpoints[0],
                                     changed_and_deleted_by_someone_else) as front:
        storage = Storage([front, *store.endpoints[1:]], timeout=DEADLINE)
        try:
            created = await create(storage, "a")
            with pytest.raises(KeyNotFound):
                await storage.delete(key("a"), mod_revision=created)
        finally:
            await storage.close()


# ------------------------------------------------------------------------ cacher


async def test_cacher_sees_creates_updates_and_deletes_in_order(storage):
    before = await create(storage, "old", app="web")
    async with running(Cacher(storage, PODS)) as cacher:
        watcher = cacher.watch(start_revision=None, predicate=None)
        a = await create(storage, "a")
        a2 = await storage.update(key("a"), encode(pod("a", app="web")), mod_revision=a)
        gone = await storage.delete(key("old"), mod_revision=before)
        events = await take(watcher, 4)
        assert summary(events) == [(ADDED, "old", before), (ADDED, "a", a), (MODIFIED, "a", a2),
                                   (DELETED, "old", gone)]
        assert web(events[3].object)  # the deleted object's last state
        objects, revision = cacher.list(web)
        assert [o.metadata.name for o in objects] == ["a"] and revision >= gone
        assert cacher.get(key("a")).metadata.resource_version == str(a2)  # type: ignore[union-attr]
        watcher.close()
        assert cacher.watcher_count == 0


async def test_watch_from_a_revision_replays_through_the_selector(storage):
    async with running(Cacher(storage, PODS)) as cacher:
        start = await create(storage, "a", app="web")
        stops = await storage.update(key("a"), encode(pod("a", app="db")), mod_revision=start)
        b = await create(storage, "b", app="web")
        await create(storage, "c")  # never matches
        await cacher.wait_fresh(b, timeout=DEADLINE)
        replay = cacher.watch(start_revision=start, predicate=web)
        assert summary(await take(replay, 2)) == [(DELETED, "a", stops), (ADDED, "b", b)]
        # Then live: a sentinel that matches shows nothing else was queued.
        sentinel = await create(storage, "z", app="web")
        assert summary(await take(replay, 1)) == [(ADDED, "z", sentinel)]
        replay.close()


async def test_a_store_watch_reports_progress_only_past_events_it_has_sent(storage):
    # A watch from an old revision catches up on a backlog first. Progress asked for at
    # once must not claim a revision whose events are still to come: etcd 3.4 answers
    # it ahead of them (etcd-io/etcd#15220), and a cache that believed it would drop
    # those events as already seen.
    names = [f"p{i:03}" for i in range(300)]
    first = await create(storage, names[0])
    for start in range(1, len(names), 20):
        await asyncio.gather(*(create(storage, name) for name in names[start:start + 20]))
    watch = storage.watch(PREFIX, first)
    watch.request_progress()
    reported, seen = first - 1, []
    try:
        while len(seen) < len(names):
            batch = await asyncio.wait_for(anext(watch), DEADLINE)
            for change in batch.changes:
                assert change.mod_revision > reported, (
                    f"progress to {reported} came before the event of {change.mod_revision}")
                seen.append(change.key)
            assert batch.revision >= reported
            reported = batch.revision
    finally:
        await watch.aclose()
    assert sorted(seen) == [key(name) for name in names]


async def test_a_cache_made_fresh_holds_every_write_up_to_there(storage):
    # Consistent reads wait for the cache to be fresh at the store's revision; each
    # write must then be in it, and none may be skipped afterwards as already seen.
    async with running(Cacher(storage, PODS)) as cacher:

        async def write_then_read(name: str) -> str | None:
            revision = await create(storage, name)
            await cacher.wait_fresh(revision, timeout=DEADLINE)
            return None if cacher.get(key(name)) is not None else name

        names = [f"p{i:03}" for i in range(400)]
        stale = [missing for start in range(0, len(names), 20)
                 for missing in await asyncio.gather(*(
                     write_then_read(name) for name in names[start:start + 20]))
                 if missing is not None]
        assert stale == []
        sentinel = await create(storage, "sentinel")
        await cacher.wait_fresh(sentinel, timeout=DEADLINE)
        assert len(cacher.list()[0]) == len(names) + 1


async def test_gone_when_the_revision_is_older_than_the_ring_or_compacted(
        storage, store):
    async with running(Cacher(storage, PODS, capacity=3)) as cacher:
        revisions = [await create(storage, f"p{i}") for i in range(6)]
        await cacher.wait_fresh(revisions[-1], timeout=DEADLINE)
        await compact(store.endpoints[1], revisions[-1])
        with pytest.raises(errors.Gone, match=f"too old resource version: {revisions[0]}"):
            cacher.watch(start_revision=revisions[0])
        # What the ring still holds is served, although the store has compacted it.
        assert cacher.oldest_revision == revisions[2]
        replay = cacher.watch(start_revision=cacher.oldest_revision)
        assert [e.object.metadata.name for e in await take(replay, 3)] == ["p3", "p4", "p5"]
        replay.close()


async def test_cacher_relists_when_its_store_watch_falls_behind_compaction(store):
    # A replica that hangs (SIGSTOP) holds the cacher's watch until the stall timeout;
    # meanwhile the others write and compact, so resuming elsewhere finds it Gone. It is
    # a follower: the others keep their leader and write at once (an election first, as
    # etcd's takes a second, could outlast the stall timeout).
    leader = await store.leader()
    follower_first = sorted(store.endpoints, key=lambda e: e == store.endpoints[leader])
    storage = Storage(follower_first, timeout=20.0, progress_interval=0.2,
                      stall_timeout=1.0)
    writer: Storage | None = None
    stopped: int | None = None
    try:
        async with running(Cacher(storage, PODS)) as cacher:
            watcher = cacher.watch(start_revision=None)
            await wait_for(lambda: _async(storage.watch_endpoints), timeout=DEADLINE,
                           what="the cacher's store watch")
            stopped = store.endpoints.index(storage.watch_endpoints[0])
            others = [e for i, e in enumerate(store.endpoints) if i != stopped]
            writer = Storage(others, timeout=20.0)
            store.kill(stopped, signal.SIGSTOP)
            await create(writer, "during")
            latest = await create(writer, "latest")
            await compact(others[0], latest)
            await wait_for(lambda: _async(cacher.relists == 1 and cacher.ready
                                          and cacher.get(key("latest")) is not None),
                           timeout=DEADLINE, what="the cacher re-listed")
            assert cacher.revision >= latest
            # The old watcher was ended (its client re-watches), not fed a hole.
            assert [e async for e in watcher] == [] and watcher.terminated is not None
            fresh = cacher.watch(start_revision=None)
            assert {e.object.metadata.name for e in await take(fresh, 2)} == {"during",
                                                                               "latest"}
            fresh.close()
    finally:
        if stopped is not None:
            store.kill(stopped, signal.SIGCONT)
        if writer is not None:
            await writer.close()
        await storage.close()


async def test_a_watcher_keeps_every_event_while_its_store_replica_is_killed(
        storage, store):
    writer = Storage(store.endpoints[::-1], timeout=20.0)
    try:
        async with running(Cacher(storage, PODS)) as cacher:
            watcher = cacher.watch(start_revision=None)
            await wait_for(lambda: _async(storage.watch_endpoints), timeout=DEADLINE,
                           what="the cacher's store watch")
            victim = store.endpoints.index(storage.watch_endpoints[0])
            written: list[tuple[str, int]] = []
            for i in range(60):
                if i == 20:
                    store.kill(victim)
                written.append((f"w{i:02}", await create(writer, f"w{i:02}")))
            events = await take(watcher, 60)
            assert [(e.type, e.object.metadata.name, int(e.object.metadata.resource_version))
                    for e in events] == [(ADDED, name, rv) for name, rv in written]
            assert storage.watch_endpoints[0] != store.endpoints[victim]
            # Nothing twice: a sentinel is the very next event.
            sentinel = await create(writer, "sentinel")
            assert summary(await take(watcher, 1)) == [(ADDED, "sentinel", sentinel)]
    finally:
        await writer.close()


async def test_a_cache_stops_whatever_its_store_watch_is_doing(storage):
    # Stopping cancels the store watch while it reads, asks for progress or connects.
    # A cancellation lost on the way (grpc.aio ends a cancelled unary call CANCELLED
    # instead of raising it; Python 3.11's wait_for drops one that coincides with the
    # read completing) left the watch running, and stop() waiting for it for ever.
    for i in range(100):
        cacher = Cacher(storage, PODS)
        await asyncio.wait_for(cacher.start(), DEADLINE)
        for watch in list(storage._watches):
            watch.request_progress()
        # Not a wait for anything: stop at a different moment of the watch's life.
        await asyncio.sleep(i % 10 / 1000)
        stopping = asyncio.ensure_future(cacher.stop())
        done, _ = await asyncio.wait([stopping], timeout=DEADLINE)
        assert done, f"the cache did not stop (attempt {i})"


async def test_200_watchers_all_get_an_event(storage):
    async with running(Cacher(storage, PODS)) as cacher:
        watchers = [cacher.watch(start_revision=None, namespace="default")
                    for _ in range(200)]
        other = cacher.watch(start_revision=None, namespace="other")
        revision = await create(storage, "a")
        got = await asyncio.gather(*(take(w, 1) for w in watchers))
        assert all(summary(events) == [(ADDED, "a", revision)] for events in got)
        assert cacher.watcher_count == 201 and cacher.events_dispatched >= 200
        sentinel = await storage.create(key("s", "other"), encode(pod("s", namespace="other")))
        assert summary(await take(other, 1)) == [(ADDED, "s", sentinel)]


async def test_a_slow_watcher_is_terminated_without_holding_back_the_others(storage):
    async with running(Cacher(storage, PODS, queue_size=5)) as cacher:
        slow = cacher.watch(start_revision=None)
        fast = cacher.watch(start_revision=None)
        names = [f"p{i}" for i in range(10)]
        # The fast one reads each event before the next write: it always keeps up, even
        # when the store's events and answers arrive bunched (etcd's, on a busy host).
        for name in names:
            await create(storage, name)
            assert [e.object.metadata.name for e in await take(fast, 1)] == [name]
        assert slow.terminated is not None and "fell behind" in slow.terminated
        assert [e.object.metadata.name async for e in slow] == names[:5]
        assert cacher.watcher_count == 1 and cacher.watchers_terminated == 1


@skiff_store_only(UNORDERED_PROGRESS)
async def test_bookmarks_and_freshness_advance_on_a_quiet_prefix(storage):
    async with running(Cacher(storage, PODS, bookmark_interval=0.1)) as cacher:
        watcher = cacher.watch(start_revision=None, allow_bookmarks=True)
        plain = cacher.watch(start_revision=None)
        elsewhere = await storage.create(object_key(NODES, "", "n1"), encode(core_pb2.Node()))
        await cacher.wait_fresh(elsewhere, timeout=DEADLINE)  # via the store's progress
        while True:
            event = await asyncio.wait_for(anext(watcher), DEADLINE)
            assert event.type == BOOKMARK
            assert event.object == core_pb2.Pod(metadata=meta_pb2.ObjectMeta(
                resource_version=event.object.metadata.resource_version))
            if int(event.object.metadata.resource_version) >= elsewhere:
                break
        with pytest.raises(errors.Unavailable, match="too large resource version"):
            await cacher.wait_fresh(elsewhere + 1000, timeout=0.5)
        # No bookmarks for a watcher that did not ask: its next event is a real one.
        sentinel = await create(storage, "s")
        assert summary(await take(plain, 1)) == [(ADDED, "s", sentinel)]


async def _async(value: object) -> object:
    """A value as the awaitable ``wait_for`` polls."""
    return value


# ------------------------------------------------------------------ leader preference


async def test_calls_move_to_the_raft_leader_and_follow_it_after_a_failover(
        store: ProcessCluster) -> None:
    leader = await store.leader()
    # The follower first: new calls start there.
    order = [m.endpoint for i, m in enumerate(store.members) if i != leader]
    order.append(store.members[leader].endpoint)
    async with Storage(order, timeout=20.0) as storage:
        assert storage.endpoint == order[0]
        await storage.prefer_leader()
        assert storage.endpoint == store.members[leader].endpoint
        await storage.prefer_leader()  # already there: stays
        assert storage.endpoint == store.members[leader].endpoint

        store.kill(leader)
        try:
            # The next call fails over to a follower, which soon leads or knows who does.
            await storage.create("/registry/test/after-failover", b"x")
            new_leader = await store.leader()
            await storage.prefer_leader()
            assert storage.endpoint == store.members[new_leader].endpoint
        finally:
            store.restart(leader)
            await store.wait_healthy(members=[leader])


@contextlib.asynccontextmanager
async def real_etcd(base: Path) -> AsyncIterator[str]:
    """One real etcd (Debian's 3.4) on free loopback ports; its client endpoint."""
    client, peer = f"http://{LOOPBACK}:{free_port()}", f"http://{LOOPBACK}:{free_port()}"
    etcd = Daemon("etcd", [
        "etcd", "--name", "e0", "--data-dir", str(base / "e0"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"e0={peer}", "--logger", "zap", "--log-level", "warn"],
        base / "etcd.log")
    etcd.start()
    try:
        endpoint = client.removeprefix("http://")
        await wait_for(lambda: grpc_healthy_kv(endpoint), timeout=DEADLINE, what="etcd up")
        yield endpoint
    finally:
        etcd.stop()


async def grpc_healthy_kv(endpoint: str) -> bool:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        await rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=2)
    return True


@pytest.mark.skipif(shutil.which("etcd") is None, reason="no etcd binary")
async def test_a_store_watch_catching_up_on_etcd_reports_only_what_it_delivered(tmp_path):
    # etcd sends a backlog in responses of at most 1,000 revisions, each headed with its
    # *current* revision. Read as progress, the first would have moved the watch (and
    # the cache: "already applied") past the 2,000 changes still to come.
    async with real_etcd(tmp_path) as endpoint, Storage([endpoint]) as storage:
        value = encode(pod("p"))
        for i in range(50):
            last = await storage.create(key(f"p{i}"), value)
        for i in range(2450):
            last = await storage.update(key(f"p{i % 50}"), value, mod_revision=0)
        watch = storage.watch(PREFIX, 2)
        seen: list[int] = []
        async with contextlib.aclosing(watch), asyncio.timeout(DEADLINE):
            async for batch in watch:
                seen.extend(c.mod_revision for c in batch.changes)
                assert batch.revision <= max(seen, default=1), (
                    f"a batch claims {batch.revision} with changes only up to {max(seen)}")
                if seen and seen[-1] >= last:
                    break
        assert seen == list(range(2, last + 1))
