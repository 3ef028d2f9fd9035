"""The state machine alone: etcd's MVCC semantics, determinism, snapshots, de-duplication."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.store import errors, mvcc
from services.store.errors import EtcdError
from services.store.mvcc import Store
from skiff.store.v1 import raft_pb2, rpc_pb2

_ids = itertools.count(1)


def apply(store: Store, *commands: raft_pb2.Command, origin: int = 7) -> list[raft_pb2.Result]:
    for command in commands:
        if not command.id:
            command.id = next(_ids)
    return store.apply_batch(raft_pb2.Batch(origin=origin, commands=commands))


def put(key: bytes, value: bytes = b"v", **fields) -> raft_pb2.Command:
    return raft_pb2.Command(put=rpc_pb2.PutRequest(key=key, value=value, **fields))


def delete(key: bytes, range_end: bytes = b"", **fields) -> raft_pb2.Command:
    return raft_pb2.Command(delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end,
                                                                    **fields))


def get(store: Store, key: bytes, range_end: bytes = b"", **fields) -> rpc_pb2.RangeResponse:
    return store.range(rpc_pb2.RangeRequest(key=key, range_end=range_end, **fields))


def test_an_empty_store_is_at_revision_1_and_each_write_bumps_it_once():
    store = Store()
    assert store.revision == 1
    [result] = apply(store, put(b"a"))
    assert result.put.header.revision == 2
    kv = get(store, b"a").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (2, 2, 1)


def test_versions_count_puts_and_a_delete_resets_them():
    store = Store()
    apply(store, put(b"a", b"1"), put(b"a", b"2"))
    assert get(store, b"a").kvs[0].version == 2
    apply(store, delete(b"a"))
    apply(store, put(b"a", b"3"))
    kv = get(store, b"a").kvs[0]
    assert (kv.version, kv.create_revision, kv.mod_revision) == (1, 5, 5)


def test_a_txn_writing_several_keys_bumps_the_revision_once():
    store = Store()
    txn = rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"x", value=b"1")),
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"y", value=b"2")),
    ])
    [result] = apply(store, raft_pb2.Command(txn=txn))
    assert result.txn.succeeded and result.txn.header.revision == 2
    assert [kv.mod_revision for kv in get(store, b"\0", b"\0").kvs] == [2, 2]


def test_reads_of_the_past_and_compaction():
    store = Store()
    apply(store, put(b"a", b"1"), put(b"a", b"2"), delete(b"a"), put(b"b"))
    assert get(store, b"a", revision=2).kvs[0].value == b"1"
    assert get(store, b"a", revision=3).kvs[0].value == b"2"
    assert not get(store, b"a", revision=4).kvs
    [result] = apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=3)))
    assert result.HasField("compaction")
    assert get(store, b"a", revision=3).kvs[0].value == b"2"
    with pytest.raises(EtcdError) as e:
        get(store, b"a", revision=2)
    assert e.value == errors.COMPACTED
    with pytest.raises(EtcdError) as e:
        get(store, b"a", revision=99)
    assert e.value == errors.FUTURE_REV


def test_compacting_twice_or_into_the_future_fails_without_change():
    store = Store()
    apply(store, put(b"a"))
    [future] = apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=9)))
    assert future.error.message == errors.FUTURE_REV.message
    apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=2)))
    [again] = apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=2)))
    assert again.error.message == errors.COMPACTED.message
    assert store.compact_revision == 2


def test_range_options():
    store = Store()
    apply(store, *(put(k, v) for k, v in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")]))
    every = get(store, b"\0", b"\0")
    assert [kv.key for kv in every.kvs] == [b"a", b"b", b"c", b"d"]
    limited = get(store, b"a", b"d", limit=2)
    assert ([kv.key for kv in limited.kvs], limited.more, limited.count) == ([b"a", b"b"], True, 3)
    from_b = get(store, b"b", b"\0")
    assert [kv.key for kv in from_b.kvs] == [b"b", b"c", b"d"]
    by_value = get(store, b"\0", b"\0", sort_target=rpc_pb2.RangeRequest.VALUE,
                   sort_order=rpc_pb2.RangeRequest.DESCEND)
    assert [kv.value for kv in by_value.kvs] == [b"3", b"2", b"1", b"0"]
    keys_only = get(store, b"a", keys_only=True)
    assert keys_only.kvs[0].value == b"" and keys_only.kvs[0].key == b"a"
    count_only = get(store, b"\0", b"\0", count_only=True)
    assert (count_only.count, len(count_only.kvs)) == (4, 0)
    assert not get(store, b"d", b"a").kvs  # range_end before key: empty, as etcd
    newer = get(store, b"\0", b"\0", min_mod_revision=4)
    assert [kv.key for kv in newer.kvs] == [b"c", b"d"]


def test_put_options_and_their_errors():
    store = Store()
    [missing] = apply(store, put(b"a", lease=42))
    assert missing.error.message == errors.LEASE_NOT_FOUND.message
    [ignored] = apply(store, put(b"a", b"", ignore_value=True))
    assert ignored.error.message == errors.KEY_NOT_FOUND.message
    assert store.revision == 1
    apply(store, put(b"a", b"1"))
    [again] = apply(store, put(b"a", b"", ignore_value=True, prev_kv=True))
    assert again.put.prev_kv.value == b"1"
    assert get(store, b"a").kvs[0].value == b"1"


def compare(target: str, result: int, key: bytes = b"k", **value) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=key, target=getattr(rpc_pb2.Compare, target), result=result,
                           **value)


@pytest.mark.parametrize(("cmp", "expected"), [
    (compare("VALUE", rpc_pb2.Compare.EQUAL, value=b"v1"), True),
    (compare("VALUE", rpc_pb2.Compare.NOT_EQUAL, value=b"v1"), False),
    (compare("VALUE", rpc_pb2.Compare.GREATER, value=b"v0"), True),
    (compare("VALUE", rpc_pb2.Compare.LESS, value=b"v0"), False),
    (compare("VERSION", rpc_pb2.Compare.EQUAL, version=1), True),
    (compare("CREATE", rpc_pb2.Compare.EQUAL, create_revision=2), True),
    (compare("MOD", rpc_pb2.Compare.LESS, mod_revision=3), True),
    (compare("LEASE", rpc_pb2.Compare.EQUAL, lease=0), True),
    (compare("VERSION", rpc_pb2.Compare.EQUAL, key=b"missing", version=0), True),
    (compare("VALUE", rpc_pb2.Compare.EQUAL, key=b"missing", value=b""), False),
])
def test_txn_compares(cmp, expected):
    store = Store()
    apply(store, put(b"k", b"v1"))
    txn = rpc_pb2.TxnRequest(compare=[cmp], success=[rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(key=b"k"))])
    [result] = apply(store, raft_pb2.Command(txn=txn))
    assert result.txn.succeeded is expected
    assert len(result.txn.responses) == (1 if expected else 0)


def test_a_failing_check_in_a_txn_applies_nothing():
    store = Store()
    txn = rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a", value=b"1")),
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"b", lease=5)),
    ])
    [result] = apply(store, raft_pb2.Command(txn=txn))
    assert result.error.message == errors.LEASE_NOT_FOUND.message
    assert store.revision == 1 and not get(store, b"a").kvs


def test_reads_in_a_txn_see_its_earlier_writes():
    store = Store()
    txn = rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a", value=b"1")),
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a")),
    ])
    [result] = apply(store, raft_pb2.Command(txn=txn))
    assert result.txn.responses[1].response_range.kvs[0].value == b"1"


def test_leases_own_keys_and_revoking_deletes_them_in_one_revision():
    store = Store()
    apply(store, raft_pb2.Command(lease_grant=rpc_pb2.LeaseGrantRequest(ID=9, TTL=10)))
    apply(store, put(b"a", lease=9), put(b"b", lease=9), put(b"c"))
    assert store.lease(9).keys == {b"a", b"b"}
    [result] = apply(store, raft_pb2.Command(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=9)))
    assert result.lease_revoke.header.revision == 5
    assert [kv.key for kv in get(store, b"\0", b"\0").kvs] == [b"c"]
    [events] = store.events_since(5, max_revisions=10)
    assert [(kv.key, kv.version) for kv, _ in events.changes] == [(b"a", 0), (b"b", 0)]
    [again] = apply(store, raft_pb2.Command(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=9)))
    assert again.error.message == errors.LEASE_NOT_FOUND.message
    [alive] = apply(store, raft_pb2.Command(
        lease_keep_alive=rpc_pb2.LeaseKeepAliveRequest(ID=9)))
    assert alive.lease_keep_alive.TTL == 0


def test_a_retried_command_is_applied_once():
    store = Store()
    command = put(b"a")
    command.id = 1234
    [first] = apply(store, command, origin=5)
    [second] = apply(store, command, origin=5)
    assert store.revision == 2
    assert first == second
    [other_origin] = apply(store, command, origin=6)
    assert other_origin.put.header.revision == 3


def test_a_retry_older_than_the_remembered_results_fails_and_is_not_applied(monkeypatch):
    monkeypatch.setattr(mvcc, "RESULT_CACHE_SIZE", 3)
    store = Store()
    first = put(b"a")
    first.id = 1
    apply(store, first, origin=5)
    for i in range(2, 6):  # pushes the first result out
        apply(store, raft_pb2.Command(id=i, put=rpc_pb2.PutRequest(key=b"b")), origin=5)
    revision = store.revision
    [retried] = apply(store, first, origin=5)
    assert retried.error.message == errors.TIMEOUT_LEADER_FAIL.message
    assert (retried.origin, retried.id) == (5, 1)
    assert store.revision == revision and get(store, b"a").kvs[0].version == 1
    [newer] = apply(store, raft_pb2.Command(id=6, put=rpc_pb2.PutRequest(key=b"a")), origin=5)
    assert newer.put.header.revision == revision + 1
    [other] = apply(store, raft_pb2.Command(id=1, put=rpc_pb2.PutRequest(key=b"a")), origin=9)
    assert other.WhichOneof("outcome") == "put"

    restored = Store()
    restored.restore(store.snapshot())
    assert restored.snapshot() == store.snapshot()
    [again] = apply(restored, first, origin=5)
    assert again.error.message == errors.TIMEOUT_LEADER_FAIL.message


def test_events_carry_previous_values_and_history_starts_at_the_compaction():
    store = Store()
    apply(store, put(b"a", b"1"), put(b"a", b"2"), delete(b"a"))
    events = store.events_since(2, max_revisions=10)
    assert [e.revision for e in events] == [2, 3, 4]
    (kv, prev), = events[1].changes
    assert (kv.value, prev.value) == (b"2", b"1")
    (tomb, prev), = events[2].changes
    assert (tomb.version, tomb.mod_revision, prev.value) == (0, 4, b"2")
    apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=3)))
    assert [e.revision for e in store.events_since(3, max_revisions=10)] == [3, 4]
    with pytest.raises(EtcdError):
        store.events_since(2, max_revisions=10)


_keys = st.sampled_from([b"a", b"b", b"c", b"d", b"e"])
_commands = st.one_of(
    st.builds(lambda k, v: put(k, v), _keys, st.binary(max_size=3)),
    st.builds(lambda k: delete(k), _keys),
    st.builds(lambda k, e: delete(k, e), _keys, st.sampled_from([b"c", b"\0", b"z"])),
    st.builds(lambda r: raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=r)),
              st.integers(1, 30)),
    st.builds(lambda i: raft_pb2.Command(lease_grant=rpc_pb2.LeaseGrantRequest(ID=i, TTL=5)),
              st.integers(1, 3)),
    st.builds(lambda k, i: put(k, lease=i), _keys, st.integers(1, 3)),
    st.builds(lambda i: raft_pb2.Command(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=i)),
              st.integers(1, 3)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_commands, max_size=40), st.integers(0, 40))
def test_a_restored_snapshot_equals_the_original_and_replays_identically(commands, cut):
    original = Store()
    for i, command in enumerate(commands[:cut]):
        command.id = i + 1
        apply(original, command)
    restored = Store()
    restored.restore(original.snapshot())
    assert restored.snapshot() == original.snapshot()
    assert restored.hash_kv(0) == original.hash_kv(0)
    for i, command in enumerate(commands[cut:]):
        command.id = cut + i + 1
        assert apply(original, command) == apply(restored, command)
    assert restored.hash_kv(0) == original.hash_kv(0)
    start = max(original.compact_revision, 2)
    assert ([(e.revision, e.changes) for e in original.events_since(start, max_revisions=999)]
            == [(e.revision, e.changes) for e in restored.events_since(start, max_revisions=999)])


def test_hash_is_over_history_up_to_a_revision():
    a, b = Store(), Store()
    apply(a, put(b"k", b"1"))
    apply(b, put(b"k", b"1"), put(b"k", b"2"))
    assert a.hash_kv(2) == b.hash_kv(2)
    assert a.hash_kv(0) != b.hash_kv(0)


def test_an_image_stays_the_state_it_was_taken_at_while_the_store_moves_on(monkeypatch):
    monkeypatch.setattr(mvcc, "RESULT_CACHE_SIZE", 7)  # results are forgotten meanwhile
    store = Store()
    for i in range(60):
        apply(store, put(b"k%02d" % (i % 20), b"%d" % i))
    apply(store, delete(b"k03"))
    before = store.snapshot()
    image = store.image()
    for i in range(60):
        apply(store, put(b"k%02d" % (i % 25), b"later"))
    apply(store, delete(b"k04"))
    apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=store.revision)))
    assert image.to_bytes() == before
    assert store.snapshot() != before


def test_a_snapshot_framed_in_pieces_is_the_message_protobuf_would_build():
    store = Store()
    apply(store, raft_pb2.Command(lease_grant=rpc_pb2.LeaseGrantRequest(ID=9, TTL=30)))
    for i in range(700):
        apply(store, put(b"k%03d" % (i % 300), b"v" * (i % 200), lease=9 if i % 7 else 0))
    apply(store, delete(b"k010"))
    apply(store, raft_pb2.Command(member_publish=rpc_pb2.Member(ID=3, name="s0")))
    image = store.image()
    expected = raft_pb2.Snapshot(
        revision=image.revision, compact_revision=image.compact_revision,
        applied_batches=image.applied_batches, members=image.members, results=image.results,
        leases=[raft_pb2.LeaseState(id=i, ttl=t) for i, t in image.leases])
    for history, length in zip(image.histories, image.lengths, strict=True):
        expected.keys.add().revisions.extend(history[:length])
    assert len(list(image.chunks(keys_per_chunk=64))) > 5
    assert raft_pb2.Snapshot.FromString(b"".join(image.chunks(keys_per_chunk=64))) == expected
