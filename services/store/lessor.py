"""Lease expiry: when each lease runs out, and the leader's revocation of expired ones.

The state machine knows only each lease's TTL and keys; time lives here. Every replica
watches applied grants and keep-alives and sets the lease's deadline to now + TTL, so
TimeToLive answers anywhere and a new leader already knows roughly when each lease
ends. Only the leader acts: it proposes a revocation for each lease past its deadline,
and the revocation, replicated like any command, deletes the lease's keys on every
replica at one revision. A replica that becomes leader first extends every deadline
to at least now + TTL (as etcd's lessor does on promotion): keep-alives sent during
the failover may have gone nowhere, and a lease must not expire for that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from skiff.store.v1 import raft_pb2


class Lessor:
    """Deadlines of leases on one replica. ``clock`` is monotonic seconds (injectable)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadlines: dict[int, float] = {}

    def observe(self, batch: raft_pb2.Batch, results: list[raft_pb2.Result]) -> None:
        """Track the lease commands of an applied batch."""
        for command, result in zip(batch.commands, results, strict=True):
            op = command.WhichOneof("op")
            if op == "lease_grant" and result.HasField("lease_grant"):
                self.refresh(result.lease_grant.ID, result.lease_grant.TTL)
            elif op == "lease_keep_alive" and result.lease_keep_alive.TTL > 0:
                self.refresh(result.lease_keep_alive.ID, result.lease_keep_alive.TTL)
            elif op == "lease_revoke":
                self._deadlines.pop(command.lease_revoke.ID, None)

    def refresh(self, lease_id: int, ttl: int) -> None:
        """The lease lives ``ttl`` seconds from now."""
        self._deadlines[lease_id] = self._clock() + ttl

    def promote(self, leases: dict[int, int]) -> None:
        """On becoming leader: every lease (id -> TTL) lives at least its TTL from now."""
        now = self._clock()
        self._deadlines = {
            lease_id: max(self._deadlines.get(lease_id, 0.0), now + ttl)
            for lease_id, ttl in leases.items()
        }

    def remaining(self, lease_id: int, ttl: int) -> int:
        """Whole seconds left (rounded up), as TimeToLive reports them; never negative."""
        deadline = self._deadlines.get(lease_id)
        if deadline is None:  # granted before this replica started: as if just renewed
            deadline = self._deadlines[lease_id] = self._clock() + ttl
        return max(0, math.ceil(deadline - self._clock()))

    def expired(self) -> list[int]:
        """Leases past their deadline, oldest deadline first."""
        now = self._clock()
        return sorted((lid for lid, d in self._deadlines.items() if d <= now),
                      key=self._deadlines.__getitem__)
