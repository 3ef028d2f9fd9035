"""Writing the proxy's kernel table: changes batched, the table checked on a period.

The proxier marks the rules dirty (:meth:`RulesSyncer.request`) on every change of a
service port it serves; one task (:meth:`RulesSyncer.run`) builds the whole ruleset from
the proxier's current service ports and hands it to the applier, which writes only the
difference. Endpoints churn therefore never rewrites the table per event: a change
after a quiet spell is written at once, and changes that arrive while a write is under
way or within ``min_sync_period`` after it are coalesced into the next write (the idea
of kube-proxy's ``--min-sync-period`` and its bounded-frequency runner). So a change is
in the kernel within ``min_sync_period`` plus two writes at worst.

Level-triggered: every ``sync_period`` (and after a failed write, sooner) the applier
compares the kernel's table with what it wrote and replaces it whole if they differ
(someone deleted it, flushed a chain). The first write of a process replaces the whole
table in one transaction: a restarted proxy adopts its table, nothing is duplicated.
:meth:`cleanup` deletes the table (a clean stop).

With ``clear_flows`` (nftables mode), after a write that removed UDP endpoints their
conntrack flows are deleted (:mod:`services.proxy.conntrack`), so that clients keeping
their source port are sent to a current endpoint too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from services.proxy.conntrack import StaleFlows, stale_udp_flows, udp_endpoints
from services.proxy.nftables import NftablesApplier, NftablesError
from services.proxy.nftables_rules import (
    Ruleset,
    ServicePort,
    Settings,
    build_ruleset,
)
from skiff.logging import get_logger

log = get_logger("services.proxy.rulesync")

#: After a failed write, the next attempt comes this much later.
RETRY_AFTER = 1.0


class RulesSyncer:
    """Keeps the applier's table equal to ``build_ruleset(ports(), settings)``.

    Invariant: when ``_dirty`` is clear and no write is under way, the last successful
    write was built after the last :meth:`request`.
    """

    def __init__(self, applier: NftablesApplier, settings: Settings,
                 ports: Callable[[], Iterable[ServicePort]], *, min_sync_period: float,
                 sync_period: float,
                 clear_flows: Callable[[list[StaleFlows]], int] | None = None) -> None:
        self.applier = applier
        self.settings = settings
        self._ports = ports
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self._dirty = asyncio.Event()
        self._full_check = False
        self.synced = asyncio.Event()  # set once the first write succeeded
        self.writes = 0
        self.last_error: str | None = None
        self._clear_flows = clear_flows
        self._udp_written: dict[str, ServicePort] = {}

    def request(self) -> None:
        """The service ports changed: write the table soon (coalesced)."""
        self._dirty.set()

    async def run(self, before_first: Awaitable[object] | None = None) -> None:
        """Write on request, check on the period; until cancelled.

        ``before_first``: awaited before the first write (the proxier's caches synced and
        every Service seen once), so that a restarted proxy replaces its table with a
        complete one, never an empty one first.
        """
        if before_first is not None:
            await before_first
        self._dirty.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.sync_period)
            check = self._full_check or not self._dirty.is_set()
            self._dirty.clear()
            self._full_check = False
            if not await self._write(check=check):
                self._full_check = True
                await asyncio.sleep(RETRY_AFTER)
                self._dirty.set()
                continue
            # Changes arriving from now on wait at least this long: they are batched.
            await asyncio.sleep(self.min_sync_period)

    async def _write(self, *, check: bool) -> bool:
        started = time.perf_counter()
        ports = list(self._ports())
        try:
            # A 1,000-service ruleset takes milliseconds to build: off the event loop,
            # which keeps forwarding meanwhile.
            ruleset: Ruleset = await asyncio.to_thread(build_ruleset, ports, self.settings)
            result = await (self.applier.sync(ruleset) if check
                            else self.applier.apply(ruleset))
        except (NftablesError, ValueError) as err:
            self.last_error = str(err)
            log.error("writing the kernel rules failed; retrying", table=self.applier.table,
                      error=str(err)[:1000])
            return False
        self.last_error = None
        self.writes += 1
        self.synced.set()
        if result.commands:
            log.info("kernel rules written", table=self.applier.table, full=result.full,
                     commands=result.commands, ports=len(ports), checked=check,
                     ms=round((time.perf_counter() - started) * 1000, 1))
        await self._clear_stale_flows(ports)
        return True

    async def _clear_stale_flows(self, ports: list[ServicePort]) -> None:
        if self._clear_flows is None:
            return
        written = udp_endpoints(ports)
        stale = stale_udp_flows(self._udp_written, written)
        self._udp_written = written
        if not stale:
            return
        try:
            deleted = await asyncio.to_thread(self._clear_flows, stale)
        except Exception as err:  # netlink refused: the flows expire on their own
            log.warning("clearing UDP flows failed", endpoints=len(stale), error=str(err))
            return
        log.info("UDP flows to removed endpoints cleared", endpoints=len(stale),
                 flows=deleted)

    async def cleanup(self) -> None:
        """Delete the table (a clean stop); errors are logged, not raised."""
        try:
            await self.applier.cleanup()
            log.info("kernel rules removed", table=self.applier.table)
        except NftablesError as err:
            log.error("removing the kernel rules failed", table=self.applier.table,
                      error=str(err)[:1000])


__all__ = ["RulesSyncer"]
