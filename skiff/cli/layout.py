"""The layout of a local cluster, pure: which daemons run with which flags, on which
ports and addresses (DESIGN.md's defaults), rendered from ``deploy/*.tmpl`` into
supervisord's configuration. Unit tests render it for N nodes without starting
anything; ``skiff up`` (:mod:`skiff.cli.cluster`) writes it and starts supervisord.

Per node N (from 1): a kubelet (port 10250+2(N-1)), a proxy (health 10356+2(N-1)),
with the ``bridge`` network plugin a DNS program (health 10600+2(N-1)) answering on
the node's bridge gateway 10.244.N-1.1:53; its pods get 10.244.N-1.0/24. Services
get cluster IPs from 10.96.0.0/12: .1 the ``kubernetes`` Service (the apiserver keeps
it), .10 ``kube-system/kube-dns`` (``skiff up`` creates it, the DNS programs register
in its Endpoints).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TypeVar

from skiff.api.addresses import (
    CLUSTER_CIDR,
    CLUSTER_DOMAIN,
    KUBE_DNS_IP,
    NODE_CIDR_MASK_SIZE,
    SERVICE_CIDR,
)
from skiff.cli import kubeapi
from skiff.cli.external_etcd import parse_etcd_servers, parse_etcd_url
from skiff.cli.workloads import KUBE_DNS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HOST = "127.0.0.1"
T = TypeVar("T")


@dataclass(frozen=True)
class StoreReplica:
    """One replica's name and its ports, by DESIGN.md's defaults."""

    index: int

    @property
    def name(self) -> str:
        return f"store-{self.index}"

    @property
    def client_port(self) -> int:
        return 2379 + 100 * self.index

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    def fields(self) -> dict[str, object]:
        return {"name": self.name, "host": HOST, "client_port": self.client_port,
                "peer_port": self.client_port + 1, "metrics_port": self.client_port + 2}


REPLICAS = [StoreReplica(i) for i in range(3)]
#: The apiserver's gRPC port (DESIGN.md) and its metrics port.
APISERVER_PORT = 6443
APISERVER_METRICS_PORT = 6444
APISERVER = f"{HOST}:{APISERVER_PORT}"
SCHEDULER_METRICS_PORT = 10259
CONTROLLER_MANAGER_METRICS_PORT = 10257
#: The cluster's DNS domain, and the cluster DNS Service's IP(s) the kubelets give
#: ClusterFirst pods (with the bridge network plugin: the docker one has no cluster
#: DNS, and its pods get Default).
CLUSTER_DNS: tuple[str, ...] = (KUBE_DNS_IP,)
#: The DNS programs' registration: the Endpoints they list themselves in.
KUBE_DNS_ENDPOINTS = f"kube-system/{KUBE_DNS}"
#: The kubelet's network plugins (services/kubelet/network_plugin.py); the first is
#: ``skiff up``'s default.
NETWORK_PLUGINS = ("bridge", "docker")
#: The proxy's modes (services/proxy): its asyncio load balancer, or DNAT in nftables.
PROXY_MODES = ("userspace", "nftables")
#: The Leases the scheduler and the controller-manager elect their leader on.
LEADER_LEASES = {"scheduler": "kube-scheduler", "controller-manager": "kube-controller-manager"}
LEASE_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class LocalNode:
    """One local node's kubelet, proxy and DNS: node N (from 1) gets the kubelet port
    10250+2(N-1) (its metrics the next port), the proxy's health port 10356+2(N-1) (its
    metrics the next), the DNS program's health port 10600+2(N-1) (its metrics the
    next) and the pod subnet 10.244.N-1.0/24, whose first address is the gateway on the
    node's bridge, where its DNS program answers (port 53). The first node's InternalIP
    is 127.0.0.1; further nodes take 127.0.1.N, as DESIGN.md's multi-node layout says."""

    index: int

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def address(self) -> str:
        return HOST if self.index == 1 else f"127.0.1.{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index - 1}.0/24"

    @property
    def gateway(self) -> str:
        """The first address of the node's podCIDR: its bridge's, and its DNS's."""
        return f"10.244.{self.index - 1}.1"

    @property
    def bridge(self) -> str:
        """The node's bridge (the ``bridge`` network plugin's name for it)."""
        from skiff.kubelet.podnet import bridge_name  # pyroute2: only when rendering

        return bridge_name(self.name)

    def fields(self) -> dict[str, object]:
        port = 10250 + 2 * (self.index - 1)
        proxy = 10356 + 2 * (self.index - 1)
        dns = 10600 + 2 * (self.index - 1)
        return {"node": self.name, "host": HOST, "address": self.address, "port": port,
                "metrics_port": port + 1, "pod_cidr": self.pod_cidr,
                "proxy_health_port": proxy, "proxy_metrics_port": proxy + 1,
                "gateway": self.gateway, "dns_health_port": dns, "dns_metrics_port": dns + 1}

    @property
    def kubelet_endpoint(self) -> str:
        return f"{self.address}:{self.fields()['port']}"

    @property
    def proxy_endpoint(self) -> str:
        return f"{HOST}:{self.fields()['proxy_health_port']}"

    @property
    def dns_endpoint(self) -> str:
        """The DNS program's gRPC health address."""
        return f"{HOST}:{self.fields()['dns_health_port']}"


def _env_number(name: str, default: float, kind: Callable[[str], T]) -> T:
    """$name as a number of type ``kind``, else ``default``."""
    value = os.environ.get(name, "").strip()
    return kind(value) if value else kind(str(default))


@dataclass(frozen=True)
class ClusterSettings:
    """What varies between local clusters: how many nodes, and how fast a silent node
    is noticed and its pods moved (the defaults are Kubernetes'; a test of node
    failure shortens them to finish in seconds rather than minutes)."""

    nodes: int = 1
    #: The controller-manager's --node-monitor-grace-period: silence before Unknown.
    node_monitor_grace_period: float = 40.0
    #: The controller-manager's --node-monitor-period: how often nodes are looked at.
    node_monitor_period: float = 5.0
    #: The apiserver's --default-{not-ready,unreachable}-toleration-seconds.
    default_toleration_seconds: int = 300
    #: Client URLs of an existing etcd to run on (kube-apiserver's --etcd-servers);
    #: empty: Skiff's own three store replicas. Normalized by :func:`parse_etcd_servers`.
    etcd_servers: tuple[str, ...] = ()
    #: The kubelets' --network-plugin: ``bridge`` (Skiff's own bridge, veths and
    #: routes, with the cluster DNS) or ``docker`` (a Docker network per node, no DNS).
    network_plugin: str = NETWORK_PLUGINS[0]
    #: The proxies' --proxy-mode: ``userspace`` or ``nftables``.
    proxy_mode: str = PROXY_MODES[0]

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if self.node_monitor_grace_period <= 0 or self.node_monitor_period <= 0:
            raise ValueError("node monitor periods must be positive")
        if self.default_toleration_seconds < 0:
            raise ValueError("toleration seconds must not be negative")
        for url in self.etcd_servers:
            parse_etcd_url(url)
        if self.network_plugin not in NETWORK_PLUGINS:
            raise ValueError(f"unknown network plugin {self.network_plugin!r} "
                             f"(one of {', '.join(NETWORK_PLUGINS)})")
        if self.proxy_mode not in PROXY_MODES:
            raise ValueError(f"unknown proxy mode {self.proxy_mode!r} "
                             f"(one of {', '.join(PROXY_MODES)})")

    @property
    def cluster_dns(self) -> tuple[str, ...]:
        """The kubelets' --cluster-dns: the kube-dns Service with the bridge plugin
        (it runs a DNS program per node); none with docker's."""
        return CLUSTER_DNS if self.network_plugin == "bridge" else ()

    @property
    def heartbeat_interval(self) -> float:
        """How often kubelets renew their Lease and post status: Kubernetes' 10 s, or a
        quarter of the grace period when that is shorter, so a node is declared
        silent only after several heartbeats in a row were missed, never after one."""
        return max(0.5, min(10.0, self.node_monitor_grace_period / 4))

    @property
    def node_list(self) -> list[LocalNode]:
        return [LocalNode(i) for i in range(1, self.nodes + 1)]


def settings_from_env() -> ClusterSettings:
    """The settings' defaults: $SKIFF_NODES, $SKIFF_NODE_MONITOR_GRACE_PERIOD,
    $SKIFF_NODE_MONITOR_PERIOD, $SKIFF_DEFAULT_TOLERATION_SECONDS, $SKIFF_ETCD_SERVERS,
    $SKIFF_NETWORK_PLUGIN, $SKIFF_PROXY_MODE (flags override)."""
    base = ClusterSettings()
    return ClusterSettings(
        nodes=_env_number("SKIFF_NODES", base.nodes, int),
        node_monitor_grace_period=_env_number(
            "SKIFF_NODE_MONITOR_GRACE_PERIOD", base.node_monitor_grace_period, float),
        node_monitor_period=_env_number(
            "SKIFF_NODE_MONITOR_PERIOD", base.node_monitor_period, float),
        default_toleration_seconds=_env_number(
            "SKIFF_DEFAULT_TOLERATION_SECONDS", base.default_toleration_seconds, int),
        etcd_servers=parse_etcd_servers(os.environ.get("SKIFF_ETCD_SERVERS", "")),
        network_plugin=os.environ.get("SKIFF_NETWORK_PLUGIN", "").strip()
        or base.network_plugin,
        proxy_mode=os.environ.get("SKIFF_PROXY_MODE", "").strip() or base.proxy_mode)


def default_data_dir() -> Path:
    return Path(os.environ.get("SKIFF_DATA_DIR", "data")).resolve()


def _number(value: float) -> str:
    """A flag's value without a needless ``.0`` (``40`` rather than ``40.0``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _advertise_flag(settings: ClusterSettings) -> str:
    """With the bridge plugin, the ``kubernetes`` Service's endpoint is node 1's bridge
    gateway: an address pods reach in both proxy modes (loopback they cannot: the
    kernel does not route a pod's packet to the host's 127.0.0.1), where the HTTPS port
    (bound to every address) answers."""
    if settings.network_plugin != "bridge":
        return ""
    return f" --advertise-address {LocalNode(1).gateway}"


def render_programs(data_dir: Path, settings: ClusterSettings) -> str:
    """The [program:...] sections of every daemon (pure: reads only the templates)."""
    initial = ",".join(f"{r.name}=http://{HOST}:{r.client_port + 1}" for r in REPLICAS)
    common = {"data_dir": data_dir, "python": sys.executable, "repo": REPO,
              "initial_cluster": initial}

    def render(template: str, **fields: object) -> str:
        return Template((DEPLOY / template).read_text()).substitute(common, **fields)

    # On an existing etcd, Skiff runs no store of its own.
    stores = ([] if settings.etcd_servers
              else [render("store.program.tmpl", **r.fields()) for r in REPLICAS])
    apiserver = render(
        "apiserver.program.tmpl", host=HOST, port=APISERVER_PORT,
        metrics_port=APISERVER_METRICS_PORT,
        store_endpoints=",".join(settings.etcd_servers
                                 or [r.endpoint for r in REPLICAS]),
        toleration_seconds=settings.default_toleration_seconds, service_cidr=SERVICE_CIDR,
        rest_flags=kubeapi.rest_flags(data_dir) + _advertise_flag(settings))
    scheduler = render("scheduler.program.tmpl", host=HOST, apiserver=APISERVER,
                       metrics_port=SCHEDULER_METRICS_PORT)
    controller_manager = render(
        "controller-manager.program.tmpl", host=HOST, apiserver=APISERVER,
        metrics_port=CONTROLLER_MANAGER_METRICS_PORT,
        node_monitor_grace_period=_number(settings.node_monitor_grace_period),
        node_monitor_period=_number(settings.node_monitor_period),
        cluster_cidr=CLUSTER_CIDR, node_cidr_mask_size=NODE_CIDR_MASK_SIZE)
    heartbeat = _number(settings.heartbeat_interval)
    dns = settings.cluster_dns
    dns_flag = f" --cluster-dns {','.join(dns)}" if dns else ""
    nodes = []
    for node in settings.node_list:
        fields = {"apiserver": APISERVER, "heartbeat": heartbeat,
                  "cluster_domain": CLUSTER_DOMAIN, "cluster_dns_flag": dns_flag,
                  "network_plugin": settings.network_plugin, "cluster_cidr": CLUSTER_CIDR,
                  "service_cidr": SERVICE_CIDR, "proxy_mode": settings.proxy_mode,
                  "proxy_bridge_flag": (f" --pod-bridge-interface {node.bridge}"
                                        if settings.network_plugin == "bridge" else ""),
                  "dns_endpoints": KUBE_DNS_ENDPOINTS, **node.fields()}
        names = ["kubelet.program.tmpl", "proxy.program.tmpl"]
        if dns:
            names.append("dns.program.tmpl")
        nodes += [render(name, **fields) for name in names]
    return "\n".join((*stores, apiserver, scheduler, controller_manager, *nodes))


def render_config(data_dir: Path, settings: ClusterSettings | None = None) -> Path:
    """Write supervisord.conf for this data directory; returns its path."""
    settings = settings or settings_from_env()
    config = Template((DEPLOY / "supervisord.conf.tmpl").read_text()).substitute(
        data_dir=data_dir, programs=render_programs(data_dir, settings))
    path = data_dir / "supervisord.conf"
    path.write_text(config)
    return path
