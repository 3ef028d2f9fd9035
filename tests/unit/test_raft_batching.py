"""The leader's batching of forwarded commands, and pysyncobj's sockets served by the loop."""

from __future__ import annotations

import asyncio
import socket

from pysyncobj.poller import POLL_EVENT_TYPE

from services.store.raft import take_batch
from services.store.raft_transport import LoopPoller
from skiff.store.v1 import raft_pb2, rpc_pb2


def put(n: int, value_size: int = 1) -> raft_pb2.Command:
    return raft_pb2.Command(id=n, put=rpc_pb2.PutRequest(key=b"k%d" % n, value=b"v" * value_size))


def mark(seq: int) -> raft_pb2.Forwarded:
    return raft_pb2.Forwarded(origin=9, seq=seq)


def test_a_batch_takes_every_pending_command_and_the_marks_they_complete():
    pending = [put(i) for i in range(5)]
    marks = [(2, mark(1)), (5, mark(2))]
    commands, taken = take_batch(pending, marks)
    assert [c.id for c in commands] == [0, 1, 2, 3, 4]
    assert [m.seq for m in taken] == [1, 2]
    assert pending == [] and marks == []


def test_a_mark_waits_for_the_batch_that_holds_its_last_command():
    pending = [put(i) for i in range(5)]
    marks = [(2, mark(1)), (5, mark(2))]
    commands, taken = take_batch(pending, marks, max_commands=3)
    assert [c.id for c in commands] == [0, 1, 2] and [m.seq for m in taken] == [1]
    assert marks == [(2, mark(2))]  # counted from the new front of pending
    commands, taken = take_batch(pending, marks, max_commands=3)
    assert [c.id for c in commands] == [3, 4] and [m.seq for m in taken] == [2]


def test_a_mark_without_commands_is_a_barrier_and_rides_the_next_batch():
    pending: list[raft_pb2.Command] = []
    marks = [(0, mark(7))]
    commands, taken = take_batch(pending, marks)
    assert commands == [] and [m.seq for m in taken] == [7] and marks == []


def test_a_batch_stops_once_it_reaches_the_byte_limit_but_holds_one_command_at_least():
    pending = [put(i, value_size=100) for i in range(4)]
    commands, _ = take_batch(pending, [], max_bytes=250)
    assert [c.id for c in commands] == [0, 1, 2]  # the third crosses 250 bytes
    pending = [put(9, value_size=1000)]
    commands, _ = take_batch(pending, [], max_bytes=10)
    assert [c.id for c in commands] == [9]


async def test_the_loop_poller_reports_readable_and_writable_sockets_then_asks_for_a_tick():
    loop = asyncio.get_running_loop()
    events: list[tuple[int, int]] = []
    ticks = asyncio.Event()
    poller = LoopPoller(loop, ticks.set)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        poller.subscribe(ours.fileno(), lambda fd, kind: events.append((fd, kind)),
                         POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)
        await asyncio.wait_for(ticks.wait(), 5)
        assert (ours.fileno(), POLL_EVENT_TYPE.WRITE) in events

        # Interest in writing dropped (as pysyncobj does once its buffer is empty).
        poller.subscribe(ours.fileno(), lambda fd, kind: events.append((fd, kind)),
                         POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
        events.clear()
        ticks.clear()
        theirs.send(b"x")
        await asyncio.wait_for(ticks.wait(), 5)
        assert set(events) == {(ours.fileno(), POLL_EVENT_TYPE.READ)}  # until it is read
        ours.recv(1)

        # pysyncobj closes a socket before unsubscribing it.
        fd = ours.fileno()
        ours.close()
        poller.unsubscribe(fd)
        poller.unsubscribe(fd)  # and may do so twice
    finally:
        ours.close()
        theirs.close()
