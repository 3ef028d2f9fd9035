"""The proxy's configuration, from kube-proxy-like flags."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass

from skiff.client.client import DEFAULT_SERVER, parse_addresses

#: kube-proxy's healthz port, here serving gRPC health.
DEFAULT_HEALTH_LISTEN = "127.0.0.1:10256"


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the daemon needs; see ``skiff-proxy --help``.

    ``node_address`` None: NodePorts listen on the Node object's InternalIP (or
    127.0.0.1 while it has none).
    """

    servers: tuple[str, ...]
    node_name: str
    node_address: str | None = None
    connect_timeout: float = 1.0
    health_listen: str | None = DEFAULT_HEALTH_LISTEN
    metrics_url: str | None = None
    log_level: str = "info"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skiff-proxy",
        description="Forwards TCP from Services' cluster IPs and NodePorts to their "
                    "ready endpoints.")
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
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: list[str] | None = None) -> ProxyConfig:
    """Flags -> :class:`ProxyConfig` (exits with a usage message on a bad value)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        servers = parse_addresses(args.server)
        if args.node_address:
            ipaddress.IPv4Address(args.node_address)
    except ValueError as e:
        parser.error(str(e))
    if args.connect_timeout <= 0:
        parser.error("--connect-timeout must be positive")
    return ProxyConfig(servers=servers, node_name=args.node_name,
                       node_address=args.node_address or None,
                       connect_timeout=args.connect_timeout,
                       health_listen=args.health_listen or None,
                       metrics_url=args.metrics_url, log_level=args.log_level)
