"""skiff-dns's configuration, from flags."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from services.dns.forwarder import parse_upstream, resolv_conf_upstreams
from services.dns.records import DEFAULT_ZONE
from services.dns.registration import parse_key
from skiff.client.client import DEFAULT_SERVER, parse_addresses

#: Where it answers by default: loopback's DNS port. Deployed, it listens on each node's
#: address, behind the kube-dns Service's cluster IP.
DEFAULT_LISTEN = "127.0.0.1:53"
#: The gRPC health port (kube-dns's old health port).
DEFAULT_HEALTH_LISTEN = "127.0.0.1:10054"
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"

Address = tuple[str, int]


@dataclass(frozen=True)
class DnsConfig:
    """Everything the daemon needs; see ``skiff-dns --help``."""

    servers: tuple[str, ...]
    listen: tuple[Address, ...]
    upstreams: tuple[Address, ...]
    zone: str = DEFAULT_ZONE
    forward_timeout: float = 2.0
    health_listen: str | None = DEFAULT_HEALTH_LISTEN
    metrics_url: str | None = None
    log_level: str = "info"
    #: (namespace, name) of the Endpoints this instance lists itself in, or None.
    register_endpoints: tuple[str, str] | None = None


def parse_listen(text: str) -> Address:
    """``HOST:PORT`` -> (host, port), with a clear error naming the problem."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skiff-dns",
        description="The cluster DNS: answers for Services and their endpoints in the "
                    "cluster domain, from informers; forwards every other name upstream.")
    p.add_argument("--server", default=os.environ.get("SKIFF_SERVER", DEFAULT_SERVER),
                   help="apiserver address(es), comma-separated ($SKIFF_SERVER)")
    p.add_argument("--listen", action="append", default=None,
                   help=f"HOST:PORT to answer on, UDP and TCP; repeatable "
                        f"(default {DEFAULT_LISTEN})")
    p.add_argument("--cluster-domain", default=DEFAULT_ZONE.rstrip("."),
                   help="the zone answered from the cluster's records (default "
                        "cluster.local)")
    p.add_argument("--upstream", default=None,
                   help="resolvers other names go to, HOST[:PORT] comma-separated "
                        "(default: the nameservers of --resolv-conf)")
    p.add_argument("--resolv-conf", default=DEFAULT_RESOLV_CONF,
                   help="where the default upstreams are read from")
    p.add_argument("--forward-timeout", type=float, default=2.0,
                   help="seconds to wait for each upstream before trying the next")
    p.add_argument("--health-listen", default=DEFAULT_HEALTH_LISTEN,
                   help="host:port of the gRPC health service ('' for none)")
    p.add_argument("--listen-metrics-urls", dest="metrics_url", default=None,
                   help="serve Prometheus metrics at this http://host:port")
    p.add_argument("--register-endpoints", metavar="NAMESPACE/NAME", default=None,
                   help="once answering, add the --listen addresses to this Endpoints "
                        "object (ports dns/UDP and dns-tcp/TCP), and take them out on a "
                        "clean stop: the cluster DNS Service's (kube-system/kube-dns) "
                        "answering instances")
    p.add_argument("--log-level", default="info")
    return p


def check_registrable(listen: tuple[Address, ...]) -> None:
    """Each listen host must be a unicast IPv4 address to go into an Endpoints object
    (ValueError naming the flag)."""
    for host, port in listen:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"--listen {host}:{port}: --register-endpoints needs an "
                             "IPv4 address to register, not a name") from None
        if ip.is_unspecified or ip.is_multicast or port == 0:
            raise ValueError(f"--listen {host}:{port}: --register-endpoints needs a "
                             "specific address and port to register")


def parse_args(argv: list[str] | None = None) -> DnsConfig:
    """Flags -> :class:`DnsConfig` (exits with a usage message on a bad value)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        servers = parse_addresses(args.server)
        listen = tuple(parse_listen(t) for t in (args.listen or [DEFAULT_LISTEN]))
        if args.upstream is not None:
            upstreams = tuple(parse_upstream(t) for t in args.upstream.split(",") if t.strip())
        else:
            upstreams = tuple(resolv_conf_upstreams(Path(args.resolv_conf)))
        register = None
        if args.register_endpoints is not None:
            register = parse_key(args.register_endpoints)
            check_registrable(listen)
    except ValueError as e:
        parser.error(str(e))
    domain = args.cluster_domain.strip().strip(".").lower()
    if not domain or ".." in domain:
        parser.error(f"--cluster-domain {args.cluster_domain!r} is not a domain name")
    if args.forward_timeout <= 0:
        parser.error("--forward-timeout must be positive")
    return DnsConfig(servers=servers, listen=listen, upstreams=upstreams,
                     zone=f"{domain}.", forward_timeout=args.forward_timeout,
                     health_listen=args.health_listen or None, metrics_url=args.metrics_url,
                     log_level=args.log_level, register_endpoints=register)
