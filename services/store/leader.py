"""What only the raft leader does: revoke expired leases, compact old history.

Both are decisions about time, so the leader makes them and proposes the outcome as an
ordinary command; every replica then applies the same revocation or compaction at the
same point of the log. Runs on every replica and acts only while it leads.
"""

from __future__ import annotations

import asyncio
import time

from services.store.config import StoreConfig
from services.store.errors import EtcdError
from services.store.lessor import Lessor
from services.store.raft import Replica
from skiff.logging import get_logger
from skiff.store.v1 import raft_pb2, rpc_pb2

log = get_logger("store.leader")

#: How often the leader looks for expired leases and due compactions.
TICK = 0.1


class LeaderDuties:
    def __init__(self, config: StoreConfig, replica: Replica, lessor: Lessor) -> None:
        self._config = config
        self._replica = replica
        self._lessor = lessor
        self._was_leader = False
        self._revoking: set[int] = set()
        self._last_compaction = time.monotonic()

    async def run(self) -> None:
        """Loop forever: act on each tick while this replica leads."""
        while True:
            await asyncio.sleep(TICK)
            leading = self._replica.is_leader
            if leading and not self._was_leader:
                with self._replica.lock:
                    store = self._replica.store
                    leases = {i: store.lease(i).ttl for i in store.lease_ids()}  # type: ignore[union-attr]
                self._lessor.promote(leases)
                log.info("became raft leader", term=self._replica.term, leases=len(leases))
            self._was_leader = leading
            if leading:
                self._revoke_expired()
                await self._compact_if_due()

    def _revoke_expired(self) -> None:
        for lease_id in self._lessor.expired():
            if lease_id not in self._revoking:
                self._revoking.add(lease_id)
                asyncio.get_running_loop().create_task(self._revoke(lease_id),
                                                       name=f"revoke-{lease_id}")

    async def _revoke(self, lease_id: int) -> None:
        command = raft_pb2.Command(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        try:
            await self._replica.propose(command, timeout=self._config.request_timeout)
            log.info("lease expired", lease=lease_id)
        except EtcdError as e:
            log.debug("lease revocation failed", lease=lease_id, error=e.message)
        finally:
            self._revoking.discard(lease_id)

    async def _compact_if_due(self) -> None:
        retention = self._config.auto_compaction_retention
        now = time.monotonic()
        if not retention or now - self._last_compaction < self._config.auto_compaction_interval:
            return
        self._last_compaction = now
        store = self._replica.store
        target = store.revision - retention
        if target <= store.compact_revision:
            return
        command = raft_pb2.Command(compaction=rpc_pb2.CompactionRequest(revision=target))
        try:
            await self._replica.propose(command, timeout=self._config.request_timeout)
            log.info("compacted", revision=target)
        except EtcdError as e:
            log.warning("auto-compaction failed", revision=target, error=e.message)
