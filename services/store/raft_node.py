"""The raft node (pysyncobj's ``SyncObj``) as the store runs it, and its state machine.

- :class:`LoopSyncObj`: ticked by the asyncio loop, its pipe notifier replaced by a tick
  request, peer messages sealed by :class:`~services.store.peer_cipher.PeerCipher`,
  one append_entries round per tick (:meth:`LoopSyncObj.end_tick`), and a leader that
  counts its own copy of an entry towards a majority only once its journal synced it
  (:func:`commit_cap`: the commit ordering);
- :class:`StateMachine`: the one replicated method, ``apply(bytes)``, which applies a
  batch to the MVCC store or stops the replica (:func:`stop_replica`).

The replica that owns them (batching, forwarding, lifecycle) is :mod:`services.store.raft`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from google.protobuf import text_format
from pysyncobj import SyncObj, SyncObjConsumer, replicated
from pysyncobj.poller import Poller

from services.store.mvcc import ApplyFailed, Store
from services.store.peer_cipher import PeerCipher
from services.store.raft_transport import LoopPoller
from skiff.logging import get_logger
from skiff.store.v1 import raft_pb2

log = get_logger("store.raft")


#: A replica's exit status when it cannot apply a committed entry (sysexits' EX_SOFTWARE).
APPLY_FAILED_EXIT = 70
#: How much of a command that cannot be applied goes into the log line saying so.
COMMAND_LOG_CHARS = 4000


def commit_cap(own_durable: int, follower_matches: list[int]) -> int:
    """The highest index a leader's count may credit to any follower, given its own copy.

    Raft commits index i when a majority of the replicas hold it on disk; pysyncobj
    credits the leader with every index. Capping each follower's match index at the
    larger of the leader's durable index and the highest index the followers alone hold
    on a majority makes both counts agree: at or below the leader's durable index
    nothing changes; above it, only indexes the followers commit without the leader
    keep their votes. Pure: the unit tests call it. Needs at least one follower (a
    single replica syncs before its next tick instead).
    """
    majority = (len(follower_matches) + 1) // 2 + 1
    ranked = sorted(follower_matches, reverse=True)
    followers_alone = ranked[majority - 1] if majority <= len(ranked) else 0
    return max(own_durable, followers_alone)


class _TickNotifier:
    """Stands in for pysyncobj's pipe notifier: a proposed command asks for a tick."""

    def __init__(self, tick_soon: Callable[[], None]) -> None:
        self.notify = tick_soon


class LoopSyncObj(SyncObj):
    """pysyncobj ticked by the asyncio loop, with :class:`PeerCipher` sealing peer messages.

    pysyncobj still sees a password (it is what turns on its per-connection key
    handshake); only the cipher its connections call differs. Its ticks, socket events
    and applied commands all run on the loop's thread, as the gRPC side does: two busy
    Python threads in one process spend much of their CPU handing the GIL back and forth.
    """

    def __init__(self, *args: Any, cipher: PeerCipher, poller: LoopPoller,
                 tick_soon: Callable[[], None], own_durable: Callable[[], int] | None = None,
                 **kwargs: Any) -> None:
        self._peer_cipher = cipher  # before pysyncobj's transport asks for it
        self._loop_poller = poller
        self._append_wanted = False
        #: The last log index the previous append_entries round carried.
        self._last_sent_index = 0
        #: The last index on this replica's disk; None: every entry is (synced inline).
        self._own_durable = own_durable
        super().__init__(*args, **kwargs)
        notifier = self._SyncObj__pipeNotifier  # type: ignore[has-type]
        poller.unsubscribe(notifier._PipeNotifier__pipeR)
        os.close(notifier._PipeNotifier__pipeR)
        os.close(notifier._PipeNotifier__pipeW)
        self._SyncObj__pipeNotifier = _TickNotifier(tick_soon)

    @property
    def encryptor(self) -> PeerCipher:
        return self._peer_cipher

    def _SyncObj__sendAppendEntries(self) -> None:
        # pysyncobj sends append_entries after every command it appends and after every
        # batch it applies; one send per tick (see end_tick) carries all of them.
        self._append_wanted = True

    def doTick(self, timeToWait: float = 0.0) -> None:
        """pysyncobj's tick, in which a leader counts its own copy only once it is synced.

        pysyncobj's leader counts itself as holding its whole log when it commits
        (``count = 1``); with the journal synced off the loop its newest entries may
        still be on their way to disk. For the commit it computes in this tick, each
        follower's match index is capped at :func:`commit_cap`, so that pysyncobj's
        count equals raft's with the leader's own durable index; the real indexes are
        back right after (nothing else in a tick reads them; answers that move them
        arrive between ticks).
        """
        if self._own_durable is None or not self._isLeader():
            super().doTick(timeToWait)
            return
        match = self._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
        followers = [node for node in self.otherNodes if node in match]
        real = {node: match[node] for node in followers}
        cap = commit_cap(self._own_durable(), list(real.values()))
        capped = {node: min(index, cap) for node, index in real.items()}
        match.update(capped)
        try:
            super().doTick(timeToWait)
        finally:
            for node, index in capped.items():
                if match.get(node) == index:  # not reset meanwhile (a new term)
                    match[node] = real[node]

    def end_tick(self, *, defer_notice: bool = False) -> bool:
        """Send the append_entries this tick asked for, once, to every follower.

        ``defer_notice``: when the log did not grow since the last round (the round
        would only tell the followers a new commit index, or be a heartbeat), send
        nothing and return True: the caller sends it a little later (see
        ``Replica._tick``).
        """
        if not self._append_wanted:
            return False
        if not self._isLeader():  # stepped down since it was asked for
            self._append_wanted = False
            return False
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        last = raft_log[-1][1] if len(raft_log) else 0
        if defer_notice and last == self._last_sent_index:
            return True
        self._append_wanted = False
        self._last_sent_index = last
        SyncObj._SyncObj__sendAppendEntries(self)  # type: ignore[attr-defined]
        return False

    @property
    def _poller(self) -> LoopPoller:
        return self._loop_poller

    @_poller.setter
    def _poller(self, _created: Poller) -> None:
        pass  # pysyncobj creates a poller of its own; ours is the loop


class StateMachine(SyncObjConsumer):
    """The replicated object: one method, ``apply(bytes)``.

    Its dumps are not pysyncobj's (``_serialize``) but :class:`Snapshotter`'s, written
    on a thread of their own.
    """

    def __init__(self, store: Store, lock: threading.Lock,
                 on_applied: Callable[[raft_pb2.Batch, list[raft_pb2.Result]], None]) -> None:
        super().__init__()
        self._store = store
        self._lock = lock
        self._on_applied = on_applied

    @replicated
    def apply(self, data: bytes) -> None:
        # A replica that fails here exits still holding the lock, so that no dump can
        # capture what the failure left.
        with self._lock:
            try:
                batch = raft_pb2.Batch.FromString(data)
                results = self._store.apply_batch(batch)
            except Exception as e:  # ApplyFailed, or an entry that does not parse
                stop_replica(e)
        self._on_applied(batch, results)


def stop_replica(error: Exception) -> NoReturn:
    """Log why a committed entry cannot be applied here, and exit at once, as etcd panics.

    Why not answer the failure and go on: see :class:`~services.store.mvcc.ApplyFailed`.
    ``os._exit``, not SystemExit: nothing may run after this (no tick, no dump, no answer
    from a state the peers may not have). supervisord starts the replica again, which
    replays the entry from its journal.
    """
    fields: dict[str, object] = {}
    if isinstance(error, ApplyFailed):
        fields = {"cause": repr(error.__cause__), "origin": error.origin, "id": error.id,
                  "index": error.index,
                  "command": text_format.MessageToString(
                      error.command, as_one_line=True)[:COMMAND_LOG_CHARS]}
    log.critical("cannot apply a committed raft entry; stopping this replica",
                 error=str(error), exc_info=error, **fields)
    os._exit(APPLY_FAILED_EXIT)
