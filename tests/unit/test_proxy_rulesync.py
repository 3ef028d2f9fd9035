"""The rules' writer: Endpoints churn coalesced into few writes, failures retried,
the first write only once the caches are ready. The applier is a fake recording what
it was given (the real one is tested against the kernel in tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib

from services.proxy.conntrack import StaleFlows, stale_udp_flows, udp_endpoints
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


def udp(key_port: int, *ips: str, cluster_ip: str = "10.96.0.10",
        node_port: int = 0) -> ServicePort:
    return ServicePort(namespace="ns", name=f"dns{cluster_ip[-1]}", protocol="UDP",
                       cluster_ip=cluster_ip, port=key_port, node_port=node_port,
                       endpoints=tuple(Endpoint(ip, 53) for ip in ips))


def test_stale_flows_are_a_service_ports_own_to_the_endpoints_it_lost():
    before = udp_endpoints([udp(53, "10.244.0.2", "10.244.0.3", node_port=30053),
                            udp(53, "10.244.0.2", cluster_ip="10.96.0.11"), port(1)])
    assert len(before) == 2  # TCP ports are not kept
    after = udp_endpoints([udp(53, "10.244.0.3", node_port=30053),
                           udp(53, "10.244.0.2", cluster_ip="10.96.0.11")])
    stale = stale_udp_flows(before, after)
    assert stale == [StaleFlows(frozenset({("10.96.0.10", 53)}), 30053,
                                Endpoint("10.244.0.2", 53))]
    flows = stale[0]
    # Its flows via the cluster IP or the NodePort, answered by the lost endpoint ...
    assert flows.matches("10.96.0.10", 53, "10.244.0.2", 53)
    assert flows.matches("10.112.0.1", 30053, "10.244.0.2", 53)
    # ... not another Service's flows to the same endpoint, nor the kept endpoint's.
    assert not flows.matches("10.96.0.11", 53, "10.244.0.2", 53)
    assert not flows.matches("10.96.0.10", 53, "10.244.0.3", 53)
    # A service port gone entirely: all its endpoints' flows.
    assert len(stale_udp_flows(before, {})) == 3
    assert stale_udp_flows({}, after) == []


async def test_flows_of_removed_udp_endpoints_are_cleared_after_the_write():
    current = [udp(53, "10.244.0.2", "10.244.0.3")]
    cleared: list[list[StaleFlows]] = []

    def clear(stale: list[StaleFlows]) -> int:
        cleared.append(stale)
        return len(stale)

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
        assert [s.endpoint for s in cleared[0]] == [Endpoint("10.244.0.2", 53)]
        assert len(applier.written) == 2  # cleared once the rules no longer pick it
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
