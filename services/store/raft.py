"""One store replica's raft side: pysyncobj, group commit, and linearizable read barriers.

pysyncobj runs on the asyncio loop's thread, the one that also serves gRPC: the loop
watches its sockets (:class:`LoopPoller`) and runs a raft tick after every socket
event, every proposal, and at least every ``TICK_PERIOD``. (Left to its own thread,
pysyncobj made every replica run two busy Python threads that spent a large share of
their CPU handing the GIL to each other.) So nothing here needs a thread-safe handoff,
but for the journal's fdatasync, which runs in a helper process (see
:mod:`services.store.journal_sync`: only the syscall moves there):

- ``Replica.propose`` queues a command; a flush turns every command queued at that
  moment into one :class:`~skiff.store.v1.raft_pb2.Batch`, one raft entry (group commit:
  one synchronous write commits in about a millisecond, and many concurrent ones share
  the same round trip). One batch at a time is in flight per replica, so under load
  batches grow instead of entries multiplying.
- A follower does not propose its batches to raft itself: it forwards them to the
  leader, which proposes their commands together with its own, each keeping its
  origin (``Batch.forwarded`` says whose batches an entry completes). Under load the
  log then holds one large entry per commit round rather than a small one per replica.
- ``StateMachine.apply``, the one replicated method, applies a batch to the
  :class:`~services.store.mvcc.Store` and schedules the proposers' futures to be
  resolved. Results are routed by (origin, command id), not by pysyncobj's callback,
  so a command that pysyncobj reported as failed but that did commit still answers.
- ``Replica.lock`` guards the store against the thread writing a dump.
- A follower's answer to an append, a vote and a vote request wait for the journal sync
  covering what came before them; the leader sends its entries at once and counts its
  own copy towards a majority only once synced (``LoopSyncObj.doTick``).

Peer messages are sent once per tick per peer (:meth:`RaftTransport.flush` bundles
what a tick produced), uncompressed, sealed by :class:`PeerCipher`.

pysyncobj numbers replicated methods by position, so there is exactly one, taking
bytes: a journal written by this version replays under the next.

A command may be proposed more than once (a lost forward, a leader change, a retry
timer); the state machine applies each (origin, id) at most once. A linearizable read
waits for a batch proposed after it arrived to be applied locally (an empty batch when
nothing else is pending): the read then sees every write committed before it began.

The pysyncobj side lives next door: :mod:`services.store.raft_transport` (peer messages,
the loop's poller, pysyncobj's patched globals) and :mod:`services.store.raft_node` (the
loop-ticked ``SyncObj``, its commit ordering, the state machine). This module holds the
replica: its lifecycle, group commit and forwarding, and the read barrier.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Histogram
from pysyncobj import SyncObjConf

from services.store import errors
from services.store.disk import Disk
from services.store.errors import EtcdError
from services.store.journal import RaftJournal
from services.store.journal_sync import JournalSyncer
from services.store.mvcc import Store
from services.store.peer_cipher import PeerCipher
from services.store.raft_node import LoopSyncObj, StateMachine
from services.store.raft_transport import (
    FORWARD,
    FORWARD_REFUSED,
    LoopPoller,
    RaftTimings,
    RaftTransport,
)
from services.store.snapshots import RaftState, Snapshotter, check_received_dumps
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
#: The reason a batch is retried when the replica it was forwarded to is not the leader.
_REFUSED = -1
#: How long stopping waits for a dump being written to land (else the last one stays).
DUMP_GRACE = 5.0
#: Raft's clock: a tick runs at least this often (heartbeats, election deadlines), and
#: also whenever a peer's socket is ready or a command is proposed.
TICK_PERIOD = 0.01

BATCH_COMMANDS = Histogram("skiff_store_batch_commands", "Commands per proposed raft entry",
                           buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
COMMIT_SECONDS = Histogram("skiff_store_batch_commit_seconds",
                           "From proposing a batch to applying it on its proposer",
                           buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5))

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


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
    #: The leader it was last forwarded to (None: proposed to pysyncobj here).
    forwarded_to: Any = None
    proposed_at: float = field(default_factory=time.perf_counter)


def _expire(future: asyncio.Future[Any]) -> None:
    # One timer per call is cheaper than asyncio.wait_for's extra future and task.
    if not future.done():
        future.set_exception(errors.TIMEOUT)


def take_batch(pending: list[raft_pb2.Command], marks: list[tuple[int, raft_pb2.Forwarded]],
               max_commands: int = MAX_BATCH_COMMANDS, max_bytes: int = MAX_BATCH_BYTES,
               ) -> tuple[list[raft_pb2.Command], list[raft_pb2.Forwarded]]:
    """Take the next batch's commands off the front of ``pending``, and the marks it carries.

    A batch holds at least one command (if any is pending) and stops at ``max_commands``
    or once it reaches ``max_bytes``. ``marks`` are (n, mark): the mark belongs to the
    batch that takes the n-th pending command (or to the next batch, when n is 0). Both
    lists are updated in place, the remaining marks' counts shifted.
    """
    count, size = 0, 0
    while count < len(pending) and count < max_commands and (count == 0 or size < max_bytes):
        size += pending[count].ByteSize()
        count += 1
    commands = pending[:count]
    del pending[:count]
    taken = [mark for end, mark in marks if end <= count]
    marks[:] = [(end - count, mark) for end, mark in marks if end > count]
    return commands, taken


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
    #: How files are made durable (``--unsafe-no-fsync``, the test-only sync log).
    disk: Disk = field(default_factory=Disk)


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
        #: (n, mark): a batch forwarded to this leader, whose commands are all in the
        #: first n of ``_pending``; the mark rides in the batch proposing the n-th.
        self._marks: list[tuple[int, raft_pb2.Forwarded]] = []
        self._pending_deadline = 0.0
        self._leader: Any = None
        self._barriers: list[asyncio.Future[None]] = []
        self._futures: dict[int, asyncio.Future[raft_pb2.Result]] = {}
        self._inflight: dict[int, _Inflight] = {}
        self._flush_scheduled = False
        self._applied = asyncio.Event()
        self._hooks: list[Callable[[raft_pb2.Batch, list[raft_pb2.Result]], None]] = []
        self._listeners: set[Callable[[], None]] = set()
        self._tick_scheduled = False
        self._notice_scheduled = False
        #: This tick applied a batch holding a follower's commands.
        self._follower_waits = False
        self._tick_timer: asyncio.TimerHandle | None = None
        self._machine = StateMachine(self.store, self.lock, self._applied_later)
        self._snapshotter = snapshotter = Snapshotter(self.store, self.lock, options.dump_file,
                                                      disk=options.disk)
        snapshotter.prepare()
        snapshotter.preload()  # a dump it cannot read is moved aside, as if lost
        #: Entries, term and vote; a sync job starts at the end of a tick (see ``_tick``).
        self._journal = RaftJournal(options.journal_file, options.disk)
        self._discard_journal_without_dump(options.dump_file)
        # A single replica's own copy is its majority, and with syncs off there is
        # nothing to wait for: both sync on the loop, before the tick's messages go.
        inline = not options.peer_addresses or options.disk.unsafe_no_fsync
        self._syncer = JournalSyncer(self._journal, loop, self._synced, inline=inline)
        self._journal_aligned = False
        timings = options.timings
        conf = SyncObjConf(
            password=options.password,
            autoTick=False,  # ticked by this loop (see LoopSyncObj)
            appendEntriesUseBatch=False,  # send at once: latency comes from group commit
            appendEntriesPeriod=timings.heartbeat,
            raftMinTimeout=timings.election_min,
            raftMaxTimeout=timings.election_max,
            connectionTimeout=timings.connection_timeout,
            connectionRetryTime=timings.reconnect,
            appendEntriesBatchSizeBytes=_ENTRY_LIMIT,
            sendBufferSize=4 * 1024 * 1024,
            recvBufferSize=4 * 1024 * 1024,
            journalFile=self._journal,  # see _create_journal
            fullDumpFile=options.dump_file,
            # Dumps are written on a thread by the Snapshotter, not by pysyncobj on its
            # own thread (a stall) or in a fork (which would inherit the listening
            # sockets and keep them after this process dies, so a restart could not bind).
            useFork=False,
            serializer=snapshotter.serialize,
            serializeChecker=snapshotter.check,
            deserializer=self._load_dump,
            logCompactionMinEntries=options.log_compaction_entries,
            logCompactionMinTime=600,
            commandsWaitLeader=True,
            bindRetryTime=0.2,
            onStateChanged=self._state_changed,
        )
        transport = type("RaftTransport", (RaftTransport,), {"leader_lost": timings.leader_lost})
        self._syncobj = LoopSyncObj(options.self_address, options.peer_addresses, conf,
                                 consumers=[self._machine], transportClass=transport,
                                 cipher=PeerCipher.from_password(options.password),
                                 poller=LoopPoller(loop, self._tick_soon),
                                 tick_soon=self._tick_soon,
                                 own_durable=None if inline else self._own_durable)
        self._transport: RaftTransport = self._syncobj._SyncObj__transport  # type: ignore[attr-defined]
        # A dump the leader sends is verified before pysyncobj installs it over ours.
        check_received_dumps(self._syncobj._SyncObj__serializer)  # type: ignore[attr-defined]
        self._transport.on_forward = self._on_forward
        self._tick_timer = loop.call_later(TICK_PERIOD, self._periodic_tick)

    def _discard_journal_without_dump(self, dump_file: str) -> None:
        """Drop a journal that starts past index 1 when there is no dump to start from.

        The journal is only compacted once a durable dump covers what it drops, so this
        takes a lost dump (a bad disk, a removed file, or one that could not be read and
        was moved aside: see ``Snapshotter.preload``). Such a journal can never be
        applied (its first entry follows state this replica does not have), and
        pysyncobj would wait for it forever, never ready. Emptied, the replica's log is
        pysyncobj's first no-op alone, so the leader, whose log starts later, sends its
        dump, as to a new member. The term and vote are kept; the commit index goes back
        to the start (nothing here is applied yet).
        """
        if Path(dump_file).exists() or not len(self._journal):
            return
        first_index = self._journal[0][1]
        if first_index <= 1:
            return
        log.warning("journal starts past a dump this replica does not have; discarding it "
                    "for the leader's dump", first_index=first_index,
                    entries=len(self._journal))
        self._journal.clear()
        self._journal.setRaftCommitIndex(1)

    # ------------------------------------------------------------------ ticks

    def _tick_soon(self) -> None:
        """Run a raft tick once this loop iteration's ready callbacks have run."""
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._tick_scheduled = False
        try:
            self._syncobj.doTick(0)
        except Exception:  # as pysyncobj's own tick thread: log, and tick again later
            log.exception("raft tick failed")
        defer = not self._follower_waits
        self._follower_waits = False
        if self._syncobj.end_tick(defer_notice=defer) and not self._notice_scheduled:
            # Only a new commit index (or a heartbeat) for the followers: the clients
            # whose writes it commits are answered first. Sent right away, the notice
            # woke the followers, whose applies then competed with the leader's replies
            # for the CPU (two cores, three replicas; seen in traces of sequential
            # puts). Two loop iterations are enough for the answers to be written (a
            # future's waiter runs one iteration after it is resolved). Not when a
            # follower's forwarded commands were applied: their clients wait for it.
            self._notice_scheduled = True
            self._loop.call_soon(self._loop.call_soon, self._send_notice)
        # Group commit, off the loop: what this tick (and the socket events before it)
        # appended, and any new term or vote, is on disk before this replica
        # acknowledges it to a peer (an append's answer, a vote). Those messages are
        # held until the sync job covering them returns (see JournalSyncer); a
        # leader's entries and forwarded batches go out at once, so the followers'
        # syncs overlap the leader's. Clients are answered on apply, of entries the
        # leader counted as on a majority's disks (its own copy only once synced: see
        # LoopSyncObj.doTick).
        self._transport.flush(self._syncer.required(), self._syncer.done)
        self._syncer.kick()
        leader = self._syncobj._getLeader()
        if leader != self._leader:
            self._leader = leader
            self._leader_changed()

    def _send_notice(self) -> None:
        self._notice_scheduled = False
        self._syncobj.end_tick()
        self._transport.flush(self._syncer.required(), self._syncer.done)

    def _synced(self) -> None:
        """A sync job returned: send what waited for it; the leader may commit more."""
        self._transport.release(self._syncer.done)
        self._tick_soon()

    def _own_durable(self) -> int:
        return self._journal.durable_index

    def _periodic_tick(self) -> None:
        self._tick()
        self._tick_timer = self._loop.call_later(TICK_PERIOD, self._periodic_tick)

    def _load_dump(self, dump_file: str) -> RaftState:
        """pysyncobj's deserializer: the Snapshotter's, then the journal aligned to the dump."""
        raft_state = self._snapshotter.deserialize(dump_file)
        if not self._journal_aligned:  # at start; a dump installed later clears the log
            self._journal_aligned = True
            last, before_last = raft_state[0], raft_state[1]
            self._journal.align(before_last, last)
        return raft_state

    # ----------------------------------------------------------------- status

    _STATES = ("follower", "candidate", "leader")

    def _state_changed(self, old: int, new: int) -> None:  # in a raft tick
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
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        self._syncer.close()
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
        while ((self._pending or self._barriers or self._marks)
               and len(self._inflight) < MAX_INFLIGHT):
            commands, marks = take_batch(self._pending, self._marks)
            BATCH_COMMANDS.observe(len(commands))
            seq = next(self._seqs)
            batch = raft_pb2.Batch(origin=self.origin, seq=seq, commands=commands, forwarded=marks)
            inflight = _Inflight(seq=seq, data=batch.SerializeToString(),
                                 command_ids=[c.id for c in commands if not c.origin],
                                 barriers=self._barriers, deadline=self._pending_deadline)
            self._barriers = []
            self._inflight[seq] = inflight
            self._submit(inflight)

    def _submit(self, inflight: _Inflight) -> None:
        """Propose a batch: to pysyncobj on the leader, else forwarded to the leader."""
        inflight.attempt += 1
        attempt, seq = inflight.attempt, inflight.seq
        if inflight.timer is not None:
            inflight.timer.cancel()
        leader = self._syncobj._getLeader()
        if leader is not None and not self.is_leader:
            inflight.forwarded_to = leader
            sent = self._transport.send(leader, {"type": FORWARD, "seq": seq, "attempt": attempt,
                                                 "data": inflight.data})
            self._tick_soon()  # sends what was queued
            inflight.timer = self._loop.call_later(RETRY_AFTER if sent else RETRY_BACKOFF,
                                                   self._retry, seq, attempt)
            return

        def on_result(_result: Any, error: int) -> None:  # in a raft tick
            if error:
                self._loop.call_soon(self._rejected, seq, attempt, error)

        # Without a leader pysyncobj refuses it at once, and it is retried shortly.
        inflight.forwarded_to = None
        self._machine.apply(inflight.data, callback=on_result)
        inflight.timer = self._loop.call_later(RETRY_AFTER, self._retry, seq, attempt)

    def _on_forward(self, node: Any, message: dict) -> None:
        """A follower's batch arrived: propose its commands with ours (or refuse it)."""
        if message["type"] == FORWARD_REFUSED:
            self._rejected(message["seq"], message["attempt"], _REFUSED)
            return
        if not self.is_leader:
            self._transport.send(node, {"type": FORWARD_REFUSED, "seq": message["seq"],
                                        "attempt": message["attempt"]})
            return
        batch = raft_pb2.Batch.FromString(message["data"])
        for command in batch.commands:
            if not command.origin:
                command.origin = batch.origin
        self._pending.extend(batch.commands)
        end = len(self._pending)
        self._marks.append((end, raft_pb2.Forwarded(origin=batch.origin, seq=batch.seq)))
        # A batch the old leader had taken in and now forwards: its marks travel on.
        self._marks.extend((end, mark) for mark in batch.forwarded)
        self._schedule_flush()

    def _leader_changed(self) -> None:
        """Forward again what went to the old leader: it may never propose it."""
        for inflight in list(self._inflight.values()):
            if inflight.forwarded_to is not None and inflight.forwarded_to != self._leader:
                self._rejected(inflight.seq, inflight.attempt, _REFUSED)

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

    def _applied_later(self, batch: raft_pb2.Batch, results: list[raft_pb2.Result]) -> None:
        if batch.forwarded:
            self._follower_waits = True  # its proposer learns of the commit from us
        # Outside the tick: a failing hook must not interrupt raft's apply loop.
        self._loop.call_soon(self._on_applied, batch, results)

    def _on_applied(self, batch: raft_pb2.Batch, results: list[raft_pb2.Result]) -> None:
        origin = self.origin
        if batch.origin == origin or batch.forwarded:
            for command, result in zip(batch.commands, results, strict=True):
                if (command.origin or batch.origin) == origin:
                    future = self._futures.get(command.id)
                    if future is not None and not future.done():
                        future.set_result(result)
            if batch.origin == origin:
                self._completed(batch.seq)
            for mark in batch.forwarded:
                if mark.origin == origin:
                    self._completed(mark.seq)
        for hook in self._hooks:
            hook(batch, results)
        for listener in self._listeners:
            listener()
        applied, self._applied = self._applied, asyncio.Event()
        applied.set()

    def _completed(self, seq: int) -> None:
        inflight = self._inflight.pop(seq, None)
        if inflight is None:
            return
        COMMIT_SECONDS.observe(time.perf_counter() - inflight.proposed_at)
        if inflight.timer is not None:
            inflight.timer.cancel()
        for barrier in inflight.barriers:
            if not barrier.done():
                barrier.set_result(None)
        self._schedule_flush()

    async def wait_applied(self) -> None:
        """Return after the next batch is applied here."""
        await self._applied.wait()
