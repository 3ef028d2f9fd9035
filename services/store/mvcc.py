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


def _is_live(kv: KeyValue | None) -> bool:
    return kv is not None and kv.version > 0


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
        """
        results = []
        for command in batch.commands:
            key = (command.origin or batch.origin, command.id)
            result = self._results.get(key)
            if result is None:
                forgotten = command.id <= self._forgotten.get(key[0], 0)
                result = (_error_result(errors.TIMEOUT_LEADER_FAIL) if forgotten
                          else self._apply_command(command))
                result.origin, result.id = key
                if not forgotten:
                    self._remember(key, result)
            results.append(result)
        self.applied_batches += 1
        return results

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

    def _apply_command(self, command: raft_pb2.Command) -> raft_pb2.Result:
        op = command.WhichOneof("op")
        try:
            if op == "put":
                return raft_pb2.Result(put=self._write(self._put, command.put))
            if op == "delete_range":
                return raft_pb2.Result(
                    delete_range=self._write(self._delete_range, command.delete_range))
            if op == "txn":
                return raft_pb2.Result(txn=self._apply_txn(command.txn))
            if op == "compaction":
                return raft_pb2.Result(compaction=self._compact(command.compaction))
            if op == "lease_grant":
                return raft_pb2.Result(lease_grant=self._lease_grant(command.lease_grant))
            if op == "lease_revoke":
                return raft_pb2.Result(lease_revoke=self._lease_revoke(command.lease_revoke))
            if op == "lease_keep_alive":
                return raft_pb2.Result(
                    lease_keep_alive=self._lease_keep_alive(command.lease_keep_alive))
            if op == "member_publish":
                self.members[command.member_publish.ID] = command.member_publish
                return raft_pb2.Result(member_publish=rpc_pb2.MemberListResponse())
            raise errors.internal(f"unknown command {op!r}")
        except EtcdError as e:
            return _error_result(e)
        except Exception as e:  # a bug must not wedge raft's apply loop; fail the command
            return _error_result(errors.internal(f"{op}: {e!r}"))

    def _write(self, operation: Callable[[Any, int, list], Any], request: Any) -> Any:
        """Run one write operation at the next revision and commit what it changed."""
        rev = self.revision + 1
        changes: list[tuple[KeyValue, KeyValue | None]] = []
        response = operation(request, rev, changes)
        self._commit(rev, changes)
        response.header.revision = self.revision
        return response

    def _commit(self, rev: int, changes: list[tuple[KeyValue, KeyValue | None]]) -> None:
        if not changes:
            return
        if len(changes) > 1:
            changes.sort(key=lambda change: change[0].key)
        self.revision = rev
        self._log.append(RevisionEvents(rev, changes))

    def _latest(self, key: bytes) -> KeyValue | None:
        history = self._history.get(key)
        if history and history[-1].version:
            return history[-1]
        return None

    def _append(self, key: bytes, kv: KeyValue) -> None:
        history = self._history.get(key)
        if history is None:
            self._history[key] = [kv]
            self._keys.add(key)
        else:
            history.append(kv)
            self._dirty.add(key)

    def _check_put(self, request: rpc_pb2.PutRequest) -> None:
        if request.ignore_value or request.ignore_lease:
            if self._latest(request.key) is None:
                raise errors.KEY_NOT_FOUND
        if request.lease and not request.ignore_lease and request.lease not in self._leases:
            raise errors.LEASE_NOT_FOUND

    def _put(self, request: rpc_pb2.PutRequest, rev: int, changes: list) -> rpc_pb2.PutResponse:
        self._check_put(request)
        prev = self._latest(request.key)
        value = prev.value if request.ignore_value else request.value
        lease = prev.lease if request.ignore_lease else request.lease
        kv = KeyValue(
            key=request.key, value=value, lease=lease, mod_revision=rev,
            create_revision=prev.create_revision if prev else rev,
            version=prev.version + 1 if prev else 1,
        )
        if prev is not None and prev.lease and prev.lease != lease:
            self._detach(prev.lease, request.key)
        if lease:
            self._leases[lease].keys.add(request.key)
        self._append(request.key, kv)
        changes.append((kv, prev))
        response = rpc_pb2.PutResponse()
        if request.prev_kv and prev is not None:
            response.prev_kv.CopyFrom(prev)
        return response

    def _delete_range(self, request: rpc_pb2.DeleteRangeRequest, rev: int,
                      changes: list) -> rpc_pb2.DeleteRangeResponse:
        response = rpc_pb2.DeleteRangeResponse()
        for key in list(self.iter_keys(request.key, request.range_end)):
            prev = self._delete_key(key, rev, changes)
            if prev is not None:
                response.deleted += 1
                if request.prev_kv:
                    response.prev_kvs.append(prev)
        return response

    def _delete_key(self, key: bytes, rev: int, changes: list) -> KeyValue | None:
        """Tombstone ``key`` at ``rev`` if it is live; returns what it held."""
        prev = self._latest(key)
        if prev is None:
            return None
        tombstone = KeyValue(key=key, mod_revision=rev)
        self._append(key, tombstone)
        if prev.lease:
            self._detach(prev.lease, key)
        changes.append((tombstone, prev))
        return prev

    def _detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # -------------------------------------------------------------------- txn

    def _apply_txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        # Branches and request checks are decided on the state before the Txn, as
        # etcd does, so a failing check leaves nothing half-applied.
        plan = self._plan_txn(request)
        return self._write(lambda req, rev, changes: self._run_txn(req, plan, rev, changes),
                           request)

    def read_txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Answer a Txn that writes nothing from this replica's state, without a revision."""
        plan = self._plan_txn(request)
        response = self._run_txn(request, plan, self.revision, [])
        response.header.revision = self.revision
        return response

    def _plan_txn(self, request: rpc_pb2.TxnRequest) -> _TxnPlan:
        succeeded = all(self._compare(c) for c in request.compare)
        nested = []
        for op in request.success if succeeded else request.failure:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                self._check_put(op.request_put)
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
                 changes: list) -> rpc_pb2.TxnResponse:
        response = rpc_pb2.TxnResponse(succeeded=plan.succeeded)
        nested = iter(plan.nested)
        for op in request.success if plan.succeeded else request.failure:
            kind = op.WhichOneof("request")
            out = response.responses.add()
            if kind == "request_range":
                # Reads inside a Txn see the Txn's own earlier writes.
                out.response_range.CopyFrom(self.range(op.request_range, latest=rev))
            elif kind == "request_put":
                out.response_put.CopyFrom(self._put(op.request_put, rev, changes))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(
                    self._delete_range(op.request_delete_range, rev, changes))
            elif kind == "request_txn":
                out.response_txn.CopyFrom(self._run_txn(op.request_txn, next(nested), rev, changes))
        return response

    # ----------------------------------------------------------------- leases

    def _lease_grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if request.ID in self._leases:
            raise errors.LEASE_EXIST
        self._leases[request.ID] = Lease(ttl=request.TTL)
        response = rpc_pb2.LeaseGrantResponse(ID=request.ID, TTL=request.TTL)
        response.header.revision = self.revision
        return response

    def _lease_revoke(self, request: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        lease = self._leases.pop(request.ID, None)
        if lease is None:
            raise errors.LEASE_NOT_FOUND
        rev = self.revision + 1
        changes: list[tuple[KeyValue, KeyValue | None]] = []
        for key in sorted(lease.keys):
            self._delete_key(key, rev, changes)
        self._commit(rev, changes)
        response = rpc_pb2.LeaseRevokeResponse()
        response.header.revision = self.revision
        return response

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

    def _compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        target = request.revision
        if target > self.revision:
            raise errors.FUTURE_REV
        if target <= self.compact_revision:
            raise errors.COMPACTED
        for key in list(self._dirty):
            history = self._history[key]
            below = bisect_left(history, target, key=_mod_revision)
            if below:
                # Keep the newest entry below the target unless it is a tombstone: it is
                # the key's value as of the target, and the prev_kv of its next event.
                keep_from = below - 1 if history[below - 1].version else below
                self._history[key] = history = history[keep_from:]
            if not history:
                del self._history[key]
                self._keys.remove(key)
                self._dirty.discard(key)
            elif len(history) == 1 and history[0].version:
                self._dirty.discard(key)
        drop = bisect_left(self._log, target, key=attrgetter("revision"))
        del self._log[:drop]
        self.compact_revision = target
        response = rpc_pb2.CompactionResponse()
        response.header.revision = self.revision
        return response

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

    def range(self, request: RangeRequest, *, latest: int | None = None) -> rpc_pb2.RangeResponse:
        """Answer a Range; ``latest`` is the revision an unversioned read sees (a Txn's own)."""
        if request.revision <= 0 and latest is not None:
            revision = latest
        else:
            revision = self._read_revision(request.revision)
        kvs = [kv for key in self.iter_keys(request.key, request.range_end)
               if (kv := self._at(key, revision)) is not None]
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


def _passes_filters(request: RangeRequest, kv: KeyValue) -> bool:
    if request.min_mod_revision and kv.mod_revision < request.min_mod_revision:
        return False
    if request.max_mod_revision and kv.mod_revision > request.max_mod_revision:
        return False
    if request.min_create_revision and kv.create_revision < request.min_create_revision:
        return False
    return not (request.max_create_revision
                and kv.create_revision > request.max_create_revision)
