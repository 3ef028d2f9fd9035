"""Services: cluster IPs from 10.96.0.0/12 and NodePorts (NodePort and LoadBalancer
Services) from 30000-32767, allocated
once and unique across apiservers (each reserved under its own key in the very
transaction that writes the Service), requested values checked, freed on delete,
clusterIP immutable; ExternalName Services hold none. Dynamic cluster IPs come from
the range's upper band, so a static low address (.10, the cluster DNS's) stays free.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest
from apiclient import (
    INVALID_ARGUMENT,
    Client,
    fails,
    service,
    store_keys,
)
from backends import ON_BOTH_BACKENDS

from skiff.testing.processes import APIServer

pytestmark = ON_BOTH_BACKENDS

CLUSTER_IPS = ipaddress.IPv4Network("10.96.0.0/12")
#: The low addresses dynamic allocation leaves alone (a /12 keeps 256).
STATIC_BAND = 256
IP_KEYS = "/registry/ranges/serviceips/"
PORT_KEYS = "/registry/ranges/servicenodeports/"


def _free_looking_ip() -> str:
    """An address in the range that the allocator is unlikely to have handed out."""
    return str(CLUSTER_IPS.network_address + random.randrange(400000, 1000000))


def _free_looking_port() -> int:
    return random.randrange(32000, 32700)


async def test_cluster_ips_and_node_ports_are_allocated_from_their_ranges(
        api: Client, ns: str, api_cluster):
    store = api_cluster.store.endpoints[0]
    plain = await api.services.create(service("plain", ns))
    ip = ipaddress.IPv4Address(plain.spec.cluster_ip)
    assert ip in CLUSTER_IPS and ip != CLUSTER_IPS.broadcast_address
    assert int(ip) - int(CLUSTER_IPS.network_address) >= STATIC_BAND
    assert list(plain.spec.cluster_ips) == [plain.spec.cluster_ip]
    assert plain.spec.ports[0].node_port == 0

    exposed = service("exposed", ns, type="NodePort")
    exposed.spec.ports[0].name = "http"
    exposed.spec.ports.add(name="https", port=443)
    exposed = await api.services.create(exposed)
    ports = [p.node_port for p in exposed.spec.ports]
    assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 2
    assert exposed.spec.cluster_ip != plain.spec.cluster_ip
    assert exposed.spec.external_traffic_policy == "Cluster"

    headless = await api.services.create(service("headless", ns, cluster_ip="None"))
    assert headless.spec.cluster_ip == "None"

    # A LoadBalancer is reached through node ports too, as in Kubernetes.
    balanced = await api.services.create(service("balanced", ns, type="LoadBalancer"))
    lb_port = balanced.spec.ports[0].node_port
    assert 30000 <= lb_port <= 32767 and lb_port not in ports
    ports.append(lb_port)

    # Each value is reserved in the store under its own key.
    reserved = set(await store_keys(store, IP_KEYS)) | set(await store_keys(store, PORT_KEYS))
    assert {IP_KEYS + plain.spec.cluster_ip, IP_KEYS + exposed.spec.cluster_ip,
            *(f"{PORT_KEYS}{p}" for p in ports)} <= reserved
    assert IP_KEYS + "None" not in reserved


async def test_requested_values_are_checked_and_freed_on_delete(
        api: Client, ns: str, api_cluster):
    store = api_cluster.store.endpoints[0]
    ip, port = _free_looking_ip(), _free_looking_port()
    first = await api.services.create(service("first", ns, type="NodePort", cluster_ip=ip,
                                              node_port=port))
    assert (first.spec.cluster_ip, first.spec.ports[0].node_port) == (ip, port)

    details = await fails(INVALID_ARGUMENT, api.services.create(
        service("second", ns, cluster_ip=ip)), "spec.clusterIP")
    assert "already allocated" in details
    details = await fails(INVALID_ARGUMENT, api.services.create(
        service("second", ns, type="NodePort", node_port=port)), "spec.ports[0].nodePort")
    assert "already allocated" in details
    details = await fails(INVALID_ARGUMENT, api.services.create(
        service("second", ns, cluster_ip="10.0.0.5")), "spec.clusterIP")
    assert "not in the valid range" in details
    await fails(INVALID_ARGUMENT, api.services.create(
        service("second", ns, cluster_ip="10.96.0.300")), "spec.clusterIP")
    await fails(INVALID_ARGUMENT, api.services.create(
        service("second", ns, type="NodePort", node_port=40000)), "spec.ports[0].nodePort")
    assert not await api.services.exists("second", ns)
    await fails(INVALID_ARGUMENT, api.services.create(
        service("second", ns, cluster_ip=str(CLUSTER_IPS.network_address))), "spec.clusterIP")
    assert IP_KEYS + "10.0.0.5" not in await store_keys(store, IP_KEYS)

    # Deleting the service frees both: another may now ask for them.
    await api.services.delete("first", ns)
    assert IP_KEYS + ip not in await store_keys(store, IP_KEYS)
    assert f"{PORT_KEYS}{port}" not in await store_keys(store, PORT_KEYS)
    second = await api.services.create(service("second", ns, type="NodePort", cluster_ip=ip,
                                               node_port=port))
    assert (second.spec.cluster_ip, second.spec.ports[0].node_port) == (ip, port)


async def test_updates_keep_the_cluster_ip_and_move_node_ports(
        api: Client, ns: str, api_cluster):
    store = api_cluster.store.endpoints[0]
    created = await api.services.create(service("s", ns))
    ip = created.spec.cluster_ip

    changed = await api.services.get("s", ns)
    changed.spec.cluster_ip = _free_looking_ip()
    del changed.spec.cluster_ips[:]
    await fails(INVALID_ARGUMENT, api.services.update(changed), "spec.clusterIP")
    # An update that leaves the address out keeps it (as kubectl apply would send it).
    changed.spec.cluster_ip = ""
    changed.spec.selector["tier"] = "front"
    kept = await api.services.update(changed)
    assert kept.spec.cluster_ip == ip and list(kept.spec.cluster_ips) == [ip]

    # Becoming a NodePort service allocates a port; ceasing to be one frees it.
    kept.spec.type = "NodePort"
    exposed = await api.services.update(kept)
    port = exposed.spec.ports[0].node_port
    assert 30000 <= port <= 32767 and exposed.spec.cluster_ip == ip
    assert f"{PORT_KEYS}{port}" in await store_keys(store, PORT_KEYS)
    exposed.spec.type = "ClusterIP"  # the type alone, as `kubectl edit` would send it
    internal = await api.services.update(exposed)
    assert internal.spec.ports[0].node_port == 0 and not internal.spec.external_traffic_policy
    assert f"{PORT_KEYS}{port}" not in await store_keys(store, PORT_KEYS)
    assert IP_KEYS + ip in await store_keys(store, IP_KEYS)
    taker = await api.services.create(service("taker", ns, type="NodePort", node_port=port))
    assert taker.spec.ports[0].node_port == port


async def test_external_name_services_hold_no_cluster_ip(api: Client, ns: str, shared_cluster):
    store = shared_cluster.store.endpoints[0]
    alias = service("alias", ns, type="ExternalName")
    alias.spec.external_name = "db.example.org"
    del alias.spec.ports[:]
    created = await api.services.create(alias)
    assert created.spec.cluster_ip == "" and not created.spec.cluster_ips
    assert created.spec.external_name == "db.example.org"
    await fails(INVALID_ARGUMENT, api.services.create(service("nameless", ns,
                                                              type="ExternalName")),
                "spec.externalName")

    # A ClusterIP service that becomes an alias gives its address back.
    plain = await api.services.create(service("plain", ns))
    ip = plain.spec.cluster_ip
    plain.spec.type, plain.spec.external_name = "ExternalName", "db.example.org"
    plain.spec.cluster_ip = ""
    del plain.spec.cluster_ips[:]
    aliased = await api.services.update(plain)
    assert aliased.spec.cluster_ip == "" and not aliased.spec.cluster_ips
    assert IP_KEYS + ip not in await store_keys(store, IP_KEYS)


@pytest.mark.parametrize("count", [100])
async def test_services_created_at_once_on_two_apiservers_get_distinct_values(
        ns: str, api_cluster, tmp_path, count: int):
    # A /24 and 300 node ports: random picks by two apiservers collide often.
    flags = ["--service-cluster-ip-range", "10.96.0.0/24",
             "--service-node-port-range", "30000-30299"]
    servers = [APIServer(tmp_path / f"a{i}", api_cluster.store.endpoints,
                         name=f"apiserver-{i}", extra_args=flags) for i in range(2)]
    for server in servers:
        server.start()
    try:
        await asyncio.gather(*(server.wait_healthy() for server in servers))
        clients = [Client(server.address) for server in servers]
        created = await asyncio.gather(*(
            clients[i % 2].services.create(service(f"s{i:03}", ns, type="NodePort"))
            for i in range(count)))
        ips = [s.spec.cluster_ip for s in created]
        ports = [s.spec.ports[0].node_port for s in created]
        assert len(set(ips)) == count and len(set(ports)) == count
        # Dynamic picks stay off the /24's static band (its first 16 addresses).
        assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.96.0.0/24")
                   and int(ip.rpartition(".")[2]) >= 16 for ip in ips)
        assert all(30000 <= p <= 30299 for p in ports)
        # What each apiserver answered is what is stored, and what the other one lists.
        for client in clients:
            listed = await client.services.list(ns)
            assert sorted((s.metadata.name, s.spec.cluster_ip, s.spec.ports[0].node_port)
                          for s in listed.items) == sorted(
                (s.metadata.name, s.spec.cluster_ip, s.spec.ports[0].node_port)
                for s in created)
        store = api_cluster.store.endpoints[1]
        assert {IP_KEYS + ip for ip in ips} <= set(await store_keys(store, IP_KEYS))

        await asyncio.gather(*(clients[i % 2].services.delete(f"s{i:03}", ns)
                               for i in range(count)))
        assert not {IP_KEYS + ip for ip in ips} & set(await store_keys(store, IP_KEYS))
        assert not {f"{PORT_KEYS}{p}" for p in ports} & set(await store_keys(store, PORT_KEYS))
        for client in clients:
            await client.close()
    finally:
        for server in servers:
            server.stop()


async def test_a_static_low_address_is_honoured(api: Client, ns: str):
    # Somewhere in the static band other than .1 (the kubernetes Service's) and .10.
    ip = str(CLUSTER_IPS.network_address + random.randrange(20, STATIC_BAND - 1))
    created = await api.services.create(service("static", ns, cluster_ip=ip))
    assert created.spec.cluster_ip == ip
    await fails(INVALID_ARGUMENT, api.services.create(service("again", ns, cluster_ip=ip)),
                "spec.clusterIP")
    await api.services.delete("static", ns)
    kubernetes = await api.services.get("kubernetes", "default")
    assert kubernetes.spec.cluster_ip == "10.96.0.1"
    details = await fails(INVALID_ARGUMENT, api.services.create(
        service("taken", ns, cluster_ip="10.96.0.1")), "spec.clusterIP")
    assert "already allocated" in details
