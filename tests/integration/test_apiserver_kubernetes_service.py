"""The ``kubernetes`` Service and its Endpoints, kept by the apiservers themselves.

Real apiserver processes on a fresh store of their own (so no other apiserver is in
the Endpoints): the Service is created with the range's first address and port
``https`` 443; its Endpoints list every live apiserver; one that stops cleanly is
gone from them at once, one that is killed once its lease expires.
"""

from __future__ import annotations

import signal

from apiclient import Client

from skiff.health import wait_for
from skiff.testing.processes import APIServer

#: Short leases, so a killed apiserver drops out within seconds.
FAST_LEASES = ["--identity-lease-duration-seconds", "3",
               "--identity-lease-renew-interval-seconds", "0.5"]


async def _endpoints(client: Client) -> set[tuple[str, int, str]]:
    """(ip, port, port name) of the kubernetes Endpoints' ready addresses."""
    endpoints = await client.endpoints.get("kubernetes", "default")
    return {(a.ip, p.port, p.name) for s in endpoints.subsets for a in s.addresses
            for p in s.ports}


def _entry(server: APIServer) -> tuple[str, int, str]:
    return ("127.0.0.1", server.port, "https")


async def _wait_endpoints(client: Client, wanted: set[tuple[str, int, str]],
                          timeout: float = 15.0) -> None:
    async def equal() -> bool:
        return await _endpoints(client) == wanted

    await wait_for(equal, timeout=timeout, interval=0.1,
                   what=f"kubernetes endpoints {sorted(wanted)}")


async def test_the_endpoints_list_the_live_apiservers(store, tmp_path):
    servers = [APIServer(tmp_path / name, store.endpoints, name=name, extra_args=FAST_LEASES)
               for name in ("apiserver-a", "apiserver-b", "apiserver-c")]
    a, b, c = servers
    a.start()
    b.start()
    try:
        await a.wait_healthy()
        await b.wait_healthy()
        async with Client(a.address) as client:
            service = await client.services.get("kubernetes", "default")
            assert service.spec.cluster_ip == "10.96.0.1"
            assert not service.spec.selector
            assert [(p.name, p.port, p.protocol) for p in service.spec.ports] == [
                ("https", 443, "TCP")]
            assert service.spec.ports[0].target_port.int_val in (a.port, b.port)

            # Each healthy apiserver is listed (the second at the latest at its start).
            await _wait_endpoints(client, {_entry(a), _entry(b)}, timeout=5.0)
            leases = await client.leases.list(
                "kube-system", label_selector="apiserver.kubernetes.io/identity=kube-apiserver")
            assert len(leases.items) == 2

            # A clean stop takes the apiserver out before it exits.
            b.stop()
            assert await _endpoints(client) == {_entry(a)}
            leases = await client.leases.list(
                "kube-system", label_selector="apiserver.kubernetes.io/identity=kube-apiserver")
            assert len(leases.items) == 1

            # A killed one leaves when its lease expires (3 s), dropped by the survivor.
            c.start()
            await c.wait_healthy()
            await _wait_endpoints(client, {_entry(a), _entry(c)}, timeout=5.0)
            c.kill(signal.SIGKILL)
            await _wait_endpoints(client, {_entry(a)}, timeout=10.0)
    except BaseException:
        for server in servers:
            print(server.logs(80))
        raise
    finally:
        for server in servers:
            server.stop()


async def test_the_endpoints_reconciler_can_be_turned_off(store, tmp_path):
    server = APIServer(tmp_path / "a", store.endpoints,
                       extra_args=["--endpoint-reconciler-type", "none"])
    server.start()
    try:
        await server.wait_healthy()
        async with Client(server.address) as client:
            assert not await client.services.exists("kubernetes", "default")
            assert not await client.endpoints.exists("kubernetes", "default")
    finally:
        server.stop()
