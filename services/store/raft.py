"""One store replica's raft side: pysyncobj, group commit, and linearizable read barriers.

pysyncobj runs raft on its own thread and applies committed log entries there. The
gRPC side runs on the asyncio loop. They meet in three places only:

- ``Replica.propose`` queues a command; a flush turns every command queued at that
  moment into one :class:`~skiff.store.v1.raft_pb2.Batch`, one raft entry (group commit:
  one synchronous write commits in about a millisecond, and many concurrent ones share
  the same round trip).
- ``_StateMachine.apply``, the one replicated method, applies a batch to the
  :class:`~services.store.mvcc.Store` under ``Replica.lock`` and hands the results back
  to the loop with ``call_soon_threadsafe``, where the proposer's futures are resolved.
  Results are routed by command id, not by pysyncobj's callback, so a command that
  pysyncobj reported as failed but that did commit still answers its client.
- Reads take ``Replica.lock`` for the moment they read.

pysyncobj numbers replicated methods by position, so there is exactly one, taking
bytes: a journal written by this version replays under the next.

A command may be proposed more than once (a lost forward, a leader change, a retry
timer); the state machine applies each (origin, id) at most once. A linearizable read
waits for a batch proposed after it arrived to be applied locally (an empty batch when
nothing else is pending): the read then sees every write committed before it began.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pysyncobj.pickle
from prometheus_client import Histogram
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.transport import TCPTransport

from services.store import errors
from services.store.errors import EtcdError
from services.store.mvcc import Store
from services.store.peer_cipher import PeerCipher
from services.store.snapshots import Snapshotter
from skiff.logging import get_logger
from skiff.store.v1 import raft_pb2

log = get_logger("store.raft")

#: A batch stops growing at this many bytes or commands; pysyncobj sends an entry in
#: one message below ``_ENTRY_LIMIT`` (its chunked path for larger entries is avoided).
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_BATCH_COMMANDS = 2000
_ENTRY_LIMIT = 64 * 1024 * 1024
#: Batches proposed and not yet applied; more wait and join the next batch.
MAX_INFLIGHT = 1
#: A batch with no outcome after this long is proposed again (a forward can be lost).
RETRY_AFTER = 2.0
#: Pause before re-proposing a batch pysyncobj rejected (no leader, leader changed).
RETRY_BACKOFF = 0.02
#: How long stopping waits for a dump being written to land (else the last one stays).
DUMP_GRACE = 5.0

BATCH_COMMANDS = Histogram("skiff_store_batch_commands", "Commands per proposed raft entry",
                           buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
COMMIT_SECONDS = Histogram("skiff_store_batch_commit_seconds",
                           "From proposing a batch to applying it on its proposer",
                           buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5))

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}

# pysyncobj pickles its messages and journal entries with protocol 2, which has no
# bytes type: every batch (bytes) travels as a latin-1 str, UTF-8 encoded, twice (the
# replicated call's arguments, then the message holding the entry). That made a
# 100-put append_entries cost 1.6 ms to send and 0.3 ms to receive; protocol 5 pickles
# bytes as they are (0.2 ms and 0.07 ms, zlib included). pysyncobj reads any protocol,
# so journals and peers written with protocol 2 still load.
setattr(pysyncobj.pickle, "__protocol", pickle.HIGHEST_PROTOCOL)


@dataclass(frozen=True)
class RaftTimings:
    """Raft timeouts in seconds.

    The election timeout is long enough that a leader starved of CPU for a few hundred
    milliseconds (two cores, several daemons, one GIL) is not deposed; a leader that
    dies is still replaced within a fraction of a second, because its peers see its
    connections close and call an election after ``leader_lost`` instead of waiting out
    the timeout (see :class:`_RaftTransport`).
    """

    heartbeat: float = 0.05
    election_min: float = 0.6
    election_max: float = 1.2
    leader_lost: tuple[float, float] = (0.02, 0.25)
    #: pysyncobj drops a connection it has not *read* from for this long, and checks it
    #: only when it sends. Followers never talk to each other except to elect, so with a
    #: short timeout the first vote request on their idle connection closes it and is
    #: lost, and elections split. Dead peers are noticed through closed sockets and
    #: TCP keepalive instead, and a stalled leader through the election timeout.
    connection_timeout: float = 3600.0
    reconnect: float = 0.1


@dataclass
class _Inflight:
    """A proposed batch: its bytes, who waits on it, and how often it was proposed."""

    seq: int
    data: bytes
    command_ids: list[int]
    barriers: list[asyncio.Future[None]]
    deadline: float
    attempt: int = 0
    timer: asyncio.TimerHandle | None = None
    proposed_at: float = field(default_factory=time.perf_counter)


def _expire(future: asyncio.Future[Any]) -> None:
    # One timer per call is cheaper than asyncio.wait_for's extra future and task.
    if not future.done():
        future.set_exception(errors.TIMEOUT)


def repair_append_entries(syncobj: SyncObj, message: dict) -> dict:
    """Make pysyncobj's follower-side append_entries handling follow raft.

    pysyncobj deletes every entry after ``prevLogIdx`` whenever the follower has more,
    even entries that match the leader's and were already applied; a duplicated or
    stale append (the leader resends from a reset index) then shortens a log below
    what it applied, the follower can vote for a candidate missing committed entries,
    and replicas diverge. Raft deletes only from the first *conflicting* entry. This
    rewrites the message so pysyncobj does exactly that: matching entries are skipped,
    and when the message ends inside our log, ``prevLogIdx`` moves to what is safe to
    report as matching (the message's last entry, or our commit index, which only holds
    committed entries) so entries beyond are truncated only if uncommitted.

    Runs on pysyncobj's thread, as the message handler does.
    """
    if (message.get("type") != "append_entries" or "transmission" in message
            or message.get("prevLogIdx") is None):
        return message
    raft_log = syncobj._SyncObj__raftLog  # type: ignore[attr-defined]
    first, last = raft_log[0][1], raft_log[-1][1]
    prev = message["prevLogIdx"]
    if prev >= last or prev < first or raft_log[prev - first][2] != message["prevLogTerm"]:
        return message  # nothing of ours to lose, or pysyncobj rejects it anyway
    entries = message.get("entries", [])
    index, k = prev + 1, 0
    while k < len(entries) and index <= last and raft_log[index - first][2] == entries[k][2]:
        index, k = index + 1, k + 1
    if k < len(entries):
        new_prev = index - 1  # first conflict, or our log ended: append from here
    else:
        committed = min(last, syncobj._SyncObj__raftCommitIndex)  # type: ignore[attr-defined]
        new_prev = max(index - 1, committed)
    if new_prev == prev:
        return message
    repaired = dict(message)
    repaired["prevLogIdx"] = new_prev
    repaired["prevLogTerm"] = raft_log[new_prev - first][2]
    repaired["entries"] = entries[k:]
    return repaired


class _RaftTransport(TCPTransport):
    """pysyncobj's TCP transport, with :func:`repair_append_entries` in front of raft and
    an early election when the connection to the leader closes.

    A killed process's sockets are closed by its kernel at once, so a follower learns of
    a dead leader long before its election timeout; it then schedules an election after
    a short random delay (so the two followers rarely both stand). A leader that merely
    stalls keeps its connections and is waited for the full timeout.
    """

    #: Seconds (min, max) before standing for election once the leader's connection closes.
    leader_lost: tuple[float, float] = RaftTimings.leader_lost

    def _stand_soon(self, leader: Any) -> None:
        """Bring this follower's election forward, staggered by rank among the followers.

        Followers that saw the same connection close would otherwise stand at nearly
        the same moment and split the vote, then wait out a full election timeout; a
        rank-ordered delay lets the first stand alone (and if its log is behind, the
        next stands a step later and wins).
        """
        syncobj = self._syncObj
        followers = sorted(n.address for n in (*syncobj.otherNodes, syncobj.selfNode)
                           if n != leader)
        low, high = self.leader_lost
        step = (high - low) / max(1, len(followers))
        delay = low + followers.index(syncobj.selfNode.address) * step + random.uniform(0, step / 3)
        deadline = monotonic_time() + delay
        if deadline < syncobj._SyncObj__raftElectionDeadline:  # type: ignore[attr-defined]
            syncobj._SyncObj__raftElectionDeadline = deadline  # type: ignore[attr-defined]
            log.info("lost the raft leader's connection", leader=leader.address,
                     election_in=round(delay, 3))

    def setOnNodeDisconnectedCallback(self, callback: Callable | None) -> None:
        if callback is None:
            super().setOnNodeDisconnectedCallback(None)
            return

        def disconnected(node: Any) -> None:
            callback(node)
            syncobj = self._syncObj
            if node == syncobj._getLeader() and not syncobj._isLeader():
                self._stand_soon(node)

        super().setOnNodeDisconnectedCallback(disconnected)

    def setOnMessageReceivedCallback(self, callback: Callable | None) -> None:
        if callback is None:
            super().setOnMessageReceivedCallback(None)
            return

        def repaired(node: Any, message: Any) -> None:
            if isinstance(message, dict):
                message = repair_append_entries(self._syncObj, message)
            callback(node, message)

        super().setOnMessageReceivedCallback(repaired)


class _SyncObj(SyncObj):
    """pysyncobj with :class:`PeerCipher` sealing peer messages instead of its Fernet.

    pysyncobj still sees a password (it is what turns on its per-connection key
    handshake); only the cipher its connections call differs.
    """

    def __init__(self, *args: Any, cipher: PeerCipher, **kwargs: Any) -> None:
        self._peer_cipher = cipher  # before pysyncobj's transport asks for it
        super().__init__(*args, **kwargs)

    @property
    def encryptor(self) -> PeerCipher:
        return self._peer_cipher


class _StateMachine(SyncObjConsumer):
    """The replicated object: one method, ``apply(bytes)``.

    Its dumps are not pysyncobj's (``_serialize``) but :class:`Snapshotter`'s, written
    off raft's thread.
    """

    def __init__(self, store: Store, lock: threading.Lock,
                 on_applied: Callable[[raft_pb2.Batch, list[raft_pb2.Result]], None]) -> None:
        super().__init__()
        self._store = store
        self._lock = lock
        self._on_applied = on_applied

    @replicated
    def apply(self, data: bytes) -> None:
        batch = raft_pb2.Batch.FromString(data)
        with self._lock:
            results = self._store.apply_batch(batch)
        self._on_applied(batch, results)


@dataclass
class ReplicaOptions:
    """How a replica joins raft: its peer address, the others', and where it keeps data."""

    self_address: str
    peer_addresses: list[str]
    journal_file: str
    dump_file: str
    password: str
    timings: RaftTimings = field(default_factory=RaftTimings)
    #: Compact pysyncobj's log (a full dump to disk) after this many entries.
    log_compaction_entries: int = 20_000


class Replica:
    """A store replica: the MVCC store, kept in agreement with its peers through raft.

    ``on_applied`` hooks (the lessor, watchers) run on the loop after every applied
    batch, on every replica, proposer or not.
    """

    def __init__(self, options: ReplicaOptions, *, loop: asyncio.AbstractEventLoop) -> None:
        self.store = Store()
        self.lock = threading.Lock()
        self.origin = random.getrandbits(63) | 1
        self._loop = loop
        self._ids = itertools.count(1)
        self._seqs = itertools.count(1)
        self._pending: list[raft_pb2.Command] = []
        self._pending_deadline = 0.0
        self._barriers: list[asyncio.Future[None]] = []
        self._futures: dict[int, asyncio.Future[raft_pb2.Result]] = {}
        self._inflight: dict[int, _Inflight] = {}
        self._flush_scheduled = False
        self._applied = asyncio.Event()
        self._hooks: list[Callable[[raft_pb2.Batch, list[raft_pb2.Result]], None]] = []
        self._listeners: set[Callable[[], None]] = set()
        self._machine = _StateMachine(self.store, self.lock, self._applied_threadsafe)
        self._snapshotter = snapshotter = Snapshotter(self.store, self.lock, options.dump_file)
        snapshotter.prepare()
        timings = options.timings
        conf = SyncObjConf(
            password=options.password,
            appendEntriesUseBatch=False,  # send at once: latency comes from group commit
            appendEntriesPeriod=timings.heartbeat,
            raftMinTimeout=timings.election_min,
            raftMaxTimeout=timings.election_max,
            connectionTimeout=timings.connection_timeout,
            connectionRetryTime=timings.reconnect,
            appendEntriesBatchSizeBytes=_ENTRY_LIMIT,
            sendBufferSize=4 * 1024 * 1024,
            recvBufferSize=4 * 1024 * 1024,
            journalFile=options.journal_file,
            fullDumpFile=options.dump_file,
            # Dumps are written on a thread by the Snapshotter, not by pysyncobj on its
            # own thread (a stall) or in a fork (which would inherit the listening
            # sockets and keep them after this process dies, so a restart could not bind).
            useFork=False,
            serializer=snapshotter.serialize,
            serializeChecker=snapshotter.check,
            deserializer=snapshotter.deserialize,
            logCompactionMinEntries=options.log_compaction_entries,
            logCompactionMinTime=600,
            commandsWaitLeader=True,
            bindRetryTime=0.2,
            onStateChanged=self._state_changed,
        )
        transport = type("RaftTransport", (_RaftTransport,), {"leader_lost": timings.leader_lost})
        self._syncobj = _SyncObj(options.self_address, options.peer_addresses, conf,
                                 consumers=[self._machine], transportClass=transport,
                                 cipher=PeerCipher.from_password(options.password))

    # ----------------------------------------------------------------- status

    _STATES = ("follower", "candidate", "leader")

    def _state_changed(self, old: int, new: int) -> None:  # pysyncobj's thread
        log.info("raft state changed", previous=self._STATES[old], state=self._STATES[new],
                 term=self._syncobj.raftCurrentTerm if hasattr(self, "_syncobj") else 0)

    def add_apply_hook(self, hook: Callable[[raft_pb2.Batch, list[raft_pb2.Result]], None]) -> None:
        """Call ``hook(batch, results)`` on the loop after each batch is applied here."""
        self._hooks.append(hook)

    def add_applied_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the loop after each applied batch, until removed.

        Cheaper than a task per waiter on :meth:`wait_applied`: a watch stream only
        needs a nudge, and there may be hundreds of them.
        """
        self._listeners.add(listener)

    def remove_applied_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.discard(listener)

    @property
    def is_leader(self) -> bool:
        return bool(self._syncobj._isLeader())

    @property
    def leader_address(self) -> str | None:
        leader = self._syncobj._getLeader()
        return leader.address if leader is not None else None

    @property
    def term(self) -> int:
        return int(self._syncobj.raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return int(self._syncobj.raftCommitIndex)

    @property
    def applied_index(self) -> int:
        return int(self._syncobj.raftLastApplied)

    @property
    def ready(self) -> bool:
        """A leader is known and this replica has applied what the leader had committed."""
        return self.leader_address is not None and bool(self._syncobj.isReady())

    def destroy(self) -> None:
        """Stop raft (its thread, sockets and files), letting a dump being written land."""
        self._syncobj.destroy()
        self._snapshotter.wait(DUMP_GRACE)

    # --------------------------------------------------------------- proposing

    async def propose(self, command: raft_pb2.Command, *, timeout: float) -> Any:
        """Replicate ``command`` and return its response message; raise its EtcdError."""
        command.id = next(self._ids)
        future: asyncio.Future[raft_pb2.Result] = self._loop.create_future()
        self._futures[command.id] = future
        self._pending.append(command)
        self._pending_deadline = max(self._pending_deadline, time.monotonic() + timeout)
        self._schedule_flush()
        expiry = self._loop.call_later(timeout, _expire, future)
        try:
            result = await future
        finally:
            expiry.cancel()
            self._futures.pop(command.id, None)
        outcome = result.WhichOneof("outcome")
        if outcome == "error":
            raise EtcdError(_STATUS_CODES.get(result.error.code, grpc.StatusCode.UNKNOWN),
                            result.error.message)
        return getattr(result, outcome)

    async def read_barrier(self, *, timeout: float) -> None:
        """Return once this replica has applied every write committed before the call."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._barriers.append(future)
        self._pending_deadline = max(self._pending_deadline, time.monotonic() + timeout)
        self._schedule_flush()
        expiry = self._loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            expiry.cancel()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # call_soon: every coroutine already runnable in this loop iteration gets
            # to queue its command first, so they share one batch.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while (self._pending or self._barriers) and len(self._inflight) < MAX_INFLIGHT:
            count, size = 0, 0
            while (count < len(self._pending) and count < MAX_BATCH_COMMANDS
                   and (count == 0 or size < MAX_BATCH_BYTES)):
                size += self._pending[count].ByteSize()
                count += 1
            commands, self._pending = self._pending[:count], self._pending[count:]
            BATCH_COMMANDS.observe(count)
            seq = next(self._seqs)
            batch = raft_pb2.Batch(origin=self.origin, seq=seq, commands=commands)
            inflight = _Inflight(seq=seq, data=batch.SerializeToString(),
                                 command_ids=[c.id for c in commands], barriers=self._barriers,
                                 deadline=self._pending_deadline)
            self._barriers = []
            self._inflight[seq] = inflight
            self._submit(inflight)

    def _submit(self, inflight: _Inflight) -> None:
        inflight.attempt += 1
        attempt, seq = inflight.attempt, inflight.seq

        def on_result(_result: Any, error: int) -> None:  # pysyncobj's thread
            if error:
                self._loop.call_soon_threadsafe(self._rejected, seq, attempt, error)

        self._machine.apply(inflight.data, callback=on_result)
        inflight.timer = self._loop.call_later(RETRY_AFTER, self._retry, seq, attempt)

    def _rejected(self, seq: int, attempt: int, error: int) -> None:
        inflight = self._inflight.get(seq)
        if inflight is None or inflight.attempt != attempt:
            return
        if inflight.timer is not None:
            inflight.timer.cancel()
        log.debug("batch rejected", seq=seq, attempt=attempt, reason=error)
        inflight.timer = self._loop.call_later(RETRY_BACKOFF, self._retry, seq, attempt)

    def _retry(self, seq: int, attempt: int) -> None:
        inflight = self._inflight.get(seq)
        if inflight is None or inflight.attempt != attempt:
            return
        waiting = any(not f.done() for f in inflight.barriers) or any(
            i in self._futures for i in inflight.command_ids)
        if not waiting or time.monotonic() > inflight.deadline:
            del self._inflight[seq]  # everyone waiting gave up; their calls timed out
            self._schedule_flush()
            return
        self._submit(inflight)

    # ----------------------------------------------------------------- applied

    def _applied_threadsafe(self, batch: raft_pb2.Batch, results: list[raft_pb2.Result]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_applied, batch, results)
        except RuntimeError:
            pass  # the loop closed: the process is stopping

    def _on_applied(self, batch: raft_pb2.Batch, results: list[raft_pb2.Result]) -> None:
        if batch.origin == self.origin:
            for command, result in zip(batch.commands, results, strict=True):
                future = self._futures.get(command.id)
                if future is not None and not future.done():
                    future.set_result(result)
            inflight = self._inflight.pop(batch.seq, None)
            if inflight is not None:
                COMMIT_SECONDS.observe(time.perf_counter() - inflight.proposed_at)
                if inflight.timer is not None:
                    inflight.timer.cancel()
                for barrier in inflight.barriers:
                    if not barrier.done():
                        barrier.set_result(None)
                self._schedule_flush()
        for hook in self._hooks:
            hook(batch, results)
        for listener in self._listeners:
            listener()
        applied, self._applied = self._applied, asyncio.Event()
        applied.set()

    async def wait_applied(self) -> None:
        """Return after the next batch is applied here."""
        await self._applied.wait()
