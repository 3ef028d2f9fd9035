"""The journal is synced off the loop; what a sync protects waits for the sync covering it.

Only what states nothing about this replica's disk (a leader's append_entries,
forwarded client batches) goes out before the sync, as etcd's leader sends its entries
while it writes them; each peer's messages keep their order. An acknowledgement, a vote
or a vote request waits for the sync job that covers the changes made before it; the
leader counts its own copy of an entry towards a majority only once synced.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.tcp_connection import CONNECTION_STATE

from services.store.disk import Disk
from services.store.fsync_helper import REPLY, REQUEST
from services.store.journal import RaftJournal
from services.store.journal_sync import JournalSyncer
from services.store.raft import Replica
from services.store.raft_node import LoopSyncObj, commit_cap
from services.store.raft_transport import FORWARD, RaftTransport


class Recorder:
    """Stands in for pysyncobj, the syncer and the transport: records what is called."""

    def __init__(self, calls: list[str]) -> None:
        self._calls = calls
        self.done = 4

    def required(self) -> int:
        self._calls.append("required")
        return 5

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **_kwargs: Any) -> None:
            self._calls.append(name + (repr(args) if args and name == "flush" else ""))
        return call


def test_a_tick_holds_what_must_wait_then_starts_the_sync_job():
    calls: list[str] = []
    replica = Replica.__new__(Replica)  # only what _tick touches
    replica._tick_scheduled = True
    replica._syncobj = Recorder(calls)
    replica._syncer = Recorder(calls)
    replica._transport = Recorder(calls)
    replica._leader = None
    replica._follower_waits = False
    replica._tick()
    assert calls == ["doTick", "end_tick", "required", "flush(5, 4)", "kick", "_getLeader"]


class Connection:
    state = CONNECTION_STATE.CONNECTED

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def types(message: dict) -> list[str]:
    inner = message["messages"] if message["type"] == "skiff_bundle" else [message]
    return [m["type"] for m in inner]


def transport_to(**connections: Connection) -> RaftTransport:
    transport = RaftTransport.__new__(RaftTransport)  # only what send and flush touch
    transport._connections = dict(connections)
    transport._outbox = {}
    transport._held = {}
    return transport


def test_only_each_peers_leading_leader_messages_go_before_the_sync():
    leader, follower = Connection(), Connection()
    transport = transport_to(leader=leader, follower=follower)
    for message in ({"type": "append_entries"}, {"type": FORWARD},
                    {"type": "response_vote"}, {"type": "append_entries"}):
        transport.send("follower", message)
    transport.send("leader", {"type": "next_node_idx"})
    transport.send("leader", {"type": FORWARD})

    transport.flush(required=1, done=0)
    assert [types(m) for m in follower.sent] == [["append_entries", FORWARD]]
    assert leader.sent == []  # an acknowledgement first: all of it waits

    transport.release(done=1)
    assert [types(m) for m in follower.sent][1:] == [["response_vote", "append_entries"]]
    assert [types(m) for m in leader.sent] == [["next_node_idx", FORWARD]]


def test_held_messages_go_with_the_sync_that_covers_them_and_in_order():
    leader = Connection()
    transport = transport_to(leader=leader)
    transport.send("leader", {"type": "next_node_idx", "n": 1})
    transport.flush(required=1, done=0)  # job 1 covers it
    transport.send("leader", {"type": "next_node_idx", "n": 2})
    transport.send("leader", {"type": FORWARD})
    transport.flush(required=2, done=0)  # appended during job 1: job 2 covers it
    transport.release(done=1)
    assert [m.get("n") for m in leader.sent] == [1]
    transport.send("leader", {"type": FORWARD, "n": 3})
    transport.flush(required=2, done=1)  # behind a held ack, even a forward waits
    assert len(leader.sent) == 1
    transport.release(done=2)
    assert types(leader.sent[1]) == ["next_node_idx", FORWARD, FORWARD]
    assert transport._held == {}
    transport.send("leader", {"type": "next_node_idx", "n": 4})
    transport.flush(required=2, done=2)  # nothing unsynced: at once
    assert leader.sent[-1]["n"] == 4


class HandPlayedHelper(JournalSyncer):
    """A JournalSyncer whose sync helper the test plays itself, answering when it wants."""

    def _start_helper(self) -> None:
        ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._sock = ours
        self._loop.add_reader(ours.fileno(), self._answered)

    def answer(self) -> int:
        """The helper's part for the job waiting: fdatasync it and say so; its number."""
        message, fds, _, _ = socket.recv_fds(self.theirs, REQUEST.size, 4)
        (job,) = REQUEST.unpack(message)
        for fd in fds:
            os.fdatasync(fd)
            os.close(fd)
        self.theirs.send(REPLY.pack(job, 0, 0.001))
        return job


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def synced_lengths(log: Path) -> list[int]:
    return [json.loads(line)["length"] for line in log.read_text().splitlines()
            if json.loads(line).get("file", "").endswith("/journal")]


async def test_acks_go_only_after_the_covering_sync_returns_and_the_loop_runs_meanwhile(tmp_path):
    loop = asyncio.get_running_loop()
    journal = RaftJournal(tmp_path / "journal", Disk(sync_log=str(tmp_path / "syncs")))
    peer = Connection()
    transport = transport_to(leader=peer)
    synced: list[int] = []
    syncer: HandPlayedHelper

    def on_synced() -> None:
        synced.append(journal.durable_index)
        transport.release(syncer.done)

    syncer = HandPlayedHelper(journal, loop, on_synced)
    try:
        journal.add(b"a", 1, 1)
        transport.send("leader", {"type": "next_node_idx", "next_node_idx": 2})
        transport.flush(syncer.required(), syncer.done)
        syncer.kick()
        assert syncer.running and peer.sent == []

        # While job 1 syncs, the loop appends and acks more: they wait for job 2.
        journal.add(b"b", 2, 1)
        transport.send("leader", {"type": "next_node_idx", "next_node_idx": 3})
        transport.flush(syncer.required(), syncer.done)
        assert syncer.required() == 2 and peer.sent == [] and journal.durable_index == 0

        assert syncer.answer() == 1
        await until(lambda: synced)
        assert synced == [1]
        assert [m["next_node_idx"] for m in peer.sent] == [2]  # only what job 1 covered
        assert syncer.running  # job 2 started at once, by itself
        assert syncer.answer() == 2
        await until(lambda: len(synced) == 2)
        assert synced == [1, 2] and journal.durable_index == 2
        assert types(peer.sent[-1]) == ["next_node_idx"] and peer.sent[-1]["next_node_idx"] == 3
        assert not syncer.running and syncer.required() == syncer.done == 2
    finally:
        syncer.close()
        journal._destroy()
    assert [e[1] for e in RaftJournal(tmp_path / "journal")] == [1, 2]
    lengths = synced_lengths(tmp_path / "syncs")  # the power-loss test's record of syncs
    assert lengths[1] < lengths[2]  # [0]: the new file's header


async def test_a_truncation_during_a_sync_keeps_the_replaced_entries_out_of_the_durable_index(
        tmp_path):
    loop = asyncio.get_running_loop()
    journal = RaftJournal(tmp_path / "journal", Disk(sync_log=str(tmp_path / "syncs")))
    durable: list[int] = []
    syncer = HandPlayedHelper(journal, loop, lambda: durable.append(journal.durable_index))
    try:
        for index in (1, 2, 3):
            journal.add(b"x", index, 1)
        syncer.kick()
        kept_end = journal._starts[1]
        journal.deleteEntriesFrom(1)  # a new leader's log differs from index 2
        journal.add(b"y", 2, 2)
        syncer.answer()
        await until(lambda: durable)
        assert durable == [1]  # not 3, nor the new 2
        assert synced_lengths(tmp_path / "syncs")[-1] == kept_end  # what still holds
        syncer.answer()
        await until(lambda: len(durable) == 2)
        assert durable == [1, 2]  # entry 2 of term 2 only once the second job covered it
    finally:
        syncer.close()
        journal._destroy()
    assert list(RaftJournal(tmp_path / "journal")) == [(b"x", 1, 1), (b"y", 2, 2)]


async def test_the_sync_helper_process_syncs_the_journal_and_exits_with_the_replica(tmp_path):
    loop = asyncio.get_running_loop()
    journal = RaftJournal(tmp_path / "journal", Disk(sync_log=str(tmp_path / "syncs")))
    durable: list[int] = []
    syncer = JournalSyncer(journal, loop, lambda: durable.append(journal.durable_index))
    helper = syncer._helper
    assert helper is not None and helper.poll() is None
    try:
        journal.add(b"a", 1, 1)
        syncer.kick()
        await until(lambda: durable)
        assert durable == [1]
        assert synced_lengths(tmp_path / "syncs")[-1] == journal._end
    finally:
        syncer.close()
        journal._destroy()
    assert helper.returncode == 0


def test_commit_cap_counts_the_leaders_copy_only_up_to_what_is_synced():
    # Three replicas: the leader's durable copy and one follower make a majority.
    assert commit_cap(own_durable=5, follower_matches=[7, 3]) == 5
    # Both followers hold 6 on disk: a majority without the leader.
    assert commit_cap(own_durable=5, follower_matches=[7, 6]) == 6
    # Two replicas: the follower alone is never a majority.
    assert commit_cap(own_durable=4, follower_matches=[9]) == 4
    # Five replicas: three followers are a majority by themselves.
    assert commit_cap(own_durable=2, follower_matches=[9, 8, 7, 1]) == 7
    assert commit_cap(own_durable=2, follower_matches=[9, 8, 1, 1]) == 2


def test_a_leader_commits_with_capped_match_indexes_and_keeps_the_real_ones(monkeypatch):
    seen: list[dict] = []
    syncobj = LoopSyncObj.__new__(LoopSyncObj)  # only what doTick touches
    syncobj._own_durable = lambda: 5
    syncobj._SyncObj__raftMatchIndex = {"f1": 7, "f2": 3}
    monkeypatch.setattr(LoopSyncObj, "_isLeader", lambda self: True)
    monkeypatch.setattr(LoopSyncObj, "otherNodes", property(lambda self: {"f1", "f2"}))
    monkeypatch.setattr(SyncObj, "doTick",
                        lambda self, t=0.0: seen.append(dict(self._SyncObj__raftMatchIndex)))
    syncobj.doTick(0)
    assert seen == [{"f1": 5, "f2": 3}]
    assert syncobj._SyncObj__raftMatchIndex == {"f1": 7, "f2": 3}


def test_a_round_that_only_carries_a_commit_index_is_left_to_the_caller(monkeypatch):
    rounds: list[int] = []
    syncobj = LoopSyncObj.__new__(LoopSyncObj)  # only what end_tick touches
    syncobj._SyncObj__raftLog = [(b"", 1, 1), (b"", 2, 1)]
    syncobj._last_sent_index = 0
    monkeypatch.setattr(LoopSyncObj, "_isLeader", lambda self: True)
    monkeypatch.setattr(SyncObj, "_SyncObj__sendAppendEntries",
                        lambda self: rounds.append(self._SyncObj__raftLog[-1][1]))
    syncobj._append_wanted = True
    assert syncobj.end_tick(defer_notice=True) is False  # new entries: at once
    assert rounds == [2]
    syncobj._append_wanted = True  # then an apply asks for a round: a notice only
    assert syncobj.end_tick(defer_notice=True) is True and rounds == [2]
    assert syncobj.end_tick() is False and rounds == [2, 2]  # sent when the caller says
    assert syncobj.end_tick() is False and rounds == [2, 2]  # and once
    monkeypatch.setattr(LoopSyncObj, "_isLeader", lambda self: False)
    syncobj._append_wanted = True
    assert syncobj.end_tick() is False and rounds == [2, 2]  # stepped down: nothing
