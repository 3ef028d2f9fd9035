"""skiff-dns as a real process, against the shared apiserver and store, queried with
dnspython over real UDP and TCP sockets.

Services mostly have no selector, so their Endpoints are the test's to write; one test
runs the controller-manager's endpoints controller, so pods that set ``hostname`` and
``subdomain`` reach the DNS the way StatefulSets' pods will. Names outside the cluster
domain go to an upstream resolver this test starts on loopback (dnslib's threaded
server), never to the host's resolvers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dnslib
import dnslib.server
import grpc
import pytest
from apiclient import NOT_FOUND, Client, pod

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.testing.fixtures import failed, running_controller_manager
from skiff.testing.processes import DnsServer, free_port

DEADLINE = 20.0
#: How soon an API change must show in the answers.
PROPAGATION = 1.0
ZONE = "svc.cluster.local."


# ------------------------------------------------------------------ the upstream


class Upstream:
    """A resolver on loopback (UDP and TCP) that knows a few names outside the cluster."""

    NAMES = {"outside.example.": "192.0.2.7", "db.example.org.": "192.0.2.8"}

    def __init__(self) -> None:
        self.port = free_port()
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._servers = [dnslib.server.DNSServer(self, port=self.port, address="127.0.0.1",
                                                 tcp=tcp, logger=_Quiet())
                         for tcp in (False, True)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def resolve(self, request: dnslib.DNSRecord, handler: object) -> dnslib.DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower()
        with self._lock:
            self.queries.append(name)
        address = self.NAMES.get(name)
        if address is None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        elif request.q.qtype == dnslib.QTYPE.A:
            reply.add_answer(dnslib.RR(name, dnslib.QTYPE.A, rdata=dnslib.A(address), ttl=30))
        return reply

    def start(self) -> None:
        for server in self._servers:
            server.start_thread()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


class _Quiet(dnslib.server.DNSLogger):
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ skiff-dns


@pytest.fixture
async def make_dns(shared_cluster, upstream, tmp_path: Path, request
                   ) -> AsyncIterator[Callable[..., DnsServer]]:
    """``await make_dns(**kw)``: a healthy skiff-dns on the shared apiserver."""
    started: list[DnsServer] = []

    async def make(**kw) -> DnsServer:
        kw.setdefault("upstreams", [upstream.address])
        server = DnsServer(tmp_path / f"dns-{len(started)}", [shared_cluster.apiserver.address],
                           name=f"dns-{len(started)}", **kw)
        started.append(server)
        server.start()
        await server.wait_healthy(timeout=DEADLINE)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
        if failed(request):
            for server in started:
                print(server.logs(100))


@pytest.fixture
async def dns_server(make_dns) -> DnsServer:
    return await make_dns(metrics=True)


async def ask(server: DnsServer, name: str, rdtype: str = "A", *, tcp: bool = False,
              payload: int | None = None) -> dns.message.Message:
    if payload:
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=payload)
    else:
        query = dns.message.make_query(name, rdtype, use_edns=False)
    host, port = server.address
    if tcp:
        return await dns.asyncquery.tcp(query, host, port=port, timeout=5)
    return await dns.asyncquery.udp(query, host, port=port, timeout=5, ignore_trailing=True)


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A
                  for r in rrset)


async def until(server: DnsServer, name: str, rdtype: str,
                check: Callable[[dns.message.Message], bool], *, within: float = DEADLINE,
                ) -> dns.message.Message:
    """Ask until ``check`` holds of the reply; fail after ``within`` seconds."""
    async def asked() -> dns.message.Message | None:
        reply = await ask(server, name, rdtype)
        return reply if check(reply) else None
    return await wait_for(asked, timeout=within, interval=0.02, what=f"{name} {rdtype}")


# ------------------------------------------------------------------ API helpers


async def make_service(api: Client, ns: str, name: str, *, ports: dict[str, int] | None = None,
                       headless: bool = False, external_name: str = "") -> core_pb2.Service:
    spec = core_pb2.ServiceSpec()
    if external_name:
        spec.type, spec.external_name = "ExternalName", external_name
    if headless:
        spec.cluster_ip = "None"
    for port_name, number in (ports or {}).items():
        spec.ports.add(name=port_name, port=number, protocol="TCP")
    return await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=ns), spec=spec))


async def set_endpoints(api: Client, ns: str, name: str, ready: list[tuple[str, str]], *,
                        port: tuple[str, int] = ("pg", 5432),
                        not_ready: list[str] = ()) -> None:
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns))
    subset = obj.subsets.add()
    subset.addresses.extend(core_pb2.EndpointAddress(ip=ip, hostname=h) for ip, h in ready)
    subset.not_ready_addresses.extend(core_pb2.EndpointAddress(ip=ip) for ip in not_ready)
    subset.ports.add(name=port[0], port=port[1], protocol="TCP")
    try:
        current = await api.endpoints.get(name, ns)
    except grpc.aio.AioRpcError as e:
        if e.code() != NOT_FOUND:
            raise
        await api.endpoints.create(obj)
        return
    obj.metadata.resource_version = current.metadata.resource_version
    await api.endpoints.update(obj)


def reverse(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


# ------------------------------------------------------------------ the tests


async def test_cluster_ip_service_over_udp_and_tcp(api, ns, dns_server):
    service = await make_service(api, ns, "web", ports={"http": 80, "metrics": 9090})
    ip = service.spec.cluster_ip
    name = f"web.{ns}.{ZONE}"
    reply = await until(dns_server, name, "A", lambda r: bool(r.answer))
    assert addresses(reply) == [ip]
    assert reply.flags & dns.flags.AA and reply.answer[0].ttl == 5
    assert addresses(await ask(dns_server, name.upper(), tcp=True)) == [ip]
    srv = await ask(dns_server, f"_http._tcp.{name}", "SRV")
    assert [(r.port, r.target.to_text()) for r in srv.answer[0]] == [(80, name)]
    ptr = await ask(dns_server, reverse(ip), "PTR", tcp=True)
    assert [r.target.to_text() for r in ptr.answer[0]] == [name]

    missing = await ask(dns_server, f"nope.{ns}.{ZONE}")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    for nodata in (await ask(dns_server, f"{ns}.{ZONE}"), await ask(dns_server, name, "AAAA")):
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


async def test_headless_service_answers_endpoints_and_pod_hostnames(api, ns, dns_server):
    await make_service(api, ns, "db", ports={"pg": 5432}, headless=True)
    await set_endpoints(api, ns, "db", [("10.1.0.1", "db-0"), ("10.1.0.2", "")],
                        port=("pg", 15432), not_ready=["10.1.0.3"])
    name = f"db.{ns}.{ZONE}"
    reply = await until(dns_server, name, "A", lambda r: bool(r.answer))
    assert addresses(reply) == ["10.1.0.1", "10.1.0.2"]
    assert addresses(await ask(dns_server, f"db-0.{name}")) == ["10.1.0.1"]
    assert addresses(await ask(dns_server, f"10-1-0-2.{name}", tcp=True)) == ["10.1.0.2"]
    srv = await ask(dns_server, f"_pg._tcp.{name}", "SRV")
    assert sorted((r.port, r.target.to_text()) for r in srv.answer[0]) == [
        (15432, f"10-1-0-2.{name}"), (15432, f"db-0.{name}")]
    ptr = await ask(dns_server, reverse("10.1.0.1"), "PTR")
    assert [r.target.to_text() for r in ptr.answer[0]] == [f"db-0.{name}"]


async def test_changes_show_within_a_second(api, ns, dns_server):
    await make_service(api, ns, "db", ports={"pg": 5432}, headless=True)
    await set_endpoints(api, ns, "db", [("10.2.0.1", "")])
    name = f"db.{ns}.{ZONE}"
    await until(dns_server, name, "A", lambda r: addresses(r) == ["10.2.0.1"])

    await set_endpoints(api, ns, "db", [("10.2.0.1", ""), ("10.2.0.2", "")])
    await until(dns_server, name, "A", lambda r: addresses(r) == ["10.2.0.1", "10.2.0.2"],
                within=PROPAGATION)
    await set_endpoints(api, ns, "db", [])
    await until(dns_server, name, "A", lambda r: r.rcode() == dns.rcode.NXDOMAIN,
                within=PROPAGATION)

    web = await make_service(api, ns, "web", ports={"http": 80})
    await until(dns_server, f"web.{ns}.{ZONE}", "A",
                lambda r: addresses(r) == [web.spec.cluster_ip], within=PROPAGATION)
    await api.services.delete("web", ns)
    await until(dns_server, f"web.{ns}.{ZONE}", "A",
                lambda r: r.rcode() == dns.rcode.NXDOMAIN, within=PROPAGATION)


async def test_external_name_is_a_cname_followed_upstream(api, ns, dns_server, upstream):
    await make_service(api, ns, "ext", external_name="db.example.org")
    name = f"ext.{ns}.{ZONE}"
    reply = await until(dns_server, name, "A", lambda r: bool(r.answer))
    assert [(rrset.name.to_text(), rrset.rdtype) for rrset in reply.answer] == [
        (name, dns.rdatatype.CNAME), ("db.example.org.", dns.rdatatype.A)]
    assert addresses(reply) == ["192.0.2.8"]
    cname = await ask(dns_server, name, "CNAME", tcp=True)
    assert [r.target.to_text() for r in cname.answer[0]] == ["db.example.org."]


async def test_other_names_are_forwarded_upstream(dns_server, upstream):
    reply = await ask(dns_server, "outside.example.")
    assert addresses(reply) == ["192.0.2.7"]
    assert "outside.example." in upstream.queries
    reply = await ask(dns_server, "outside.example.", tcp=True)
    assert addresses(reply) == ["192.0.2.7"]
    assert (await ask(dns_server, "nowhere.example.")).rcode() == dns.rcode.NXDOMAIN


async def test_servfail_when_no_upstream_answers(make_dns):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = await make_dns(upstreams=[dead], extra_args=["--forward-timeout", "0.3"])
    started = time.monotonic()
    assert (await ask(server, "outside.example.")).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started < 2


async def test_large_answers_are_truncated_over_udp_and_whole_over_tcp(api, ns, dns_server):
    await make_service(api, ns, "many", ports={"pg": 5432}, headless=True)
    ips = [f"10.3.{i // 250}.{i % 250 + 1}" for i in range(120)]
    await set_endpoints(api, ns, "many", [(ip, "") for ip in ips])
    name = f"many.{ns}.{ZONE}"
    whole = await wait_for(
        lambda: _when(ask(dns_server, name, tcp=True), lambda r: len(addresses(r)) == 120),
        timeout=DEADLINE, interval=0.02, what="all 120 addresses over TCP")
    assert addresses(whole) == sorted(ips)
    small = await ask(dns_server, name)  # no EDNS: at most 512 bytes
    assert small.flags & dns.flags.TC and len(addresses(small)) < 120
    edns = await ask(dns_server, name, payload=4096)  # offered 4096, given at most 1232
    assert edns.flags & dns.flags.TC and len(addresses(small)) < len(addresses(edns)) < 120


async def _when(pending, check):
    reply = await pending
    return reply if check(reply) else None


async def test_two_instances_answer_the_same(api, ns, make_dns):
    first, second = await make_dns(), await make_dns()
    service = await make_service(api, ns, "web", ports={"http": 80})
    await make_service(api, ns, "db", ports={"pg": 5432}, headless=True)
    await set_endpoints(api, ns, "db", [("10.4.0.1", "db-0"), ("10.4.0.2", "db-1")])
    for server in (first, second):
        await until(server, f"web.{ns}.{ZONE}", "A",
                    lambda r: addresses(r) == [service.spec.cluster_ip])
        await until(server, f"db.{ns}.{ZONE}", "A",
                    lambda r: addresses(r) == ["10.4.0.1", "10.4.0.2"])
    for name, rdtype in ((f"_pg._tcp.db.{ns}.{ZONE}", "SRV"), (f"db-1.db.{ns}.{ZONE}", "A"),
                         (reverse(service.spec.cluster_ip), "PTR")):
        a, b = await ask(first, name, rdtype), await ask(second, name, rdtype)
        assert a.answer and a.answer == b.answer and a.rcode() == b.rcode()
    first.stop()
    assert addresses(await ask(second, f"web.{ns}.{ZONE}")) == [service.spec.cluster_ip]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _raw_udp(server: DnsServer, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(payload, server.address)
        return s.recv(4096)


async def test_bad_queries_get_formerr_refused_or_notimp(dns_server):
    garbage = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07trunc"
    reply = _raw_udp(dns_server, garbage)
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR

    chaos = dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
    answer = dns.message.from_wire(_raw_udp(dns_server, chaos.to_wire()))
    assert answer.rcode() == dns.rcode.REFUSED

    notify = dns.message.make_query(f"x.{ZONE}", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    answer = dns.message.from_wire(_raw_udp(dns_server, notify.to_wire()))
    assert answer.rcode() == dns.rcode.NOTIMP

    axfr = dns.message.make_query("cluster.local.", "AXFR")
    answer = await dns.asyncquery.tcp(axfr, *dns_server.address[:1],
                                      port=dns_server.address[1], timeout=5)
    assert answer.rcode() == dns.rcode.REFUSED


async def test_metrics_count_replies_by_rcode(api, ns, dns_server):
    await make_service(api, ns, "web", ports={"http": 80})
    await until(dns_server, f"web.{ns}.{ZONE}", "A", lambda r: bool(r.answer))
    await ask(dns_server, f"nope.{ns}.{ZONE}")
    assert dns_server.metrics_url is not None
    text = await asyncio.to_thread(_scrape, f"{dns_server.metrics_url}/metrics")
    assert 'skiff_dns_responses_total{rcode="NOERROR"}' in text
    assert 'skiff_dns_responses_total{rcode="NXDOMAIN"}' in text
    assert "skiff_dns_request_duration_seconds_bucket" in text
    assert 'skiff_dns_requests_total{transport="udp"}' in text


async def test_pods_with_hostname_and_subdomain_through_the_endpoints_controller(
        api, ns, dns_server, shared_cluster, tmp_path):
    """The chain StatefulSets rely on: Pod (hostname, subdomain) -> Endpoints -> DNS."""
    spec = core_pb2.ServiceSpec(cluster_ip="None", selector={"app": "db"})
    spec.ports.add(name="pg", port=5432, protocol="TCP")
    await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name="db", namespace=ns), spec=spec))
    for i in range(2):
        await api.pods.create(pod(f"db-{i}", ns, labels={"app": "db"}, node="n1",
                                  hostname=f"db-{i}", subdomain="db"))
        await post_ready(api, ns, f"db-{i}", f"10.6.0.{i + 1}", ready=True)
    name = f"db.{ns}.{ZONE}"
    with running_controller_manager(tmp_path / "cm", [shared_cluster.apiserver.address],
                                    ["endpoints"]):
        await until(dns_server, f"db-1.{name}", "A", lambda r: addresses(r) == ["10.6.0.2"])
        assert addresses(await ask(dns_server, name)) == ["10.6.0.1", "10.6.0.2"]
        srv = await ask(dns_server, f"_pg._tcp.{name}", "SRV")
        assert sorted(r.target.to_text() for r in srv.answer[0]) == [
            f"db-0.{name}", f"db-1.{name}"]
        # A pod that stops being ready leaves the answers.
        await post_ready(api, ns, "db-1", "10.6.0.2", ready=False)
        await until(dns_server, f"db-1.{name}", "A",
                    lambda r: r.rcode() == dns.rcode.NXDOMAIN)
        assert addresses(await ask(dns_server, name)) == ["10.6.0.1"]


async def post_ready(api: Client, ns: str, name: str, ip: str, *, ready: bool) -> None:
    """What a kubelet writes: the pod's IP and its Ready condition."""
    current = await api.pods.get(name, ns)
    current.status.phase = "Running"
    current.status.pod_ip = ip
    del current.status.conditions[:]
    current.status.conditions.add(type="Ready", status="True" if ready else "False")
    await api.pods.update_status(current)


# ------------------------------------------------- registration in the Endpoints


def registered(endpoints: core_pb2.EndpointsObject | None) -> set[tuple[str, int]]:
    """(ip, port) of each ready address in a subset with the DNS ports dns/dns-tcp."""
    found = set()
    for subset in endpoints.subsets if endpoints is not None else ():
        ports = {(p.name, p.protocol): p.port for p in subset.ports}
        if set(ports) == {("dns", "UDP"), ("dns-tcp", "TCP")}:
            assert ports["dns", "UDP"] == ports["dns-tcp", "TCP"]
            found |= {(a.ip, ports["dns", "UDP"]) for a in subset.addresses}
    return found


async def endpoints_until(api: Client, ns: str, name: str,
                          check: Callable[[set[tuple[str, int]]], bool]) -> None:
    async def holds() -> bool:
        try:
            current = await api.endpoints.get(name, ns)
        except grpc.aio.AioRpcError as e:
            if e.code() != NOT_FOUND:
                raise
            current = None
        return check(registered(current))
    await wait_for(holds, timeout=DEADLINE, interval=0.05, what=f"endpoints {ns}/{name}")


async def test_instances_register_in_the_endpoints_and_leave_on_stop(
        api, ns, make_dns, shared_cluster, tmp_path):
    """Two instances on two loopback addresses list themselves in a selectorless
    Service's Endpoints (made by the first, as nobody else does); the endpoints
    controller leaves them alone; a stopped instance takes itself out, the other stays;
    an instance whose entry someone removed puts it back."""
    await make_service(api, ns, "kube-dns", ports={"dns": 53})
    flag = ["--register-endpoints", f"{ns}/kube-dns"]
    with running_controller_manager(tmp_path / "cm", [shared_cluster.apiserver.address],
                                    ["endpoints"]):
        first = await make_dns(host="127.0.0.2", extra_args=flag)
        second = await make_dns(host="127.0.0.3", extra_args=flag)
        both = {first.address, second.address}
        await endpoints_until(api, ns, "kube-dns", lambda found: found == both)

        first.stop()  # SIGTERM: a clean stop
        await endpoints_until(api, ns, "kube-dns", lambda found: found == {second.address})
        assert addresses(await ask(second, f"kube-dns.{ns}.{ZONE}"))  # still answering

        # Someone takes the second out: it adds itself back.
        current = await api.endpoints.get("kube-dns", ns)
        del current.subsets[:]
        await api.endpoints.update(current)
        await endpoints_until(api, ns, "kube-dns", lambda found: found == {second.address})


async def test_instance_listens_on_an_address_that_is_not_there_yet(api, ns, make_dns):
    """IP_FREEBIND: skiff up starts an instance on its node's bridge gateway before the
    kubelet made the bridge; it must come up (healthy means it listens) rather than fail."""
    absent = "10.244.254.1"  # a cluster address no interface here has
    server = await make_dns(extra_args=["--listen", f"{absent}:{free_port()}"])
    assert server.alive
    assert "cannot listen" not in server.logs(200)


async def test_endpoints_controller_leaves_selectorless_and_external_name_alone(
        api, ns, shared_cluster, tmp_path):
    """A selectorless Service's Endpoints are its owner's; an ExternalName Service gets
    none even with a selector (Kubernetes' endpoints controller skips it)."""
    await make_service(api, ns, "own", ports={"dns": 53})
    await set_endpoints(api, ns, "own", [("10.4.0.9", "")], port=("dns", 53))
    alias = core_pb2.ServiceSpec(type="ExternalName", external_name="db.example.org",
                                 selector={"app": "db"})
    await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name="alias", namespace=ns), spec=alias))
    selected = core_pb2.ServiceSpec(selector={"app": "db"})
    selected.ports.add(name="pg", port=5432, protocol="TCP")
    await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name="selected", namespace=ns), spec=selected))
    await api.pods.create(pod("db-0", ns, labels={"app": "db"}, node="n1"))
    await post_ready(api, ns, "db-0", "10.6.0.1", ready=True)
    with running_controller_manager(tmp_path / "cm", [shared_cluster.apiserver.address],
                                    ["endpoints"]):
        async def selected_written() -> bool:
            try:
                return bool((await api.endpoints.get("selected", ns)).subsets)
            except grpc.aio.AioRpcError as e:
                if e.code() != NOT_FOUND:
                    raise
                return False
        # Once the controller wrote the selected Service's, it has seen the others too.
        await wait_for(selected_written, timeout=DEADLINE, what="the selected endpoints")
        own = await api.endpoints.get("own", ns)
        assert [a.ip for a in own.subsets[0].addresses] == ["10.4.0.9"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await api.endpoints.get("alias", ns)
        assert missing.value.code() == NOT_FOUND


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a bridge (netlink needs root)")
async def test_an_address_is_registered_only_once_it_appears(api, ns, make_dns):
    """What skiff up does: the instance listens on its node's bridge gateway before the
    kubelet made the bridge; it registers that address only once the bridge has it."""
    gateway, bridge = "10.244.254.1", "skb-dnstest"
    service = await make_service(api, ns, "kube-dns", ports={"dns": 53})
    port = free_port()
    flags = ["--listen", f"{gateway}:{port}", "--register-endpoints", f"{ns}/kube-dns"]
    server = await make_dns(extra_args=flags)
    async def waiting() -> bool:
        return "waiting for the listen addresses" in server.logs(200)
    await wait_for(waiting, timeout=DEADLINE, what="the instance waiting for its address")
    with pytest.raises(grpc.aio.AioRpcError):
        await api.endpoints.get("kube-dns", ns)
    try:
        await asyncio.to_thread(_ip, ["link", "add", bridge, "type", "bridge"],
                                ["link", "set", bridge, "alias", "skiff:dnstest", "up"],
                                ["addr", "add", f"{gateway}/32", "dev", bridge])
        await endpoints_until(api, ns, "kube-dns",
                              lambda found: found == {server.address, (gateway, port)})
        reply = await dns.asyncquery.udp(dns.message.make_query(f"kube-dns.{ns}.{ZONE}", "A"),
                                         gateway, port=port, timeout=5)
        assert addresses(reply) == [service.spec.cluster_ip]  # answered on the bridge
    finally:
        await asyncio.to_thread(_ip, ["link", "del", bridge])


def _ip(*commands: list[str]) -> None:
    for argv in commands:
        subprocess.run(["ip", *argv], check=True)
