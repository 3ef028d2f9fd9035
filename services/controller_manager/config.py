"""The controller-manager's configuration, from kube-controller-manager-like flags."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field

from skiff.client.client import DEFAULT_SERVER, parse_addresses

#: Every controller this daemon knows, in the order they are started.
ALL_CONTROLLERS = ("replication", "garbagecollector", "endpoints", "namespace",
                   "nodelifecycle")


@dataclass(frozen=True)
class LeaderElection:
    """Kubernetes' defaults: lease 15 s, renew deadline 10 s, retry every 2 s."""

    enabled: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    namespace: str = "kube-system"
    name: str = "kube-controller-manager"


@dataclass(frozen=True)
class ControllerManagerConfig:
    """Everything the daemon and its controllers need; see ``--help``.

    Controllers read what concerns them: ``concurrent_syncs`` (workers per controller),
    ``node_monitor_grace_period`` and ``pod_eviction_timeout`` (node lifecycle).
    """

    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    identity: str = "controller-manager"
    controllers: tuple[str, ...] = ALL_CONTROLLERS
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    concurrent_syncs: int = 5
    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0
    pod_eviction_timeout: float = 300.0
    metrics_url: str | None = None
    log_level: str = "info"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-controller-manager",
                                description="Runs the cluster's built-in controllers.")
    p.add_argument("--server", default=os.environ.get("SKIFF_SERVER", DEFAULT_SERVER),
                   help="apiserver address(es), comma-separated ($SKIFF_SERVER)")
    p.add_argument("--controllers", default=",".join(ALL_CONTROLLERS),
                   help=f"comma-separated controllers to run (of {','.join(ALL_CONTROLLERS)})")
    p.add_argument("--leader-elect", default="true", choices=("true", "false"))
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    p.add_argument("--node-monitor-grace-period", type=float, default=40.0)
    p.add_argument("--node-monitor-period", type=float, default=5.0)
    p.add_argument("--pod-eviction-timeout", type=float, default=300.0)
    p.add_argument("--concurrent-syncs", type=int, default=5)
    p.add_argument("--identity", default=f"{socket.gethostname()}_{os.getpid()}")
    p.add_argument("--listen-metrics-urls", dest="metrics_url", default=None)
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: list[str] | None = None) -> ControllerManagerConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        servers = parse_addresses(args.server)
    except ValueError as e:
        parser.error(str(e))
    controllers = tuple(c.strip() for c in args.controllers.split(",") if c.strip())
    unknown = sorted(set(controllers) - set(ALL_CONTROLLERS))
    if unknown:
        parser.error(f"unknown controllers: {', '.join(unknown)}")
    if args.concurrent_syncs < 1:
        parser.error("--concurrent-syncs must be at least 1")
    election = LeaderElection(
        enabled=args.leader_elect == "true",
        lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period)
    return ControllerManagerConfig(
        servers=servers, identity=args.identity, controllers=controllers,
        leader_election=election, concurrent_syncs=args.concurrent_syncs,
        node_monitor_grace_period=args.node_monitor_grace_period,
        node_monitor_period=args.node_monitor_period,
        pod_eviction_timeout=args.pod_eviction_timeout, metrics_url=args.metrics_url,
        log_level=args.log_level)
