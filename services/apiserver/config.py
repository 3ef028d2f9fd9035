"""The apiserver's configuration, from kube-apiserver-like flags."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from services.apiserver.admission.default_tolerations import DEFAULT_SECONDS
from services.apiserver.admission.service_allocation import DEFAULT_CLUSTER_IPS, Ranges
from services.apiserver.endpoint_reconciler import LeaseTiming
from services.apiserver.rest.server import RESTConfig
from services.apiserver.storage import endpoint_address

#: --endpoint-reconciler-type's values (Kubernetes' less master-count).
RECONCILER_TYPES = ("lease", "none")


@dataclass(frozen=True)
class APIServerConfig:
    """Everything one apiserver needs; see ``skiff-apiserver --help``."""

    store_endpoints: tuple[str, ...]
    listen: str = "127.0.0.1:6443"
    metrics_url: str | None = None
    ranges: Ranges = field(default_factory=Ranges)
    #: Events each kind's watch cache keeps for watchers resuming from a version.
    watch_cache_size: int = 10_000
    bookmark_interval: float = 1.0
    store_timeout: float = 10.0
    #: tolerationSeconds of the not-ready / unreachable NoExecute tolerations that
    #: DefaultTolerationSeconds gives pods that have none (kube-apiserver's flags).
    default_not_ready_toleration_seconds: int = DEFAULT_SECONDS
    default_unreachable_toleration_seconds: int = DEFAULT_SECONDS
    log_level: str = "info"
    #: The address other components reach this apiserver at (the ``kubernetes``
    #: Endpoints); empty: the --listen host.
    advertise_address: str = ""
    #: ``lease``: keep the ``kubernetes`` Service and its Endpoints; ``none``: do not.
    endpoint_reconciler_type: str = "lease"
    lease_timing: LeaseTiming = field(default_factory=LeaseTiming)

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def advertised_ip(self) -> str:
        """--advertise-address, else the --listen host (0.0.0.0: loopback)."""
        host = self.advertise_address or self.listen.rpartition(":")[0].strip("[]")
        return "127.0.0.1" if host in ("", "0.0.0.0") else host
    #: The Kubernetes REST API over HTTPS (port 0: not served).
    rest: RESTConfig = field(default_factory=RESTConfig)


def _endpoint(text: str) -> str:
    """``http://127.0.0.1:2379`` or ``127.0.0.1:2379`` -> ``127.0.0.1:2379``."""
    address = endpoint_address(text)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a store endpoint (host:port)")
    return address


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-apiserver",
                                description="Skiff's API server: the cluster API over gRPC, "
                                            "kept in the store.")
    p.add_argument("--store-endpoints", "--etcd-servers", dest="store_endpoints",
                   required=True,
                   help="comma-separated store (etcd v3) endpoints, host:port or http://...")
    p.add_argument("--listen", default="127.0.0.1:6443", help="host:port for gRPC clients")
    p.add_argument("--listen-metrics-urls", dest="metrics_url", default=None,
                   help="http://host:port for Prometheus /metrics")
    p.add_argument("--service-cluster-ip-range", default=str(DEFAULT_CLUSTER_IPS),
                   help="CIDR of Service cluster IPs (default %(default)s); its first "
                        "address is the kubernetes Service's")
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--watch-cache-size", type=int, default=10_000)
    p.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds")
    p.add_argument("--store-timeout", type=float, default=10.0,
                   help="seconds a request keeps retrying an unavailable store")
    p.add_argument("--default-not-ready-toleration-seconds", type=int,
                   default=DEFAULT_SECONDS,
                   help="tolerationSeconds of the node.kubernetes.io/not-ready:NoExecute "
                        "toleration added to pods that have none")
    p.add_argument("--default-unreachable-toleration-seconds", type=int,
                   default=DEFAULT_SECONDS,
                   help="tolerationSeconds of the node.kubernetes.io/unreachable:NoExecute "
                        "toleration added to pods that have none")
    p.add_argument("--advertise-address", default="",
                   help="the IPv4 address the kubernetes Service's Endpoints give for "
                        "this apiserver (default: the --listen host)")
    p.add_argument("--endpoint-reconciler-type", choices=RECONCILER_TYPES, default="lease",
                   help="lease: keep the kubernetes Service and its Endpoints (the live "
                        "apiservers, each renewing a Lease in kube-system); none: do not")
    p.add_argument("--identity-lease-duration-seconds", type=int, default=15,
                   help="seconds this apiserver's Lease lasts unrenewed before the others "
                        "drop it from the Endpoints")
    p.add_argument("--identity-lease-renew-interval-seconds", type=float, default=5.0,
                   help="seconds between renewals of this apiserver's Lease")
    p.add_argument("--secure-port", type=int, default=0,
                   help="port of the Kubernetes REST API over HTTPS (0: off; skiff up "
                        "uses 6444)")
    p.add_argument("--bind-address", default="0.0.0.0",
                   help="address the HTTPS port listens on")
    p.add_argument("--tls-cert-file", type=Path, default=None,
                   help="the HTTPS serving certificate (PEM)")
    p.add_argument("--tls-private-key-file", type=Path, default=None,
                   help="the serving certificate's key (PEM)")
    p.add_argument("--token-auth-file", type=Path, default=None,
                   help='bearer tokens, lines of token,user,uid,"group1,group2"; without '
                        "it the HTTPS API does not authenticate")
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: list[str] | None = None) -> APIServerConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        endpoints = tuple(_endpoint(e) for e in args.store_endpoints.split(",") if e.strip())
        ranges = Ranges.parse(args.service_cluster_ip_range, args.service_node_port_range)
    except (argparse.ArgumentTypeError, ValueError) as e:
        parser.error(str(e))
    if not endpoints:
        parser.error("--store-endpoints: at least one endpoint is required")
    _check_lease_flags(parser, args)
    for flag in ("default_not_ready_toleration_seconds",
                 "default_unreachable_toleration_seconds"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must not be negative")
    if args.secure_port and not (args.tls_cert_file and args.tls_private_key_file):
        parser.error("--secure-port needs --tls-cert-file and --tls-private-key-file")
    if not 0 <= args.secure_port <= 65535:
        parser.error("--secure-port must be 0-65535")
    rest = RESTConfig(port=args.secure_port, host=args.bind_address,
                      cert_file=args.tls_cert_file, key_file=args.tls_private_key_file,
                      token_file=args.token_auth_file)
    return APIServerConfig(
        store_endpoints=endpoints, listen=args.listen, metrics_url=args.metrics_url,
        ranges=ranges, watch_cache_size=args.watch_cache_size,
        bookmark_interval=args.bookmark_interval, store_timeout=args.store_timeout,
        default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
        log_level=args.log_level, advertise_address=args.advertise_address,
        endpoint_reconciler_type=args.endpoint_reconciler_type,
        lease_timing=LeaseTiming(duration=args.identity_lease_duration_seconds,
                                 renew_interval=args.identity_lease_renew_interval_seconds),
        rest=rest)


def _check_lease_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--advertise-address (or the --listen host) is an IPv4 address; the lease's
    renewals come well within its duration."""
    host = args.advertise_address or args.listen.rpartition(":")[0]
    if args.endpoint_reconciler_type == "lease" and host not in ("", "0.0.0.0"):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            flag = "--advertise-address" if args.advertise_address else "--listen's host"
            parser.error(f"{flag}: {host!r} is not an IPv4 address (the kubernetes "
                         "Endpoints need one: set --advertise-address)")
    if args.identity_lease_duration_seconds <= 0:
        parser.error("--identity-lease-duration-seconds must be positive")
    if not 0 < args.identity_lease_renew_interval_seconds < args.identity_lease_duration_seconds:
        parser.error("--identity-lease-renew-interval-seconds must be positive and less "
                     "than --identity-lease-duration-seconds")
