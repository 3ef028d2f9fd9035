"""The store's state machine: etcd's multi-version key-value model.

Every replica applies the same batches in the same order and must end in the same
state, so nothing here reads a clock, draws a random number or does I/O; what depends
on time (a lease's expiry, when to auto-compact) arrives already decided, as a command.

The model is etcd's:

- One global ``revision``; every write transaction that changes something bumps it
  exactly once, however many keys it touches. An empty store is at revision 1.
- Per key: ``create_revision``, ``mod_revision`` and ``version`` (1 on creation, +1 per
  put, reset by a deletion).
- History: every revision of every key is kept until compacted, so a read may ask for
  an older revision and a watcher may start in the past. A deletion is kept as a
  tombstone (a KeyValue with ``version == 0``).
- ``compact_revision``: reads below it fail with "compacted"; compaction keeps, per
  key, the newest entry at or below it, so the store as of that revision stays readable.
- Leases own keys; revoking one deletes its keys in one revision.

A command is applied all or nothing, in two steps. Staging computes everything it
changes (its entries, each key's entry before it, its result) from the state as it is
and writes none of it; an error etcd answers with (a lease not found, a revision
compacted) is raised while staging, so it leaves nothing but the command's remembered
result. Committing then writes what was staged, by appends and assignments alone. A
replica that cannot apply a committed command at all (a bug) stops: see
:class:`ApplyFailed`.

Invariants:

- ``_keys`` holds exactly the keys of ``_history``, sorted.
- ``_log`` holds one :class:`RevisionEvents` per revision in
  ``[max(compact_revision, 2), revision]``, ascending and contiguous: the watch history.
  Within a revision, changes are sorted by key (etcd orders them by operation; keys in
  one revision are unique, so sorting keeps replicas identical after a snapshot restore).
- A key is in ``_dirty`` when compaction may have work on it (more than one entry, or a
  tombstone); other keys hold a single live entry and are skipped.
- A key's history list is only ever appended to: compaction replaces it with a new
  list. So a list and its length at one moment are that key's history at that moment,
  whatever happens to the store later (what :meth:`Store.image` relies on). The order
  of remembered results is kept the same way.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import Any

from sortedcontainers import SortedList

from services.store import errors
from services.store.errors import EtcdError
from skiff.store.v1 import kv_pb2, raft_pb2, rpc_pb2

KeyValue = kv_pb2.KeyValue
Compare = rpc_pb2.Compare
RangeRequest = rpc_pb2.RangeRequest

#: How many command results are remembered so that a retried command is applied once.
RESULT_CACHE_SIZE = 20_000
#: How many origins' forgotten-result marks are kept (one origin per replica process
#: that ever proposed: a few per restart).
FORGOTTEN_ORIGINS = 4096

_mod_revision = attrgetter("mod_revision")

#: One command's staged writes, all at its revision: key -> (the key's new entry, a
#: value or a tombstone; its live entry before the command, or None). One entry per key,
#: so the keys of a revision's events are unique.
_Writes = dict[bytes, tuple[KeyValue, KeyValue | None]]
#: Makes a staged command's changes part of the store: appends and assignments only.
_Commit = Callable[[], None]


class ApplyFailed(Exception):
    """A committed command this replica could not apply: a bug, or memory ran out.

    etcd panics then, and so does a replica (services/store/raft_node.py stops the process):
    its peers applied the command, or failed on it in a way that need not be this one,
    so going on could leave it with a state they do not have. Answering the failure as
    the command's result instead would be safe only if every replica were sure to fail
    the same way, which nothing assures for a bug (a set's order differs between
    processes, memory and stack depth between hosts). Restarted, the replica replays the
    command from its journal and either applies it (the failure was its own) or stops
    again, loudly, until the bug is fixed.

    The store holds every command before the failing one and nothing of the failing one
    (staging writes nothing), unless committing it failed, which takes running out of
    memory; either way the store is not to be applied to again.
    """

    def __init__(self, command: raft_pb2.Command, key: tuple[int, int], index: int) -> None:
        self.command = command
        self.origin, self.id = key
        self.index = index
        super().__init__(f"cannot apply command {index} of a batch: "
                         f"{command.WhichOneof('op')} (origin {key[0]}, id {key[1]})")


@dataclass(slots=True)
class Lease:
    """A granted lease: its TTL in seconds and the keys attached to it."""

    ttl: int
    keys: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class RevisionEvents:
    """What one revision changed: (new kv or tombstone, previous live kv or None) per key."""

    revision: int
    changes: list[tuple[KeyValue, KeyValue | None]]


def compare_holds(compare: Compare, kv: KeyValue) -> bool:
    """Whether ``kv`` satisfies one Txn comparison (a pure function, as etcd's compareKV)."""
    target = compare.target
    if target == Compare.VALUE:
        ours, theirs = kv.value, compare.value
    elif target == Compare.VERSION:
        ours, theirs = kv.version, compare.version
    elif target == Compare.CREATE:
        ours, theirs = kv.create_revision, compare.create_revision
    elif target == Compare.MOD:
        ours, theirs = kv.mod_revision, compare.mod_revision
    else:
        ours, theirs = kv.lease, compare.lease
    result = compare.result
    if result == Compare.EQUAL:
        return ours == theirs
    if result == Compare.NOT_EQUAL:
        return ours != theirs
    if result == Compare.GREATER:
        return ours > theirs
    return ours < theirs


_SORT_KEYS = {
    RangeRequest.KEY: attrgetter("key"),
    RangeRequest.VERSION: attrgetter("version"),
    RangeRequest.CREATE: attrgetter("create_revision"),
    RangeRequest.MOD: attrgetter("mod_revision"),
    RangeRequest.VALUE: attrgetter("value"),
}


@dataclass(slots=True)
class _TxnPlan:
    """Which branch a Txn (and each Txn nested in it) takes, decided before any write."""

    succeeded: bool
    nested: list[_TxnPlan]


class Store:
    """The MVCC state of one replica. Not thread-safe: the replica serialises access."""

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self.applied_batches = 0
        self.members: dict[int, rpc_pb2.Member] = {}
        self._history: dict[bytes, list[KeyValue]] = {}
        self._keys: SortedList = SortedList()
        self._dirty: set[bytes] = set()
        self._leases: dict[int, Lease] = {}
        self._log: list[RevisionEvents] = []
        self._results: dict[tuple[int, int], raft_pb2.Result] = {}
        #: The remembered results in the order applied, from ``_oldest`` on. Only ever
        #: appended to (dropping its dead front replaces the list), so a dump can take
        #: the list and two indexes instead of a copy.
        self._result_order: list[raft_pb2.Result] = []
        self._oldest = 0
        #: origin -> the highest command id whose result was dropped from ``_results``.
        self._forgotten: OrderedDict[int, int] = OrderedDict()

    # ------------------------------------------------------------------ apply

    def apply_batch(self, batch: raft_pb2.Batch) -> list[raft_pb2.Result]:
        """Apply every command of a batch in order; returns one Result per command.

        A command whose (origin, id) was applied before is not applied again: its
        remembered result is returned, so a proposer may retry freely. A retry older
        than the remembered results (an origin proposes its ids in increasing order)
        may have been applied and cannot be answered: it fails as etcd fails a request
        lost to a leader change, without being applied. A command's origin is its own
        when the leader proposed it for another replica, else the batch's.

        Each command is all or nothing (see :meth:`_apply_command`); one that etcd
        refuses (a lease not found, a compacted revision) changes nothing but the
        result remembered for it, and the commands around it apply as if it were not
        there. An unexpected exception raises :class:`ApplyFailed`: the commands
        before it are applied, the failing one is not, and the caller must stop.
        """
        results = []
        for index, command in enumerate(batch.commands):
            key = (command.origin or batch.origin, command.id)
            result = self._results.get(key)
            if result is None:
                try:
                    result = self._apply_command(command, key)
                except Exception as e:  # a bug, or out of memory: see ApplyFailed
                    raise ApplyFailed(command, key, index) from e
            results.append(result)
        self.applied_batches += 1
        return results

    def _apply_command(self, command: raft_pb2.Command, key: tuple[int, int]) -> raft_pb2.Result:
        """Stage the command on the state as it is, then commit what it staged.

        Staging (:meth:`_stage`) reads the store and writes nothing to it: every
        change the command makes (history entries, the key index, lease attachments,
        the revision's watch events) is collected apart, and an etcd error raised while
        staging simply drops them. Committing is plain appends and assignments, and
        remembering the result is its last step.
        """
        if command.id <= self._forgotten.get(key[0], 0):
            result = _error_result(errors.TIMEOUT_LEADER_FAIL)
            result.origin, result.id = key
            return result
        try:
            result, commit = self._stage(command)
        except EtcdError as e:
            result, commit = _error_result(e), None
        result.origin, result.id = key
        if commit is not None:
            commit()
        self._remember(key, result)
        return result

    def _remember(self, key: tuple[int, int], result: raft_pb2.Result) -> None:
        self._results[key] = result
        self._result_order.append(result)
        if len(self._results) > RESULT_CACHE_SIZE:
            oldest = self._result_order[self._oldest]
            self._oldest += 1
            if self._oldest >= RESULT_CACHE_SIZE:
                self._result_order = self._result_order[self._oldest:]
                self._oldest = 0
            origin, command_id = oldest.origin, oldest.id
            del self._results[(origin, command_id)]
            if command_id > self._forgotten.get(origin, 0):
                self._forgotten[origin] = command_id
                self._forgotten.move_to_end(origin)
                if len(self._forgotten) > FORGOTTEN_ORIGINS:
                    self._forgotten.popitem(last=False)

    def _stage(self, command: raft_pb2.Command) -> tuple[raft_pb2.Result, _Commit | None]:
        """The command's result and what commits its changes (None: it changes nothing)."""
        op = command.WhichOneof("op")
        if op == "put":  # the hot path: _stage_write without the indirection
            rev = self.revision + 1
            writes: _Writes = {}
            put = self._put(command.put, rev, writes)
            put.header.revision = rev
            return raft_pb2.Result(put=put), partial(self._commit_writes, rev, writes)
        if op == "delete_range":
            deleted, commit = self._stage_write(self._delete_range, command.delete_range)
            return raft_pb2.Result(delete_range=deleted), commit
        if op == "txn":
            txn, commit = self._stage_txn(command.txn)
            return raft_pb2.Result(txn=txn), commit
        if op == "compaction":
            compacted, commit = self._stage_compaction(command.compaction)
            return raft_pb2.Result(compaction=compacted), commit
        if op == "lease_grant":
            granted, commit = self._stage_lease_grant(command.lease_grant)
            return raft_pb2.Result(lease_grant=granted), commit
        if op == "lease_revoke":
            revoked, commit = self._stage_lease_revoke(command.lease_revoke)
            return raft_pb2.Result(lease_revoke=revoked), commit
        if op == "lease_keep_alive":
            return raft_pb2.Result(
                lease_keep_alive=self._lease_keep_alive(command.lease_keep_alive)), None
        if op == "member_publish":
            member = command.member_publish
            return (raft_pb2.Result(member_publish=rpc_pb2.MemberListResponse()),
                    partial(self.members.__setitem__, member.ID, member))
        # A command this version does not know (one from a newer version, say) may have
        # changed its peers' state: going on without it would be diverging from them.
        raise ValueError(f"unknown command {op!r}")

    def _stage_write(self, operation: Callable[[Any, int, _Writes], Any],
                     request: Any) -> tuple[Any, _Commit | None]:
        """Stage one write operation at the next revision."""
        rev = self.revision + 1
        writes: _Writes = {}
        response = operation(request, rev, writes)
        if not writes:  # nothing changed (a delete of absent keys): no new revision
            response.header.revision = self.revision
            return response, None
        response.header.revision = rev
        return response, partial(self._commit_writes, rev, writes)

    def _commit_writes(self, rev: int, writes: _Writes) -> None:
        """Make one revision's staged writes part of the store: history, index, leases, events."""
        histories = self._history
        changes = []
        for key, change in writes.items():
            kv, before = change
            history = histories.get(key)
            if history is None:
                histories[key] = [kv]
                self._keys.add(key)
            else:
                history.append(kv)
                self._dirty.add(key)
            if before is not None and before.lease and before.lease != kv.lease:
                self._detach(before.lease, key)
            if kv.lease:
                self._leases[kv.lease].keys.add(key)
            changes.append(change)
        if len(changes) > 1:
            changes.sort(key=_change_key)
        self.revision = rev
        self._log.append(RevisionEvents(rev, changes))

    def _latest(self, key: bytes) -> KeyValue | None:
        history = self._history.get(key)
        if history and history[-1].version:
            return history[-1]
        return None

    def _staged(self, key: bytes, writes: _Writes) -> tuple[KeyValue | None, KeyValue | None]:
        """``key``'s live entry as the command has left it so far, and before the command."""
        change = writes.get(key)
        if change is None:
            latest = self._latest(key)
            return latest, latest
        kv, before = change
        return (kv if kv.version else None), before

    def _check_put(self, request: rpc_pb2.PutRequest, prev: KeyValue | None) -> None:
        if (request.ignore_value or request.ignore_lease) and prev is None:
            raise errors.KEY_NOT_FOUND
        if request.lease and not request.ignore_lease and request.lease not in self._leases:
            raise errors.LEASE_NOT_FOUND

    def _put(self, request: rpc_pb2.PutRequest, rev: int,
             writes: _Writes) -> rpc_pb2.PutResponse:
        key = request.key
        change = writes.get(key)
        if change is None:  # as _staged, inlined on the hot path
            history = self._history.get(key)
            prev = before = history[-1] if history and history[-1].version else None
        else:
            prev, before = change
            if not prev.version:
                prev = None
        if request.lease or request.ignore_value or request.ignore_lease:
            self._check_put(request, prev)
        kv = KeyValue(
            key=key, mod_revision=rev,
            value=prev.value if request.ignore_value else request.value,
            lease=prev.lease if request.ignore_lease else request.lease,
            create_revision=prev.create_revision if prev else rev,
            version=prev.version + 1 if prev else 1,
        )
        writes[key] = (kv, before)
        response = rpc_pb2.PutResponse()
        if request.prev_kv and prev is not None:
            response.prev_kv.CopyFrom(prev)
        return response

    def _delete_range(self, request: rpc_pb2.DeleteRangeRequest, rev: int,
                      writes: _Writes) -> rpc_pb2.DeleteRangeResponse:
        response = rpc_pb2.DeleteRangeResponse()
        for key in self._staged_keys(request.key, request.range_end, writes):
            prev = self._delete_key(key, rev, writes)
            if prev is not None:
                response.deleted += 1
                if request.prev_kv:
                    response.prev_kvs.append(prev)
        return response

    def _delete_key(self, key: bytes, rev: int, writes: _Writes) -> KeyValue | None:
        """Stage a tombstone for ``key`` at ``rev`` if it is live; returns what it held."""
        prev, before = self._staged(key, writes)
        if prev is None:
            return None
        if before is None:  # created by this very command: as if it had never been
            del writes[key]
        else:
            writes[key] = (KeyValue(key=key, mod_revision=rev), before)
        return prev

    def _staged_keys(self, key: bytes, range_end: bytes, writes: _Writes) -> list[bytes]:
        """The keys in etcd's range as the command has left them so far, sorted."""
        keys = list(self.iter_keys(key, range_end))
        created = [k for k in writes if k not in self._history and _in_range(k, key, range_end)]
        return sorted(keys + created) if created else keys

    def _detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # -------------------------------------------------------------------- txn

    def _stage_txn(self, request: rpc_pb2.TxnRequest) -> tuple[rpc_pb2.TxnResponse,
                                                               _Commit | None]:
        # Branches and request checks are decided on the state before the Txn, as
        # etcd does.
        plan = self._plan_txn(request)
        return self._stage_write(
            lambda req, rev, writes: self._run_txn(req, plan, rev, writes), request)

    def read_txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Answer a Txn that writes nothing from this replica's state, without a revision."""
        plan = self._plan_txn(request)
        response = self._run_txn(request, plan, self.revision, {})
        response.header.revision = self.revision
        return response

    def _plan_txn(self, request: rpc_pb2.TxnRequest) -> _TxnPlan:
        succeeded = all(self._compare(c) for c in request.compare)
        nested = []
        for op in request.success if succeeded else request.failure:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                self._check_put(op.request_put, self._latest(op.request_put.key))
            elif kind == "request_range":
                self._read_revision(op.request_range.revision)
            elif kind == "request_txn":
                nested.append(self._plan_txn(op.request_txn))
        return _TxnPlan(succeeded, nested)

    def _compare(self, compare: Compare) -> bool:
        if compare.range_end:
            kvs = [kv for key in self.iter_keys(compare.key, compare.range_end)
                   if (kv := self._latest(key)) is not None]
        else:
            kv = self._latest(compare.key)
            kvs = [kv] if kv is not None else []
        if not kvs:
            # A missing key compares as all zeroes, except that its value never matches.
            return compare.target != Compare.VALUE and compare_holds(compare, KeyValue())
        return all(compare_holds(compare, kv) for kv in kvs)

    def _run_txn(self, request: rpc_pb2.TxnRequest, plan: _TxnPlan, rev: int,
                 writes: _Writes) -> rpc_pb2.TxnResponse:
        response = rpc_pb2.TxnResponse(succeeded=plan.succeeded)
        nested = iter(plan.nested)
        for op in request.success if plan.succeeded else request.failure:
            kind = op.WhichOneof("request")
            out = response.responses.add()
            if kind == "request_range":
                # Reads inside a Txn see the Txn's own earlier writes.
                out.response_range.CopyFrom(self._staged_range(op.request_range, writes))
            elif kind == "request_put":
                out.response_put.CopyFrom(self._put(op.request_put, rev, writes))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(
                    self._delete_range(op.request_delete_range, rev, writes))
            elif kind == "request_txn":
                out.response_txn.CopyFrom(self._run_txn(op.request_txn, next(nested), rev, writes))
        return response

    # ----------------------------------------------------------------- leases

    def _stage_lease_grant(self, request: rpc_pb2.LeaseGrantRequest
                           ) -> tuple[rpc_pb2.LeaseGrantResponse, _Commit]:
        if request.ID in self._leases:
            raise errors.LEASE_EXIST
        response = rpc_pb2.LeaseGrantResponse(ID=request.ID, TTL=request.TTL)
        response.header.revision = self.revision
        return response, partial(self._leases.__setitem__, request.ID, Lease(ttl=request.TTL))

    def _stage_lease_revoke(self, request: rpc_pb2.LeaseRevokeRequest
                            ) -> tuple[rpc_pb2.LeaseRevokeResponse, _Commit]:
        lease = self._leases.get(request.ID)
        if lease is None:
            raise errors.LEASE_NOT_FOUND
        rev = self.revision + 1
        writes: _Writes = {}
        for key in sorted(lease.keys):  # a set's order differs between replicas
            self._delete_key(key, rev, writes)
        response = rpc_pb2.LeaseRevokeResponse()
        response.header.revision = rev if writes else self.revision

        def commit() -> None:
            if writes:
                self._commit_writes(rev, writes)
            del self._leases[request.ID]

        return response, commit

    def _lease_keep_alive(self, request: rpc_pb2.LeaseKeepAliveRequest
                          ) -> rpc_pb2.LeaseKeepAliveResponse:
        lease = self._leases.get(request.ID)
        response = rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=lease.ttl if lease else 0)
        response.header.revision = self.revision
        return response

    def lease(self, lease_id: int) -> Lease | None:
        """The lease with this id, or None."""
        return self._leases.get(lease_id)

    def lease_ids(self) -> list[int]:
        """Every granted lease's id, ascending."""
        return sorted(self._leases)

    # ------------------------------------------------------------- compaction

    def _stage_compaction(self, request: rpc_pb2.CompactionRequest
                          ) -> tuple[rpc_pb2.CompactionResponse, _Commit]:
        target = request.revision
        if target > self.revision:
            raise errors.FUTURE_REV
        if target <= self.compact_revision:
            raise errors.COMPACTED
        # Per dirty key, its compacted history (None: nothing left) and whether it is
        # clean afterwards; unchanged keys that stay dirty are left out.
        compacted: list[tuple[bytes, list[KeyValue] | None, bool]] = []
        for key in self._dirty:
            history = self._history[key]
            below = bisect_left(history, target, key=_mod_revision)
            # Keep the newest entry below the target unless it is a tombstone: it is
            # the key's value as of the target, and the prev_kv of its next event.
            keep_from = below - 1 if below and history[below - 1].version else below
            if keep_from:
                history = history[keep_from:]
            if not history:
                compacted.append((key, None, True))
            else:
                clean = len(history) == 1 and history[0].version > 0
                if keep_from or clean:
                    compacted.append((key, history, clean))
        drop = bisect_left(self._log, target, key=attrgetter("revision"))
        response = rpc_pb2.CompactionResponse()
        response.header.revision = self.revision

        def commit() -> None:
            for key, history, clean in compacted:
                if history is None:
                    del self._history[key]
                    self._keys.remove(key)
                else:
                    # A new list, never the old one trimmed: an image may hold the old.
                    self._history[key] = history
                if clean:
                    self._dirty.discard(key)
            del self._log[:drop]
            self.compact_revision = target

        return response, commit

    # ------------------------------------------------------------------ reads

    def iter_keys(self, key: bytes, range_end: bytes) -> Iterator[bytes]:
        """Keys with history in etcd's range: one key, ``[key, range_end)``, or ``>= key``."""
        if not range_end:
            if key in self._history:
                yield key
        elif range_end == b"\0":
            yield from self._keys.irange(minimum=key)
        elif range_end > key:
            yield from self._keys.irange(key, range_end, inclusive=(True, False))

    def _read_revision(self, requested: int) -> int:
        if requested <= 0:
            return self.revision
        if requested > self.revision:
            raise errors.FUTURE_REV
        if requested < self.compact_revision:
            raise errors.COMPACTED
        return requested

    def _at(self, key: bytes, revision: int) -> KeyValue | None:
        history = self._history[key]
        if history[-1].mod_revision <= revision:
            kv = history[-1]
        else:
            index = bisect_right(history, revision, key=_mod_revision)
            if not index:
                return None
            kv = history[index - 1]
        return kv if kv.version else None

    def range(self, request: RangeRequest) -> rpc_pb2.RangeResponse:
        """Answer a Range."""
        revision = self._read_revision(request.revision)
        return self._range_response(request, [
            kv for key in self.iter_keys(request.key, request.range_end)
            if (kv := self._at(key, revision)) is not None])

    def _staged_range(self, request: RangeRequest, writes: _Writes) -> rpc_pb2.RangeResponse:
        """A Range in a Txn: an unversioned read sees the Txn's own writes so far."""
        if request.revision > 0:
            return self.range(request)
        return self._range_response(request, [
            kv for key in self._staged_keys(request.key, request.range_end, writes)
            if (kv := self._staged(key, writes)[0]) is not None])

    def _range_response(self, request: RangeRequest,
                        kvs: list[KeyValue]) -> rpc_pb2.RangeResponse:
        """A Range's answer from the live entries in its range, ascending by key."""
        # etcd's count is of the keys in the range, before the revision filters.
        response = rpc_pb2.RangeResponse(count=len(kvs))
        response.header.revision = self.revision
        if request.count_only:
            return response
        kvs = [kv for kv in kvs if _passes_filters(request, kv)]
        order, target = request.sort_order, request.sort_target
        if order == RangeRequest.NONE and target != RangeRequest.KEY:
            order = RangeRequest.ASCEND  # etcd: a sort target without an order ascends
        if order != RangeRequest.NONE and not (order == RangeRequest.ASCEND
                                               and target == RangeRequest.KEY):
            kvs.sort(key=_SORT_KEYS[target], reverse=order == RangeRequest.DESCEND)
        if 0 < request.limit < len(kvs):
            kvs = kvs[:request.limit]
            response.more = True
        if request.keys_only:
            kvs = [KeyValue(key=kv.key, create_revision=kv.create_revision,
                            mod_revision=kv.mod_revision, version=kv.version, lease=kv.lease)
                   for kv in kvs]
        response.kvs.extend(kvs)
        return response

    def events_since(self, revision: int, *, max_revisions: int) -> list[RevisionEvents]:
        """The watch history from ``revision`` on, at most ``max_revisions`` revisions.

        Raises COMPACTED when ``revision`` is below the compacted revision.
        """
        if revision < self.compact_revision:
            raise errors.COMPACTED
        if not self._log or revision > self.revision:
            return []
        start = max(0, revision - self._log[0].revision)
        return self._log[start:start + max_revisions]

    def hash_kv(self, revision: int) -> tuple[int, int]:
        """A CRC-32 of every kept key revision up to ``revision`` (0: now), and that revision.

        Replicas at the same revision with the same compaction hash the same.
        """
        revision = self._read_revision(revision)
        crc = zlib.crc32(self.compact_revision.to_bytes(8, "big"))
        for key in self._keys:
            for kv in self._history[key]:
                if kv.mod_revision > revision:
                    break
                crc = zlib.crc32(kv.SerializeToString(deterministic=True), crc)
        return crc, revision

    def key_count(self) -> int:
        """How many keys have history (live or tombstoned): a size figure for Status."""
        return len(self._keys)

    # --------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        """The whole state as bytes; :meth:`restore` rebuilds it exactly."""
        return self.image().to_bytes()

    def image(self) -> StoreImage:
        """The state as of now, for serializing later while this store moves on.

        Costs a reference and a length per key (a millisecond or two for 10,000 keys),
        not a copy: a stored KeyValue is never changed once applied, and a history list
        is only appended to (a remembered Result changes only in the response header
        its replica fills when answering, which nothing replicated depends on).
        """
        histories = list(map(self._history.__getitem__, self._keys))
        return StoreImage(
            revision=self.revision, compact_revision=self.compact_revision,
            applied_batches=self.applied_batches,
            histories=histories, lengths=list(map(len, histories)),
            leases=[(lease_id, self._leases[lease_id].ttl) for lease_id in sorted(self._leases)],
            members=[self.members[m] for m in sorted(self.members)],
            result_order=self._result_order,
            results_from=self._oldest, results_to=len(self._result_order),
            forgotten=[raft_pb2.Forgotten(origin=origin, id=command_id)
                       for origin, command_id in self._forgotten.items()],
        )

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        snap = raft_pb2.Snapshot.FromString(data)
        self.__init__()  # type: ignore[misc]
        self.revision, self.compact_revision = snap.revision, snap.compact_revision
        self.applied_batches = snap.applied_batches
        for lease in snap.leases:
            self._leases[lease.id] = Lease(ttl=lease.ttl)
        self.members = {m.ID: m for m in snap.members}
        for result in snap.results:
            self._results[(result.origin, result.id)] = result
        self._result_order = list(snap.results)
        for mark in snap.forgotten:
            self._forgotten[mark.origin] = mark.id
        by_revision: dict[int, list[tuple[KeyValue, KeyValue | None]]] = {}
        for key_history in snap.keys:
            history = list(key_history.revisions)
            key = history[0].key
            self._history[key] = history
            if len(history) > 1 or not history[-1].version:
                self._dirty.add(key)
            if history[-1].version and history[-1].lease in self._leases:
                self._leases[history[-1].lease].keys.add(key)
            for i, kv in enumerate(history):
                if kv.mod_revision >= self.compact_revision:
                    prev = history[i - 1] if i and history[i - 1].version else None
                    by_revision.setdefault(kv.mod_revision, []).append((kv, prev))
        self._keys = SortedList(self._history)
        self._log = [RevisionEvents(rev, sorted(by_revision[rev], key=lambda c: c[0].key))
                     for rev in sorted(by_revision)]


@dataclass(frozen=True, slots=True)
class StoreImage:
    """A store's state at one applied batch (see :meth:`Store.image`)."""

    revision: int
    compact_revision: int
    applied_batches: int
    #: Per key, its history list and how much of it the image holds.
    histories: list[list[KeyValue]]
    lengths: list[int]
    leases: list[tuple[int, int]]
    members: list[rpc_pb2.Member]
    #: The remembered results: ``result_order[results_from:results_to]``.
    result_order: list[raft_pb2.Result]
    results_from: int
    results_to: int
    forgotten: list[raft_pb2.Forgotten]

    @property
    def results(self) -> list[raft_pb2.Result]:
        """The remembered results the image holds, oldest first."""
        return self.result_order[self.results_from:self.results_to]

    def to_bytes(self) -> bytes:
        """The image as a serialized ``raft_pb2.Snapshot`` (what :meth:`Store.restore` reads)."""
        return b"".join(self.chunks())

    def chunks(self, keys_per_chunk: int = 256) -> Iterator[bytes]:
        """:meth:`to_bytes` in pieces whose concatenation is the whole Snapshot.

        A protobuf message is the concatenation of its fields, so each piece is a run of
        fields, framed here from each stored message's own bytes: a dump of a large
        store builds no message objects (which the garbage collector would have to
        scan) and holds the GIL only a few hundred keys at a time.
        """
        yield raft_pb2.Snapshot(revision=self.revision, compact_revision=self.compact_revision,
                                applied_batches=self.applied_batches).SerializeToString()
        for start in range(0, len(self.histories), keys_per_chunk):
            end = start + keys_per_chunk
            yield b"".join(
                _field(_SNAPSHOT_KEYS, b"".join(_field(_HISTORY_REVISIONS, kv.SerializeToString())
                                                for kv in history[:length]))
                for history, length in zip(self.histories[start:end], self.lengths[start:end],
                                           strict=True))
        yield b"".join(
            [_field(_SNAPSHOT_LEASES, raft_pb2.LeaseState(id=lease_id, ttl=ttl).SerializeToString())
             for lease_id, ttl in self.leases]
            + [_field(_SNAPSHOT_MEMBERS, member.SerializeToString()) for member in self.members])
        for start in range(self.results_from, self.results_to, keys_per_chunk):
            end = min(start + keys_per_chunk, self.results_to)
            yield b"".join(_field(_SNAPSHOT_RESULTS, result.SerializeToString())
                           for result in self.result_order[start:end])
        yield b"".join(_field(_SNAPSHOT_FORGOTTEN, mark.SerializeToString())
                       for mark in self.forgotten)


_SNAPSHOT_FIELDS = raft_pb2.Snapshot.DESCRIPTOR.fields_by_name
_SNAPSHOT_KEYS = _SNAPSHOT_FIELDS["keys"].number
_SNAPSHOT_LEASES = _SNAPSHOT_FIELDS["leases"].number
_SNAPSHOT_MEMBERS = _SNAPSHOT_FIELDS["members"].number
_SNAPSHOT_RESULTS = _SNAPSHOT_FIELDS["results"].number
_SNAPSHOT_FORGOTTEN = _SNAPSHOT_FIELDS["forgotten"].number
_HISTORY_REVISIONS = raft_pb2.KeyHistory.DESCRIPTOR.fields_by_name["revisions"].number


def _error_result(error: EtcdError) -> raft_pb2.Result:
    return raft_pb2.Result(error=raft_pb2.Error(code=error.code.value[0], message=error.message))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2): tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _change_key(change: tuple[KeyValue, KeyValue | None]) -> bytes:
    return change[0].key


def _in_range(candidate: bytes, key: bytes, range_end: bytes) -> bool:
    """Whether ``candidate`` is in etcd's range, as :meth:`Store.iter_keys` reads one."""
    if not range_end:
        return candidate == key
    if range_end == b"\0":
        return candidate >= key
    return key <= candidate < range_end


def _passes_filters(request: RangeRequest, kv: KeyValue) -> bool:
    if request.min_mod_revision and kv.mod_revision < request.min_mod_revision:
        return False
    if request.max_mod_revision and kv.mod_revision > request.max_mod_revision:
        return False
    if request.min_create_revision and kv.create_revision < request.min_create_revision:
        return False
    return not (request.max_create_revision
                and kv.create_revision > request.max_create_revision)
