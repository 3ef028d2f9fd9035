"""The kubelet's configuration, from kubelet-like flags (``skiff-kubelet --help``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import dataclass, field

from services.kubelet.container_gc import ContainerGCPolicy
from services.kubelet.image_gc import ImageGCPolicy
from skiff.api.addresses import CLUSTER_CIDR, CLUSTER_DOMAIN
from skiff.api.quantity import parse_quantity
from skiff.client.client import DEFAULT_SERVER, parse_addresses
from skiff.kubelet.containers import network_name

DEFAULT_POD_CIDR = "10.244.0.0/24"
DEFAULT_CLUSTER_CIDR = CLUSTER_CIDR
NETWORK_PLUGINS = ("docker", "bridge")
DEFAULT_PORT = 10250
DEFAULT_CLUSTER_DOMAIN = CLUSTER_DOMAIN
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"


@dataclass(frozen=True)
class EvictionThresholds:
    """``--eviction-hard``: below these the node reports Memory/DiskPressure."""

    memory_available: int = 100 * 1024 * 1024     # bytes
    nodefs_available: float = 0.10                # fraction of the disk

    @classmethod
    def parse(cls, text: str) -> EvictionThresholds:
        """``memory.available<100Mi,nodefs.available<10%`` (Kubernetes' syntax)."""
        memory, nodefs = cls.memory_available, cls.nodefs_available
        for item in filter(None, (p.strip() for p in text.split(","))):
            signal, sep, value = item.partition("<")
            if not sep:
                raise ValueError(f"{item!r}: expected SIGNAL<VALUE")
            if signal == "memory.available":
                memory = int(parse_quantity(value))
            elif signal == "nodefs.available":
                nodefs = (float(value[:-1]) / 100 if value.endswith("%")
                          else float(value))
            else:
                raise ValueError(f"unknown eviction signal {signal!r}")
        return cls(memory, nodefs)


@dataclass(frozen=True)
class KubeletConfig:
    """Everything the kubelet needs; durations in seconds."""

    node_name: str
    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    pod_cidr: str = DEFAULT_POD_CIDR
    docker_host: str | None = None
    network_name: str = ""
    #: ``docker`` (a Docker bridge network) or ``bridge`` (Skiff's own, kubenet's way).
    network_plugin: str = "docker"
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    #: Remove the node's pod network (bridge, routes, rules) when the kubelet stops.
    network_cleanup_on_exit: bool = False
    #: Where the kubelet keeps its state (the pod address allocations).
    root_dir: str = ""
    # pod DNS (services/kubelet/dns.py)
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    #: The host's resolv.conf, the base of Default and ClusterFirst; "" for none.
    resolv_conf: str = DEFAULT_RESOLV_CONF
    node_labels: dict[str, str] = field(default_factory=dict)
    # capacity: None means "from the host"
    cpus: str | None = None
    memory: str | None = None
    max_pods: int = 110
    system_reserved: dict[str, str] = field(default_factory=dict)
    eviction_hard: EvictionThresholds = field(default_factory=EvictionThresholds)
    # node heartbeat
    node_lease_duration: int = 40
    node_lease_renew_interval: float = 10.0
    node_status_update_frequency: float = 10.0
    node_status_report_frequency: float = 60.0
    # pods
    sync_frequency: float = 10.0
    max_parallel_pod_syncs: int = 16
    crash_backoff_initial: float = 10.0
    crash_backoff_max: float = 300.0
    crash_backoff_reset: float = 600.0
    image_pull_backoff_initial: float = 10.0
    image_pull_backoff_max: float = 300.0
    build_images: bool = True
    # garbage collection
    container_gc: ContainerGCPolicy = field(default_factory=ContainerGCPolicy)
    image_gc: ImageGCPolicy = field(default_factory=ImageGCPolicy)
    container_gc_period: float = 60.0
    image_gc_period: float = 300.0
    metrics_url: str | None = None
    log_level: str = "info"

    @property
    def network(self) -> str:
        """The node's Docker bridge network for pods."""
        return self.network_name or network_name(self.node_name)

    @property
    def state_dir(self) -> str:
        """``--root-dir``, by default /var/lib/skiff/kubelet-<node>."""
        return self.root_dir or f"/var/lib/skiff/kubelet-{self.node_name}"


def _key_values(text: str) -> dict[str, str]:
    pairs = (p.strip() for p in text.split(",") if p.strip())
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{pair!r}: expected KEY=VALUE")
        result[key.strip()] = value.strip()
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-kubelet",
                                description="Runs the pods bound to this node through Docker.")
    p.add_argument("--server", default=os.environ.get("SKIFF_SERVER", DEFAULT_SERVER),
                   help="apiserver address(es), comma-separated ($SKIFF_SERVER)")
    p.add_argument("--node-name", default=socket.gethostname(),
                   help="the Node this kubelet registers (default: the host name)")
    p.add_argument("--address", default="127.0.0.1",
                   help="the node's InternalIP; the kubelet API listens there")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the kubelet API's port")
    p.add_argument("--pod-cidr", default=DEFAULT_POD_CIDR,
                   help="the node's pod subnet: its Docker bridge network is made on it")
    p.add_argument("--network-name", default="",
                   help="the Docker network for pods (default skiff-<node name>)")
    p.add_argument("--network-plugin", choices=NETWORK_PLUGINS, default="docker",
                   help="docker: pods on a Docker bridge network of the node; bridge: "
                        "on the kubelet's own Linux bridge, veths and routes")
    p.add_argument("--cluster-cidr", default=DEFAULT_CLUSTER_CIDR,
                   help="the pod range of the whole cluster (bridge: not masqueraded)")
    p.add_argument("--network-cleanup-on-exit", action="store_true",
                   help="bridge: remove the node's bridge, routes and rules on exit "
                        "(by default they stay, for the next kubelet to adopt)")
    p.add_argument("--root-dir", default="",
                   help="the kubelet's own files: pod address allocations, each pod's "
                        "resolv.conf (default /var/lib/skiff/kubelet-<node>)")
    p.add_argument("--cluster-dns", default="",
                   help="the cluster DNS server IP(s), comma-separated, for ClusterFirst "
                        "pods (none: they fall back to Default)")
    p.add_argument("--cluster-domain", default=DEFAULT_CLUSTER_DOMAIN,
                   help="the cluster's DNS domain, searched by ClusterFirst pods")
    p.add_argument("--resolv-conf", default=DEFAULT_RESOLV_CONF,
                   help='the host resolv.conf pods with dnsPolicy Default get ("": none)')
    p.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"),
                   help="Docker's API address ($DOCKER_HOST, else the local socket)")
    p.add_argument("--node-labels", default="", help="extra Node labels, k=v,k=v")
    p.add_argument("--cpus", default=None, help="cpu capacity (default: the host's)")
    p.add_argument("--memory", default=None, help="memory capacity (default: the host's)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--system-reserved", default="",
                   help="resources kept from pods, e.g. cpu=100m,memory=256Mi")
    p.add_argument("--eviction-hard", default="memory.available<100Mi,nodefs.available<10%",
                   help="thresholds of MemoryPressure / DiskPressure")
    p.add_argument("--node-lease-duration-seconds", type=int, default=40)
    p.add_argument("--node-lease-renew-interval", type=float, default=10.0)
    p.add_argument("--node-status-update-frequency", type=float, default=10.0,
                   help="how often conditions are computed (posted when changed)")
    p.add_argument("--node-status-report-frequency", type=float, default=60.0,
                   help="post the node status at least this often")
    p.add_argument("--sync-frequency", type=float, default=10.0,
                   help="how often every pod is compared with what runs")
    p.add_argument("--max-parallel-pod-syncs", type=int, default=16)
    p.add_argument("--crash-backoff-initial", type=float, default=10.0)
    p.add_argument("--crash-backoff-max", type=float, default=300.0)
    p.add_argument("--crash-backoff-reset", type=float, default=600.0,
                   help="a container running this long starts its back-off afresh")
    p.add_argument("--image-pull-backoff-initial", type=float, default=10.0)
    p.add_argument("--image-pull-backoff-max", type=float, default=300.0)
    p.add_argument("--no-build-images", dest="build_images", action="store_false",
                   help="do not build skiff/pause and skiff/busybox at start when missing "
                        "or stale")
    p.add_argument("--minimum-container-ttl-duration", type=float, default=0.0,
                   help="seconds a dead container is kept at least")
    p.add_argument("--maximum-dead-containers-per-container", type=int, default=1,
                   help="dead containers kept per pod container (negative: no limit)")
    p.add_argument("--maximum-dead-containers", type=int, default=-1,
                   help="dead containers kept on the node (negative: no limit)")
    p.add_argument("--image-gc-high-threshold", type=int, default=85,
                   help="disk use (percent) at which unused images are removed")
    p.add_argument("--image-gc-low-threshold", type=int, default=80,
                   help="disk use (percent) image GC brings the disk down to")
    p.add_argument("--minimum-image-ttl-duration", type=float, default=120.0,
                   help="seconds an unused image is kept at least")
    p.add_argument("--container-gc-period", type=float, default=60.0,
                   help="seconds between container GC rounds (Kubernetes: 1 minute)")
    p.add_argument("--image-gc-period", type=float, default=300.0,
                   help="seconds between image GC rounds (Kubernetes: 5 minutes)")
    p.add_argument("--listen-metrics-urls", dest="metrics_url", default=None)
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: list[str] | None = None) -> KubeletConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        servers = parse_addresses(args.server)
        pod_cidr = ipaddress.ip_network(args.pod_cidr)
        cluster_cidr = ipaddress.ip_network(args.cluster_cidr)
        if args.network_plugin == "bridge" and not pod_cidr.subnet_of(cluster_cidr):  # type: ignore[arg-type]
            raise ValueError(f"--pod-cidr {args.pod_cidr} is outside --cluster-cidr "
                             f"{args.cluster_cidr}")
        ipaddress.ip_address(args.address)
        labels = _key_values(args.node_labels)
        cluster_dns = tuple(ip.strip() for ip in args.cluster_dns.split(",") if ip.strip())
        for ip in cluster_dns:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"--cluster-dns: {ip!r} is not an IP address") from None
        reserved = _key_values(args.system_reserved)
        for value in reserved.values():
            parse_quantity(value)
        for value in (args.cpus, args.memory):
            if value is not None:
                parse_quantity(value)
        eviction = EvictionThresholds.parse(args.eviction_hard)
        image_gc = ImageGCPolicy(args.image_gc_high_threshold, args.image_gc_low_threshold,
                                 args.minimum_image_ttl_duration)
    except ValueError as e:
        parser.error(str(e))
    if not args.node_name:
        parser.error("--node-name is required")
    if args.crash_backoff_initial <= 0 or args.crash_backoff_max < args.crash_backoff_initial:
        parser.error("need 0 < --crash-backoff-initial <= --crash-backoff-max")
    if (args.image_pull_backoff_initial <= 0
            or args.image_pull_backoff_max < args.image_pull_backoff_initial):
        parser.error("need 0 < --image-pull-backoff-initial <= --image-pull-backoff-max")
    return KubeletConfig(
        node_name=args.node_name, servers=servers, address=args.address, port=args.port,
        pod_cidr=args.pod_cidr, docker_host=args.docker_host,
        network_name=args.network_name, network_plugin=args.network_plugin,
        cluster_cidr=args.cluster_cidr, network_cleanup_on_exit=args.network_cleanup_on_exit,
        root_dir=args.root_dir, cluster_dns=cluster_dns,
        cluster_domain=args.cluster_domain.strip("."), resolv_conf=args.resolv_conf,
        node_labels=labels, cpus=args.cpus,
        memory=args.memory, max_pods=args.max_pods, system_reserved=reserved,
        eviction_hard=eviction, node_lease_duration=args.node_lease_duration_seconds,
        node_lease_renew_interval=args.node_lease_renew_interval,
        node_status_update_frequency=args.node_status_update_frequency,
        node_status_report_frequency=args.node_status_report_frequency,
        sync_frequency=args.sync_frequency,
        max_parallel_pod_syncs=args.max_parallel_pod_syncs,
        crash_backoff_initial=args.crash_backoff_initial,
        crash_backoff_max=args.crash_backoff_max,
        crash_backoff_reset=args.crash_backoff_reset,
        image_pull_backoff_initial=args.image_pull_backoff_initial,
        image_pull_backoff_max=args.image_pull_backoff_max,
        build_images=args.build_images, metrics_url=args.metrics_url,
        container_gc=ContainerGCPolicy(args.minimum_container_ttl_duration,
                                       args.maximum_dead_containers_per_container,
                                       args.maximum_dead_containers),
        image_gc=image_gc, container_gc_period=args.container_gc_period,
        image_gc_period=args.image_gc_period,
        log_level=args.log_level)
