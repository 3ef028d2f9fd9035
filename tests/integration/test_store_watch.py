"""Watch: bidirectional streams, their ranges, history replay, filters, cancel and progress.

Watchers are served by the replica the client talks to, from its applied state, while
the writes in these tests go to other replicas: what a watcher sees has crossed raft.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import grpc
from storeclient import DEADLINE, connect, connect_all, delete_op, prefix_end, put_op, summary

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc

WatchCreateRequest = rpc_pb2.WatchCreateRequest


async def test_watch_one_key_reports_its_puts_and_deletes_in_order(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        async with a.watch() as stream:
            created = await stream.create(b"k")
            assert (created.watch_id, created.canceled, created.header.revision) == (0, False, 1)
            await b.put(b"k", b"v1")        # 2
            await c.put(b"other", b"o")     # 3: not watched
            await b.put(b"k", b"v2")        # 4
            await c.delete(b"k")            # 5
            events = await stream.events(3, watch_id=0)
            assert summary(events) == [("PUT", b"k", b"v1", 2), ("PUT", b"k", b"v2", 4),
                                       ("DELETE", b"k", b"", 5)]
            assert [(e.kv.version, e.kv.create_revision) for e in events] == [
                (1, 2), (2, 2), (0, 0)]
            assert not any(e.HasField("prev_kv") for e in events)  # not asked for


async def test_watch_prefix_all_keys_and_from_key_on_one_stream(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        async with a.watch() as stream:
            prefix = (await stream.create(b"p/", prefix_end(b"p/"))).watch_id
            every = (await stream.create(b"\0", b"\0")).watch_id
            from_key = (await stream.create(b"p/b", b"\0")).watch_id
            assert [prefix, every, from_key] == [0, 1, 2]
            await b.put(b"p/a", b"1")       # 2
            await b.put(b"p", b"2")         # 3: not in the prefix
            await b.put(b"q", b"3")         # 4
            await b.put(b"p/b", b"4")       # 5
            await b.put(b"a", b"5")         # 6
            events = await stream.events_by_watch({prefix: 2, every: 5, from_key: 2})
            assert [e.kv.key for e in events[prefix]] == [b"p/a", b"p/b"]
            assert [e.kv.key for e in events[every]] == [b"p/a", b"p", b"q", b"p/b", b"a"]
            assert [e.kv.mod_revision for e in events[every]] == [2, 3, 4, 5, 6]
            assert [e.kv.key for e in events[from_key]] == [b"q", b"p/b"]


async def test_watch_from_a_past_revision_replays_history_with_prev_kv(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await b.put(b"k", b"v1")            # 2
        await b.put(b"k", b"v2")            # 3
        await b.delete(b"k")                # 4
        await b.put(b"k", b"v3")            # 5
        await a.get(b"k")                   # a has applied all of it (a read barrier)
        async with a.watch() as stream:
            created = await stream.create(b"k", start_revision=3, prev_kv=True)
            assert created.header.revision == 5
            events = await stream.events(3)
            assert summary(events) == [("PUT", b"k", b"v2", 3), ("DELETE", b"k", b"", 4),
                                       ("PUT", b"k", b"v3", 5)]
            assert [(e.prev_kv.value, e.prev_kv.mod_revision) for e in events[:2]] == [
                (b"v1", 2), (b"v2", 3)]
            assert not events[2].HasField("prev_kv")  # k did not exist before it
            # History then continues live, still with prev_kv.
            await b.put(b"k", b"v4")        # 6
            (live,) = await stream.events(1)
            assert (live.kv.value, live.kv.mod_revision, live.prev_kv.value) == (b"v4", 6, b"v3")
        async with a.watch() as stream:
            # A start revision in the future: nothing until the store gets there.
            await stream.create(b"k", start_revision=8)
            await b.put(b"k", b"v5")        # 7: before the start
            await b.put(b"k", b"v6")        # 8
            assert summary(await stream.events(1)) == [("PUT", b"k", b"v6", 8)]


async def test_watch_filters_noput_and_nodelete(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        async with a.watch() as deletes, a.watch() as puts:
            await deletes.create(b"k", filters=[WatchCreateRequest.NOPUT])
            await puts.create(b"k", filters=[WatchCreateRequest.NODELETE])
            await b.put(b"k", b"1")         # 2
            await b.delete(b"k")            # 3
            await b.put(b"k", b"2")         # 4
            await b.delete(b"k")            # 5
            await b.put(b"k", b"3")         # 6
            assert summary(await deletes.events(2)) == [("DELETE", b"k", b"", 3),
                                                        ("DELETE", b"k", b"", 5)]
            assert summary(await puts.events(3)) == [("PUT", b"k", b"1", 2), ("PUT", b"k", b"2", 4),
                                                     ("PUT", b"k", b"3", 6)]


async def test_txn_events_arrive_together_at_one_revision(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await b.put(b"t/old", b"x")         # 2
        async with a.watch() as stream:
            await stream.create(b"t/", prefix_end(b"t/"), prev_kv=True)
            await b.txn(success=[put_op(b"t/z", b"1"), put_op(b"t/a", b"2"),
                                 delete_op(b"t/old")])  # 3
            response = await stream.next()
            assert response.header.revision == 3
            assert summary(response.events) == [("PUT", b"t/a", b"2", 3),
                                                ("DELETE", b"t/old", b"", 3),
                                                ("PUT", b"t/z", b"1", 3)]
            assert response.events[1].prev_kv.value == b"x"


async def test_cancel_stops_only_that_watch_and_ids_can_be_chosen(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        async with a.watch() as stream:
            first = (await stream.create(b"k")).watch_id
            chosen = await stream.create(b"k", watch_id=7)
            assert (first, chosen.watch_id) == (0, 7)
            duplicate = await stream.create(b"j", watch_id=7)
            assert (duplicate.watch_id, duplicate.canceled, duplicate.cancel_reason) == (
                -1, True, "mvcc: duplicate watch ID provided on the WatchStream")
            canceled = await stream.cancel(first)
            assert (canceled.watch_id, canceled.canceled, list(canceled.events)) == (0, True, [])
            await b.put(b"k", b"v")         # 2
            assert summary(await stream.events(1, watch_id=7)) == [("PUT", b"k", b"v", 2)]
            # Had watch 0 survived, its event would come before this progress reply.
            await a.get(b"k")
            progress = await stream.progress()
            assert (progress.watch_id, list(progress.events)) == (-1, [])
            assert (await stream.cancel(7)).canceled
            await b.put(b"k", b"w")         # 3
            await a.get(b"k")
            progress = await stream.progress()
            assert (progress.watch_id, progress.header.revision) == (-1, 3)


async def test_progress_request_answers_with_the_current_revision(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        async with a.watch() as stream:
            await stream.create(b"k")
            await b.put(b"x", b"1")         # 2
            await c.put(b"y", b"2")         # 3
            await a.get(b"k")               # a has applied revision 3
            progress = await stream.progress()
            assert (progress.watch_id, progress.created, progress.canceled) == (-1, False, False)
            assert progress.header.revision == 3
            # Events up to the revision a progress reply names come before it.
            await b.put(b"k", b"v")         # 4
            await a.get(b"k")
            await stream.send(rpc_pb2.WatchRequest(
                progress_request=rpc_pb2.WatchProgressRequest()))
            assert summary((await stream.next()).events) == [("PUT", b"k", b"v", 4)]
            progress = await stream.next()
            assert (progress.watch_id, progress.header.revision) == (-1, 4)


async def test_every_replica_watches_the_writes_made_on_every_other(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        async with clients[0].watch() as s0, clients[1].watch() as s1, clients[2].watch() as s2:
            streams = [s0, s1, s2]
            for stream in streams:
                await stream.create(b"w/", prefix_end(b"w/"))
            for i in range(12):
                await clients[i % 3].put(f"w/{i % 4}".encode(), str(i).encode())
            expected = [("PUT", f"w/{i % 4}".encode(), str(i).encode(), i + 2) for i in range(12)]
            for stream in streams:
                assert summary(await stream.events(12)) == expected


async def test_progress_notify_reaches_an_idle_watcher_while_other_keys_change(
        make_store_cluster):
    cluster = await make_store_cluster("--experimental-watch-progress-notify-interval", "0.3")
    async with connect(cluster.endpoints[0]) as a, connect(cluster.endpoints[1]) as b:
        async with a.watch() as stream:
            quiet = (await stream.create(b"quiet", progress_notify=True)).watch_id
            busy = asyncio.get_running_loop().create_task(_write_until_cancelled(b))
            try:
                # Notifications keep coming, each naming the revision the store is at, while
                # writes to another key keep the replica busy: wait for one some writes on.
                while True:
                    response = await stream.next(timeout=5)
                    assert (response.watch_id, list(response.events)) == (quiet, [])
                    if response.header.revision >= 6:
                        break
            finally:
                busy.cancel()
                await asyncio.gather(busy, return_exceptions=True)


async def _write_until_cancelled(client) -> None:  # type: ignore[no-untyped-def]
    """Keep the cluster busy with writes to one key, a few each progress interval."""
    i = 0
    while True:
        await client.put(b"busy", str(i).encode())
        i += 1
        await asyncio.sleep(0.05)  # pacing the writer, not waiting for anything


async def test_a_stream_whose_client_stopped_sending_keeps_delivering_events(store_cluster):
    # A client may half-close after its create request (gRPC's usual "request iterator
    # that ends"); etcd keeps serving the watch until the client goes away.
    async def one_create() -> AsyncIterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=WatchCreateRequest(key=b"k"))

    async with connect_all(store_cluster.endpoints) as (a, b, _):
        call = rpc_pb2_grpc.WatchStub(a.channel).Watch(one_create())
        try:
            created = await asyncio.wait_for(call.read(), DEADLINE)
            assert (created.watch_id, created.created) == (0, True)
            await b.put(b"k", b"v")         # 2
            response = await asyncio.wait_for(call.read(), DEADLINE)
            assert response is not grpc.aio.EOF, "the store ended the stream"
            assert summary(response.events) == [("PUT", b"k", b"v", 2)]
        finally:
            call.cancel()


async def test_a_watch_on_a_replica_behind_its_start_waits_and_skips_nothing(store_cluster):
    """A watch from a revision its replica has not applied yet (as when the apiserver's
    store watch resumes on a replica that restarted, or lagged while stopped) waits
    until the replica has it, then sends every revision from exactly there; meanwhile
    a progress reply never claims a revision whose events it has not sent (the
    apiserver's store watch resumes from such a claim + 1)."""
    leader = await store_cluster.leader()
    behind = (leader + 1) % 3
    async with connect(store_cluster.endpoints[leader]) as writer:
        await writer.put(b"b/seed", b"v")
        store_cluster.kill(behind, signal.SIGSTOP)
        try:
            for i in range(200):
                last = await writer.put(b"b/%d" % (i % 17), b"v%d" % i)
        finally:
            store_cluster.kill(behind, signal.SIGCONT)
        start = last.header.revision + 50  # ahead of every replica, and far ahead of this one
        until = start + 100

        async def requests() -> AsyncIterator[rpc_pb2.WatchRequest]:
            yield rpc_pb2.WatchRequest(create_request=WatchCreateRequest(
                key=b"b/", range_end=prefix_end(b"b/"), start_revision=start,
                progress_notify=True))
            while True:
                await asyncio.sleep(0.005)
                yield rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())

        async def write_on() -> None:
            for i in range(until - last.header.revision):
                await writer.put(b"b/%d" % (i % 17), b"w%d" % i)

        seen: list[int] = []
        claims: list[tuple[int, int]] = []  # (progress revision, last revision sent before)
        async with grpc.aio.insecure_channel(store_cluster.endpoints[behind]) as channel:
            writes = asyncio.create_task(write_on())
            async with asyncio.timeout(DEADLINE):
                async for response in rpc_pb2_grpc.WatchStub(channel).Watch(requests()):
                    assert not response.canceled, response.cancel_reason
                    if response.created:
                        assert response.header.revision < start  # it is behind
                        continue
                    if not response.events:
                        claims.append((response.header.revision, seen[-1] if seen else 0))
                    seen.extend(e.kv.mod_revision for e in response.events)
                    if seen and seen[-1] >= until:
                        break
            await writes
        assert seen == list(range(start, until + 1))
        assert [c for c in claims if c[0] >= start and c[0] > c[1]] == []
