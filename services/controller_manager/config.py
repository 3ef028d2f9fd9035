"""The controller-manager's configuration, from kube-controller-manager-like flags."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field

from skiff.client.client import DEFAULT_SERVER, parse_addresses
from skiff.client.leaderelection import LeaderElectionConfig

#: Every controller this daemon knows, in the order they are started.
ALL_CONTROLLERS = ("replication", "deployment", "garbagecollector", "endpoints", "namespace",
                   "nodelifecycle")


@dataclass(frozen=True)
class ControllerManagerConfig:
    """Everything the daemon and its controllers need; see ``--help``.

    Controllers read what concerns them: ``concurrent_syncs`` (workers per controller),
    ``node_monitor_grace_period`` and ``pod_eviction_timeout`` (node lifecycle).
    """

    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    identity: str = "controller-manager"
    controllers: tuple[str, ...] = ALL_CONTROLLERS
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
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
    LeaderElectionConfig.add_flags(p)
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
    election = LeaderElectionConfig.from_args(args, name="kube-controller-manager")
    return ControllerManagerConfig(
        servers=servers, identity=args.identity, controllers=controllers,
        leader_election=election, concurrent_syncs=args.concurrent_syncs,
        node_monitor_grace_period=args.node_monitor_grace_period,
        node_monitor_period=args.node_monitor_period,
        pod_eviction_timeout=args.pod_eviction_timeout, metrics_url=args.metrics_url,
        log_level=args.log_level)
