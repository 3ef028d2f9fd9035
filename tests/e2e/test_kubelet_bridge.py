"""The kubelet's ``bridge`` network plugin on the real Docker engine and kernel: pod
addresses from the podCIDR, pod to pod on one node and across two nodes of this
machine, a pod to its own IP, the host to a pod, a restarted kubelet adopting (same IPs,
no duplicate veth), and cleanup that leaves nothing of Skiff's behind.

Every address used lies in 10.244.128.0/17 (pod CIDRs of the tests' own) or on
loopback: nothing leaves the machine.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from conftest import FAST_FLAGS, _free_bridge_cidr
from e2e_pods import container, http_get, http_server, pod, running_ready, status_of, wait_pod

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.kubelet import podnet
from skiff.kubelet.containers import remove_node
from skiff.testing.fixtures import failed
from skiff.testing.processes import Kubelet

pytestmark = pytest.mark.skipif(
    subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
    reason="the bridge plugin needs root (netlink, nftables)")


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def skiff_marks(node: str, cidr: str) -> dict[str, list[str]]:
    """What of ``node``'s pod network the host shows: links, routes, nft, DOCKER-USER."""
    bridge = podnet.bridge_name(node)
    links = json.loads(_sh("ip", "-j", "link") or "[]")
    return {
        "links": sorted(link["ifname"] for link in links
                        if link["ifname"] == bridge or link.get("master") == bridge
                        or link.get("ifalias") == podnet.link_alias(node)),
        "routes": sorted(line for line in _sh("ip", "route").splitlines()
                         if bridge in line or cidr in line),
        "nft": [line for line in _sh("nft", "list", "tables").splitlines()
                if podnet.table_name(node) in line],
        "docker_user": [line for line in _sh("iptables", "-S", "DOCKER-USER").splitlines()
                        if podnet.docker_user_comment(node) in line],
    }


def _leaves_by_default(address: str) -> bool:
    """Whether the host would send a packet for ``address`` through its default route."""
    default = _sh("ip", "route", "show", "default").split()
    if "dev" not in default:
        return False
    device = default[default.index("dev") + 1]
    return f"dev {device} " in _sh("ip", "route", "get", address) + " "


def veths(node: str) -> list[str]:
    bridge = podnet.bridge_name(node)
    return sorted(link["ifname"] for link in json.loads(_sh("ip", "-j", "link") or "[]")
                  if link.get("master") == bridge)


def hairpin_mode(veth: str) -> str:
    return Path(f"/sys/class/net/{veth}/brport/hairpin_mode").read_text().strip()


#: The pod's own address, as a shell word (busybox ip: the first inet of eth0).
OWN_IP_URL = "http://$(ip -o -4 addr show eth0 | sed 's/.*inet \\([0-9.]*\\).*/\\1/'):8080/"


class BridgeNode:
    """A node of the test's own whose kubelet runs the bridge plugin."""

    def __init__(self, base: Path, servers: list[str], *extra: str) -> None:
        self.name = f"e2e-{secrets.token_hex(3)}"
        self.cidr = _free_bridge_cidr()
        self.root = base / "root"
        self.base = base
        self.servers = servers
        self.extra = list(extra)
        self.before = skiff_marks(self.name, self.cidr)
        self.kubelet = self._kubelet(base)

    def _kubelet(self, base: Path) -> Kubelet:
        return Kubelet(base / "kubelet", self.servers, node_name=self.name, pod_cidr=self.cidr,
                       extra_args=[*FAST_FLAGS, "--network-plugin", "bridge",
                                   "--root-dir", str(self.root), *self.extra])

    async def start(self) -> None:
        self.kubelet.start()
        await self.kubelet.wait_ready()

    async def restart(self) -> None:
        self.kubelet.stop()
        self.kubelet = self._kubelet(self.base / "again")
        await self.start()


@pytest.fixture
async def bridge_nodes(shared_cluster, docker, tmp_path, request
                       ) -> AsyncIterator[Callable[..., BridgeNode]]:
    made: list[BridgeNode] = []

    def make(*extra: str) -> BridgeNode:
        node = BridgeNode(tmp_path / f"n{len(made)}", [shared_cluster.apiserver.address],
                          *extra)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            node.kubelet.stop()
            if failed(request):
                print(node.kubelet.logs(200))
            await remove_node(docker, node.name)
            await podnet.remove_pod_network(node.name)
        for node in made:  # cleanup leaves nothing behind
            assert skiff_marks(node.name, node.cidr) == node.before


def fetcher(name: str, url: str, expect: str) -> core_pb2.Container:
    """A container that fetches ``url`` until it says ``expect``, then idles."""
    script = (f"for _ in $(seq 100); do timeout 5 wget -q -O- {url} | grep -q {expect} "
              f"&& echo fetched > /tmp/ok && break; sleep 0.1; done; exec sleep 3600")
    c = container(name, "sh", "-c", script)
    c.readiness_probe.exec.command.extend(["cat", "/tmp/ok"])
    c.readiness_probe.period_seconds = 1
    return c


async def test_pods_on_one_node_reach_each_other_and_a_restart_adopts(api, ns, bridge_nodes):
    node = bridge_nodes()
    await node.start()
    # No cluster address follows the host's default route: another node's pods (none
    # here), a Service, a load balancer's ingress IP, this node's pods.
    for address in ("10.244.127.9", "10.96.0.10", "10.112.0.9",
                    node.cidr.replace(".0/24", ".77")):
        assert not _leaves_by_default(address), address
    # Service and load-balancer IPs go onto the bridge (the proxy's output hook sees them).
    bridge = podnet.bridge_name(node.name)
    for address in ("10.96.0.10", "10.112.0.9"):
        assert f"dev {bridge} " in _sh("ip", "route", "get", address), address

    served = http_server(body="served")
    # An httpGet probe aims at the pod IP, which only the plugin knows (not Docker).
    served.readiness_probe.http_get.path = "/"
    served.readiness_probe.http_get.port.CopyFrom(meta_pb2.IntOrString(int_val=8080))
    served.readiness_probe.period_seconds = 1
    await api.pods.create(pod("web", ns, node.name, served))
    web = await wait_pod(api, ns, "web", running_ready, what="running and ready")
    web_ip = web.status.pod_ip
    assert web_ip.rsplit(".", 1)[0] == node.cidr.rsplit(".", 1)[0], web_ip
    assert web_ip != node.cidr.replace(".0/24", ".1")  # the gateway is the bridge's

    # Another pod by IP, and the pod itself through its own IP.
    await api.pods.create(pod("client", ns, node.name,
                              fetcher("peer", f"http://{web_ip}:8080/", "served"), grace=1))
    client = await wait_pod(api, ns, "client", running_ready, what="fetched the peer")
    self_fetch = pod("self", ns, node.name, http_server(body="myself"))
    self_fetch.spec.containers.append(fetcher("me", OWN_IP_URL, "myself"))
    await api.pods.create(self_fetch)
    await wait_pod(api, ns, "self", running_ready, what="fetched itself")
    # The host reaches a pod.
    assert (await http_get(f"http://{web_ip}:8080/")).strip() == "served"
    assert len(veths(node.name)) == 3
    # Hairpin on every pod's bridge port: a pod its Service sends back to itself.
    for veth in veths(node.name):
        assert hairpin_mode(veth) == "1", veth

    ips = {p: (await api.pods.get(p, ns)).status.pod_ip for p in ("web", "client", "self")}
    assert len(set(ips.values())) == 3
    ipam = json.loads((node.root / "ipam.json").read_text())
    assert sorted(a["ip"] for a in ipam["allocations"]) == sorted(ips.values())

    # A restarted kubelet adopts: same IPs, the same veths, nothing restarted.
    before = veths(node.name)
    await node.restart()
    for name, ip in ips.items():
        again = await api.pods.get(name, ns)
        assert again.status.pod_ip == ip
    await wait_for(lambda: _sandboxes_same(api, ns, client), timeout=10,
                   what="the pods keep running")
    assert veths(node.name) == before
    marks = skiff_marks(node.name, node.cidr)
    assert len(marks["docker_user"]) == 2 and len(marks["nft"]) == 1, marks
    assert (await http_get(f"http://{web_ip}:8080/")).strip() == "served"

    # A deleted pod's address is freed.
    await api.pods.delete("client", ns)
    async def freed() -> bool:
        return _allocated(node) == len(ips) - 1

    await wait_for(freed, timeout=30, what="the client's address freed")


async def _sandboxes_same(api, ns, client) -> bool:  # type: ignore[no-untyped-def]
    now = await api.pods.get("client", ns)
    status = status_of(now, "peer")
    return (running_ready(now) and status is not None
            and status.restart_count == status_of(client, "peer").restart_count)


def _allocated(node: BridgeNode) -> int:
    return len(json.loads((node.root / "ipam.json").read_text())["allocations"])


async def test_a_pod_reaches_a_pod_on_another_node(api, ns, bridge_nodes):
    one, two = bridge_nodes(), bridge_nodes("--network-cleanup-on-exit")
    await one.start()
    await two.start()
    web = await api.pods.create(pod("web", ns, two.name, http_server(body="yonder")))
    web = await wait_pod(api, ns, "web", running_ready, what="running")
    await api.pods.create(pod("client", ns, one.name,
                              fetcher("far", f"http://{web.status.pod_ip}:8080/", "yonder")))
    client = await wait_pod(api, ns, "client", running_ready, what="fetched across nodes")
    assert client.status.pod_ip.rsplit(".", 1)[0] == one.cidr.rsplit(".", 1)[0]

    # A clean stop with --network-cleanup-on-exit takes the node's network with it.
    two.kubelet.stop()
    marks = skiff_marks(two.name, two.cidr)
    assert not marks["nft"] and not marks["docker_user"]
    assert podnet.bridge_name(two.name) not in marks["links"]
