"""skiff-proxy as a real process in a network namespace, in both modes, with real pods.

Each test builds a small node in namespaces of its own (deleted afterwards; the host's
network is never touched):

- ``node``: where the proxy runs, with the pod bridge ``skb-t`` (10.244.7.1/24), the
  service range routed onto it (as the kubelet does), a link to ``ext`` (10.112.0.1),
  and loopback node address 127.0.1.5 (for the direct NodePort listener);
- ``pod1``, ``pod2`` (10.244.7.11, .12): backends on veths on the bridge, answering TCP
  (their address, then an echo per line) and UDP (their address);
- ``client`` (10.244.7.20): a pod on the same bridge;
- ``ext`` (10.112.0.2): another host, reaching the node's NodePorts and external IPs.

The proxy reaches the apiserver through a relay: a listening socket the test opens
inside ``node`` (a socket stays in the namespace it was made in) that forwards to an
apiserver on the host's loopback; that apiserver allocates cluster IPs from
10.96.0.0/12. The test's own sockets are made the same way, inside the namespace that
plays the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from apiclient import Client

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.testing.fixtures import failed
from skiff.testing.processes import APIServer, Process, free_port, grpc_healthy

pytestmark = pytest.mark.skipif(
    not (shutil.which("nft") and shutil.which("ip") and os.geteuid() == 0),
    reason="needs nft, ip and root (network namespaces)")

DEADLINE = 20.0
BRIDGE = "skb-t"
GATEWAY = "10.244.7.1"
PODS = {"pod1": "10.244.7.11", "pod2": "10.244.7.12"}
CLIENT = "10.244.7.20"
NODE_EXT, EXT = "10.112.0.1", "10.112.0.2"
EXTERNAL_IP = "10.112.0.50"
NODE_LOOPBACK = "127.0.1.5"
TCP_PORT, UDP_PORT = 8080, 5353
MODES = ["userspace", "nftables"]


# ------------------------------------------------------------ namespaces, sockets


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check)


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def socket_in(netns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A non-blocking socket made inside ``netns`` (on a thread that enters it and ends)."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, kind)
            s.setblocking(False)
            made.append(s)
        except BaseException as err:  # handed to the caller
            made.append(err)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Relay:
    """Accepts on ``listener`` and joins each connection to one ``connect()`` makes."""

    def __init__(self, listener: socket.socket,
                 connect: Callable[[], Awaitable[tuple[asyncio.StreamReader,
                                                      asyncio.StreamWriter]]]) -> None:
        self.listener, self.connect = listener, connect
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.listener)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self.connect()
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def tcp_connect(netns: str, ip: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    s = socket_in(netns)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (ip, port)), 3)
    except BaseException:
        s.close()
        raise
    return await asyncio.open_connection(sock=s)


class Conn:
    """A TCP connection from a namespace through a Service, the backend's greeting read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 backend: str) -> None:
        self.reader, self.writer, self.backend = reader, writer, backend

    async def echo(self, text: str) -> str:
        self.writer.write(f"{text}\n".encode())
        return (await asyncio.wait_for(self.reader.readline(), DEADLINE)).decode().strip()

    def close(self) -> None:
        self.writer.close()


async def connect(netns: str, ip: str, port: int) -> Conn:
    reader, writer = await tcp_connect(netns, ip, port)
    greeting = await asyncio.wait_for(reader.readline(), 3)
    if not greeting:
        writer.close()
        raise ConnectionError("closed with no data")
    return Conn(reader, writer, greeting.decode().strip())


async def tcp_ask(netns: str, ip: str, port: int) -> str:
    """Which backend answers a new connection (an exception's name when none does)."""
    try:
        conn = await connect(netns, ip, port)
    except (OSError, TimeoutError) as err:
        return type(err).__name__
    conn.close()
    return conn.backend


async def udp_ask(netns: str, ip: str, port: int, *, sock: socket.socket | None = None,
                  timeout: float = 2.0) -> str:
    """Which backend answers a datagram (from a fresh source port unless ``sock``)."""
    s = sock or socket_in(netns, socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(s, (ip, port))
        await loop.sock_sendall(s, b"?")
        return (await asyncio.wait_for(loop.sock_recv(s, 512), timeout)).decode()
    except (OSError, TimeoutError) as err:
        return type(err).__name__
    finally:
        if sock is None:
            s.close()


async def spread(ask: Callable[[], Awaitable[str]], count: int) -> Counter[str]:
    return Counter([await ask() for _ in range(count)])


# ---------------------------------------------------------------------- the node

SERVER = r"""
import hashlib, random, socket, sys, threading
ip, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def pattern(size, seed):
    block = random.Random(seed).randbytes(1 << 20)
    return (block * (size // len(block) + 1))[:size]
def serve_conn(c):
    with c:
        c.sendall(ip.encode() + b"\n")
        f = c.makefile("rb")
        for line in f:
            verb, _, arg = line.decode().strip().partition(" ")
            if verb == "send":  # N bytes, then close: the EOF has to reach the client
                c.sendall(pattern(int(arg), 1))
                return
            if verb == "sink":  # read to EOF (the client's half-close), then answer
                digest, size = hashlib.sha256(), 0
                while chunk := f.read1(1 << 18):
                    digest.update(chunk); size += len(chunk)
                c.sendall(f"{size} {digest.hexdigest()}\n".encode())
                return
            c.sendall(ip.encode() + b":" + line)
def serve_tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, tcp_port)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()
def serve_udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, udp_port))
    while True:
        _, peer = s.recvfrom(512); s.sendto(ip.encode(), peer)
threading.Thread(target=serve_tcp, daemon=True).start()
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Node:
    """The namespaces of one test (see the module docstring)."""

    node: str
    client: str
    ext: str
    pods: dict[str, str]  # pod IP -> namespace
    servers: dict[str, subprocess.Popen[str]]

    def start_backend(self, ip: str) -> None:
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.pods[ip], sys.executable, "-c", SERVER, ip,
             str(TCP_PORT), str(UDP_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            server.kill()
            raise AssertionError(f"the backend {ip} did not start")
        self.servers[ip] = server

    def tables(self) -> list[str]:
        out = sh("ip", "netns", "exec", self.node, "nft", "list", "tables").stdout
        return [line.split()[-1] for line in out.splitlines() if line.startswith("table")]


def _veth_pod(node: str, pod: str, ip: str, index: int) -> None:
    host_end = f"vt{index}"
    sh("ip", "-n", node, "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
       "netns", pod)
    sh("ip", "-n", node, "link", "set", host_end, "master", BRIDGE, "up")
    sh("ip", "-n", pod, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", pod, "link", "set", "eth0", "up")
    sh("ip", "-n", pod, "link", "set", "lo", "up")
    sh("ip", "-n", pod, "route", "add", "default", "via", GATEWAY)


@pytest.fixture
def node() -> Iterator[Node]:
    tag = secrets.token_hex(3)
    names = {role: f"skiff-t-{role}-{tag}" for role in ("node", "client", "ext", *PODS)}
    for name in names.values():
        sh("ip", "netns", "add", name)
    built = Node(names["node"], names["client"], names["ext"],
                 {ip: names[pod] for pod, ip in PODS.items()}, {})
    try:
        n = built.node
        sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", n, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", n, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        sh("ip", "-n", n, "link", "set", BRIDGE, "up")
        sh("ip", "-n", n, "route", "add", "10.96.0.0/12", "dev", BRIDGE)
        sh("ip", "netns", "exec", n, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for index, (pod, ip) in enumerate([*PODS.items(), ("client", CLIENT)]):
            _veth_pod(n, names[pod], ip, index)
        sh("ip", "-n", n, "link", "add", "vx", "type", "veth", "peer", "name", "eth0",
           "netns", built.ext)
        sh("ip", "-n", n, "addr", "add", f"{NODE_EXT}/24", "dev", "vx")
        sh("ip", "-n", n, "link", "set", "vx", "up")
        sh("ip", "-n", built.ext, "addr", "add", f"{EXT}/24", "dev", "eth0")
        sh("ip", "-n", built.ext, "link", "set", "eth0", "up")
        sh("ip", "-n", built.ext, "route", "add", "10.96.0.0/12", "via", NODE_EXT)
        sh("ip", "-n", built.ext, "route", "add", f"{EXTERNAL_IP}/32", "via", NODE_EXT)
        for ip in PODS.values():
            built.start_backend(ip)
        yield built
    finally:
        for server in built.servers.values():
            server.kill()
            server.wait()
        for name in names.values():
            sh("ip", "netns", "delete", name, check=False)


# ----------------------------------------------------------- apiserver and proxy


@pytest.fixture
async def apiserver(shared_cluster, tmp_path: Path, request) -> AsyncIterator[APIServer]:
    """An apiserver on the shared store that allocates cluster IPs from 10.96.0.0/12."""
    server = APIServer(tmp_path / "apiserver", shared_cluster.store.endpoints,
                       name="apiserver-proxy",
                       extra_args=["--service-cluster-ip-range", "10.96.0.0/12"])
    server.start()
    try:
        await server.wait_healthy(timeout=DEADLINE)
        yield server
    finally:
        server.stop()
        if failed(request):
            print(server.logs(60))


@pytest.fixture
async def services(apiserver: APIServer) -> AsyncIterator[Client]:
    client = Client(apiserver.address)
    try:
        yield client
    finally:
        await client.close()


class NetnsProxy:
    """A skiff-proxy process inside ``node.node``, its apiserver relayed in."""

    def __init__(self, base: Path, node: Node, apiserver: APIServer, mode: str,
                 name: str = "n-test", bridge: str = BRIDGE, health_port: int = 10256
                 ) -> None:
        self.node, self.mode, self.node_name = node, mode, name
        self.table = f"skiff-proxy-{name}"
        host, port = apiserver.address.rsplit(":", 1)
        listener = socket_in(node.node)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.relay_port = listener.getsockname()[1]
        self.api_relay = Relay(listener, lambda: asyncio.open_connection(host, int(port)))
        self.health_port = health_port
        health = socket.socket()
        health.bind(("127.0.0.1", free_port()))
        health.listen(16)
        health.setblocking(False)
        self.health_address = f"127.0.0.1:{health.getsockname()[1]}"
        self.health_relay = Relay(
            health, lambda: tcp_connect(node.node, "127.0.0.1", self.health_port))
        metrics = socket.socket()
        metrics.bind(("127.0.0.1", free_port()))
        metrics.listen(16)
        metrics.setblocking(False)
        self.metrics_url = f"http://127.0.0.1:{metrics.getsockname()[1]}"
        self.metrics_relay = Relay(
            metrics, lambda: tcp_connect(node.node, "127.0.0.1", health_port + 1000))
        argv = ["ip", "netns", "exec", node.node, sys.executable, "-m", "services.proxy",
                "--server", f"127.0.0.1:{self.relay_port}", "--node-name", name,
                "--node-address", NODE_LOOPBACK, "--proxy-mode", mode,
                "--pod-bridge-interface", bridge, "--cluster-cidr", "10.244.0.0/16",
                "--service-cluster-ip-range", "10.96.0.0/12", "--udp-timeout", "5s",
                "--health-listen", f"127.0.0.1:{self.health_port}", "--connect-timeout",
                "0.5", "--listen-metrics-urls", f"http://127.0.0.1:{health_port + 1000}"]
        self.process = Process(base, f"proxy-{name}-{mode}", argv)

    async def start(self) -> None:
        await self.api_relay.start()
        await self.health_relay.start()
        await self.metrics_relay.start()
        self.process.start()
        await wait_for(lambda: grpc_healthy(self.health_address), timeout=DEADLINE,
                       what="proxy healthy")

    def stop(self) -> None:
        self.process.stop()

    def close(self) -> None:
        self.process.stop()
        self.api_relay.close()
        self.health_relay.close()
        self.metrics_relay.close()

    async def scrape(self) -> str:
        def get() -> str:
            with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as reply:
                return str(reply.read().decode())
        return await asyncio.to_thread(get)


@pytest.fixture
async def make_proxy(node: Node, apiserver: APIServer, tmp_path: Path, request
                     ) -> AsyncIterator[Callable[[str], Awaitable[NetnsProxy]]]:
    made: list[NetnsProxy] = []

    async def make(mode: str, name: str = "n-test", bridge: str = BRIDGE,
                   health_port: int = 10256) -> NetnsProxy:
        proxy = NetnsProxy(tmp_path / f"proxy{len(made)}", node, apiserver, mode, name,
                           bridge, health_port)
        made.append(proxy)
        await proxy.start()
        return proxy

    try:
        yield make
    finally:
        for proxy in made:
            proxy.close()
            if failed(request):
                print(proxy.process.logs(80))


# ------------------------------------------------------------------ API objects


async def make_service(api: Client, ns: str, name: str, *, protocol: str = "TCP",
                       type_: str = "ClusterIP", affinity: str = "None",
                       ingress_ip: str = "") -> core_pb2.Service:
    """A one-port Service; ``ingress_ip``: a LoadBalancer with that ingress address in
    its status (as a load-balancer provider would write it)."""
    spec = core_pb2.ServiceSpec(type=type_, session_affinity=affinity)
    spec.ports.add(name="p", port=80 if protocol == "TCP" else 53, protocol=protocol)
    created = await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=ns), spec=spec))
    if ingress_ip:
        created.status.load_balancer.ingress.add(ip=ingress_ip)
        created = await api.services.update_status(created)
    return created


async def set_endpoints(api: Client, ns: str, name: str, ips: list[str], *,
                        protocol: str = "TCP") -> None:
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns))
    if ips:
        subset = obj.subsets.add()
        subset.addresses.extend(core_pb2.EndpointAddress(ip=ip) for ip in ips)
        subset.ports.add(name="p", port=TCP_PORT if protocol == "TCP" else UDP_PORT,
                         protocol=protocol)
    try:
        current = await api.endpoints.get(name, ns)
    except Exception:  # not found yet
        await api.endpoints.create(obj)
        return
    obj.metadata.resource_version = current.metadata.resource_version
    await api.endpoints.update(obj)


# ------------------------------------------------------------------------ tests


@pytest.mark.parametrize("mode", MODES)
async def test_services_answer_from_pods_the_node_and_other_hosts(
        mode: str, node: Node, services: Client, ns: str, make_proxy) -> None:
    both = list(PODS.values())
    # (A NodePort Service with an ingress address: LoadBalancer Services come with the
    # load-balancer provider; the proxy treats the ingress address the same way.)
    web = await make_service(services, ns, "web", type_="NodePort", ingress_ip=EXTERNAL_IP)
    dns = await make_service(services, ns, "dns", protocol="UDP")
    sticky = await make_service(services, ns, "sticky", affinity="ClientIP")
    sticky_udp = await make_service(services, ns, "sticky-dns", protocol="UDP",
                                    affinity="ClientIP")
    for name in ("web", "sticky"):
        await set_endpoints(services, ns, name, both)
    for name in ("dns", "sticky-dns"):
        await set_endpoints(services, ns, name, both, protocol="UDP")
    ip, node_port = web.spec.cluster_ip, web.spec.ports[0].node_port
    assert ip.startswith("10.")
    proxy = await make_proxy(mode)
    assert proxy.table in node.tables()

    # From a pod on the bridge and from the node itself (a host process): spread.
    for where in (node.client, node.node):
        await wait_for(lambda w=where: _in(tcp_ask(w, ip, 80), both), timeout=DEADLINE,
                       what=f"{ip}:80 from {where}")
        seen = await spread(lambda w=where: tcp_ask(w, ip, 80), 24)
        assert set(seen) == set(both), seen
    # UDP, from a pod: answered, spread over both (a new source port each time).
    udp_ip = dns.spec.cluster_ip
    seen = await spread(lambda: udp_ask(node.client, udp_ip, 53), 24)
    assert set(seen) == set(both), seen
    # ClientIP affinity: one backend for one client.
    sticky_ip = sticky.spec.cluster_ip
    seen = await spread(lambda: tcp_ask(node.client, sticky_ip, 80), 12)
    assert len(seen) == 1 and set(seen) <= set(both), seen
    sticky_udp_ip = sticky_udp.spec.cluster_ip
    seen = await spread(lambda: udp_ask(node.client, sticky_udp_ip, 53), 12)
    assert len(seen) == 1 and set(seen) <= set(both), seen
    # From another host: the NodePort on the node's address and the LB ingress IP.
    for target in ((NODE_EXT, node_port), (EXTERNAL_IP, 80)):
        seen = await spread(lambda t=target: tcp_ask(node.ext, *t), 16)
        assert set(seen) == set(both), (target, seen)
    # The NodePort on the loopback node address: the proxy's direct listener.
    seen = await spread(lambda: tcp_ask(node.node, NODE_LOOPBACK, node_port), 8)
    assert set(seen) == set(both), seen


@pytest.mark.parametrize("mode", MODES)
async def test_a_deleted_backend_gets_no_new_connections_and_established_ones_live(
        mode: str, node: Node, services: Client, ns: str, make_proxy) -> None:
    pod1, pod2 = PODS.values()
    web = await make_service(services, ns, "churn")
    dns = await make_service(services, ns, "dns", protocol="UDP")
    ip, udp_ip = web.spec.cluster_ip, dns.spec.cluster_ip
    await set_endpoints(services, ns, "churn", [pod1, pod2])
    await set_endpoints(services, ns, "dns", [pod1, pod2], protocol="UDP")
    await make_proxy(mode)
    await wait_for(lambda: _in(tcp_ask(node.client, ip, 80), [pod1, pod2]),
                   timeout=DEADLINE, what="service reachable")
    live = [await connect(node.client, ip, 80) for _ in range(8)]
    on_pod1 = [c for c in live if c.backend == pod1]
    assert on_pod1, "no connection reached pod1"
    # A UDP client that keeps its source port keeps its backend (one flow, one session).
    udp_client = socket_in(node.client, socket.SOCK_DGRAM)
    first = await udp_ask(node.client, udp_ip, 53, sock=udp_client)
    assert first in (pod1, pod2)
    assert {await udp_ask(node.client, udp_ip, 53, sock=udp_client) for _ in range(5)} \
        == {first}
    other = pod2 if first == pod1 else pod1

    await set_endpoints(services, ns, "churn", [pod2])
    await set_endpoints(services, ns, "dns", [other], protocol="UDP")
    loop = asyncio.get_running_loop()
    changed = loop.time()
    # Within a second, new connections go to pod2 only (polled, with that deadline),
    # and the UDP client's next datagrams to the remaining backend. (A datagram whose
    # answer was under way as its flow was cleared is lost, as UDP may lose any: the
    # client asks again soon, not after the usual 2 s.)
    while loop.time() - changed < 1.0:
        if (set(await spread(lambda: tcp_ask(node.client, ip, 80), 4)) == {pod2}
                and await udp_ask(node.client, udp_ip, 53, sock=udp_client,
                                  timeout=0.1) == other):
            break
    assert loop.time() - changed < 1.0, "the removed backend still served after 1 s"
    assert set(await spread(lambda: tcp_ask(node.client, ip, 80), 12)) == {pod2}
    assert {await udp_ask(node.client, udp_ip, 53, sock=udp_client) for _ in range(5)} \
        == {other}
    udp_client.close()
    # The established connections to pod1 still work both ways.
    for i, conn in enumerate(on_pod1):
        assert await conn.echo(f"x{i}") == f"{pod1}:x{i}"
    for conn in live:
        conn.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_clean_stop_removes_the_table_and_a_restart_adopts_it(
        mode: str, node: Node, services: Client, ns: str, make_proxy) -> None:
    both = list(PODS.values())
    web = await make_service(services, ns, "web")
    await set_endpoints(services, ns, "web", both)
    proxy = await make_proxy(mode)
    ip = web.spec.cluster_ip
    await wait_for(lambda: _in(tcp_ask(node.client, ip, 80), both), timeout=DEADLINE,
                   what="service reachable")
    ruleset = sh("ip", "netns", "exec", node.node, "nft", "list", "table", "ip",
                 proxy.table).stdout

    # Killed (no cleanup): the table stays; a new proxy adopts it, one copy only.
    proxy.process.kill()
    assert proxy.table in node.tables()
    again = await make_proxy(mode)
    assert node.tables().count(proxy.table) == 1
    await wait_for(lambda: _in(tcp_ask(node.client, ip, 80), both), timeout=DEADLINE,
                   what="service reachable after the restart")
    after = sh("ip", "netns", "exec", node.node, "nft", "list", "table", "ip",
               again.table).stdout
    # Same rules (in userspace mode the listener ports are new ones).
    assert len(after.splitlines()) == len(ruleset.splitlines())

    again.stop()  # SIGTERM: a clean stop
    assert not [t for t in node.tables() if t.startswith("skiff")]
    assert await tcp_ask(node.client, ip, 80) not in both


async def test_two_nodes_sharing_one_kernel_each_serve_their_own_pods(
        node: Node, services: Client, ns: str, make_proxy) -> None:
    # A second node's bridge and pod in the same kernel (one machine, two nodes).
    other_pod = f"{node.node}-b"
    sh("ip", "netns", "add", other_pod)
    try:
        n = node.node
        sh("ip", "-n", n, "link", "add", "skb-u", "type", "bridge")
        sh("ip", "-n", n, "addr", "add", "10.244.8.1/24", "dev", "skb-u")
        sh("ip", "-n", n, "link", "set", "skb-u", "up")
        sh("ip", "-n", n, "link", "add", "vb0", "type", "veth", "peer", "name", "eth0",
           "netns", other_pod)
        sh("ip", "-n", n, "link", "set", "vb0", "master", "skb-u", "up")
        sh("ip", "-n", other_pod, "addr", "add", "10.244.8.20/24", "dev", "eth0")
        sh("ip", "-n", other_pod, "link", "set", "eth0", "up")
        sh("ip", "-n", other_pod, "route", "add", "default", "via", "10.244.8.1")

        both = list(PODS.values())
        sticky = await make_service(services, ns, "sticky", affinity="ClientIP")
        await set_endpoints(services, ns, "sticky", both)
        ip = sticky.spec.cluster_ip
        a = await make_proxy("nftables", "n-a", BRIDGE, 10256)
        b = await make_proxy("nftables", "n-b", "skb-u", 10257)
        assert {a.table, b.table} <= set(node.tables())
        for where in (node.client, other_pod, node.node):
            await wait_for(lambda w=where: _in(tcp_ask(w, ip, 80), both), timeout=DEADLINE,
                           what=f"{ip}:80 from {where}")

        def affinity_of(proxy: NetnsProxy) -> str:
            return sh("ip", "netns", "exec", n, "nft", "list", "table", "ip",
                      proxy.table).stdout
        # ClientIP affinity is recorded in the table that served the pod: each pod
        # went through its own node's proxy, not the other's.
        assert CLIENT in affinity_of(a) and CLIENT not in affinity_of(b)
        assert "10.244.8.20" in affinity_of(b) and "10.244.8.20" not in affinity_of(a)
        # One node's proxy stopping cleanly leaves the other's table and service.
        a.stop()
        assert a.table not in node.tables() and b.table in node.tables()
        assert await tcp_ask(other_pod, ip, 80) in both
        assert await tcp_ask(node.node, ip, 80) in both
    finally:
        sh("ip", "netns", "delete", other_pod, check=False)


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _pattern(size: int, seed: int) -> bytes:
    block = random.Random(seed).randbytes(1 << 20)
    return (block * (size // len(block) + 1))[:size]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def test_userspace_round_robin_fails_over_and_counts(
        node: Node, services: Client, ns: str, make_proxy) -> None:
    pod1, pod2 = PODS.values()
    svc = await make_service(services, ns, "flaky")
    ip = svc.spec.cluster_ip
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name="flaky", namespace=ns))
    # pod1 and pod2 answer on 8080; pod1 refuses on 8081; 10.244.7.13 is no one (its
    # connects time out after the proxy's --connect-timeout, 0.5 s).
    good = obj.subsets.add()
    good.addresses.extend(core_pb2.EndpointAddress(ip=i) for i in (pod1, pod2, "10.244.7.13"))
    good.ports.add(name="p", port=TCP_PORT, protocol="TCP")
    refusing = obj.subsets.add()
    refusing.addresses.add(ip=pod1)
    refusing.ports.add(name="p", port=TCP_PORT + 1, protocol="TCP")
    await services.endpoints.create(obj)
    proxy = await make_proxy("userspace")
    await wait_for(lambda: _in(tcp_ask(node.client, ip, 80), [pod1, pod2]),
                   timeout=DEADLINE, what="service reachable")
    seen = await spread(lambda: tcp_ask(node.client, ip, 80), 16)
    # Every connection got an answer, round robin over the two that work.
    assert seen == {pod1: 8, pod2: 8}, seen

    labels = {"namespace": ns, "service": "flaky", "port": "p"}

    async def counted() -> bool:
        text = await proxy.scrape()
        return (metric(text, "skiff_proxy_connections_total", **labels) >= 17
                and metric(text, "skiff_proxy_backend_errors_total", **labels) >= 8
                and metric(text, "skiff_proxy_bytes_total", direction="to_client",
                           **labels) >= 17 * len(pod1))
    await wait_for(counted, timeout=DEADLINE, what="connections, errors and bytes counted")


async def test_userspace_large_transfers_intact_with_bounded_memory(
        node: Node, services: Client, ns: str, make_proxy) -> None:
    pod1 = PODS["pod1"]
    svc = await make_service(services, ns, "bulk")
    ip = svc.spec.cluster_ip
    await set_endpoints(services, ns, "bulk", [pod1])
    proxy = await make_proxy("userspace")
    await wait_for(lambda: _in(tcp_ask(node.client, ip, 80), [pod1]), timeout=DEADLINE,
                   what="service reachable")
    pid = proxy.process.pid
    assert pid is not None
    baseline = peak = rss_kib(pid)
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        # Download 64 MiB through a slow reader: only back-pressure keeps the proxy
        # from buffering what the faster backend sends.
        size = 64 << 20
        conn = await connect(node.client, ip, 80)
        conn.writer.write(f"send {size}\n".encode())
        digest, got = hashlib.sha256(), 0
        while chunk := await asyncio.wait_for(conn.reader.read(64 * 1024), DEADLINE):
            digest.update(chunk)
            got += len(chunk)
            await asyncio.sleep(0.0005)  # the slowness under test, not a wait
        conn.close()
        assert got == size
        assert digest.hexdigest() == hashlib.sha256(_pattern(size, 1)).hexdigest()
        # Upload 16 MiB, then half-close: the backend answers only after our EOF.
        payload = _pattern(16 << 20, 2)
        conn = await connect(node.client, ip, 80)
        conn.writer.write(b"sink\n")
        conn.writer.write(payload)
        await conn.writer.drain()
        conn.writer.write_eof()
        answer = (await asyncio.wait_for(conn.reader.readline(), DEADLINE)).decode().split()
        conn.close()
        assert answer == [str(len(payload)), hashlib.sha256(payload).hexdigest()]
    finally:
        sampling = False
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 8, f"proxy RSS grew by {growth_mib:.1f} MiB"


async def _in(answer: Awaitable[str], allowed: list[str]) -> bool:
    return await answer in allowed
