"""Applying a command is all or nothing (services/store/mvcc.py).

A failure injected at every step of staging a command (every call into the store's
methods, the module's helpers and the protobuf constructors it uses, on entry and on
return) must leave the whole state as it was: revision, every key's history (the same
list objects, as images rely on), the key index, leases and their keys, the watch
history, remembered results. So must a refusal etcd answers with an error. And a
failure is never answered as a result: :class:`ApplyFailed` tells the replica to stop.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from services.store import errors, mvcc
from services.store.mvcc import ApplyFailed, Store
from skiff.store.v1 import raft_pb2, rpc_pb2

_ids = itertools.count(1)


def apply(store: Store, *commands: raft_pb2.Command) -> list[raft_pb2.Result]:
    for command in commands:
        command.id = next(_ids)
    return store.apply_batch(raft_pb2.Batch(origin=7, commands=commands))


def put(key: bytes, value: bytes = b"v", **fields: Any) -> raft_pb2.Command:
    return raft_pb2.Command(put=rpc_pb2.PutRequest(key=key, value=value, **fields))


def put_op(key: bytes, value: bytes = b"v", **fields: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, **fields))


def grant(lease_id: int) -> raft_pb2.Command:
    return raft_pb2.Command(lease_grant=rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=60))


def revoke(lease_id: int) -> raft_pb2.Command:
    return raft_pb2.Command(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))


def state(store: Store) -> dict[str, Any]:
    """Everything a command may change, as values (KeyValues and Results compare by value)."""
    return {
        "revision": store.revision,
        "compact_revision": store.compact_revision,
        "history": {key: list(history) for key, history in store._history.items()},
        "keys": list(store._keys),
        "dirty": set(store._dirty),
        "leases": {i: (lease.ttl, set(lease.keys)) for i, lease in store._leases.items()},
        "events": [(e.revision, list(e.changes)) for e in store._log],
        "results": dict(store._results),
        "result_order": list(store._result_order[store._oldest:]),
        "forgotten": dict(store._forgotten),
        "members": dict(store.members),
        "snapshot": store.snapshot(),
    }


def populated() -> Store:
    """A store with history, tombstones, two leases with keys, results and a compaction."""
    store = Store()
    apply(store, grant(1), grant(2))
    apply(store, put(b"a", b"1"), put(b"a", b"2", lease=1), put(b"b", b"1", lease=1),
          put(b"c", b"1"), put(b"d", b"1", lease=2), put(b"e", b"1"))
    apply(store, raft_pb2.Command(delete_range=rpc_pb2.DeleteRangeRequest(key=b"e")))
    apply(store, put(b"e", b"2"), put(b"f", b"1"))
    apply(store, raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=4)))
    apply(store, raft_pb2.Command(member_publish=rpc_pb2.Member(ID=3, name="s0")))
    return store


class Injected(Exception):
    """The failure the tests inject: what a bug in the store would raise."""


class Faults:
    """Counts the steps of staging a command, and raises :class:`Injected` at one of them.

    A step is the entry into, or the return from, any wrapped callable while the store
    is inside ``Store._stage``, the part of applying that must change nothing.
    """

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps = 0
        self.staging = False
        self.fired = False

    def step(self, where: str) -> None:
        if self.staging and not self.fired:
            self.steps += 1
            if self.steps == self.at:
                self.fired = True
                raise Injected(f"step {self.at}: {where}")

    def wrap(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.step(f"calling {name}")
            result = target(*args, **kwargs)
            self.step(f"{name} returned")
            return result
        return wrapper

    def stage(self, target: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.staging = True
            try:
                self.step("staging")
                result = target(*args, **kwargs)
                self.step("staged")
                return result
            finally:
                self.staging = False
        return wrapper

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, member in list(vars(Store).items()):
            if callable(member) and not name.startswith("__") and name != "_stage":
                monkeypatch.setattr(Store, name, self.wrap(f"Store.{name}", member))
        monkeypatch.setattr(Store, "_stage", self.stage(Store._stage))
        for name in ("KeyValue", "Lease", "RevisionEvents", "_TxnPlan", "compare_holds",
                     "partial", "bisect_left", "bisect_right", "_change_key", "_in_range",
                     "_passes_filters", "_error_result"):
            monkeypatch.setattr(mvcc, name, self.wrap(name, getattr(mvcc, name)))
        for module in ("rpc_pb2", "raft_pb2"):  # every message the store builds
            real = getattr(mvcc, module)
            proxy = SimpleNamespace(**{
                name: self.wrap(f"{module}.{name}", message)
                for name, message in vars(real).items()
                if isinstance(message, type) and hasattr(message, "DESCRIPTOR")})
            monkeypatch.setattr(mvcc, module, proxy)


def assert_all_or_nothing(monkeypatch: pytest.MonkeyPatch, setup: Callable[[], Store],
                          command: raft_pb2.Command, check: Callable[[Store], None]) -> int:
    """Fail staging ``command`` at each of its steps in turn; returns how many there were.

    Each failure must raise ApplyFailed and leave the state exactly as before. The
    command then applied without failures must pass ``check`` (so the comparison above
    was one that could have failed).
    """
    for at in itertools.count(1):
        store = setup()
        lists = dict(store._history)
        before = state(store)
        faults = Faults(at)
        with monkeypatch.context() as patch:
            faults.install(patch)
            try:
                [result] = apply(store, command)
            except ApplyFailed as failure:
                assert isinstance(failure.__cause__, Injected)
                assert (failure.index, failure.command) == (0, command)
            else:
                assert not faults.fired, f"step {at} failed and was answered: {result}"
        if not faults.fired:  # every step has failed once: the command is through
            check(store)
            assert state(store) != before
            return at - 1
        assert state(store) == before, f"{faults.at} of {command} left changes"
        # History lists are the same objects, not copies (Store.image relies on them).
        assert all(store._history[key] is history for key, history in lists.items())
    raise AssertionError("unreachable")


def test_a_put_that_moves_a_key_to_another_lease(monkeypatch):
    def check(store: Store) -> None:
        assert store.range(rpc_pb2.RangeRequest(key=b"a")).kvs[0].value == b"new"
        assert (store.lease(1).keys, store.lease(2).keys) == ({b"b"}, {b"a", b"d"})

    steps = assert_all_or_nothing(monkeypatch, populated,
                                  put(b"a", b"new", lease=2, prev_kv=True), check)
    assert steps >= 12


def test_a_put_of_a_new_key(monkeypatch):
    def check(store: Store) -> None:
        assert store.range(rpc_pb2.RangeRequest(key=b"new")).kvs[0].create_revision == 11

    assert assert_all_or_nothing(monkeypatch, populated, put(b"new", lease=1), check) >= 12


def test_a_txn_with_several_ops(monkeypatch):
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"c", target=rpc_pb2.Compare.VERSION,
                                 result=rpc_pb2.Compare.EQUAL, version=1)],
        success=[
            put_op(b"a", b"t", lease=2),
            rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
                key=b"b", range_end=b"d", prev_kv=True)),
            put_op(b"n", b"t"),
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a", range_end=b"z")),
            rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[put_op(b"o", b"t")])),
        ])

    def check(store: Store) -> None:
        [events] = store.events_since(store.revision, max_revisions=1)
        assert [(kv.key, kv.version) for kv, _ in events.changes] == [
            (b"a", 3), (b"b", 0), (b"c", 0), (b"n", 1), (b"o", 1)]
        assert (store.lease(1).keys, store.lease(2).keys) == (set(), {b"a", b"d"})

    steps = assert_all_or_nothing(monkeypatch, populated, raft_pb2.Command(txn=txn), check)
    assert steps >= 100


def test_a_delete_range_over_leased_and_tombstoned_keys(monkeypatch):
    command = raft_pb2.Command(delete_range=rpc_pb2.DeleteRangeRequest(
        key=b"a", range_end=b"\0", prev_kv=True))

    def check(store: Store) -> None:
        assert not store.range(rpc_pb2.RangeRequest(key=b"a", range_end=b"\0")).kvs
        assert (store.lease(1).keys, store.lease(2).keys) == (set(), set())

    assert assert_all_or_nothing(monkeypatch, populated, command, check) >= 50


def test_a_lease_revoke_with_attached_keys(monkeypatch):
    def check(store: Store) -> None:
        assert store.lease(1) is None
        assert [kv.key for kv in store.range(
            rpc_pb2.RangeRequest(key=b"a", range_end=b"\0")).kvs] == [b"c", b"d", b"e", b"f"]

    assert assert_all_or_nothing(monkeypatch, populated, revoke(1), check) >= 20


@pytest.mark.parametrize("command", [
    raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=6)),
    grant(3),
    raft_pb2.Command(member_publish=rpc_pb2.Member(ID=4, name="s1")),
], ids=["compaction", "lease_grant", "member_publish"])
def test_every_other_kind_of_command(monkeypatch, command):
    assert assert_all_or_nothing(monkeypatch, populated, command, lambda store: None) >= 6


@pytest.mark.parametrize(("command", "error"), [
    (put(b"a", lease=99), errors.LEASE_NOT_FOUND),
    (put(b"gone", ignore_value=True), errors.KEY_NOT_FOUND),
    (raft_pb2.Command(txn=rpc_pb2.TxnRequest(success=[
        put_op(b"a", b"t"),
        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"c")),
        rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[put_op(b"x", lease=99)])),
    ])), errors.LEASE_NOT_FOUND),
    (raft_pb2.Command(txn=rpc_pb2.TxnRequest(success=[
        put_op(b"a", b"t"),
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a", revision=2)),
    ])), errors.COMPACTED),
    (revoke(99), errors.LEASE_NOT_FOUND),
    (grant(1), errors.LEASE_EXIST),
    (raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=99)), errors.FUTURE_REV),
    (raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=3)), errors.COMPACTED),
], ids=["put-lease", "put-ignore-value", "txn-nested-lease", "txn-compacted-read",
        "revoke", "grant", "compact-future", "compact-compacted"])
def test_a_refused_command_leaves_nothing_but_its_result(command, error):
    store = populated()
    before = state(store)
    [result] = apply(store, command)
    assert (result.error.code, result.error.message) == (error.code.value[0], error.message)
    after = state(store)
    assert store._results[(7, command.id)] == result
    assert after.pop("result_order") == [*before.pop("result_order"), result]
    for changed in ("results", "snapshot"):
        after.pop(changed), before.pop(changed)
    assert after == before


def test_a_refused_command_in_a_batch_leaves_the_commands_around_it_alone():
    refused = raft_pb2.Command(txn=rpc_pb2.TxnRequest(success=[
        put_op(b"x", b"t"), put_op(b"y", lease=99)]))
    store, reference = populated(), populated()
    first, refusal, last = apply(store, put(b"a", b"before"), refused, put(b"b", b"after"))
    apply(reference, put(b"a", b"before"))
    apply(reference, put(b"b", b"after"))
    assert refusal.error.message == errors.LEASE_NOT_FOUND.message
    assert (first.put.header.revision, last.put.header.revision) == (11, 12)
    ours, theirs = state(store), state(reference)
    for differs in ("results", "result_order", "snapshot"):  # their ids and the refusal
        ours.pop(differs), theirs.pop(differs)
    assert ours == theirs


def test_a_failing_command_in_a_batch_stops_it_there_and_leaves_nothing(monkeypatch):
    store, reference = populated(), populated()
    apply(reference, put(b"a", b"before"))
    expected = state(reference)

    def fail_on_c(self: Store, request: rpc_pb2.PutRequest, rev: int, writes: dict) -> Any:
        if request.key == b"c":
            raise Injected("a bug")
        return put_(self, request, rev, writes)

    put_ = Store._put
    monkeypatch.setattr(Store, "_put", fail_on_c)
    batch = [put(b"a", b"before"), put(b"c", b"bug"), put(b"b", b"after")]
    with pytest.raises(ApplyFailed) as failure:
        apply(store, *batch)
    assert (failure.value.index, failure.value.command) == (1, batch[1])
    assert (failure.value.origin, failure.value.id) == (7, batch[1].id)
    assert "put" in str(failure.value)
    # The command before it is applied; the failing one and those after it are not.
    ours = state(store)
    for differs in ("results", "result_order", "snapshot"):  # ids differ
        ours.pop(differs), expected.pop(differs)
    assert ours == expected
    assert (1, batch[2].id) not in store._results


@pytest.mark.parametrize("where", ["_commit_writes", "_remember"])
def test_a_failure_while_committing_is_not_answered_either(monkeypatch, where):
    """Committing is appends and assignments; should one fail all the same (memory ran
    out), the store cannot vouch for its state, and the replica must stop."""
    store = populated()

    def out_of_memory(*args: Any) -> None:
        raise MemoryError

    monkeypatch.setattr(Store, where, out_of_memory)
    with pytest.raises(ApplyFailed) as failure:
        apply(store, put(b"a", b"x"))
    assert isinstance(failure.value.__cause__, MemoryError)


def test_a_command_this_version_does_not_know_stops_the_replica():
    with pytest.raises(ApplyFailed) as failure:
        apply(Store(), raft_pb2.Command())
    assert "unknown command" in str(failure.value.__cause__)


def test_writes_to_one_key_in_one_txn_make_one_entry_and_one_event():
    """A request validated at the edge never writes a key twice in a Txn (etcd refuses
    it), but the state machine stays coherent if a log holds one: the key's last write
    is its one entry of the revision, and a key created and deleted leaves nothing."""
    store = populated()
    txn = rpc_pb2.TxnRequest(success=[
        put_op(b"a", b"1"), put_op(b"a", b"2"),
        put_op(b"temp"), rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
            key=b"temp")),
        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"c")),
        put_op(b"c", b"again"),
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a", range_end=b"\0")),
    ])
    [result] = apply(store, raft_pb2.Command(txn=txn))
    read = result.txn.responses[-1].response_range
    assert [(kv.key, kv.value) for kv in read.kvs] == [
        (b"a", b"2"), (b"b", b"1"), (b"c", b"again"), (b"d", b"1"), (b"e", b"2"), (b"f", b"1")]
    [events] = store.events_since(11, max_revisions=1)
    assert [(kv.key, kv.value, kv.version, prev.version) for kv, prev in events.changes] == [
        (b"a", b"2", 4, 2), (b"c", b"again", 1, 1)]
    assert b"temp" not in store._history
    assert [kv.mod_revision for kv in store._history[b"a"]][-2:] == [3, 11]
