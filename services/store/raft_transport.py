"""pysyncobj's glue to the store: its peer transport and its poller, and the module
globals the store replaces.

- the pysyncobj version is checked first (:mod:`services.store.pysyncobj_contract`),
  then its pickle protocol is raised to 5, its peer messages are left uncompressed and
  its journal factory hands it the store's :class:`~services.store.journal.RaftJournal`;
- :class:`RaftTransport`: pysyncobj's TCP transport with :func:`repair_append_entries`
  in front of raft, an early (rank-staggered) election when the leader's connection
  closes, one bundled frame per peer per tick, and messages held until the journal sync
  that must precede them (etcd's ``rafthttp``, in spirit);
- :class:`LoopPoller`: pysyncobj's sockets watched by the asyncio loop;
- :class:`RaftTimings`: the raft timeouts.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.poller import POLL_EVENT_TYPE, Poller
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from services.store import pysyncobj_contract
from services.store.journal import RaftJournal
from skiff.logging import get_logger

log = get_logger("store.raft")


# Everything below reaches into pysyncobj: fail here, naming what is missing, if the
# installed version is not the one pinned.
pysyncobj_contract.check()

# pysyncobj pickles its messages and journal entries with protocol 2, which has no
# bytes type: every batch (bytes) travels as a latin-1 str, UTF-8 encoded, twice (the
# replicated call's arguments, then the message holding the entry). That made a
# 100-put append_entries cost 1.6 ms to send and 0.3 ms to receive; protocol 5 pickles
# bytes as they are (0.2 ms and 0.07 ms, zlib included). pysyncobj reads any protocol,
# so journals and peers written with protocol 2 still load.
setattr(pysyncobj.pickle, "__protocol", pickle.HIGHEST_PROTOCOL)


class _Uncompressed:
    """zlib's two calls, doing nothing (see below)."""

    @staticmethod
    def compress(data: bytes, _level: int = -1) -> bytes:
        return data

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return data


# pysyncobj compresses every peer message with zlib level 3: ~37 us for a 3 KB
# append_entries, on the one thread that also serves gRPC, for bandwidth that loopback
# and a LAN do not lack at the store's rates. Messages travel as pickles, sealed.
pysyncobj.tcp_connection.zlib = _Uncompressed  # type: ignore[attr-defined]

_create_pysyncobj_journal = pysyncobj.syncobj.createJournal


def _create_journal(journal_file: Any) -> Any:
    """pysyncobj's journal factory: ours when ``journalFile`` is an opened RaftJournal.

    pysyncobj builds its journal with ``createJournal(conf.journalFile)`` and offers no
    other way in; handing it our journal object there replaces its mmap journal (never
    synced) without touching its internals. Any other value still gets pysyncobj's own.
    """
    if isinstance(journal_file, RaftJournal):
        return journal_file
    return _create_pysyncobj_journal(journal_file)


pysyncobj.syncobj.createJournal = _create_journal  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RaftTimings:
    """Raft timeouts in seconds.

    The election timeout is long enough that a leader starved of CPU for a few hundred
    milliseconds (two cores, several daemons, one GIL) is not deposed; a leader that
    dies is still replaced within a fraction of a second, because its peers see its
    connections close and call an election after ``leader_lost`` instead of waiting out
    the timeout (see :class:`RaftTransport`).
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

    Runs where pysyncobj's message handler runs, in a raft tick.
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


#: The message type of several peer messages sent as one (see ``RaftTransport.send``).
_BUNDLE = "skiff_bundle"
#: A follower's batch sent to the leader, and the answer of a replica that is not leader
#: (see ``Replica._forward``). Neither reaches pysyncobj.
FORWARD = "skiff_forward"
FORWARD_REFUSED = "skiff_forward_refused"
FORWARD_TYPES = (FORWARD, FORWARD_REFUSED)
#: What a tick may send before its journal sync, as etcd's leader sends its entries
#: while it writes them: the leader's append_entries (it counts its own copy of an entry
#: towards a majority only once its sync returned: see ``LoopSyncObj.doTick``) and
#: forwarded client batches (not raft state). Answers to append_entries, votes and vote
#: requests wait for it.
_SENT_BEFORE_SYNC = frozenset({"append_entries", FORWARD, FORWARD_REFUSED})


class RaftTransport(TCPTransport):
    """pysyncobj's TCP transport, with :func:`repair_append_entries` in front of raft and
    an early election when the connection to the leader closes.

    A killed process's sockets are closed by its kernel at once, so a follower learns of
    a dead leader long before its election timeout; it then schedules an election after
    a short random delay (so the two followers rarely both stand). A leader that merely
    stalls keeps its connections and is waited for the full timeout.
    """

    #: Seconds (min, max) before standing for election once the leader's connection closes.
    leader_lost: tuple[float, float] = RaftTimings.leader_lost

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outbox: dict[Any, list[Any]] = {}
        #: Per peer, (sync generation, message) waiting for that journal sync, in order.
        self._held: dict[Any, deque[tuple[int, Any]]] = {}
        #: Called with (node, message) for a forwarded batch or its refusal.
        self.on_forward: Callable[[Any, dict], None] = lambda node, message: None
        super().__init__(*args, **kwargs)

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

        def receive(node: Any, message: Any) -> None:
            if not isinstance(message, dict):
                callback(node, message)  # pysyncobj's connection handshake
                return
            kind = message.get("type")
            if kind == _BUNDLE:
                for inner in message["messages"]:
                    receive(node, inner)
            elif kind in FORWARD_TYPES:
                self.on_forward(node, message)
            else:
                callback(node, repair_append_entries(self._syncObj, message))

        super().setOnMessageReceivedCallback(receive)

    def tryGetReady(self) -> None:
        super().tryGetReady()
        if not self.ready:
            # Not ticked by a thread of its own, pysyncobj retries binding in a busy loop
            # while it constructs; the address may still be held by a dying process.
            time.sleep(self._syncObj.conf.bindRetryTime)

    def send(self, node: Any, message: Any) -> bool:
        """Queue ``message`` for ``node``; :meth:`flush` sends the queue.

        Everything pysyncobj sends comes from a tick or from a socket event, and a tick
        follows every socket event and ends with a flush: so each peer gets one frame
        (one pickle, one seal, one syscall) per tick, however many append_entries,
        responses and forwarded commands the tick produced.
        """
        connection = self._connections.get(node)
        if connection is None or connection.state != CONNECTION_STATE.CONNECTED:
            return False
        self._outbox.setdefault(node, []).append(message)
        return True

    def flush(self, required: int = 0, done: int = 0) -> None:
        """Send each peer what was queued for it, as one message, but what must wait.

        ``required``: the journal sync generation that covers this tick's changes;
        ``done``: the last one that returned. Until ``required`` is done, a peer's
        messages wait (:meth:`release` sends them), but its leading ones that may go
        before a sync (``_SENT_BEFORE_SYNC``); each peer's messages keep their order.
        """
        outbox, self._outbox = self._outbox, {}
        for node, messages in outbox.items():
            held = self._held.get(node)
            now: list[Any] = []
            for message in messages:
                early = isinstance(message, dict) and message.get("type") in _SENT_BEFORE_SYNC
                if held is None and (early or required <= done):
                    now.append(message)
                    continue
                if held is None:
                    held = self._held[node] = deque()
                held.append((0 if early else required, message))
            self._send_now(node, now)

    def release(self, done: int) -> None:
        """Send each peer's held messages whose sync generation is ``done`` (in order)."""
        for node in list(self._held):
            held = self._held[node]
            now = []
            while held and held[0][0] <= done:
                now.append(held.popleft()[1])
            if not held:
                del self._held[node]
            self._send_now(node, now)

    def _send_now(self, node: Any, messages: list[Any]) -> None:
        if not messages:
            return
        connection = self._connections.get(node)
        if connection is None or connection.state != CONNECTION_STATE.CONNECTED:
            return  # lost, as pysyncobj's own send loses it; raft resends
        connection.send(messages[0] if len(messages) == 1
                        else {"type": _BUNDLE, "messages": messages})


_READ, _WRITE = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE


class LoopPoller(Poller):
    """pysyncobj's poller, served by the asyncio loop instead of a thread of its own.

    pysyncobj subscribes its sockets here; the loop watches them (``add_reader`` /
    ``add_writer``) and calls pysyncobj's handler when one is ready, then ``on_event``
    so that a raft tick follows. ``poll`` has nothing left to do.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_event: Callable[[], None]) -> None:
        self._loop = loop
        self._on_event = on_event
        self._callbacks: dict[int, Callable[[int, int], None]] = {}
        self._masks: dict[int, int] = {}

    def subscribe(self, descr: int, callback: Callable[[int, int], None], eventMask: int) -> None:
        self._callbacks[descr] = callback
        was = self._masks.get(descr, 0)
        now = self._masks[descr] = eventMask & (_READ | _WRITE)
        loop = self._loop
        if now & _READ and not was & _READ:
            loop.add_reader(descr, self._ready, descr, _READ)
        elif was & _READ and not now & _READ:
            loop.remove_reader(descr)
        if now & _WRITE and not was & _WRITE:
            loop.add_writer(descr, self._ready, descr, _WRITE)
        elif was & _WRITE and not now & _WRITE:
            loop.remove_writer(descr)

    def unsubscribe(self, descr: int) -> None:
        # pysyncobj closes a socket before unsubscribing it; the loop copes with that.
        self._callbacks.pop(descr, None)
        mask = self._masks.pop(descr, 0)
        if mask & _READ:
            self._loop.remove_reader(descr)
        if mask & _WRITE:
            self._loop.remove_writer(descr)

    def poll(self, timeout: float) -> None:
        pass

    def _ready(self, descr: int, kind: int) -> None:
        callback = self._callbacks.get(descr)
        if callback is not None:
            callback(descr, kind)
        self._on_event()
