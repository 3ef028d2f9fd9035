"""KV: Range in all its forms, Put's options, DeleteRange, and the revision model.

A fresh cluster is at revision 1, so the n-th write of a test is revision n + 1: every
create/mod revision and version below is asserted exactly. Writes go to one replica
and reads to another, so each test also crosses raft.
"""

from __future__ import annotations

from storeclient import connect_all, put_op

from skiff.store.v1 import rpc_pb2

RangeRequest = rpc_pb2.RangeRequest
KEYS = [b"a", b"ab", b"abc", b"b", b"c"]


async def put_keys(client) -> None:  # type: ignore[no-untyped-def]
    """a=1 @2, ab=2 @3, abc=3 @4, b=4 @5, c=5 @6."""
    for i, key in enumerate(KEYS, start=1):
        assert (await client.put(key, str(i).encode())).header.revision == i + 1


async def test_range_one_key_prefix_all_keys_and_from_key(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await put_keys(a)
        assert await b.values(b"ab") == [(b"ab", b"2")]
        assert await b.values(b"zz") == []
        assert await b.values(b"a", b"b") == [(b"a", b"1"), (b"ab", b"2"), (b"abc", b"3")]
        assert await b.values(b"ab", b"ac") == [(b"ab", b"2"), (b"abc", b"3")]
        assert await b.values(b"\0", b"\0") == list(zip(KEYS, [b"1", b"2", b"3", b"4", b"5"],
                                                        strict=True))
        assert await b.values(b"ab", b"\0") == [(b"ab", b"2"), (b"abc", b"3"), (b"b", b"4"),
                                                (b"c", b"5")]
        # A range whose end is not after its key is empty (etcd answers, no error).
        assert await b.values(b"c", b"a") == []
        got = await b.get(b"abc")
        assert [(kv.create_revision, kv.mod_revision, kv.version) for kv in got.kvs] == [(4, 4, 1)]
        assert (got.count, got.more, got.header.revision) == (1, False, 6)


async def test_range_limit_more_and_count(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await put_keys(a)
        got = await b.get(b"\0", b"\0", limit=2)
        assert [kv.key for kv in got.kvs] == [b"a", b"ab"]
        assert (got.more, got.count) == (True, 5)
        got = await b.get(b"\0", b"\0", limit=5)
        assert (len(got.kvs), got.more, got.count) == (5, False, 5)
        got = await b.get(b"a", b"b", limit=1, sort_order=RangeRequest.DESCEND)
        assert [kv.key for kv in got.kvs] == [b"abc"]
        assert (got.more, got.count) == (True, 3)


async def test_range_at_past_revisions(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await a.put(b"k", b"v1")                                   # 2
        await a.put(b"k", b"v2")                                   # 3
        await a.put(b"other", b"o")                                # 4
        assert (await a.delete(b"k")).header.revision == 5         # 5
        await a.put(b"k", b"v3")                                   # 6
        for revision, expected in [(2, [(b"k", b"v1", 2, 2, 1)]), (3, [(b"k", b"v2", 2, 3, 2)]),
                                   (4, [(b"k", b"v2", 2, 3, 2)]), (5, []),
                                   (6, [(b"k", b"v3", 6, 6, 1)]), (0, [(b"k", b"v3", 6, 6, 1)])]:
            got = await b.get(b"k", revision=revision)
            assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                    for kv in got.kvs] == expected, revision
            assert got.header.revision == 6  # the header is the store's revision, not the read's
        assert await c.values(b"\0", b"\0", revision=1) == []
        assert await c.values(b"\0", b"\0", revision=4) == [(b"k", b"v2"), (b"other", b"o")]


async def test_range_keys_only_count_only_and_serializable(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await put_keys(a)
        got = await b.get(b"a", b"b", keys_only=True)
        assert [(kv.key, kv.value, kv.mod_revision, kv.version) for kv in got.kvs] == [
            (b"a", b"", 2, 1), (b"ab", b"", 3, 1), (b"abc", b"", 4, 1)]
        got = await b.get(b"\0", b"\0", count_only=True)
        assert (list(got.kvs), got.count, got.more) == ([], 5, False)
        # A serializable read answers from the replica's applied state: once that state has
        # caught up (polled), it holds exactly what a linearizable read does.
        await b.get(b"c")  # a linearizable read: a barrier through c's replica too
        got = await c.get(b"\0", b"\0", serializable=True)
        linear = await c.get(b"\0", b"\0")
        assert list(got.kvs) == list(linear.kvs)
        assert got.header.revision == 6


async def test_range_sort_orders_and_targets(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        # x: created first, modified last, 3 versions; y: 1 version, value "a"; z: 2 versions.
        await a.put(b"x", b"m")       # 2
        await a.put(b"y", b"a")       # 3
        await a.put(b"z", b"z")       # 4
        await a.put(b"z", b"b")       # 5
        await a.put(b"x", b"n")       # 6
        await a.put(b"x", b"c")       # 7   x: v3 create 2 mod 7 "c"; y: v1 3 3 "a"; z: v2 4 5 "b"

        async def keys(target: int, order: int) -> list[bytes]:
            got = await b.get(b"\0", b"\0", sort_target=target, sort_order=order)
            return [kv.key for kv in got.kvs]

        asc, desc = RangeRequest.ASCEND, RangeRequest.DESCEND
        assert await keys(RangeRequest.KEY, asc) == [b"x", b"y", b"z"]
        assert await keys(RangeRequest.KEY, desc) == [b"z", b"y", b"x"]
        assert await keys(RangeRequest.VERSION, asc) == [b"y", b"z", b"x"]
        assert await keys(RangeRequest.VERSION, desc) == [b"x", b"z", b"y"]
        assert await keys(RangeRequest.CREATE, asc) == [b"x", b"y", b"z"]
        assert await keys(RangeRequest.CREATE, desc) == [b"z", b"y", b"x"]
        assert await keys(RangeRequest.MOD, asc) == [b"y", b"z", b"x"]
        assert await keys(RangeRequest.MOD, desc) == [b"x", b"z", b"y"]
        assert await keys(RangeRequest.VALUE, asc) == [b"y", b"z", b"x"]
        assert await keys(RangeRequest.VALUE, desc) == [b"x", b"z", b"y"]
        # etcd: a sort target with order NONE sorts ascending.
        assert await keys(RangeRequest.MOD, RangeRequest.NONE) == [b"y", b"z", b"x"]
        # Sorting happens before the limit, as etcd does.
        got = await b.get(b"\0", b"\0", sort_target=RangeRequest.MOD, sort_order=desc, limit=1)
        assert ([kv.key for kv in got.kvs], got.more, got.count) == ([b"x"], True, 3)


async def test_range_mod_and_create_revision_filters(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await put_keys(a)                # a@2 ab@3 abc@4 b@5 c@6
        await a.put(b"a", b"again")      # a: create 2, mod 7

        async def keys(**filters: int) -> list[bytes]:
            return [kv.key for kv in (await b.get(b"\0", b"\0", **filters)).kvs]

        assert await keys(min_mod_revision=5) == [b"a", b"b", b"c"]
        assert await keys(max_mod_revision=4) == [b"ab", b"abc"]
        assert await keys(min_create_revision=4) == [b"abc", b"b", b"c"]
        assert await keys(max_create_revision=3) == [b"a", b"ab"]
        assert await keys(min_mod_revision=3, max_mod_revision=5) == [b"ab", b"abc", b"b"]
        assert await keys(min_create_revision=3, max_create_revision=5,
                          min_mod_revision=4) == [b"abc", b"b"]
        # As etcd: count is of the keys in the range, before the filters; more is after them.
        got = await b.get(b"\0", b"\0", min_mod_revision=5)
        assert (len(got.kvs), got.count, got.more) == (3, 5, False)
        got = await b.get(b"\0", b"\0", min_mod_revision=5, limit=2)
        assert ([kv.key for kv in got.kvs], got.count, got.more) == ([b"a", b"b"], 5, True)
        got = await b.get(b"\0", b"\0", min_mod_revision=5, count_only=True)
        assert (list(got.kvs), got.count) == ([], 5)


async def test_put_prev_kv_lease_ignore_value_and_ignore_lease(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        lease = (await a.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
        first = await a.put(b"k", b"v1", prev_kv=True)                 # 2
        assert (first.header.revision, first.HasField("prev_kv")) == (2, False)
        second = await b.put(b"k", b"v2", lease=lease, prev_kv=True)   # 3
        assert second.header.revision == 3
        assert (second.prev_kv.key, second.prev_kv.value, second.prev_kv.mod_revision,
                second.prev_kv.version, second.prev_kv.lease) == (b"k", b"v1", 2, 1, 0)
        kv = (await a.get(b"k")).kvs[0]
        assert (kv.value, kv.lease, kv.version, kv.create_revision, kv.mod_revision) == (
            b"v2", lease, 2, 2, 3)

        # ignore_value keeps the value (and here the lease is replaced by none).
        third = await a.put(b"k", ignore_value=True, prev_kv=True)    # 4
        assert (third.header.revision, third.prev_kv.value) == (4, b"v2")
        kv = (await b.get(b"k")).kvs[0]
        assert (kv.value, kv.lease, kv.version, kv.mod_revision) == (b"v2", 0, 3, 4)

        # ignore_lease keeps the lease while the value changes.
        await a.put(b"k", b"v3", lease=lease)                          # 5
        await a.put(b"k", b"v4", ignore_lease=True)                    # 6
        kv = (await b.get(b"k")).kvs[0]
        assert (kv.value, kv.lease, kv.version, kv.mod_revision) == (b"v4", lease, 5, 6)
        ttl = await b.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
        assert list(ttl.keys) == [b"k"]


async def test_delete_range_with_prev_kv_and_ranges(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await put_keys(a)                                              # up to 6
        gone = await b.delete(b"a", b"b", prev_kv=True)                # 7
        assert (gone.header.revision, gone.deleted) == (7, 3)
        assert [(kv.key, kv.value, kv.mod_revision) for kv in gone.prev_kvs] == [
            (b"a", b"1", 2), (b"ab", b"2", 3), (b"abc", b"3", 4)]
        gone = await c.delete(b"c")                                    # 8, no prev_kv asked
        assert (gone.header.revision, gone.deleted, list(gone.prev_kvs)) == (8, 1, [])
        # Deleting nothing writes nothing: the revision stays.
        gone = await a.delete(b"nothing", prev_kv=True)
        assert (gone.header.revision, gone.deleted) == (8, 0)
        gone = await a.delete(b"a", b"b")
        assert (gone.header.revision, gone.deleted) == (8, 0)
        assert await c.values(b"\0", b"\0") == [(b"b", b"4")]
        gone = await a.delete(b"\0", b"\0")                            # 9: everything
        assert (gone.header.revision, gone.deleted) == (9, 1)
        assert (await b.get(b"\0", b"\0", count_only=True)).count == 0


async def test_versions_and_revisions_across_delete_and_txn(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await a.put(b"k", b"1")        # 2: version 1
        await a.put(b"k", b"2")        # 3: version 2
        await a.delete(b"k")           # 4: gone
        await b.put(b"k", b"3")        # 5: a new key: version 1, created at 5
        kv = (await a.get(b"k")).kvs[0]
        assert (kv.version, kv.create_revision, kv.mod_revision) == (1, 5, 5)
        # The old incarnation is still readable in the past.
        kv = (await a.get(b"k", revision=3)).kvs[0]
        assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (b"2", 2, 2, 3)

        # A Txn with three writes is one revision: every key it touches has mod_revision 6.
        txn = await b.txn(success=[put_op(b"k", b"4"), put_op(b"t1", b"x"), put_op(b"t2", b"y")])
        assert (txn.succeeded, txn.header.revision) == (True, 6)
        got = await a.get(b"\0", b"\0")
        assert [(kv.key, kv.version, kv.create_revision, kv.mod_revision) for kv in got.kvs] == [
            (b"k", 2, 5, 6), (b"t1", 1, 6, 6), (b"t2", 1, 6, 6)]
        assert (await a.put(b"next")).header.revision == 7
