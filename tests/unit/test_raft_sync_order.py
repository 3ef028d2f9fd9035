"""A raft tick syncs the journal before this replica acknowledges anything to a peer.

Only what states nothing about this replica's disk (a leader's append_entries,
forwarded client batches) goes out before the sync, as etcd's leader sends its entries
while it writes them; each peer's messages keep their order.
"""

from __future__ import annotations

from typing import Any

from pysyncobj.tcp_connection import CONNECTION_STATE

from services.store.raft import _FORWARD, Replica, _RaftTransport


class Recorder:
    """Stands in for pysyncobj, the journal and the transport: records what is called."""

    def __init__(self, calls: list[str]) -> None:
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        def call(*_args: Any, **kwargs: Any) -> None:
            self._calls.append(name + ("(before_sync)" if kwargs.get("before_sync") else ""))
        return call


def test_a_tick_syncs_the_journal_before_it_sends_what_must_wait():
    calls: list[str] = []
    replica = Replica.__new__(Replica)  # only what _tick touches
    replica._tick_scheduled = True
    replica._syncobj = Recorder(calls)
    replica._journal = Recorder(calls)
    replica._transport = Recorder(calls)
    replica._leader = None
    replica._tick()
    assert calls == ["doTick", "end_tick", "flush(before_sync)", "sync", "flush",
                     "_getLeader"]


class Connection:
    state = CONNECTION_STATE.CONNECTED

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def types(message: dict) -> list[str]:
    inner = message["messages"] if message["type"] == "skiff_bundle" else [message]
    return [m["type"] for m in inner]


def test_only_each_peers_leading_leader_messages_go_before_the_sync():
    transport = _RaftTransport.__new__(_RaftTransport)  # only what send and flush touch
    leader, follower = Connection(), Connection()
    transport._connections = {"leader": leader, "follower": follower}
    transport._outbox = {}
    for message in ({"type": "append_entries"}, {"type": _FORWARD},
                    {"type": "response_vote"}, {"type": "append_entries"}):
        transport.send("follower", message)
    transport.send("leader", {"type": "next_node_idx"})
    transport.send("leader", {"type": _FORWARD})

    transport.flush(before_sync=True)
    assert [types(m) for m in follower.sent] == [["append_entries", _FORWARD]]
    assert leader.sent == []  # an acknowledgement first: all of it waits

    transport.flush()
    assert [types(m) for m in follower.sent][1:] == [["response_vote", "append_entries"]]
    assert [types(m) for m in leader.sent] == [["next_node_idx", _FORWARD]]
