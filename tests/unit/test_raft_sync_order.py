"""A raft tick syncs the journal after raft's work and before the tick's peer messages go."""

from __future__ import annotations

from typing import Any

from services.store.raft import Replica


class Recorder:
    """Stands in for pysyncobj, the journal and the transport: records what is called."""

    def __init__(self, calls: list[str]) -> None:
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        def call(*_args: Any) -> None:
            self._calls.append(name)
        return call


def test_a_tick_syncs_the_journal_before_it_sends_anything():
    calls: list[str] = []
    replica = Replica.__new__(Replica)  # only what _tick touches
    replica._tick_scheduled = True
    replica._syncobj = Recorder(calls)
    replica._journal = Recorder(calls)
    replica._transport = Recorder(calls)
    replica._leader = None
    replica._tick()
    assert calls == ["doTick", "end_tick", "sync", "flush", "_getLeader"]
