"""The rules' writer: Endpoints churn coalesced into few writes, failures retried,
the first write only once the caches are ready. The applier is a fake recording what
it was given (the real one is tested against the kernel in tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib

from services.proxy.conntrack import stale_udp_endpoints, udp_endpoints
from services.proxy.nftables import ApplyResult, NftablesError
from services.proxy.nftables_rules import Endpoint, Ruleset, ServicePort, Settings
from services.proxy.rulesync import RulesSyncer

SETTINGS = Settings(mode="nftables", table="skiff-proxy-n1")


class FakeApplier:
    table = "skiff-proxy-n1"

    def __init__(self, *, fail: int = 0) -> None:
        self.written: list[Ruleset] = []
        self.checked = 0
        self.fail = fail

    async def apply(self, ruleset: Ruleset) -> ApplyResult:
        if self.fail:
            self.fail -= 1
            raise NftablesError("nft -f: boom")
        await asyncio.sleep(0.01)  # a write takes time: changes pile up meanwhile
        self.written.append(ruleset)
        return ApplyResult(full=len(self.written) == 1, commands=1, seconds=0.01)

    async def sync(self, ruleset: Ruleset) -> ApplyResult:
        self.checked += 1
        return await self.apply(ruleset)


def port(generation: int) -> ServicePort:
    return ServicePort(namespace="ns", name="web", protocol="TCP", cluster_ip="10.96.0.9",
                       port=80, endpoints=(Endpoint(f"10.244.0.{generation % 250 + 2}", 80),))


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (polled with a deadline)
            await asyncio.sleep(0.005)


async def test_a_burst_of_changes_is_written_in_a_few_batches_ending_with_the_last():
    current = [port(0)]
    applier = FakeApplier()
    syncer = RulesSyncer(applier, SETTINGS, lambda: current, min_sync_period=0.05,  # type: ignore[arg-type]
                         sync_period=60)
    task = asyncio.create_task(syncer.run())
    try:
        await until(lambda: syncer.synced.is_set())
        for generation in range(1, 101):  # 100 Endpoints changes in about 0.2 s
            current = [port(generation)]
            syncer.request()
            await asyncio.sleep(0.002)
        await until(lambda: "10.244.0.102" in str(applier.written[-1].chains))
        # One write per min-sync-period at most, not one per change.
        assert 2 <= len(applier.written) <= 12, len(applier.written)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_nothing_is_written_before_the_caches_are_ready_and_failures_are_retried():
    ready = asyncio.Event()
    applier = FakeApplier(fail=1)
    syncer = RulesSyncer(applier, SETTINGS, lambda: [port(1)], min_sync_period=0.01,  # type: ignore[arg-type]
                         sync_period=60)
    task = asyncio.create_task(syncer.run(ready.wait()))
    try:
        syncer.request()
        await asyncio.sleep(0.05)
        assert applier.written == [] and not syncer.synced.is_set()
        ready.set()
        await until(lambda: syncer.synced.is_set())
        assert len(applier.written) == 1 and syncer.last_error is None
        assert applier.checked >= 1  # the retry after a failure checks the table whole
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def udp(key_port: int, *ips: str) -> ServicePort:
    return ServicePort(namespace="ns", name="dns", protocol="UDP", cluster_ip="10.96.0.10",
                       port=key_port, endpoints=tuple(Endpoint(ip, 53) for ip in ips))


def test_stale_udp_endpoints_are_those_gone_from_every_udp_port():
    before = udp_endpoints([udp(53, "10.244.0.2", "10.244.0.3"), udp(54, "10.244.0.4"),
                            port(1)])
    assert set(before) == {"ns/dns/udp/53", "ns/dns/udp/54"}  # TCP ports are not kept
    after = udp_endpoints([udp(53, "10.244.0.3"), udp(55, "10.244.0.4")])
    # .2 left; .4 left port 54 but still serves port 55 (same ip and port): not stale.
    assert stale_udp_endpoints(before, after) == {Endpoint("10.244.0.2", 53)}
    assert stale_udp_endpoints(before, {}) == {Endpoint("10.244.0.2", 53),
                                                Endpoint("10.244.0.3", 53),
                                                Endpoint("10.244.0.4", 53)}
    assert stale_udp_endpoints({}, after) == set()


async def test_flows_of_removed_udp_endpoints_are_cleared_after_the_write():
    current = [udp(53, "10.244.0.2", "10.244.0.3")]
    cleared: list[set[Endpoint]] = []

    def clear(endpoints: set[Endpoint]) -> int:
        cleared.append(endpoints)
        return len(endpoints)

    applier = FakeApplier()
    syncer = RulesSyncer(applier, SETTINGS, lambda: current, min_sync_period=0.01,  # type: ignore[arg-type]
                         sync_period=60, clear_flows=clear)
    task = asyncio.create_task(syncer.run())
    try:
        await until(lambda: syncer.synced.is_set())
        assert cleared == []
        current = [udp(53, "10.244.0.3")]
        syncer.request()
        await until(lambda: bool(cleared))
        assert cleared == [{Endpoint("10.244.0.2", 53)}]
        assert len(applier.written) == 2  # cleared once the rules no longer pick it
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
