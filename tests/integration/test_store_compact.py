"""Compaction: history below it is gone for reads and watches, in etcd's words; what is
at or above it (including the prev_kv of the first later event) stays, on every replica.
"""

from __future__ import annotations

import grpc
from storeclient import connect_all, expect_error, summary

from skiff.store.v1 import rpc_pb2

COMPACTED = "etcdserver: mvcc: required revision has been compacted"


async def test_compaction_fails_older_reads_and_keeps_the_rest(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await a.put(b"k", b"v1")        # 2
        await a.put(b"d", b"x")         # 3
        await a.put(b"k", b"v2")        # 4
        await a.delete(b"d")            # 5
        await a.put(b"k", b"v3")        # 6
        compacted = await b.kv.Compact(rpc_pb2.CompactionRequest(revision=5))
        assert compacted.header.revision == 6  # compaction writes no revision
        for client in (a, b, c):
            for revision in (2, 4):
                await expect_error(client.get(b"k", revision=revision),
                                   grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
            # The store as of the compacted revision is still readable, and what follows.
            assert await client.values(b"\0", b"\0", revision=5) == [(b"k", b"v2")]
            got = await client.get(b"\0", b"\0")
            assert [(kv.key, kv.value, kv.create_revision, kv.version) for kv in got.kvs] == [
                (b"k", b"v3", 2, 3)]
            await expect_error(client.txn(success=[
                rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k", revision=3))]),
                grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
        await expect_error(c.kv.Compact(rpc_pb2.CompactionRequest(revision=5)),
                           grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
        await expect_error(c.kv.Compact(rpc_pb2.CompactionRequest(revision=3)),
                           grpc.StatusCode.OUT_OF_RANGE, COMPACTED)
        await expect_error(a.kv.Compact(rpc_pb2.CompactionRequest(revision=7)),
                           grpc.StatusCode.OUT_OF_RANGE,
                           "etcdserver: mvcc: required revision is a future revision")
        assert await a.revision() == 6
        # Every replica compacted the same history.
        hashes = [await client.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=6))
                  for client in (a, b, c)]
        assert {(h.hash, h.compact_revision, h.hash_revision) for h in hashes} == {
            (hashes[0].hash, 5, 6)}


async def test_watch_from_below_the_compaction_is_cancelled_with_its_revision(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await a.put(b"k", b"v1")        # 2
        await a.put(b"d", b"x")         # 3
        await a.put(b"k", b"v2")        # 4
        await a.delete(b"d")            # 5
        await a.put(b"k", b"v3")        # 6
        await a.kv.Compact(rpc_pb2.CompactionRequest(revision=5))
        await c.get(b"k")               # c has applied the compaction
        async with c.watch() as stream:
            created = await stream.create(b"\0", b"\0", start_revision=4)
            assert (created.watch_id, created.canceled) == (0, False)
            canceled = await stream.next()
            assert (canceled.watch_id, canceled.canceled, canceled.compact_revision) == (
                0, True, 5)
            assert list(canceled.events) == []
            # From the compacted revision itself the history is whole, prev_kv included.
            await stream.create(b"\0", b"\0", start_revision=5, prev_kv=True)
            events = await stream.events(2)
            assert summary(events) == [("DELETE", b"d", b"", 5), ("PUT", b"k", b"v3", 6)]
            assert [(e.prev_kv.value, e.prev_kv.mod_revision) for e in events] == [
                (b"x", 3), (b"v2", 4)]
            await b.put(b"k", b"v4")    # 7: the stream lives on
            assert summary(await stream.events(1)) == [("PUT", b"k", b"v4", 7)]
