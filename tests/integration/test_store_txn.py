"""Txn: every compare target with every result, both branches with each kind of op,
missing keys, range compares, nested Txns, and read-only Txns (served without a write).
"""

from __future__ import annotations

from storeclient import compare, connect_all, delete_op, prefix_end, put_op, range_op

from skiff.store.v1 import rpc_pb2


async def test_every_compare_target_and_result(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        lease = (await a.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
        await a.put(b"k", b"m")                    # 2
        await a.put(b"other", b"o")                # 3
        await a.put(b"k", b"m", lease=lease)       # 4: k is version 2, created 2, modified 4
        cases = [
            ("VALUE", "m", [True, False, False, False]),
            ("VALUE", "a", [False, True, True, False]),
            ("VALUE", "z", [False, True, False, True]),
            ("VERSION", 2, [True, False, False, False]),
            ("VERSION", 1, [False, True, True, False]),
            ("VERSION", 3, [False, True, False, True]),
            ("CREATE", 2, [True, False, False, False]),
            ("CREATE", 1, [False, True, True, False]),
            ("CREATE", 3, [False, True, False, True]),
            ("MOD", 4, [True, False, False, False]),
            ("MOD", 3, [False, True, True, False]),
            ("MOD", 5, [False, True, False, True]),
            ("LEASE", lease, [True, False, False, False]),
            ("LEASE", lease - 1, [False, True, True, False]),
            ("LEASE", lease + 1, [False, True, False, True]),
        ]
        results = ["EQUAL", "NOT_EQUAL", "GREATER", "LESS"]
        for i, (target, operand, expected) in enumerate(cases):
            value = operand.encode() if isinstance(operand, str) else operand
            for result, holds in zip(results, expected, strict=True):
                # Read-only (answered after a read barrier) on one replica...
                txn = await (b, c)[i % 2].txn([compare(b"k", target, result, value)],
                                              success=[range_op(b"k")],
                                              failure=[range_op(b"other")])
                assert txn.succeeded is holds, (target, operand, result)
                assert txn.responses[0].response_range.kvs[0].key == (
                    b"k" if holds else b"other")
                assert txn.header.revision == 4
        # ...and the same decisions when the Txn writes (applied through raft).
        revision = 4
        for target, operand, result, holds in [("VALUE", b"m", "EQUAL", True),
                                               ("VERSION", 2, "GREATER", False),
                                               ("CREATE", 3, "LESS", True),
                                               ("MOD", 4, "NOT_EQUAL", False),
                                               ("LEASE", lease, "EQUAL", True)]:
            txn = await c.txn([compare(b"k", target, result, operand)],
                              success=[put_op(b"yes", target.encode())],
                              failure=[put_op(b"no", target.encode())])
            revision += 1
            assert (txn.succeeded, txn.header.revision) == (holds, revision), target
            written = (await a.get(b"yes" if holds else b"no")).kvs[0]
            assert (written.value, written.mod_revision) == (target.encode(), revision)


async def test_success_branch_runs_range_put_and_delete_in_one_revision(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        await a.put(b"k", b"1")          # 2
        await a.put(b"d/1", b"x")        # 3
        await a.put(b"d/2", b"y")        # 4
        txn = await b.txn(
            [compare(b"k", "VALUE", "EQUAL", b"1"), compare(b"k", "VERSION", "EQUAL", 1)],
            success=[range_op(b"k"), put_op(b"k", b"2", prev_kv=True), range_op(b"k"),
                     delete_op(b"d/", prefix_end(b"d/"), prev_kv=True), put_op(b"new", b"n")],
            failure=[put_op(b"failed", b"!")])
        assert (txn.succeeded, txn.header.revision) == (True, 5)
        ops = [r.WhichOneof("response") for r in txn.responses]
        assert ops == ["response_range", "response_put", "response_range",
                       "response_delete_range", "response_put"]
        before, put, after, deleted, _ = txn.responses
        assert [(kv.value, kv.mod_revision) for kv in before.response_range.kvs] == [(b"1", 2)]
        assert (put.response_put.prev_kv.value, put.response_put.prev_kv.mod_revision) == (b"1", 2)
        # A read after a write in the same Txn sees that write, at the Txn's revision.
        assert [(kv.value, kv.mod_revision, kv.version) for kv in after.response_range.kvs] == [
            (b"2", 5, 2)]
        assert deleted.response_delete_range.deleted == 2
        assert [kv.key for kv in deleted.response_delete_range.prev_kvs] == [b"d/1", b"d/2"]
        got = await a.get(b"\0", b"\0")
        assert [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs] == [
            (b"k", b"2", 5), (b"new", b"n", 5)]
        assert (await a.get(b"d/1", revision=4)).kvs[0].value == b"x"


async def test_failure_branch_runs_range_put_and_delete(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await a.put(b"k", b"1")          # 2
        await a.put(b"gone", b"g")       # 3
        txn = await b.txn([compare(b"k", "MOD", "GREATER", 2)],
                          success=[put_op(b"k", b"success")],
                          failure=[range_op(b"\0", b"\0", keys_only=True),
                                   put_op(b"k", b"failure"),
                                   delete_op(b"gone", prev_kv=True)])
        assert (txn.succeeded, txn.header.revision) == (False, 4)
        listed, put, deleted = txn.responses
        assert [kv.key for kv in listed.response_range.kvs] == [b"gone", b"k"]
        assert put.WhichOneof("response") == "response_put"
        assert [kv.value for kv in deleted.response_delete_range.prev_kvs] == [b"g"]
        assert await c.values(b"\0", b"\0") == [(b"k", b"failure")]
        # A branch that is empty writes nothing and keeps the revision.
        txn = await c.txn([compare(b"k", "VALUE", "EQUAL", b"nope")],
                          success=[put_op(b"k", b"x")])
        assert (txn.succeeded, list(txn.responses), txn.header.revision) == (False, [], 4)
        assert (await a.get(b"k")).kvs[0].mod_revision == 4


async def test_compares_on_a_missing_key_and_on_a_range(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, _):
        # A missing key compares as zeroes, but a value compare on it always fails.
        for target, result, operand, holds in [
                ("VERSION", "EQUAL", 0, True), ("CREATE", "EQUAL", 0, True),
                ("MOD", "LESS", 1, True), ("LEASE", "EQUAL", 0, True),
                ("VERSION", "GREATER", 0, False),
                ("VALUE", "EQUAL", b"", False), ("VALUE", "NOT_EQUAL", b"x", False)]:
            txn = await b.txn([compare(b"missing", target, result, operand)])
            assert txn.succeeded is holds, (target, result, operand)
        # The create-if-absent idiom: only the first of two identical Txns creates.
        create = dict(compare=[compare(b"lock", "CREATE", "EQUAL", 0)],
                      success=[put_op(b"lock", b"first")],
                      failure=[range_op(b"lock")])
        first = await a.txn(**create)
        second = await b.txn(**create)
        assert (first.succeeded, first.header.revision) == (True, 2)
        assert (second.succeeded, second.header.revision) == (False, 2)
        assert second.responses[0].response_range.kvs[0].value == b"first"

        # A compare over a range holds only if it holds for every key in it.
        await a.put(b"r/1", b"x")        # 3
        await a.put(b"r/2", b"x")        # 4
        await a.put(b"r/3", b"y")        # 5
        end = prefix_end(b"r/")
        assert (await b.txn([compare(b"r/", "VERSION", "EQUAL", 1, end)])).succeeded
        assert not (await b.txn([compare(b"r/", "VALUE", "EQUAL", b"x", end)])).succeeded
        assert (await b.txn([compare(b"r/1", "VALUE", "EQUAL", b"x", b"r/3")])).succeeded
        assert (await b.txn([compare(b"r/", "MOD", "GREATER", 2, end)])).succeeded
        assert not (await b.txn([compare(b"r/", "MOD", "GREATER", 3, end)])).succeeded


async def test_read_only_txn_and_nested_txn(store_cluster):
    async with connect_all(store_cluster.endpoints) as (a, b, c):
        await a.put(b"k", b"1")          # 2
        await a.put(b"j", b"2")          # 3
        # Read-only: no revision of its own, answered linearizably by a follower too.
        for client in (b, c):
            txn = await client.txn([compare(b"k", "VALUE", "EQUAL", b"1")],
                                   success=[range_op(b"\0", b"\0"), range_op(b"k", revision=2)])
            assert (txn.succeeded, txn.header.revision) == (True, 3)
            assert [kv.key for kv in txn.responses[0].response_range.kvs] == [b"j", b"k"]
            assert [kv.key for kv in txn.responses[1].response_range.kvs] == [b"k"]
        assert await a.revision() == 3
        # A nested Txn decides its branch on the state before the outer one writes.
        inner = rpc_pb2.TxnRequest(compare=[compare(b"k", "VALUE", "EQUAL", b"1")],
                                   success=[put_op(b"inner", b"saw-1")],
                                   failure=[put_op(b"inner", b"saw-other")])
        txn = await b.txn([compare(b"j", "VERSION", "EQUAL", 1)],
                          success=[put_op(b"k", b"changed"),
                                   rpc_pb2.RequestOp(request_txn=inner)])
        assert (txn.succeeded, txn.header.revision) == (True, 4)
        nested = txn.responses[1].response_txn
        assert nested.succeeded
        got = await c.get(b"\0", b"\0")
        assert [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs] == [
            (b"inner", b"saw-1", 4), (b"j", b"2", 3), (b"k", b"changed", 4)]
