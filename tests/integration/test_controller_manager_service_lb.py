"""The service load-balancer controller end to end: real ``skiff-controller-manager``
processes running ``servicelb`` against a store and apiserver of this module's own (so
no other test's Services take addresses of the small range used here).

What a user sees through the API: a LoadBalancer Service gets an ingress IP of
``--load-balancer-ip-range`` in ``status.loadBalancer.ingress``, a second another; a
ClusterIP Service none; a restarted controller-manager keeps every address and never
gives one again; a deleted Service, or one that stops being a LoadBalancer, frees its
address (the status cleared); a used-up range is reported (``AllocationFailed``) and the
waiting Service gets the next address released.

Every wait polls a condition with a deadline; none sleeps in place of one.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import SharedCluster, election_flags, failed, shared_cluster
from skiff.testing.processes import ControllerManager

DEADLINE = 30.0
#: Six usable addresses: .1 to .6.
RANGE = "10.112.0.0/29"
NS = "default"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[SharedCluster]:
    with shared_cluster(tmp_path_factory.mktemp("servicelb")) as started:
        yield started


@pytest.fixture
async def client(cluster: SharedCluster, request) -> AsyncIterator[Client]:
    async with Client(cluster.apiserver.address, retry_deadline=DEADLINE) as api:
        yield api
        if failed(request):
            print(cluster.apiserver.logs(80))


@pytest.fixture
def start_manager(cluster: SharedCluster, tmp_path, request
                  ) -> Iterator[Callable[[], ControllerManager]]:
    started: list[ControllerManager] = []

    def start() -> ControllerManager:
        manager = ControllerManager(
            tmp_path / f"cm-{len(started)}", [cluster.apiserver.address],
            name=f"cm-lb-{secrets.token_hex(3)}", controllers=["servicelb"],
            extra_args=["--load-balancer-ip-range", RANGE, *election_flags(5, 3)])
        manager.start()
        started.append(manager)
        return manager

    try:
        yield start
    finally:
        for manager in started:
            manager.stop()
        if failed(request):
            for manager in started:
                print(manager.logs(80))


async def create(client: Client, name: str, type_: str = "LoadBalancer") -> None:
    spec = core_pb2.ServiceSpec(type=type_, selector={"app": name})
    spec.ports.add(name="http", port=80, protocol="TCP")
    await client.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=NS), spec=spec))


async def ingress(client: Client, name: str) -> list[str]:
    service = await client.services.get(name, NS)
    return [i.ip for i in service.status.load_balancer.ingress]  # type: ignore[attr-defined]


async def wait_ingress(client: Client, name: str) -> str:
    """Wait until the Service shows one ingress IP; that IP (checked to be in RANGE)."""
    async def shown() -> str | None:
        ips = await ingress(client, name)
        return ips[0] if len(ips) == 1 else None
    ip = await wait_for(shown, timeout=DEADLINE, interval=0.05, what=f"{name}'s ingress IP")
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(RANGE), ip
    return ip  # type: ignore[no-any-return]


async def wait_no_ingress(client: Client, name: str) -> None:
    async def cleared() -> bool:
        return not await ingress(client, name)
    await wait_for(cleared, timeout=DEADLINE, interval=0.05, what=f"{name}'s status cleared")


async def wait_event(client: Client, name: str, reason: str) -> None:
    async def found() -> bool:
        listed = await client.events.list(NS)
        return any(e.involved_object.name == name and e.reason == reason
                   for e in listed.items)  # type: ignore[attr-defined]
    await wait_for(found, timeout=DEADLINE, interval=0.1, what=f"{reason} about {name}")


async def test_addresses_given_once_kept_across_restart_and_freed(client, start_manager):
    first = start_manager()
    await create(client, "x")
    await create(client, "y")
    await create(client, "plain", "ClusterIP")
    a, b = await wait_ingress(client, "x"), await wait_ingress(client, "y")
    assert a != b

    # A new controller-manager (a new leader, empty memory) keeps both and gives a
    # Service made meanwhile (listed, and synced, before them) an address neither holds.
    first.stop()
    await create(client, "c")
    start_manager()
    c = await wait_ingress(client, "c")
    assert c not in (a, b)
    assert await ingress(client, "x") == [a] and await ingress(client, "y") == [b]
    assert await ingress(client, "plain") == []

    # Deleted, or no longer a LoadBalancer: the address is freed, the status cleared.
    await client.services.delete("x", NS)
    changed = await client.services.get("y", NS)
    changed.spec.type = "ClusterIP"  # type: ignore[attr-defined]
    await client.services.update(changed)
    await wait_no_ingress(client, "y")

    # Six addresses: c holds one, five more are given (the two released last), and the
    # next Service waits for one to free.
    names = ("c", "d", "e", "f", "g", "h")
    for name in names[1:]:
        await create(client, name)
    held = {name: await wait_ingress(client, name) for name in names}
    assert sorted(held.values()) == [f"10.112.0.{i}" for i in range(1, 7)]
    assert {held["g"], held["h"]} == {a, b}  # the released ones came back last
    await create(client, "i")
    await wait_event(client, "i", "AllocationFailed")
    assert await ingress(client, "i") == []
    await client.services.delete("d", NS)
    assert await wait_ingress(client, "i") == held["d"]
