"""What the run's clients saw (:class:`History`): every write, scale, failed call and
kill, each write with its outcome (acknowledged, rejected, failed or ambiguous), and
the :class:`Failover` client that moves to the next apiserver when one stops answering.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from skiff.api import errors
from skiff.chaos.config import CALL_TIMEOUT
from skiff.client.client import Client

T = TypeVar("T")


# ------------------------------------------------------------------ the history


class Outcome(enum.Enum):
    """What a client learnt of one write."""

    ACKNOWLEDGED = "acknowledged"  # answered OK
    REJECTED = "rejected"          # answered with an API error: wrote nothing
    FAILED = "failed"              # no connection, so never sent: wrote nothing
    AMBIGUOUS = "ambiguous"        # sent, not answered: wrote or not


@dataclass(frozen=True)
class Write:
    """One write of a writer's Lease ``name``: ``value`` is its unique holderIdentity
    (for a delete, the value it would leave: none)."""

    name: str
    verb: str  # create, update, delete
    value: str
    outcome: Outcome
    revision: int  # the acknowledged resourceVersion (0 for a delete, or not acknowledged)
    started: float
    finished: float
    error: str = ""


@dataclass(frozen=True)
class Scale:
    replicas: int
    outcome: Outcome
    at: float


@dataclass(frozen=True)
class FailedCall:
    """A call answered UNAVAILABLE or not at all (each moved its client on)."""

    at: float
    client: str
    error: str


@dataclass
class Kill:
    component: str
    kind: str
    role: str  # leader, follower (store), standby, or "-" (apiserver)
    at: float
    wall: float  # time.time() at the kill: Lease times are wall-clock
    healthy: float = 0.0
    #: When a leader renewed the kind's Lease after the kill (leader-elected kinds).
    led: float | None = None


@dataclass
class History:
    """Everything the clients did and saw, in the order they saw it."""

    writes: list[Write] = field(default_factory=list)
    scales: list[Scale] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    failed_calls: list[FailedCall] = field(default_factory=list)
    #: time.monotonic() when load began.
    began: float = 0.0

    def acknowledged_writes(self) -> list[Write]:
        return [w for w in self.writes if w.outcome is Outcome.ACKNOWLEDGED]


def outcome_of(error: errors.Unavailable) -> Outcome:
    """FAILED when the client never reached an apiserver (nothing sent), else AMBIGUOUS.

    The apiserver's own "store unavailable: ..." may mention a failed connection to a
    replica after an earlier attempt went through, so only the client's own connection
    failure (the message's start) counts as never sent.
    """
    return Outcome.FAILED if str(error).startswith("failed to connect") else Outcome.AMBIGUOUS


class Failover:
    """Single-attempt clients, one per apiserver: an unanswered call is recorded and the
    next call goes to the next apiserver. The retrying :class:`Client` would hide what
    became of each attempt; here every outcome is the history's."""

    def __init__(self, addresses: Sequence[str], history: History, *, name: str,
                 first: int = 0) -> None:
        self._clients = [Client(a, timeout=CALL_TIMEOUT, retry_deadline=0) for a in addresses]
        self._history = history
        self._name = name
        self._current = first % len(self._clients)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    async def call(self, what: Callable[[Client], Awaitable[T]]) -> T:
        try:
            return await what(self._clients[self._current])
        except errors.Unavailable as e:
            self._history.failed_calls.append(FailedCall(time.monotonic(), self._name,
                                                         str(e)[:160]))
            self._current = (self._current + 1) % len(self._clients)
            raise
