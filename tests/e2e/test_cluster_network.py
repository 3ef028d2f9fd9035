"""The cluster network end to end, as a user meets it, in both proxy modes.

``skiff up --nodes 2 --proxy-mode MODE`` (the ``bridge`` network plugin, cluster DNS),
then, from inside pods (``docker exec`` into the app container, as ``kubectl exec``
would) and from the host:

- a Service answers by short name, ``name.namespace``, FQDN and cluster IP from a pod
  on node-1, and its answers come from backends on both nodes;
- a pod IP on node-2 answers a pod on node-1 directly (cross-node routes, no NAT);
- a headless Service resolves to its ready pods' IPs, and SRV names its port (UDP
  DNS through the ``kube-dns`` Service: the UDP Service case);
- the Service environment variables are injected (``kubernetes`` included), and the
  ``kubernetes`` Service answers HTTPS from a pod (busybox's TLS client: the REST API);
- a backend reaches its own Service (hairpin);
- ClientIP affinity keeps a client on one backend;
- a deleted backend stops receiving new connections;
- NodePorts answer on every node address from the host, a LoadBalancer Service on its
  ingress address, a cluster IP from the host;
- ``skiff down`` leaves no link, route, nftables table or DOCKER-USER entry of Skiff's.

One cluster per mode (module-scoped), using the cluster's default ports: nothing else
may run a local cluster on this machine meanwhile. Teardown always runs ``down --purge``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.kubelet import labels as L
from skiff.kubelet.images import BUSYBOX_IMAGE
from skiff.testing.fixtures import failed

CLUSTER = [sys.executable, "-m", "skiff.cli.cluster"]
REPO = Path(__file__).resolve().parents[2]
APISERVER = "127.0.0.1:6443"
NS = "net"
DOMAIN = "cluster.local"
DNS_IP = "10.96.0.10"
#: The nodes' addresses on one machine (DESIGN.md: node N is 127.0.1.N, node 1 127.0.0.1).
NODE_ADDRESSES = {"node-1": "127.0.0.1", "node-2": "127.0.1.2"}

pytestmark = pytest.mark.timeout(600)


def _skiff(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLUSTER, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def kernel_state() -> dict[str, list[str]]:
    """Skiff's share of the host's network: what ``skiff down`` must remove."""
    links = [line.split(":")[1].strip() for line in _run("ip", "-o", "link").splitlines()
             if re.search(r"^\d+: (skb-|skv)", line) or "alias skiff:" in line]
    tables = [line for line in _run("nft", "list", "tables").splitlines() if " skiff" in line]
    docker_user = [line for line in _run("iptables", "-S", "DOCKER-USER").splitlines()
                   if "skiff" in line]
    return {"links": sorted(links), "routes": sorted(_run(
        "ip", "route", "show", "table", "all", "proto", "147").splitlines()),
        "tables": sorted(tables), "docker_user": sorted(docker_user)}


@dataclass
class Cluster:
    mode: str
    data_dir: Path
    up_output: str
    before: dict[str, list[str]]


@pytest.fixture(scope="module", params=["userspace", "nftables"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Cluster]:
    """``skiff up --nodes 2 --proxy-mode MODE`` into a fresh data directory."""
    mode = request.param
    data_dir = tmp_path_factory.mktemp(f"net-{mode}") / "data"
    before = kernel_state()
    up = _skiff("up", "--nodes", "2", "--proxy-mode", mode, "--network-plugin", "bridge",
                "--data-dir", str(data_dir), "--timeout", "200", timeout=240)
    try:
        assert up.returncode == 0, f"skiff up failed:\n{up.stdout}\n{up.stderr}"
        yield Cluster(mode, data_dir, up.stdout, before)
    finally:
        if data_dir.exists() and os.environ.get("SKIFF_E2E_LOGS"):
            for log in sorted((data_dir / "logs").glob("*.log")):
                print(f"--- {log.name}\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-30:]))
        _skiff("down", "--purge", "--data-dir", str(data_dir), timeout=120)


@pytest.fixture
async def api(cluster: Cluster, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    client = Client(APISERVER)
    try:
        yield client
    finally:
        await client.close()
        if failed(request):
            for log in sorted((cluster.data_dir / "logs").glob("*.log")):
                if log.name.startswith(("proxy", "dns", "kubelet")):
                    print(f"--- {log.name}\n" + "\n".join(
                        log.read_text(errors="replace").splitlines()[-30:]))


# ------------------------------------------------------------------ workloads


def _pod(name: str, node: str, script: str, labels: dict[str, str] | None = None,
         ) -> core_pb2.Pod:
    container = core_pb2.Container(name="app", image=BUSYBOX_IMAGE,
                                   image_pull_policy="IfNotPresent",
                                   command=["sh", "-c", script])
    container.ports.add(name="http", container_port=8080, protocol="TCP")
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=NS, labels=labels or {}),
        spec=core_pb2.PodSpec(containers=[container], node_name=node,
                              termination_grace_period_seconds=30))


def _web(name: str, node: str) -> core_pb2.Pod:
    """busybox httpd answering its own pod name at /, and the caller's address at
    /cgi-bin/ip."""
    script = (f"mkdir -p /www/cgi-bin && echo {name} > /www/index.html && "
              "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
              "echo $REMOTE_ADDR\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && "
              "exec httpd -f -p 8080 -h /www")
    return _pod(name, node, script, {"app": "web"})


def _service(name: str, *, type_: str = "", cluster_ip: str = "",
             affinity: str = "") -> core_pb2.Service:
    port = core_pb2.ServicePort(name="http", protocol="TCP", port=80,
                                target_port=meta_pb2.IntOrString(int_val=8080))
    return core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=NS),
        spec=core_pb2.ServiceSpec(ports=[port], selector={"app": "web"}, type=type_,
                                  cluster_ip=cluster_ip, session_affinity=affinity))


@dataclass
class Workload:
    pods: dict[str, core_pb2.Pod]
    services: dict[str, core_pb2.Service]


_workloads: dict[str, Workload] = {}


async def workload(api: Client, cluster: Cluster) -> Workload:
    """The test pods and Services of this cluster, made once and Ready."""
    if cluster.mode in _workloads:
        return _workloads[cluster.mode]
    try:
        await api.namespaces.create(core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=NS)))
    except errors.AlreadyExists:
        pass
    for p in (_web("web-1", "node-1"), _web("web-2", "node-2"), _web("web-3", "node-2"),
              _pod("client", "node-1", "exec sleep 3600")):
        await api.pods.create(p)
    for s in (_service("web"), _service("web-headless", cluster_ip="None"),
              _service("sticky", affinity="ClientIP"), _service("web-np", type_="NodePort"),
              _service("web-lb", type_="LoadBalancer")):
        await api.services.create(s)
    pods = {}
    for name in ("web-1", "web-2", "web-3", "client"):
        pods[name] = await wait_for(lambda n=name: _running(api, n), timeout=120,
                                    interval=0.25, what=f"{name} running and ready")
    services = {s.metadata.name: s for s in (await api.services.list(NS)).items}
    # Every backend is in the Service's endpoints before anything is asked of them.
    await wait_for(lambda: _endpoint_count(api, "web", 3), timeout=30, interval=0.2,
                   what="web's endpoints")
    _workloads[cluster.mode] = Workload(pods, services)
    return _workloads[cluster.mode]


async def _running(api: Client, name: str) -> core_pb2.Pod | None:
    p = await api.pods.get(name, NS)
    ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
    return p if p.status.phase == "Running" and ready and p.status.pod_ip else None


async def _endpoint_count(api: Client, name: str, count: int) -> bool:
    try:
        endpoints = await api.endpoints.get(name, NS)
    except errors.NotFound:
        return False
    return sum(len(s.addresses) for s in endpoints.subsets) == count


# ------------------------------------------------------------------ exec


async def pod_sh(pod: str, script: str, *, timeout: float = 30.0) -> str:
    """Run ``sh -c script`` in the pod's app container; its stdout."""
    filters = [f"label={L.POD_NAMESPACE}={NS}", f"label={L.POD_NAME}={pod}",
               f"label={L.CONTAINER_NAME}=app"]
    found = await _exec_out("docker", "ps", "-q", *(x for f in filters for x in ("-f", f)))
    ids = found.split()
    assert ids, f"no running app container of pod {pod}"
    return await _exec_out("docker", "exec", ids[0], "sh", "-c", script, timeout=timeout)


async def _exec_out(*argv: str, timeout: float = 30.0) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return out.decode() + (f"\n[stderr] {err.decode()}" if process.returncode else "")


def _answers(output: str) -> list[str]:
    return re.findall(r"^(web-\d)$", output, re.MULTILINE)


async def fetch_many(pod: str, url: str, times: int) -> list[str]:
    """GET ``url`` ``times`` times from inside ``pod``; the answering pods' names."""
    script = (f"for i in $(seq {times}); do timeout 5 wget -q -O- {url} || echo FAILED; done")
    return _answers(await pod_sh(pod, script, timeout=10 + 4 * times))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as reply:
        return reply.read().decode().strip()


async def host_answers(url: str, times: int = 12) -> set[str]:
    return {await asyncio.to_thread(_get, url) for _ in range(times)}


# ------------------------------------------------------------------ the tests


async def test_service_by_name_and_ip_from_a_pod_spreads_over_both_nodes(api, cluster):
    w = await workload(api, cluster)
    ip = w.services["web"].spec.cluster_ip
    assert ip.startswith("10.9") or ip.startswith("10.1"), ip
    for host in ("web", f"web.{NS}", f"web.{NS}.svc.{DOMAIN}", ip):
        answers = await fetch_many("client", f"http://{host}/", 12)
        assert len(answers) == 12, f"{host}: {answers}"
    # Backends on both nodes answer (web-1 on node-1; web-2 and web-3 on node-2).
    answers = await fetch_many("client", f"http://web.{NS}/", 30)
    assert "web-1" in answers and set(answers) & {"web-2", "web-3"}, answers


async def test_a_pod_on_node_2_answers_a_pod_on_node_1_by_its_ip(api, cluster):
    w = await workload(api, cluster)
    pod_ip = w.pods["web-2"].status.pod_ip
    assert pod_ip.startswith("10.244."), pod_ip
    assert await fetch_many("client", f"http://{pod_ip}:8080/", 1) == ["web-2"]
    # No NAT between pods: the backend sees the client pod's own address.
    seen = await pod_sh("client", f"timeout 5 wget -q -O- http://{pod_ip}:8080/cgi-bin/ip")
    # busybox httpd listens on IPv6 and writes an IPv4 peer as [::ffff:a.b.c.d].
    assert seen.strip().removeprefix("[::ffff:").removesuffix("]") == \
        w.pods["client"].status.pod_ip, seen


async def test_headless_service_resolves_to_pod_ips_and_srv_names_the_port(api, cluster):
    w = await workload(api, cluster)
    expected = {w.pods[n].status.pod_ip for n in ("web-1", "web-2", "web-3")}
    output = await pod_sh("client", f"nslookup web-headless.{NS}.svc.{DOMAIN}")
    assert expected <= set(re.findall(r"10\.244\.\d+\.\d+", output)), output
    # From the host, straight to the kube-dns Service over UDP and TCP.
    name = f"_http._tcp.web-headless.{NS}.svc.{DOMAIN}"
    for query in (dns.asyncquery.udp, dns.asyncquery.tcp):
        reply = await query(dns.message.make_query(name, dns.rdatatype.SRV), DNS_IP,
                            timeout=3)
        targets = {(r.port, str(r.target)) for rrset in reply.answer for r in rrset}
        assert len(targets) == 3 and {p for p, _ in targets} == {8080}, reply
    missing = await dns.asyncquery.udp(
        dns.message.make_query(f"nothing.{NS}.svc.{DOMAIN}", dns.rdatatype.A), DNS_IP,
        timeout=3)
    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_service_environment_variables_are_injected(api, cluster):
    w = await workload(api, cluster)
    env = await pod_sh("client", "env")
    # The client started before the Services were made: only kubernetes' are sure.
    assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in env, env
    assert "KUBERNETES_SERVICE_PORT=443" in env, env
    resolv = await pod_sh("client", "cat /etc/resolv.conf")
    assert f"nameserver {DNS_IP}" in resolv and f"search {NS}.svc.{DOMAIN}" in resolv, resolv
    assert w.pods["client"].spec.node_name == "node-1"


async def test_the_kubernetes_service_serves_the_rest_api_over_https(api, cluster):
    """10.96.0.1:443 -> the apiserver's HTTPS port on node-1's bridge gateway, from a
    pod on each node (busybox wget: TLS 1.2 without signature_algorithms)."""
    await workload(api, cluster)
    for pod in ("client", "web-2"):
        out = await pod_sh(pod, "wget -q -O- --no-check-certificate https://10.96.0.1/version")
        assert json.loads(out)["gitVersion"].startswith("v1.32."), (pod, out)


async def test_a_backend_reaches_its_own_service(api, cluster):
    await workload(api, cluster)
    answers = await fetch_many("web-1", "http://web/", 20)
    assert len(answers) == 20 and "web-1" in answers, answers


async def test_client_ip_affinity_keeps_a_client_on_one_backend(api, cluster):
    await workload(api, cluster)
    answers = await fetch_many("client", "http://sticky/", 12)
    assert len(answers) == 12 and len(set(answers)) == 1, answers


async def test_node_ports_load_balancer_and_cluster_ip_answer_from_the_host(api, cluster):
    w = await workload(api, cluster)
    names = {"web-1", "web-2", "web-3"}
    node_port = w.services["web-np"].spec.ports[0].node_port
    for address in NODE_ADDRESSES.values():
        answers = await host_answers(f"http://{address}:{node_port}/")
        assert answers <= names and answers, answers
    assert await host_answers(f"http://{w.services['web'].spec.cluster_ip}/") <= names

    async def ingress() -> str | None:
        s = await api.services.get("web-lb", NS)
        ingress = s.status.load_balancer.ingress
        return ingress[0].ip if ingress else None

    lb_ip = await wait_for(ingress, timeout=30, interval=0.2, what="web-lb's ingress IP")
    assert lb_ip.startswith("10.112."), lb_ip
    answers = await wait_for(lambda: _answered(f"http://{lb_ip}/"), timeout=10,
                             interval=0.2, what=f"{lb_ip} answering")
    assert answers <= names


async def _answered(url: str) -> set[str] | None:
    try:
        return await host_answers(url, 4)
    except OSError:
        return None


async def test_a_deleted_backend_stops_receiving_new_connections(api, cluster):
    await workload(api, cluster)
    # A backend of its own, so the other tests keep theirs.
    await api.pods.create(_web("web-9", "node-2"))
    await wait_for(lambda: _running(api, "web-9"), timeout=60, interval=0.2,
                   what="web-9 ready")
    await wait_for(lambda: _endpoint_count(api, "web", 4), timeout=30, interval=0.2,
                   what="web-9 in web's endpoints")
    await wait_for(lambda: _reached(("web-9",)), timeout=30, interval=0.2,
                   what="web-9 answering through the Service")
    await api.pods.delete("web-9", NS)
    # Terminating (its httpd still serving for the grace period): out of the endpoints,
    # and then out of the proxies' picks.
    await wait_for(lambda: _endpoint_count(api, "web", 3), timeout=30, interval=0.1,
                   what="web-9 out of web's endpoints")
    await wait_for(lambda: _not_reached("web-9"), timeout=5, interval=0.1,
                   what="no new connection to web-9")


async def _reached(names: tuple[str, ...]) -> bool:
    return bool(set(await fetch_many("client", "http://web/", 12)) & set(names))


async def _not_reached(name: str) -> bool:
    answers = await fetch_many("client", "http://web/", 20)
    return len(answers) == 20 and name not in answers


async def test_skiff_down_leaves_nothing_behind(api, cluster):
    await workload(api, cluster)
    down = await asyncio.to_thread(_skiff, "down", "--purge", "--data-dir",
                                   str(cluster.data_dir), timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    after = kernel_state()
    assert after == cluster.before, json.dumps({"before": cluster.before, "after": after})
