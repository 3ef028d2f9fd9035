"""Bad requests get etcd's gRPC status and message, and change nothing.

After every refusal the test checks that no replica moved past the revision it was at
and that the data is what it was: a refused request (whether refused before raft or
when applied) writes nothing, not even part of a Txn.
"""

from __future__ import annotations

import grpc
from storeclient import compare, connect_all, delete_op, expect_error, put_op, range_op

from skiff.store.v1 import rpc_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NO_KEY = "etcdserver: key is not provided"
NO_LEASE = "etcdserver: requested lease not found"
FUTURE = "etcdserver: mvcc: required revision is a future revision"
DUPLICATE = "etcdserver: duplicate key given in txn request"


async def unchanged(clients, revision: int, data) -> None:  # type: ignore[no-untyped-def]
    for client in clients:
        assert await client.revision() == revision
        assert await client.values(b"\0", b"\0") == data


async def test_empty_keys_are_refused(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        a, b, c = clients
        await a.put(b"k", b"v")                                      # 2
        await expect_error(a.put(b"", b"v"), INVALID, NO_KEY)
        await expect_error(b.get(b""), INVALID, NO_KEY)
        await expect_error(b.get(b"", b"\0"), INVALID, NO_KEY)
        await expect_error(c.delete(b""), INVALID, NO_KEY)
        await expect_error(c.delete(b"", b"\0"), INVALID, NO_KEY)
        await expect_error(a.txn([compare(b"", "VERSION", "EQUAL", 0)]), INVALID, NO_KEY)
        await expect_error(a.txn(success=[put_op(b"", b"v")]), INVALID, NO_KEY)
        await expect_error(b.txn(failure=[range_op(b"")]), INVALID, NO_KEY)
        await expect_error(c.txn(success=[delete_op(b"")]), INVALID, NO_KEY)
        await unchanged(clients, 2, [(b"k", b"v")])


async def test_put_options_that_contradict_or_need_a_key_or_lease(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        a, b, c = clients
        lease = (await a.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
        await a.put(b"k", b"v")                                      # 2
        await expect_error(a.put(b"k", b"x", ignore_value=True), INVALID,
                           "etcdserver: value is provided")
        await expect_error(b.put(b"k", lease=lease, ignore_lease=True), INVALID,
                           "etcdserver: lease is provided")
        await expect_error(c.put(b"missing", ignore_value=True), INVALID,
                           "etcdserver: key not found")
        await expect_error(c.put(b"missing", b"x", ignore_lease=True), INVALID,
                           "etcdserver: key not found")
        await expect_error(a.put(b"k", b"x", lease=lease + 1), grpc.StatusCode.NOT_FOUND,
                           NO_LEASE)
        await expect_error(b.put(b"new", b"x", lease=777), grpc.StatusCode.NOT_FOUND, NO_LEASE)
        await expect_error(a.put(b"big", b"x" * (1536 * 1024 + 1)), INVALID,
                           "etcdserver: request is too large")
        await unchanged(clients, 2, [(b"k", b"v")])
        ttl = await a.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
        assert list(ttl.keys) == []


async def test_reads_at_a_future_revision_and_bad_sort_options(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        a, b, c = clients
        await a.put(b"k", b"v")                                      # 2
        await expect_error(b.get(b"k", revision=3), grpc.StatusCode.OUT_OF_RANGE, FUTURE)
        await expect_error(c.get(b"k", revision=10**9, serializable=True),
                           grpc.StatusCode.OUT_OF_RANGE, FUTURE)
        await expect_error(a.txn(success=[range_op(b"k", revision=3)]),
                           grpc.StatusCode.OUT_OF_RANGE, FUTURE)
        await expect_error(b.get(b"k", sort_order=7), INVALID, "etcdserver: invalid sort option")
        await expect_error(b.get(b"k", sort_target=9), INVALID, "etcdserver: invalid sort option")
        await expect_error(a.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=3)),
                           grpc.StatusCode.OUT_OF_RANGE, FUTURE)
        await expect_error(a.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001)),
                           grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
        await unchanged(clients, 2, [(b"k", b"v")])
        assert list((await a.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest())).leases) == []


async def test_txns_refused_whole(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        a, b, c = clients
        await a.put(b"k", b"v")                                      # 2
        many = [put_op(f"m/{i}".encode(), b"x") for i in range(129)]
        await expect_error(a.txn(success=many), INVALID,
                           "etcdserver: too many operations in txn request")
        await expect_error(a.txn([compare(b"k", "VERSION", "EQUAL", 1)] * 129), INVALID,
                           "etcdserver: too many operations in txn request")
        await expect_error(b.txn(success=[put_op(b"d", b"1"), put_op(b"d", b"2")]), INVALID,
                           DUPLICATE)
        await expect_error(b.txn(failure=[delete_op(b"a", b"z"), put_op(b"k", b"2")]), INVALID,
                           DUPLICATE)
        await expect_error(c.txn(success=[put_op(b"k", b"2"), delete_op(b"\0", b"\0")]), INVALID,
                           DUPLICATE)
        nested = rpc_pb2.TxnRequest(success=[put_op(b"n", b"inner")])
        await expect_error(c.txn(success=[put_op(b"n", b"outer"),
                                          rpc_pb2.RequestOp(request_txn=nested)]),
                           INVALID, DUPLICATE)
        # A Txn failing when applied (an unknown lease, a future read) writes none of its ops.
        await expect_error(a.txn(success=[put_op(b"first", b"1"), put_op(b"k", b"2", lease=99)]),
                           grpc.StatusCode.NOT_FOUND, NO_LEASE)
        await expect_error(b.txn(success=[put_op(b"first", b"1"), range_op(b"k", revision=5)]),
                           grpc.StatusCode.OUT_OF_RANGE, FUTURE)
        await unchanged(clients, 2, [(b"k", b"v")])
        # The limits themselves are fine: 128 ops, and one key in both branches.
        ok = await a.txn(success=many[:128])
        assert (ok.succeeded, ok.header.revision) == (True, 3)
        both = await b.txn([compare(b"k", "VALUE", "EQUAL", b"v")],
                           success=[put_op(b"k", b"s")], failure=[put_op(b"k", b"f")])
        assert (both.succeeded, both.header.revision) == (True, 4)


async def test_watches_on_an_empty_range_are_refused(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        a, b, _ = clients
        await a.put(b"k", b"v")                                      # 2
        async with b.watch() as stream:
            for key, range_end in [(b"b", b"a"), (b"k", b"k")]:
                refused = await stream.create(key, range_end)
                assert (refused.watch_id, refused.created, refused.canceled,
                        refused.cancel_reason) == (-1, True, True, "mvcc: watcher range is empty")
            # The stream still serves: the next watch gets the first id.
            assert (await stream.create(b"k")).watch_id == 0
            await a.put(b"k", b"w")                                  # 3
            (event,) = await stream.events(1, watch_id=0)
            assert (event.kv.value, event.kv.mod_revision) == (b"w", 3)
