"""The proxy's configuration, from kube-proxy-like flags."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass

from services.proxy.nftables_rules import MODES, USERSPACE
from skiff.api.addresses import CLUSTER_CIDR, SERVICE_CIDR
from skiff.client.client import DEFAULT_SERVER, parse_addresses

#: kube-proxy's healthz port, here serving gRPC health.
DEFAULT_HEALTH_LISTEN = "127.0.0.1:10256"
DEFAULT_CLUSTER_CIDR = CLUSTER_CIDR
DEFAULT_SERVICE_CIDR = SERVICE_CIDR
#: How long a userspace UDP session lives without traffic (kube-proxy's old default
#: was 250 ms; DNS-like request/response traffic wants a few seconds at least).
DEFAULT_UDP_TIMEOUT = 30.0
#: The level-triggered check of the kernel's table against what was written.
DEFAULT_SYNC_PERIOD = 30.0
#: The least time between two writes of the table: changes arriving meanwhile are
#: coalesced into the next write (kube-proxy's --min-sync-period).
DEFAULT_MIN_SYNC_PERIOD = 0.05


#: A Linux interface name (IFNAMSIZ less the NUL).
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the daemon needs; see ``skiff-proxy --help``.

    ``node_address`` None: NodePorts listen on the Node object's InternalIP (or
    127.0.0.1 while it has none). A loopback node address gets direct NodePort
    listeners in both modes (the kernel cannot DNAT loopback traffic to a pod without
    route_localnet); other addresses get NodePorts from the kernel rules.
    ``pod_bridge`` set: pod traffic is taken only from this node's bridge.
    ``nodeport_addresses`` empty: NodePorts on every local non-loopback address.
    """

    servers: tuple[str, ...]
    node_name: str
    node_address: str | None = None
    connect_timeout: float = 1.0
    health_listen: str | None = DEFAULT_HEALTH_LISTEN
    metrics_url: str | None = None
    log_level: str = "info"
    mode: str = USERSPACE
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    pod_bridge: str | None = None
    nodeport_addresses: tuple[str, ...] = ()
    udp_timeout: float = DEFAULT_UDP_TIMEOUT
    sync_period: float = DEFAULT_SYNC_PERIOD
    min_sync_period: float = DEFAULT_MIN_SYNC_PERIOD


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skiff-proxy",
        description="Sends Services' cluster IPs, external IPs and NodePorts to their "
                    "ready endpoints (TCP and UDP), through its own load balancer "
                    "(userspace mode) or the kernel's NAT (nftables mode).")
    p.add_argument("--server", default=os.environ.get("SKIFF_SERVER", DEFAULT_SERVER),
                   help="apiserver address(es), comma-separated ($SKIFF_SERVER)")
    p.add_argument("--node-name", required=True,
                   help="this node's name (its Node object gives the NodePort address)")
    p.add_argument("--node-address", default=None,
                   help="where NodePorts listen (default: the Node's InternalIP, else "
                        "127.0.0.1; node N of a local cluster is 127.0.1.N)")
    p.add_argument("--connect-timeout", type=float, default=1.0,
                   help="seconds to wait for a backend to accept before trying the next")
    p.add_argument("--health-listen", default=DEFAULT_HEALTH_LISTEN,
                   help="host:port of the gRPC health service ('' for none)")
    p.add_argument("--listen-metrics-urls", dest="metrics_url", default=None,
                   help="serve Prometheus metrics at this http://host:port")
    p.add_argument("--proxy-mode", dest="mode", choices=MODES, default=USERSPACE,
                   help="userspace: kernel rules send service traffic to this process's "
                        "load balancer; nftables: the kernel DNATs to endpoints itself")
    p.add_argument("--cluster-cidr", default=DEFAULT_CLUSTER_CIDR,
                   help="the pods' range (traffic from outside it is masqueraded)")
    p.add_argument("--service-cluster-ip-range", dest="service_cidr",
                   default=DEFAULT_SERVICE_CIDR, help="the Services' cluster IP range")
    p.add_argument("--pod-bridge-interface", dest="pod_bridge", default=None,
                   help="this node's pod bridge (skb-<node>): pod traffic is taken only "
                        "from it, so each node's pods go through their own node's proxy")
    p.add_argument("--nodeport-addresses", default="",
                   help="comma-separated IPv4 addresses NodePorts are served on "
                        "(default: every local address but loopback)")
    p.add_argument("--udp-timeout", type=_duration, default=DEFAULT_UDP_TIMEOUT,
                   help="how long an idle userspace UDP session lives (30s, 250ms)")
    p.add_argument("--sync-period", type=_duration, default=DEFAULT_SYNC_PERIOD,
                   help="how often the kernel's table is checked against what was "
                        "written, and repaired")
    p.add_argument("--min-sync-period", type=_duration, default=DEFAULT_MIN_SYNC_PERIOD,
                   help="the least time between two writes of the table; changes "
                        "meanwhile are batched")
    p.add_argument("--log-level", default="info")
    return p


def _duration(text: str) -> float:
    """``30``, ``30s``, ``250ms``, ``1m`` -> seconds (argparse type)."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            text, factor = text[:-len(suffix)], scale
            break
    else:
        factor = 1.0
    try:
        value = float(text) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def parse_args(argv: list[str] | None = None) -> ProxyConfig:
    """Flags -> :class:`ProxyConfig` (exits with a usage message on a bad value)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        servers = parse_addresses(args.server)
        if args.node_address:
            ipaddress.IPv4Address(args.node_address)
        nodeport_addresses = tuple(
            str(ipaddress.IPv4Address(a.strip()))
            for a in args.nodeport_addresses.split(",") if a.strip())
    except ValueError as e:
        parser.error(str(e))
    for flag, cidr in (("--cluster-cidr", args.cluster_cidr),
                       ("--service-cluster-ip-range", args.service_cidr)):
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError as e:
            parser.error(f"{flag}: {e}")
    if args.pod_bridge is not None and not _IFNAME.match(args.pod_bridge):
        parser.error(f"--pod-bridge-interface: {args.pod_bridge!r} is not an interface name")
    if args.connect_timeout <= 0:
        parser.error("--connect-timeout must be positive")
    return ProxyConfig(servers=servers, node_name=args.node_name,
                       node_address=args.node_address or None,
                       connect_timeout=args.connect_timeout,
                       health_listen=args.health_listen or None,
                       metrics_url=args.metrics_url, log_level=args.log_level,
                       mode=args.mode, cluster_cidr=args.cluster_cidr,
                       service_cidr=args.service_cidr, pod_bridge=args.pod_bridge or None,
                       nodeport_addresses=nodeport_addresses,
                       udp_timeout=args.udp_timeout, sync_period=args.sync_period,
                       min_sync_period=args.min_sync_period)
