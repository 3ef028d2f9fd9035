"""The local cluster end to end, as a user runs it.

``python -m skiff.cli.cluster up --nodes 2`` as a subprocess (with a short node monitor
grace period and short default tolerations, so that a node failure plays out in seconds;
the default network plugin, bridge, with a cluster DNS per node), then through the real
apiserver, proxies, DNS programs and Docker: the ``kubernetes`` Service (10.96.0.1)
lists the apiserver and ``kube-dns`` (10.96.0.10) both DNS programs; the guestbook's
frontend answers through its NodePort on both nodes and its cluster IP with its
backend's answer (found by Service name); a short session of the real kubectl over
the REST API with the kubeconfig ``skiff up`` wrote (version, get nodes, apply, get -o
wide, logs, exec, delete); the demo's ``hello`` Service answers
from every replica on its NodePort and its cluster IP; a deleted pod is replaced; a
rolling update keeps the Service answering (no failed request: the Deployment has
maxUnavailable 0 and a readiness probe); scaling to 5 and back; a node whose kubelet is
stopped goes Unknown and its pods come back on the other node; ``skiff down --purge``
leaves no container of the cluster's nodes behind, nor their bridges, veths, nftables
tables (``skiff-node-<node>``, ``skiff-proxy-<node>``) or routes.

It uses the cluster's default ports (6443, 2379, 30080, ...), so nothing else may run a
local cluster on this machine meanwhile. Teardown always runs ``down --purge``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiodocker
import pytest

from skiff.api import errors
from skiff.cli.skiffctl.rollout import rollout_status
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.kubelet import labels as L
from skiff.kubelet.images import BUSYBOX_IMAGE
from skiff.testing.fixtures import failed

CLUSTER = [sys.executable, "-m", "skiff.cli.cluster"]
REPO = Path(__file__).resolve().parents[2]
APISERVER = "127.0.0.1:6443"
NODES = ("node-1", "node-2")
NODE_PORT_URL = "http://127.0.0.1:30080/hostname"
#: Node 2's NodePort listens on its own address (DESIGN.md: node N is 127.0.1.N).
NODE_2_PORT_URL = "http://127.0.1.2:30080/hostname"
#: The guestbook's frontend (examples/guestbook.yaml), on both nodes.
GUESTBOOK_URLS = ("http://127.0.0.1:30081/", "http://127.0.1.2:30081/")
#: Each node's pod CIDR and bridge gateway, where its DNS program answers.
POD_CIDRS = {"node-1": "10.244.0.0/24", "node-2": "10.244.1.0/24"}
GATEWAYS = {"node-1": "10.244.0.1", "node-2": "10.244.1.1"}
HELLO = "hello"
#: Short enough that a stopped kubelet's pods move within ~15 s, long enough that a
#: busy 2-core machine never misses that many heartbeats (one every 2 s) in a row.
FAST_NODE_FAILURE = {"SKIFF_NODE_MONITOR_GRACE_PERIOD": "8",
                     "SKIFF_NODE_MONITOR_PERIOD": "1",
                     "SKIFF_DEFAULT_TOLERATION_SECONDS": "2"}

pytestmark = pytest.mark.timeout(480)


def _skiff(*args: str, timeout: float, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLUSTER, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def _log_tails(data_dir: Path, lines: int = 40) -> str:
    tails = []
    for log in sorted((data_dir / "logs").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(tails)




@dataclass
class Cluster:
    data_dir: Path
    up_output: str


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """``skiff up --nodes 2`` into a fresh data directory; ``down --purge`` after, always."""
    data_dir = tmp_path / "data"
    try:
        started = time.monotonic()
        up = _skiff("up", "--nodes", "2", "--network-plugin", "bridge",
                    "--data-dir", str(data_dir), "--timeout", "200",
                    timeout=240, env=FAST_NODE_FAILURE)
        assert up.returncode == 0, f"skiff up failed:\n{up.stdout}\n{up.stderr}"
        print(f"skiff up took {time.monotonic() - started:.1f}s:\n{up.stdout}")
        yield Cluster(data_dir, up.stdout)
    finally:
        if failed(request) and data_dir.exists():
            print(_log_tails(data_dir))
        _skiff("down", "--purge", "--data-dir", str(data_dir), timeout=120)


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    client = Client(APISERVER)
    try:
        yield client
    finally:
        await client.close()


# ------------------------------------------------------------------ helpers


def _get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode().strip()


async def http_get(url: str) -> str:
    return await asyncio.to_thread(_get, url)


def _ready(pod) -> bool:  # type: ignore[no-untyped-def]
    return (pod.status.phase == "Running" and not pod.metadata.HasField("deletion_timestamp")
            and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions))


async def hello_pods(api: Client) -> list:  # type: ignore[type-arg]
    """The demo's pods that are not being deleted."""
    pods = await api.pods.list("default", label_selector=f"app={HELLO}")
    return [p for p in pods.items if not p.metadata.HasField("deletion_timestamp")]


async def wait_hello_settled(api: Client, replicas: int, *, timeout: float = 90.0,
                             check=None) -> list:  # type: ignore[no-untyped-def,type-arg]
    """Until the Deployment is rolled out and available with ``replicas`` pods, exactly
    that many pods not being deleted exist, all Ready (and passing ``check``).

    Pods being deleted are left out: they are out of the endpoints already, whatever
    their grace period leaves of them."""
    async def settled() -> list | None:  # type: ignore[type-arg]
        deploy = await api.deployments.get(HELLO, "default")
        done = rollout_status(deploy)[1]
        if not done or deploy.status.available_replicas != replicas:
            return None
        pods = await hello_pods(api)
        if len(pods) != replicas or not all(_ready(p) for p in pods):
            return None
        if check is not None and not all(check(p) for p in pods):
            return None
        return pods

    return await wait_for(settled, timeout=timeout, interval=0.25,
                          what=f"{HELLO} settled at {replicas} ready replicas")


async def wait_answers_are(urls: tuple[str, ...], names: set[str], *,
                           timeout: float = 30.0) -> None:
    """Until a round of GETs on each URL is answered by exactly the pods ``names``: every
    replica reached, no one else answering (the proxies may lag the endpoints a moment)."""
    async def exactly() -> bool:
        for url in urls:
            answers = {await http_get(url) for _ in range(4 * len(names))}
            if answers != names:
                return False
        return True

    await wait_for(exactly, timeout=timeout, interval=0.2,
                   what=f"answers from exactly {sorted(names)}")


async def change_deployment(api: Client, change) -> None:  # type: ignore[no-untyped-def]
    """Apply ``change`` to the live Deployment, again on a conflict."""
    for _ in range(10):
        deploy = await api.deployments.get(HELLO, "default")
        change(deploy)
        try:
            await api.deployments.update(deploy)
            return
        except errors.Conflict:
            continue
    raise AssertionError("the Deployment kept changing under the test")


@dataclass
class Traffic:
    """GETs through the Service, one after the other, until stopped."""

    urls: tuple[str, ...]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            try:
                await http_get(url)
                self.ok += 1
            except OSError as e:
                self.failures.append(f"{url}: {e}")


async def node_ready_status(api: Client, name: str) -> str:
    node = await api.nodes.get(name, "")
    return next((c.status for c in node.status.conditions if c.type == "Ready"), "")


def _kernel_leftovers() -> list[str]:
    """What of the cluster's nodes is in the kernel: their nftables tables, links with
    their alias, and Skiff's (proto 147) routes to their pod CIDRs."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False).stdout.split()
    links = subprocess.run(["ip", "-d", "-o", "link", "show"], capture_output=True,
                           text=True, check=False).stdout.splitlines()
    routes = subprocess.run(["ip", "route", "show", "proto", "147"], capture_output=True,
                            text=True, check=False).stdout.splitlines()
    left = [t for t in tables for n in NODES if t in (f"skiff-node-{n}", f"skiff-proxy-{n}")]
    left += [line for line in links for n in NODES
             if f"alias skiff:{n}" in line or f"skb-{n}:" in line]
    left += [r for r in routes for cidr in POD_CIDRS.values() if r.startswith(cidr)]
    return left


async def check_cluster_services(api: Client, up_output: str) -> None:
    """The kubernetes and kube-dns Services and their Endpoints, and the guestbook's
    answers crossing both tiers, on both nodes and by cluster IP from the host."""
    kubernetes = await api.services.get("kubernetes", "default")
    assert kubernetes.spec.cluster_ip == "10.96.0.1"
    endpoints = await api.endpoints.get("kubernetes", "default")
    # The REST API's HTTPS port, advertised on node-1's bridge gateway (pods reach it).
    assert [(a.ip, p.port) for s in endpoints.subsets for a in s.addresses
            for p in s.ports] == [(GATEWAYS["node-1"], 6445)]
    dns = await api.services.get("kube-dns", "kube-system")
    assert dns.spec.cluster_ip == "10.96.0.10"

    async def both_dns_registered() -> bool:
        listed = await api.endpoints.get("kube-dns", "kube-system")
        return {a.ip for s in listed.subsets for a in s.addresses} == set(GATEWAYS.values())

    await wait_for(both_dns_registered, timeout=30, interval=0.2,
                   what="both DNS programs in the kube-dns Endpoints")

    assert "curl 127.0.0.1:30081/ " in up_output
    frontend = await api.services.get("frontend", "guestbook")
    urls = (*GUESTBOOK_URLS, f"http://{frontend.spec.cluster_ip}/")
    for url in urls:
        answer = await http_get(url)
        assert answer.startswith("frontend-") and " -> backend-" in answer, (url, answer)


async def kubectl(data_dir: Path, *args: str, stdin: str = "", timeout: float = 60.0) -> str:
    """``kubectl ARGS`` with the kubeconfig ``skiff up`` wrote; its stdout (it must
    succeed)."""
    process = await asyncio.create_subprocess_exec(
        "kubectl", *args, env={**os.environ, "KUBECONFIG": str(data_dir / "kubeconfig")},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    assert process.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


KUBECTL_POD = f"""apiVersion: v1
kind: Pod
metadata: {{name: kc, namespace: default}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: {BUSYBOX_IMAGE}
      command: ["sh", "-c", "echo hello-kubectl; exec sleep 3600"]
"""


async def check_kubectl_session(data_dir: Path) -> None:
    """What a user first does with kubectl: the REST API over HTTPS, end to end."""
    assert "Server Version: v1.32" in await kubectl(data_dir, "version")
    nodes = await kubectl(data_dir, "get", "nodes", "--no-headers")
    assert [line.split()[:2] for line in nodes.splitlines()] == [
        [n, "Ready"] for n in NODES]
    assert (await kubectl(data_dir, "apply", "-f", "-", stdin=KUBECTL_POD)).strip() == (
        "pod/kc created")
    await kubectl(data_dir, "wait", "--for=condition=Ready", "pod/kc", "--timeout=90s",
                  timeout=100)
    row = (await kubectl(data_dir, "get", "pod", "kc", "-o", "wide", "--no-headers")).split()
    assert row[:3] == ["kc", "1/1", "Running"] and row[5].startswith("10.244."), row
    assert row[6] in NODES, row
    assert (await kubectl(data_dir, "logs", "kc")).strip() == "hello-kubectl"
    assert (await kubectl(data_dir, "exec", "kc", "--", "cat", "/etc/hostname")).strip() \
        == "kc"
    assert (await kubectl(data_dir, "delete", "pod", "kc", "--wait")).strip() == (
        'pod "kc" deleted')


# ------------------------------------------------------------------ the test


async def test_local_cluster_end_to_end(cluster: Cluster, api: Client) -> None:
    started = time.monotonic()

    def step(what: str) -> None:
        """Where the time goes (shown with -s, and in a failure's captured output)."""
        print(f"{time.monotonic() - started:6.1f}s {what}", flush=True)

    # `skiff up` checked the NodePort itself before telling the user to curl it.
    assert "curl 127.0.0.1:30080/hostname" in cluster.up_output
    for node in NODES:
        assert await node_ready_status(api, node) == "True"
    await check_cluster_services(api, cluster.up_output)
    step("kubernetes, kube-dns and the guestbook answered")
    if shutil.which("kubectl") is None:
        step("no kubectl on PATH: its session is left out")
    else:
        await check_kubectl_session(cluster.data_dir)
        step("a kubectl session")
    service = await api.services.get(HELLO, "default")
    cluster_ip_url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/hostname"
    urls = (NODE_PORT_URL, NODE_2_PORT_URL, cluster_ip_url)

    # Every replica answers through the NodePort (on both nodes) and the cluster IP.
    pods = await wait_hello_settled(api, 3)
    names = {p.metadata.name for p in pods}
    assert {p.spec.node_name for p in pods} <= set(NODES)
    await wait_answers_are(urls, names)

    step("every replica answered")

    # The controller-manager keeps a default ServiceAccount per namespace; pods run as it.
    async def default_accounts() -> bool:
        try:
            for namespace in ("default", "kube-system"):
                await api.service_accounts.get("default", namespace)
        except errors.NotFound:
            return False
        return True

    await wait_for(default_accounts, timeout=30, interval=0.2, what="default ServiceAccounts")
    assert {p.spec.service_account_name for p in pods} == {"default"}

    # A deleted pod is replaced, and the replacement serves.
    victim = sorted(names)[0]
    await api.pods.delete(victim, "default")
    pods = await wait_hello_settled(api, 3, check=lambda p: p.metadata.name != victim)
    names = {p.metadata.name for p in pods}
    assert victim not in names
    await wait_answers_are(urls, names)

    step("a deleted pod replaced")

    # A rolling update (a new env var in the template) while requests keep coming:
    # maxUnavailable 0 and the readiness probe mean not one of them fails.
    traffic = Traffic(urls)
    runner = asyncio.create_task(traffic.run(), name="traffic during rollout")

    def add_env(deploy) -> None:  # type: ignore[no-untyped-def]
        deploy.spec.template.spec.containers[0].env.add(name="ROLLOUT", value="2")

    def updated(pod) -> bool:  # type: ignore[no-untyped-def]
        return any(e.name == "ROLLOUT" for e in pod.spec.containers[0].env)

    try:
        await change_deployment(api, add_env)
        pods = await wait_hello_settled(api, 3, check=updated)
    finally:
        traffic.stopping.set()
        await runner
    assert traffic.failures == [], f"{len(traffic.failures)} failed of " \
        f"{traffic.ok + len(traffic.failures)}: {traffic.failures[:5]}"
    assert traffic.ok > 10
    print(f"{traffic.ok} requests during the rollout, none failed")
    names = {p.metadata.name for p in pods}
    await wait_answers_are(urls, names)

    step("rolled out with traffic")

    # Scale to 5 and back to 3.
    def scale(replicas: int):  # type: ignore[no-untyped-def]
        def change(deploy) -> None:  # type: ignore[no-untyped-def]
            deploy.spec.replicas = replicas
        return change

    await change_deployment(api, scale(5))
    pods = await wait_hello_settled(api, 5)
    await wait_answers_are(urls, {p.metadata.name for p in pods})
    await change_deployment(api, scale(3))
    pods = await wait_hello_settled(api, 3)
    await wait_answers_are(urls, {p.metadata.name for p in pods})

    step("scaled to 5 and back")

    # node-2's kubelet stops: the node goes Unknown and its pods come back on node-1.
    on_node_2 = {p.metadata.name for p in pods if p.spec.node_name == "node-2"}
    stopped = await asyncio.to_thread(
        subprocess.run, ["supervisorctl", "-c", str(cluster.data_dir / "supervisord.conf"),
                         "stop", "kubelet-node-2"], capture_output=True, text=True, check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    await wait_for(lambda: _is(node_ready_status(api, "node-2"), "Unknown"), timeout=60,
                   interval=0.5, what="node-2 Ready=Unknown")
    step("node-2 Unknown")
    pods = await wait_hello_settled(api, 3, timeout=90,
                                    check=lambda p: p.spec.node_name == "node-1")
    assert not on_node_2 & {p.metadata.name for p in pods}
    await wait_answers_are((NODE_PORT_URL, cluster_ip_url), {p.metadata.name for p in pods})
    assert await node_ready_status(api, "node-1") == "True"

    step("node-2's pods back on node-1")

    # skiff down --purge: no container of the cluster's nodes remains, nor its data.
    down = await asyncio.to_thread(_skiff, "down", "--purge", "--data-dir",
                                   str(cluster.data_dir), timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not cluster.data_dir.exists()
    async with aiodocker.Docker() as docker:
        left = [c for node in NODES for c in await docker.containers.list(
            all=True, filters=json.dumps(L.node_filter(node)))]
        networks = {n["Name"] for n in await docker.networks.list()}
    assert left == [], [c["Names"] for c in left]
    assert not networks & {f"skiff-{n}" for n in NODES}
    assert _kernel_leftovers() == []
    step("down --purge: nothing left")


async def _is(value, expected: str) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected
