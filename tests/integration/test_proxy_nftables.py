"""The proxy's kernel rules loaded for real, each test in network namespaces of its own.

The applier (:mod:`services.proxy.nftables`) runs ``nft`` and ``iptables`` through
``ip netns exec``, so the host's ruleset is never touched; every address used is in the
cluster's ranges (pods 10.244.0.0/16, services 10.96.0.0/12) and traffic stays between
the test's namespaces (a veth pair created inside them). The data-path tests send real
TCP and UDP through the generated DNAT rules: random choice, ClientIP affinity,
rejection of a service with no endpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from services.proxy.nftables import NftablesApplier, describe_drift
from services.proxy.nftables_rules import (
    NFTABLES,
    USERSPACE,
    Endpoint,
    ServicePort,
    Settings,
    build_ruleset,
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("nft") and shutil.which("ip") and os.geteuid() == 0),
    reason="needs nft, ip and root (network namespaces)")

CLUSTER_CIDR = "10.244.0.0/16"
CLIENT_IP = "10.244.1.1"
BACKENDS = ("10.244.1.2", "10.244.1.3")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check)


def new_netns() -> str:
    name = f"skiff-test-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    return name


@pytest.fixture
def netns() -> Iterator[str]:
    """An empty network namespace, deleted (with everything in it) afterwards."""
    name = new_netns()
    try:
        yield name
    finally:
        sh("ip", "netns", "delete", name, check=False)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def listing(ns: str) -> str:
    return in_ns(ns, "nft", "list", "ruleset").stdout


def web(**overrides: Any) -> ServicePort:
    base = ServicePort(namespace="ns", name="web", protocol="TCP", cluster_ip="10.96.0.20",
                       port=80, proxy_port=40001,
                       endpoints=tuple(Endpoint(ip, 8080) for ip in BACKENDS))
    return dataclasses.replace(base, **overrides)


def few_services() -> list[ServicePort]:
    return [
        web(node_port=30080),
        ServicePort(namespace="kube-system", name="dns", protocol="UDP",
                    cluster_ip="10.96.0.10", port=53, proxy_port=40002,
                    endpoints=(Endpoint("10.244.1.2", 5353),)),
        web(name="sticky", cluster_ip="10.96.0.21", proxy_port=40003,
            session_affinity="ClientIP", affinity_timeout=300),
        web(name="empty", cluster_ip="10.96.0.30", proxy_port=40004, endpoints=()),
    ]


# ------------------------------------------------------------ the table itself


@pytest.mark.parametrize("mode", [USERSPACE, NFTABLES])
async def test_apply_is_idempotent_follows_endpoints_and_cleanup_leaves_nothing(netns, mode):
    settings = Settings(mode=mode, cluster_cidr=CLUSTER_CIDR)
    applier = NftablesApplier(wrap=("ip", "netns", "exec", netns))
    ruleset = build_ruleset(few_services(), settings)
    first = await applier.apply(ruleset)
    assert first.full
    text = listing(netns)
    assert "table ip skiff" in text
    assert describe_drift(ruleset, await applier.list_table()) == []

    again = await applier.apply(ruleset)
    assert again.commands == 0
    # A new applier (a restarted proxy) knows nothing and replaces the table whole:
    # still one copy of everything.
    restarted = NftablesApplier(wrap=("ip", "netns", "exec", netns))
    assert (await restarted.apply(ruleset)).full
    assert listing(netns) == text
    assert listing(netns).count("table ip skiff") == 1

    services = few_services()
    services[0] = web(node_port=30080, endpoints=(Endpoint("10.244.7.7", 8080),))
    changed = build_ruleset(services, settings)
    update = await restarted.apply(changed)
    assert not update.full or mode == USERSPACE
    assert describe_drift(changed, await restarted.list_table()) == []
    if mode == NFTABLES:
        after = listing(netns)
        assert "dnat to 10.244.7.7:8080" in after
        assert "ep-ns/web/tcp/80/10.244.1.2/8080" not in after

    await restarted.cleanup([CLUSTER_CIDR])
    assert "skiff" not in listing(netns)
    await restarted.cleanup([CLUSTER_CIDR])  # nothing there: still fine


async def test_sync_repairs_a_table_changed_behind_its_back(netns):
    applier = NftablesApplier(wrap=("ip", "netns", "exec", netns))
    ruleset = build_ruleset(few_services(), Settings(mode=NFTABLES))
    await applier.apply(ruleset)
    assert (await applier.sync(ruleset)).commands == 0  # nothing drifted

    in_ns(netns, "nft", "flush", "chain", "ip", "skiff", "svc-ns/web/tcp/80")
    in_ns(netns, "nft", "delete", "element", "ip", "skiff", "service-ips",
          "{ 10.96.0.21 . tcp . 80 }")
    assert len(describe_drift(ruleset, await applier.list_table())) == 2
    repaired = await applier.sync(ruleset)
    assert repaired.full
    assert describe_drift(ruleset, await applier.list_table()) == []

    in_ns(netns, "nft", "delete", "table", "ip", "skiff")
    assert (await applier.sync(ruleset)).full
    assert describe_drift(ruleset, await applier.list_table()) == []


async def test_an_incremental_update_that_no_longer_fits_falls_back_to_a_full_write(netns):
    applier = NftablesApplier(wrap=("ip", "netns", "exec", netns))
    settings = Settings(mode=NFTABLES)
    await applier.apply(build_ruleset(few_services(), settings))
    # Someone deletes a chain the next update wants to flush.
    in_ns(netns, "nft", "flush", "chain", "ip", "skiff", "svc-ns/web/tcp/80")
    in_ns(netns, "nft", "delete", "chain", "ip", "skiff", "ep-ns/web/tcp/80/10.244.1.2/8080")
    services = few_services()
    services[0] = web(endpoints=(Endpoint("10.244.7.7", 8080),))
    changed = build_ruleset(services, settings)
    assert (await applier.apply(changed)).full
    assert describe_drift(changed, await applier.list_table()) == []


async def test_docker_user_entries_only_where_the_chain_exists_and_only_once(netns):
    applier = NftablesApplier(wrap=("ip", "netns", "exec", netns))
    assert await applier.ensure_docker_user([CLUSTER_CIDR]) == 0
    assert in_ns(netns, "iptables", "-n", "-L", "DOCKER-USER", check=False).returncode != 0

    # A Docker host: FORWARD drops, DOCKER-USER exists and returns.
    in_ns(netns, "iptables", "-P", "FORWARD", "DROP")
    in_ns(netns, "iptables", "-N", "DOCKER-USER")
    in_ns(netns, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
    assert await applier.ensure_docker_user([CLUSTER_CIDR]) == 2
    assert await applier.ensure_docker_user([CLUSTER_CIDR]) == 0
    rules = in_ns(netns, "iptables", "-S", "DOCKER-USER").stdout.splitlines()
    assert rules[1:3] == [
        f'-A DOCKER-USER -d {CLUSTER_CIDR} -m comment --comment "skiff cluster traffic" '
        "-j ACCEPT",
        f'-A DOCKER-USER -s {CLUSTER_CIDR} -m comment --comment "skiff cluster traffic" '
        "-j ACCEPT"]
    assert rules[-1] == "-A DOCKER-USER -j RETURN"

    await applier.cleanup([CLUSTER_CIDR])
    assert in_ns(netns, "iptables", "-S", "DOCKER-USER").stdout.splitlines() == [
        "-N DOCKER-USER", "-A DOCKER-USER -j RETURN"]
    assert "-P FORWARD DROP" in in_ns(netns, "iptables", "-S", "FORWARD").stdout


# --------------------------------------------------------------- the data path

SERVER = r"""
import socket, sys, threading
tcp_port, udp_port, ips = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def tcp(ip):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, tcp_port)); s.listen(64)
    return s
def udp(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, udp_port))
    return s
def serve_tcp(s):
    while True:  # answer with the address the connection reached
        c, _ = s.accept(); c.sendall(c.getsockname()[0].encode()); c.close()
def serve_udp(s):
    while True:
        data, peer = s.recvfrom(512); s.sendto(s.getsockname()[0].encode(), peer)
socks = [(serve_tcp, tcp(ip)) for ip in ips] + [(serve_udp, udp(ip)) for ip in ips]
for serve, s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = r"""
import json, socket, sys
proto, ip, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = []
for _ in range(count):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind); s.settimeout(3)
    try:
        s.connect((ip, port))
        if proto == "udp":
            s.send(b"?")
            out.append(s.recv(512).decode())
        else:
            out.append(s.recv(512).decode())
    except OSError as err:
        out.append(type(err).__name__)
    finally:
        s.close()
print(json.dumps(out))
"""


@pytest.fixture
def pods() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: a client (10.244.1.1) and a backend that
    answers on 10.244.1.2 and 10.244.1.3 (TCP 8080, UDP 5353) with the address asked."""
    client, backend = new_netns(), new_netns()
    server = None
    try:
        sh("ip", "-n", client, "link", "add", "c0", "type", "veth", "peer", "name", "b0",
           "netns", backend)
        sh("ip", "-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", "c0")
        for ip in BACKENDS:
            sh("ip", "-n", backend, "addr", "add", f"{ip}/24", "dev", "b0")
        for ns, dev in ((client, "c0"), (backend, "b0")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        # Service addresses are routed to the link; DNAT in output then re-routes.
        sh("ip", "-n", client, "route", "add", "10.96.0.0/12", "dev", "c0")
        server = serve(backend, 8080, 5353, *BACKENDS)
        yield client, backend
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in (client, backend):
            sh("ip", "netns", "delete", ns, check=False)


def serve(ns: str, tcp_port: int, udp_port: int, *ips: str) -> subprocess.Popen[str]:
    """Start the answering server in ``ns``; returns once it listens."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, str(tcp_port),
         str(udp_port), *ips], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        server.kill()
        raise AssertionError(f"the server in {ns} did not start")
    return server


def ask(ns: str, proto: str, ip: str, port: int, count: int) -> list[str]:
    done = in_ns(ns, sys.executable, "-c", CLIENT, proto, ip, str(port), str(count))
    return json.loads(done.stdout)


async def test_nftables_mode_carries_tcp_and_udp_to_the_endpoints(pods):
    client, _ = pods
    applier = NftablesApplier(wrap=("ip", "netns", "exec", client))
    await applier.apply(build_ruleset(few_services(),
                                      Settings(mode=NFTABLES, cluster_cidr=CLUSTER_CIDR)))
    # Random choice: both endpoints answer (all 40 on one: probability 2**-39).
    answers = ask(client, "tcp", "10.96.0.20", 80, 40)
    assert set(answers) == set(BACKENDS)
    # UDP, one endpoint on another port.
    assert ask(client, "udp", "10.96.0.10", 53, 5) == ["10.244.1.2"] * 5
    # ClientIP affinity: every connection of this client goes where the first went.
    sticky = ask(client, "tcp", "10.96.0.21", 80, 30)
    assert sticky[0] in BACKENDS and set(sticky) == {sticky[0]}
    # No endpoints: refused at once (TCP reset), not a timeout.
    assert ask(client, "tcp", "10.96.0.30", 80, 2) == ["ConnectionRefusedError"] * 2

    # An Endpoints change reaches the kernel: only the second backend now, and the
    # affinity of the service that kept its endpoints survives the update.
    services = few_services()
    services[0] = web(node_port=30080, endpoints=(Endpoint("10.244.1.3", 8080),))
    assert not (await applier.apply(build_ruleset(
        services, Settings(mode=NFTABLES, cluster_cidr=CLUSTER_CIDR)))).full
    assert ask(client, "tcp", "10.96.0.20", 80, 10) == ["10.244.1.3"] * 10
    assert set(ask(client, "tcp", "10.96.0.21", 80, 10)) == {sticky[0]}


async def test_nftables_mode_node_ports_masquerade_traffic_from_another_host(pods):
    node, other = pods
    # The client namespace plays the node: it routes (its own sysctl, not the host's).
    in_ns(node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    applier = NftablesApplier(wrap=("ip", "netns", "exec", node))
    await applier.apply(build_ruleset(few_services(),
                                      Settings(mode=NFTABLES, cluster_cidr=CLUSTER_CIDR)))
    # From 10.244.1.2 to the node's address: DNATed to an endpoint (sometimes the
    # sender itself: hairpin) and masqueraded, so every reply comes back through the
    # node and is un-NATed; without the masquerade, an endpoint would answer the client
    # directly from its own address and the connection would never complete.
    answers = ask(other, "tcp", CLIENT_IP, 30080, 30)
    assert set(answers) == set(BACKENDS)
    # Not a NodePort of ours: left alone (nothing listens there: refused).
    assert ask(other, "tcp", CLIENT_IP, 30081, 1) == ["ConnectionRefusedError"]


async def test_userspace_mode_sends_cluster_ips_and_node_ports_to_the_proxys_listener(pods):
    node, other = pods
    sh("ip", "-n", other, "route", "add", "10.96.0.0/12", "via", CLIENT_IP)
    # Bound per address, not to 0.0.0.0: a UDP reply from a wildcard socket leaves from
    # the routing's choice of address, which may not be the one the redirect chose, and
    # conntrack would then not translate it back (the proxy's UDP listener must do the
    # same, or answer with IP_PKTINFO).
    listener = serve(node, 40001, 40002, "127.0.0.1", CLIENT_IP)
    try:
        applier = NftablesApplier(wrap=("ip", "netns", "exec", node))
        await applier.apply(build_ruleset(
            few_services(), Settings(mode=USERSPACE, cluster_cidr=CLUSTER_CIDR)))
        # A host process (output): redirected to the node's loopback.
        assert ask(node, "tcp", "10.96.0.20", 80, 3) == ["127.0.0.1"] * 3
        assert ask(node, "udp", "10.96.0.10", 53, 3) == ["127.0.0.1"] * 3
        # A pod or another host (prerouting): redirected to the address it came in on.
        assert ask(other, "tcp", "10.96.0.20", 80, 3) == [CLIENT_IP] * 3
        assert ask(other, "udp", "10.96.0.10", 53, 3) == [CLIENT_IP] * 3
        assert ask(other, "tcp", CLIENT_IP, 30080, 3) == [CLIENT_IP] * 3
        assert ask(other, "tcp", CLIENT_IP, 30081, 1) == ["ConnectionRefusedError"]
        # Gone after cleanup: the service address is nobody's any more.
        await applier.cleanup()
        assert ask(node, "tcp", "10.96.0.20", 80, 1) != ["127.0.0.1"]
    finally:
        listener.kill()
        listener.wait()
