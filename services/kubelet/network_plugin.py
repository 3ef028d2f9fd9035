"""The kubelet's network plugins: who gives a pod sandbox its network and its IP.

:class:`NetworkPlugin` is the seam (Kubernetes' old kubelet network plugin interface,
which kubenet implemented). Two implementations, chosen by ``--network-plugin``:

- ``docker`` (:class:`DockerNetworkPlugin`): the node's pods on a Docker bridge network
  ``skiff-<node>``; Docker addresses the sandbox, the IP is read from its inspect.
- ``bridge`` (:class:`BridgeNetworkPlugin`), kubenet's way: the sandbox starts with
  network mode ``none``; the kubelet plumbs it through ``/proc/<pid>/ns/net`` with
  netlink (pyroute2's asyncio API): a veth pair, the host end on the node's own Linux
  bridge ``skb-<node>`` (hairpin on, the podCIDR's gateway address on the bridge), the
  other end moved into the sandbox, renamed ``eth0``, given an address from
  :mod:`~services.kubelet.ipam` and a default route via the gateway.

Machine-wide parts of the ``bridge`` network, kept by :meth:`BridgeNetworkPlugin.startup`
(idempotent, so a restarted kubelet adopts what it finds):

- routes that keep the cluster ranges on the machine whatever else is installed: a
  blackhole for the cluster CIDR, the Service CIDR and the load-balancer range (high
  metric: a specific route wins), and the Service CIDR and the load-balancer range onto
  the node's bridge (so the host's own connections to a ClusterIP or a LoadBalancer
  ingress IP pass its output hook, where the proxy translates them);
- per other node, ``podCIDR via InternalIP`` (flannel's host-gw, kindnet), from the
  Nodes informer (:func:`plan_node_routes`, pure);
- nftables table ``ip skiff-node-<node>``: masquerade of pod traffic leaving the
  cluster ranges (never pod to pod, never pod to a Service's cluster or load-balancer
  IP);
- ``DOCKER-USER`` ACCEPT entries for the podCIDR (Docker's FORWARD policy is DROP, and
  with bridge-nf-call-iptables even bridged pod-to-pod traffic passes FORWARD). Service
  and load-balancer IPs need none: FORWARD sees a packet after the proxy's DNAT (to a
  pod IP), and the userspace proxy's redirect ends in INPUT, not FORWARD.

Each pod's bridge port is in hairpin mode, so a pod whose Service sends it back to
itself (nftables mode's DNAT to its own IP) gets the packet back through its port.

Every mark is :mod:`skiff.kubelet.podnet`'s, which also removes it all (``skiff down``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiodocker
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from services.kubelet.ipam import IPAM, gateway
from skiff.api.v1 import core_pb2
from skiff.kubelet import labels as L
from skiff.kubelet import podnet
from skiff.logging import get_logger

log = get_logger("skiff.kubelet.network")

DOCKER, BRIDGE = "docker", "bridge"
PLUGINS = (DOCKER, BRIDGE)


class NetworkPlugin(Protocol):
    """What the kubelet asks of a pod network (see the module)."""

    #: The sandbox's Docker ``NetworkMode``.
    sandbox_network_mode: str
    #: Whether :meth:`setup` needs the sandbox's network namespace (it runs already).
    plumbs_sandbox: bool

    async def startup(self, pod_cidr: str) -> None:
        """Make (or adopt) the node's network on ``pod_cidr``."""

    async def reconcile(self, live_sandboxes: set[str], *, before: float) -> None:
        """Release what sandboxes that no longer run held (listed at ``before``)."""

    async def setup(self, pod: core_pb2.Pod, sandbox_id: str, netns: str) -> str:
        """Plumb the sandbox's network; its IP."""

    async def teardown(self, sandbox_id: str) -> None:
        """Release the sandbox's network (a container that is no sandbox: nothing)."""

    def pod_ip(self, sandbox_id: str, docker_ip: str) -> str:
        """The IP of a sandbox (``docker_ip``: what Docker's inspect says)."""

    async def sync_routes(self, nodes: Iterable[core_pb2.Node]) -> None:
        """Routes to the other nodes' podCIDRs."""

    async def cleanup(self) -> None:
        """Remove everything of the node's network (a node leaving for good)."""


# ---------------------------------------------------------------- docker


class DockerNetworkPlugin:
    """Pods on a Docker bridge network of the node (see the module)."""

    plumbs_sandbox = False

    def __init__(self, docker: aiodocker.Docker, *, node: str, network: str) -> None:
        self.docker = docker
        self.node = node
        self.sandbox_network_mode = network

    async def startup(self, pod_cidr: str) -> None:
        """Create the node's bridge network on ``pod_cidr`` unless it exists (it may have
        been made by an earlier kubelet of this node: then it is reused as it is)."""
        network = self.sandbox_network_mode
        try:
            found = await self.docker.networks.get(network)
            subnets = [c.get("Subnet") for c in
                       ((await found.show()).get("IPAM") or {}).get("Config") or []]
            if pod_cidr not in subnets:
                log.warning("node network exists with another subnet; using it",
                            network=network, subnets=subnets, pod_cidr=pod_cidr)
            return
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise
        await self.docker.networks.create({
            "Name": network, "Driver": "bridge", "CheckDuplicate": True,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": pod_cidr}]},
            "Labels": {L.NODE: self.node}})
        log.info("created the node's pod network", network=network, pod_cidr=pod_cidr)

    async def reconcile(self, live_sandboxes: set[str], *, before: float) -> None:
        return None  # Docker frees an address with its container

    async def setup(self, pod: core_pb2.Pod, sandbox_id: str, netns: str) -> str:
        raise NotImplementedError("Docker plumbs the sandbox itself")

    async def teardown(self, sandbox_id: str) -> None:
        return None

    def pod_ip(self, sandbox_id: str, docker_ip: str) -> str:
        return docker_ip

    async def sync_routes(self, nodes: Iterable[core_pb2.Node]) -> None:
        return None  # one machine: every node's network is a local bridge

    async def cleanup(self) -> None:
        return None  # skiff down removes the Docker network with the node's containers


# ------------------------------------------------------- routes (pure)


@dataclass(frozen=True)
class NodeRoute:
    """A node as routing sees it."""

    name: str
    pod_cidr: str
    internal_ip: str


def node_route(node: core_pb2.Node) -> NodeRoute:
    """A Node object's routing facts (pure)."""
    ip = next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")
    return NodeRoute(node.metadata.name, node.spec.pod_cidr, ip)


def plan_node_routes(nodes: Iterable[NodeRoute], *, self_name: str,
                     connected: Iterable[str]) -> dict[str, str]:
    """podCIDR -> gateway (the node's InternalIP) for every other node (pure).

    ``connected``: the networks with a link route on a non-loopback interface here.
    Skipped: this node; nodes without podCIDR or InternalIP; a podCIDR that is already
    connected here (another node's bridge on the same machine); a loopback InternalIP
    or one on no connected network (the kernel could not route via it)."""
    links = [ipaddress.ip_network(c, strict=False) for c in connected]
    plan: dict[str, str] = {}
    for node in nodes:
        if node.name == self_name or not node.pod_cidr or not node.internal_ip:
            continue
        try:
            cidr = ipaddress.ip_network(node.pod_cidr, strict=False)
            via = ipaddress.ip_address(node.internal_ip)
        except ValueError:
            log.warning("node with a malformed podCIDR or InternalIP", node=node.name,
                        pod_cidr=node.pod_cidr, internal_ip=node.internal_ip)
            continue
        if via.version != 4 or via.is_loopback or any(cidr.overlaps(n) for n in links):
            continue
        if not any(via in n for n in links):
            continue
        plan[str(cidr)] = str(via)
    return plan


# ---------------------------------------------------------------- bridge


class BridgeNetworkPlugin:
    """kubenet's pod network on a bridge of Skiff's own (see the module)."""

    sandbox_network_mode = "none"
    plumbs_sandbox = True

    def __init__(self, *, node: str, root_dir: Path, cluster_cidr: str = podnet.CLUSTER_CIDR,
                 service_cidr: str = podnet.SERVICE_CIDR,
                 load_balancer_cidr: str = podnet.LOAD_BALANCER_CIDR) -> None:
        self.node = node
        self.root_dir = root_dir
        self.cluster_cidr = cluster_cidr
        self.service_cidr = service_cidr
        self.load_balancer_cidr = load_balancer_cidr
        self.bridge = podnet.bridge_name(node)
        self.alias = podnet.link_alias(node)
        self.pod_cidr = ""
        self.ipam: IPAM | None = None
        #: The node routes this kubelet keeps (destination -> gateway).
        self.routes: dict[str, str] = {}
        self._log = log.bind(node=node, bridge=self.bridge)

    # ----------------------------------------------------------- startup

    async def startup(self, pod_cidr: str) -> None:
        network = ipaddress.ip_network(pod_cidr)
        if not network.subnet_of(ipaddress.ip_network(self.cluster_cidr)):  # type: ignore[arg-type]
            raise ValueError(f"podCIDR {pod_cidr} is outside the cluster CIDR "
                             f"{self.cluster_cidr}")
        self.pod_cidr = pod_cidr
        self.ipam = IPAM(self.root_dir / "ipam.json", pod_cidr)
        await podnet.netlink(self._ensure_links())
        await self._ensure_rules()
        self._log.info("pod network ready", pod_cidr=pod_cidr,
                       allocated=len(self.ipam.by_container))

    async def _ensure_links(self) -> None:
        async with AsyncIPRoute() as ipr:
            index = await self._ensure_bridge(ipr)
            await self._ensure_machine_routes(ipr, index)

    async def _ensure_bridge(self, ipr: AsyncIPRoute) -> int:
        found = await ipr.link_lookup(ifname=self.bridge)
        if not found:
            with contextlib.suppress(NetlinkError):  # made meanwhile: adopted below
                await ipr.link("add", ifname=self.bridge, kind="bridge")
            found = await ipr.link_lookup(ifname=self.bridge)
            self._log.info("created the node's bridge")
        index = found[0]
        await ipr.link("set", index=index, ifalias=self.alias, state="up")
        want = (gateway(self.pod_cidr), ipaddress.ip_network(self.pod_cidr).prefixlen)
        have = {(a.get("address"), a["prefixlen"])
                async for a in await ipr.addr("dump", index=index, family=socket.AF_INET)}
        for address, prefix in have - {want}:
            self._log.warning("removing a foreign address from the bridge", address=address)
            await ipr.addr("del", index=index, address=address, prefixlen=prefix)
        if want not in have:
            await ipr.addr("add", index=index, address=want[0], prefixlen=want[1])
        return index

    async def _ensure_machine_routes(self, ipr: AsyncIPRoute, bridge: int) -> None:
        """The routes that keep the cluster ranges here (see the module)."""
        for dst in (self.cluster_cidr, self.service_cidr, self.load_balancer_cidr):
            with contextlib.suppress(NetlinkError):  # EEXIST: another node's kubelet
                await ipr.route("add", dst=dst, type="blackhole",
                                priority=podnet.BLACKHOLE_METRIC, proto=podnet.ROUTE_PROTO)
        # Each bridge its own metric, so the nodes of one machine do not collide.
        for dst in (self.service_cidr, self.load_balancer_cidr):
            await ipr.route("replace", dst=dst, oif=bridge, scope="link",
                            priority=1000 + bridge % 1000, proto=podnet.ROUTE_PROTO)

    async def _ensure_rules(self) -> None:
        table = podnet.table_name(self.node)
        excluded = (f"{{ {self.cluster_cidr}, {self.service_cidr}, "
                    f"{self.load_balancer_cidr} }}")
        script = (
            f'table ip {table} {{}}\n'
            f'flush table ip {table}\n'
            f'table ip {table} {{\n'
            f'  chain postrouting {{\n'
            f'    type nat hook postrouting priority srcnat; policy accept;\n'
            f'    ip saddr {self.pod_cidr} ip daddr != {excluded} '
            f'oifname != "{self.bridge}" masquerade\n'
            f'  }}\n'
            f'}}\n')
        await podnet.run_command("nft", "-f", "-", stdin=script)
        await self._ensure_docker_user()

    async def _ensure_docker_user(self) -> None:
        """Exactly one ACCEPT entry per direction for the podCIDR in ``DOCKER-USER``.

        Read from the listing rather than asked with ``iptables -C``: a check racing
        another writer of the filter table (Docker, another kubelet) can miss a rule
        that is there, and a duplicate would follow; duplicates, and entries for a
        podCIDR no longer ours, are removed here."""
        if not await podnet.docker_user_exists():
            return
        comment = podnet.docker_user_comment(self.node)
        wanted = [["DOCKER-USER", direction, self.pod_cidr, "-m", "comment", "--comment",
                   comment, "-j", "ACCEPT"] for direction in ("-s", "-d")]
        listing = await podnet.run_command("iptables", "-w", "-S", "DOCKER-USER")
        present = podnet.docker_user_rules(listing, self.node)
        for rule in wanted:
            if rule not in present:
                await podnet.run_command("iptables", "-w", "-I", *rule)
        seen: list[list[str]] = []
        for rule in present:
            if rule in wanted and rule not in seen:
                seen.append(rule)
                continue
            await podnet.run_command("iptables", "-w", "-D", *rule, check=False)
            self._log.info("removed a surplus DOCKER-USER entry", rule=" ".join(rule))

    # --------------------------------------------------------- per pod

    async def setup(self, pod: core_pb2.Pod, sandbox_id: str, netns: str) -> str:
        assert self.ipam is not None, "startup() first"
        md = pod.metadata
        ip = await self.ipam.allocate(sandbox_id, pod_uid=md.uid,
                                      pod=f"{md.namespace}/{md.name}", now=time.time())
        try:
            await podnet.netlink(self._plumb(sandbox_id, netns, ip))
        except BaseException:
            await self.teardown(sandbox_id)
            raise
        return ip

    async def _plumb(self, sandbox_id: str, netns: str, ip: str) -> None:
        host, peer = podnet.veth_names(sandbox_id)
        prefix = ipaddress.ip_network(self.pod_cidr).prefixlen
        fd = os.open(netns, os.O_RDONLY)
        try:
            async with AsyncIPRoute() as ipr:
                bridge = (await ipr.link_lookup(ifname=self.bridge))[0]
                for stale in await ipr.link_lookup(ifname=host):  # from a failed attempt
                    await ipr.link("del", index=stale)
                await ipr.link("add", ifname=host, kind="veth",
                               peer={"ifname": peer, "net_ns_fd": fd})
                index = (await ipr.link_lookup(ifname=host))[0]
                await ipr.link("set", index=index, ifalias=self.alias, master=bridge,
                               state="up")
                await ipr.link("set", index=index, kind="bridge_slave", mode=1)  # hairpin
        finally:
            os.close(fd)
        async with AsyncIPRoute(fileno=podnet.netlink_socket_in(netns)) as inside:
            index = (await inside.link_lookup(ifname=peer))[0]
            await inside.link("set", index=index, ifname="eth0")
            await inside.addr("add", index=index, address=ip, prefixlen=prefix)
            await inside.link("set", index=index, state="up")
            lo = (await inside.link_lookup(ifname="lo"))[0]
            await inside.link("set", index=lo, state="up")
            await inside.route("add", dst="0.0.0.0/0", gateway=gateway(self.pod_cidr))

    async def teardown(self, sandbox_id: str) -> None:
        if self.ipam is None or not self.ipam.ip_of(sandbox_id):
            return
        host, _ = podnet.veth_names(sandbox_id)
        await podnet.netlink(podnet.delete_link(host))  # mostly gone with the namespace
        ip = await self.ipam.release(sandbox_id)
        self._log.debug("released a pod address", ip=ip, sandbox=sandbox_id[:12])

    def pod_ip(self, sandbox_id: str, docker_ip: str) -> str:
        return self.ipam.ip_of(sandbox_id) if self.ipam is not None else ""

    async def reconcile(self, live_sandboxes: set[str], *, before: float) -> None:
        """Free the addresses (and veths) of sandboxes that no longer run."""
        if self.ipam is None:
            return
        for allocation in await self.ipam.reconcile(live_sandboxes, before=before):
            self._log.info("freed the address of a sandbox that is gone",
                           ip=allocation.ip, pod=allocation.pod)
            host, _ = podnet.veth_names(allocation.container_id)
            await podnet.netlink(podnet.delete_link(host))

    # ----------------------------------------------------------- routes

    async def sync_routes(self, nodes: Iterable[core_pb2.Node]) -> None:
        """Routes to the other nodes' podCIDRs; the machine-wide routes and the rules
        made again if something removed them."""
        await podnet.netlink(self._sync_routes([node_route(n) for n in nodes]))
        # The rules too: a DOCKER-USER chain made by a Docker that started after the
        # kubelet, or a table someone flushed, gets them back (both steps idempotent).
        await self._ensure_rules()

    async def _sync_routes(self, nodes: list[NodeRoute]) -> None:
        async with AsyncIPRoute() as ipr:
            bridge = await ipr.link_lookup(ifname=self.bridge)
            if bridge:
                await self._ensure_machine_routes(ipr, bridge[0])
            connected = []
            async for route in await ipr.route("dump", table=254):
                if route.get("scope") == 253 and route.get("dst"):  # link scope
                    connected.append(f"{route.get('dst')}/{route.get('dst_len')}")
            plan = plan_node_routes(nodes, self_name=self.node,
                                    connected=connected)
            for dst in set(self.routes) - set(plan):
                with contextlib.suppress(NetlinkError):
                    await ipr.route("del", dst=dst, proto=podnet.ROUTE_PROTO)
                self._log.info("removed the route to a node", dst=dst)
            for dst, via in plan.items():
                if self.routes.get(dst) != via:
                    await ipr.route("replace", dst=dst, gateway=via,
                                    proto=podnet.ROUTE_PROTO)
                    self._log.info("route to a node's pods", dst=dst, via=via)
            self.routes = plan

    async def cleanup(self) -> None:
        removed = await podnet.remove_pod_network(self.node, set(self.routes))
        self.routes = {}
        self._log.info("removed the node's pod network", **removed)


def make_plugin(name: str, *, docker: aiodocker.Docker, node: str, network: str,
                root_dir: Path, cluster_cidr: str) -> NetworkPlugin:
    """The plugin ``--network-plugin`` names."""
    if name == DOCKER:
        return DockerNetworkPlugin(docker, node=node, network=network)
    if name == BRIDGE:
        return BridgeNetworkPlugin(node=node, root_dir=root_dir, cluster_cidr=cluster_cidr)
    raise ValueError(f"unknown network plugin {name!r} (one of {', '.join(PLUGINS)})")
