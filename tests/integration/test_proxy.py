"""skiff-proxy as a real process, against the shared apiserver and store, with real backends.

Backends are asyncio servers in this process, standing in for pods: one per loopback
address (127.0.0.1, .2, .3, ...) on one common port, since an Endpoints subset has one
port for all its addresses. Each greets with its name, then serves a line protocol
(``echo``, ``send N``, ``sink``). Services have no selector, so the Endpoints are the
test's to write (no controller-manager), as Kubernetes leaves manual endpoints alone.

Every proxy gets a loopback node address of its own (127.0.1.X) for its NodePorts;
cluster IPs are allocated by the apiserver from 127.10.0.0/16.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
from apiclient import NOT_FOUND, Client

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.testing.fixtures import failed
from skiff.testing.processes import Proxy, free_port

DEADLINE = 20.0
MiB = 1024 * 1024


# ------------------------------------------------------------------ backends


def _pattern(size: int, seed: int) -> bytes:
    """``size`` deterministic pseudo-random bytes (cheap: a repeated random block)."""
    block = random.Random(seed).randbytes(MiB)
    return (block * (size // MiB + 1))[:size]


class Backends:
    """Servers named ``b<i>`` on 127.0.0.<i> at one port (a pod each)."""

    def __init__(self) -> None:
        self.port = _port_free_on(f"127.0.0.{i}" for i in range(1, 9))
        self.servers: dict[str, asyncio.Server] = {}
        self.accepted: Counter[str] = Counter()

    async def start(self, *indexes: int) -> None:
        for i in indexes:
            name = f"b{i}"
            self.servers[name] = await asyncio.start_server(
                lambda r, w, n=name: self._serve(n, r, w), f"127.0.0.{i}", self.port,
                reuse_address=True)

    async def stop(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()

    async def _serve(self, name: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self.accepted[name] += 1
        try:
            writer.write(f"{name}\n".encode())
            while line := await reader.readline():
                verb, _, arg = line.decode().strip().partition(" ")
                if verb == "echo":
                    writer.write(f"{name}:{arg}\n".encode())
                elif verb == "send":  # N bytes, then close: EOF has to reach the client
                    writer.write(_pattern(int(arg), seed=1))
                    await writer.drain()
                    break
                elif verb == "sink":  # read to EOF (the client's half-close), then answer
                    digest, size = hashlib.sha256(), 0
                    while chunk := await reader.read(256 * 1024):
                        digest.update(chunk)
                        size += len(chunk)
                    writer.write(f"{size} {digest.hexdigest()}\n".encode())
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _port_free_on(hosts: Iterable[str]) -> int:
    hosts = list(hosts)
    for _ in range(100):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every backend address")


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends()
    try:
        yield b
    finally:
        await b.stop()


# ------------------------------------------------------------------ the proxy


def _node_address() -> str:
    return f"127.0.1.{random.randrange(100, 250)}"


@pytest.fixture
async def proxy(shared_cluster, tmp_path: Path, request) -> AsyncIterator[Proxy]:
    """A skiff-proxy process on the shared apiserver, healthy, with metrics."""
    p = Proxy(tmp_path / "proxy", [shared_cluster.apiserver.address],
              node_name="n-test", node_address=_node_address(), connect_timeout=0.5,
              metrics=True)
    p.start()
    try:
        await p.wait_healthy(timeout=DEADLINE)
        yield p
    finally:
        p.stop()
        if failed(request):
            print(p.logs(200))


# ------------------------------------------------------------------ helpers


async def make_service(api: Client, ns: str, name: str, ports: dict[str, int], *,
                       type_: str = "ClusterIP", affinity: str = "None") -> core_pb2.Service:
    spec = core_pb2.ServiceSpec(type=type_, session_affinity=affinity)
    for port_name, number in ports.items():
        spec.ports.add(name=port_name, port=number, protocol="TCP")
    return await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=ns), spec=spec))


def endpoints_object(ns: str, name: str, ready: Iterable[int], port: int, *,
                     not_ready: Iterable[int] = (), port_name: str = ""
                     ) -> core_pb2.EndpointsObject:
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns))
    ready, not_ready = list(ready), list(not_ready)
    if ready or not_ready:
        subset = obj.subsets.add()
        subset.addresses.extend(core_pb2.EndpointAddress(ip=f"127.0.0.{i}") for i in ready)
        subset.not_ready_addresses.extend(
            core_pb2.EndpointAddress(ip=f"127.0.0.{i}") for i in not_ready)
        subset.ports.add(name=port_name, port=port, protocol="TCP")
    return obj


async def set_endpoints(api: Client, obj: core_pb2.EndpointsObject) -> None:
    try:
        current = await api.endpoints.get(obj.metadata.name, obj.metadata.namespace)
    except grpc.aio.AioRpcError as e:
        if e.code() != NOT_FOUND:
            raise
        await api.endpoints.create(obj)
        return
    obj.metadata.resource_version = current.metadata.resource_version
    await api.endpoints.update(obj)


class Conn:
    """A client connection through the proxy, with the backend's greeting read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 backend: str) -> None:
        self.reader, self.writer, self.backend = reader, writer, backend

    async def echo(self, text: str) -> str:
        self.writer.write(f"echo {text}\n".encode())
        return (await asyncio.wait_for(self.reader.readline(), DEADLINE)).decode().strip()

    def close(self) -> None:
        self.writer.close()


async def connect(host: str, port: int, *, source: str | None = None) -> Conn:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None), DEADLINE)
    greeting = await asyncio.wait_for(reader.readline(), DEADLINE)
    if not greeting:
        writer.close()
        raise ConnectionError("closed by the proxy with no data")
    return Conn(reader, writer, greeting.decode().strip())


async def which_backend(host: str, port: int, *, source: str | None = None) -> str:
    conn = await connect(host, port, source=source)
    conn.close()
    return conn.backend


async def refused_at_once(host: str, port: int) -> bool:
    """Whether a connection is refused, or accepted and closed with no data."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    try:
        return await asyncio.wait_for(reader.read(1), 2.0) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def reached(host: str, port: int, backend: str) -> bool:
    return await which_backend(host, port) == backend


async def scrape(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            return reply.read().decode()
    return await asyncio.to_thread(get)


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ------------------------------------------------------------------ tests


async def test_round_robin_over_ready_endpoints_with_metrics(api: Client, ns: str,
                                                             backends: Backends, proxy: Proxy):
    await backends.start(1, 2, 3)
    svc = await make_service(api, ns, "web", {"": 80})
    ip = svc.spec.cluster_ip
    # 127.0.0.4 is not ready (and nothing listens there): it must never be picked.
    await api.endpoints.create(endpoints_object(ns, "web", [1, 2, 3], backends.port,
                                                not_ready=[4]))
    await wait_for(lambda: which_backend(ip, 80), timeout=DEADLINE, what="service reachable")

    seen = Counter([await which_backend(ip, 80) for _ in range(30)])
    assert seen == {"b1": 10, "b2": 10, "b3": 10}

    url = proxy.metrics_url
    assert url is not None
    labels = {"namespace": ns, "service": "web", "port": ""}

    async def counted() -> bool:
        text = await scrape(url)
        return (metric(text, "skiff_proxy_connections_total", **labels) >= 31
                and metric(text, "skiff_proxy_bytes_total", direction="to_client",
                           **labels) >= 31 * 3)
    await wait_for(counted, timeout=DEADLINE, what="connections and bytes counted")


async def test_client_ip_affinity(api: Client, ns: str, backends: Backends, proxy: Proxy):
    await backends.start(1, 2, 3)
    svc = await make_service(api, ns, "sticky", {"": 80}, affinity="ClientIP")
    assert svc.spec.session_affinity_config.client_ip.timeout_seconds == 10800
    ip = svc.spec.cluster_ip
    await api.endpoints.create(endpoints_object(ns, "sticky", [1, 2, 3], backends.port))
    await wait_for(lambda: which_backend(ip, 80), timeout=DEADLINE, what="service reachable")

    chosen: dict[str, set[str]] = {}
    for client in range(10, 16):
        source = f"127.0.2.{client}"
        chosen[source] = {await which_backend(ip, 80, source=source) for _ in range(8)}
    # Each client always lands on one backend; new clients are spread round-robin.
    assert all(len(b) == 1 for b in chosen.values()), chosen
    assert Counter(next(iter(b)) for b in chosen.values()) == {"b1": 2, "b2": 2, "b3": 2}


async def test_failover_to_the_next_endpoint(api: Client, ns: str, backends: Backends,
                                             proxy: Proxy):
    # b2 refuses (nothing listens on 127.0.0.2); 127.0.0.4 accepts nothing (its backlog is
    # full), so connects to it time out after the proxy's --connect-timeout (0.5 s).
    await backends.start(1, 3)
    with socket.socket() as stuck:
        stuck.bind(("127.0.0.4", backends.port))
        stuck.listen(0)
        fillers = []
        try:
            for _ in range(4):  # fill the accept queue: later SYNs are dropped
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.4", backends.port))
                fillers.append(filler)
            svc = await make_service(api, ns, "flaky", {"": 80})
            ip = svc.spec.cluster_ip
            await api.endpoints.create(endpoints_object(ns, "flaky", [1, 2, 3, 4],
                                                        backends.port))
            await wait_for(lambda: which_backend(ip, 80), timeout=DEADLINE,
                           what="service reachable")
            started = time.monotonic()
            seen = Counter([await which_backend(ip, 80) for _ in range(12)])
            elapsed = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()
    assert set(seen) == {"b1", "b3"} and sum(seen.values()) == 12
    # Every connection succeeded; the ones that met the stuck backend waited about one
    # connect timeout, not the kernel's minutes.
    assert elapsed < 12 * 1.5

    labels = {"namespace": ns, "service": "flaky", "port": ""}

    async def errors_counted() -> bool:
        assert proxy.metrics_url is not None
        return metric(await scrape(proxy.metrics_url), "skiff_proxy_backend_errors_total",
                      **labels) >= 6
    await wait_for(errors_counted, timeout=DEADLINE, what="backend errors counted")


async def test_endpoint_churn_keeps_established_connections(api: Client, ns: str,
                                                            backends: Backends, proxy: Proxy):
    await backends.start(1, 2, 3)
    svc = await make_service(api, ns, "churn", {"": 80})
    ip = svc.spec.cluster_ip
    await set_endpoints(api, endpoints_object(ns, "churn", [1, 2], backends.port))
    await wait_for(lambda: which_backend(ip, 80), timeout=DEADLINE, what="service reachable")
    live = [await connect(ip, 80) for _ in range(4)]
    assert {c.backend for c in live} == {"b1", "b2"}

    # b1 leaves, b3 joins: new connections go to b2 and b3 only ...
    await set_endpoints(api, endpoints_object(ns, "churn", [2, 3], backends.port))
    await wait_for(lambda: reached(ip, 80, "b3"), timeout=DEADLINE, what="b3 in rotation")
    assert {await which_backend(ip, 80) for _ in range(6)} == {"b2", "b3"}
    # ... and the established ones, b1's included, still work both ways.
    for i, conn in enumerate(live):
        assert await conn.echo(f"x{i}") == f"{conn.backend}:x{i}"

    # No ready endpoint: new connections are closed at once with no data; the old live on.
    await set_endpoints(api, endpoints_object(ns, "churn", [], backends.port, not_ready=[1]))
    await wait_for(lambda: refused_at_once(ip, 80), timeout=DEADLINE, what="refused at once")
    for i, conn in enumerate(live):
        assert await conn.echo(f"y{i}") == f"{conn.backend}:y{i}"
        conn.close()


async def test_node_port(api: Client, ns: str, backends: Backends, proxy: Proxy):
    await backends.start(1)
    svc = await make_service(api, ns, "exposed", {"http": 80}, type_="NodePort")
    node_port = svc.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767
    await api.endpoints.create(endpoints_object(ns, "exposed", [1], backends.port,
                                                port_name="http"))
    await wait_for(lambda: reached(proxy.node_address, node_port, "b1"), timeout=DEADLINE,
                   what="reachable on the node port")
    assert await which_backend(svc.spec.cluster_ip, 80) == "b1"


async def test_node_port_on_the_nodes_internal_ip(api: Client, ns: str, backends: Backends,
                                                  shared_cluster, tmp_path: Path, request):
    await backends.start(1)
    node_name = f"n-{random.randrange(16**6):06x}"
    address = _node_address()
    node = await api.nodes.create(core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=node_name)))
    node.status.addresses.add(type="InternalIP", address=address)
    await api.nodes.update_status(node)
    proxy = Proxy(tmp_path / "proxy", [shared_cluster.apiserver.address], node_name=node_name,
                  node_address=None)
    proxy.start()
    try:
        await proxy.wait_healthy(timeout=DEADLINE)
        svc = await make_service(api, ns, "internal", {"": 80}, type_="NodePort")
        await api.endpoints.create(endpoints_object(ns, "internal", [1], backends.port))
        await wait_for(lambda: reached(address, svc.spec.ports[0].node_port, "b1"),
                       timeout=DEADLINE, what="reachable on the node's InternalIP")
    finally:
        proxy.stop()
        await api.nodes.delete(node_name, "")
        if failed(request):
            print(proxy.logs(200))


async def test_deleting_a_service_or_port_closes_its_listener(api: Client, ns: str,
                                                               backends: Backends,
                                                               proxy: Proxy):
    await backends.start(1)
    svc = await make_service(api, ns, "doomed", {"a": 80, "b": 81})
    ip = svc.spec.cluster_ip
    endpoints = endpoints_object(ns, "doomed", [1], backends.port, port_name="a")
    endpoints.subsets[0].ports.add(name="b", port=backends.port, protocol="TCP")
    await api.endpoints.create(endpoints)
    await wait_for(lambda: reached(ip, 81, "b1"), timeout=DEADLINE, what="port b reachable")
    live = await connect(ip, 80)

    async def refused(port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection(ip, port)
        except ConnectionRefusedError:
            return True
        writer.close()
        return False

    # A port removed from the service: its listener closes, the other stays.
    current = await api.services.get("doomed", ns)
    del current.spec.ports[1]
    await api.services.update(current)
    await wait_for(lambda: refused(81), timeout=DEADLINE, what="port 81 closed")
    assert await which_backend(ip, 80) == "b1"

    await api.services.delete("doomed", ns)
    await wait_for(lambda: refused(80), timeout=DEADLINE, what="port 80 closed")
    assert await live.echo("still") == "b1:still"  # established connections stay up
    live.close()


async def test_large_transfers_intact_with_bounded_memory(api: Client, ns: str,
                                                          backends: Backends, proxy: Proxy):
    await backends.start(1)
    svc = await make_service(api, ns, "bulk", {"": 80})
    ip = svc.spec.cluster_ip
    await api.endpoints.create(endpoints_object(ns, "bulk", [1], backends.port))
    await wait_for(lambda: which_backend(ip, 80), timeout=DEADLINE, what="service reachable")
    assert proxy.pid is not None
    baseline = rss_kib(proxy.pid)
    peak = baseline
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_kib(proxy.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        # Download 64 MiB through a slow reader: the backend is much faster, so only
        # back-pressure keeps the proxy from buffering the difference.
        size = 64 * MiB
        conn = await connect(ip, 80)
        conn.writer.write(f"send {size}\n".encode())
        digest, got = hashlib.sha256(), 0
        while chunk := await asyncio.wait_for(conn.reader.read(64 * 1024), DEADLINE):
            digest.update(chunk)
            got += len(chunk)
            # Throttle the reader (this is the slowness under test, not a wait).
            await asyncio.sleep(0.0005)
        conn.close()
        assert got == size  # and the backend's close arrived as EOF
        assert digest.hexdigest() == hashlib.sha256(_pattern(size, seed=1)).hexdigest()

        # Upload 16 MiB, then half-close: the backend answers only after our EOF.
        size = 16 * MiB
        payload = _pattern(size, seed=2)
        conn = await connect(ip, 80)
        conn.writer.write(b"sink\n")
        conn.writer.write(payload)
        await conn.writer.drain()
        conn.writer.write_eof()
        answer = (await asyncio.wait_for(conn.reader.readline(), DEADLINE)).decode().split()
        conn.close()
        assert answer == [str(size), hashlib.sha256(payload).hexdigest()]
    finally:
        sampling = False
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 8, f"proxy RSS grew by {growth_mib:.1f} MiB"
