"""The controller-manager's configuration, from kube-controller-manager-like flags."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field

from services.controller_manager.nodeipam import parse_cluster_cidr
from services.controller_manager.service_lb import DEFAULT_LOAD_BALANCER_IP_RANGE, parse_ip_range
from skiff.api.addresses import CLUSTER_CIDR
from skiff.client.client import DEFAULT_SERVER, parse_addresses
from skiff.client.leaderelection import LeaderElectionConfig

#: Every controller this daemon knows, in the order they are started.
ALL_CONTROLLERS = ("replication", "deployment", "garbagecollector", "endpoints", "namespace",
                   "nodelifecycle", "nodeipam", "servicelb", "serviceaccounts")
#: The pod network every node's podCIDR is cut from, and the size of each (Kubernetes'
#: --cluster-cidr / --node-cidr-mask-size; DESIGN.md's default addresses).
DEFAULT_CLUSTER_CIDR = CLUSTER_CIDR
DEFAULT_NODE_CIDR_MASK_SIZE = 24


@dataclass(frozen=True)
class ControllerManagerConfig:
    """Everything the daemon and its controllers need; see ``--help``.

    Controllers read what concerns them: ``concurrent_syncs`` (workers per controller),
    ``node_monitor_grace_period`` and ``pod_eviction_timeout`` (node lifecycle),
    ``allocate_node_cidrs``, ``cluster_cidr`` and ``node_cidr_mask_size`` (node IPAM),
    ``load_balancer_ip_range`` (the service load-balancer controller's pool).

    ``allocate_node_cidrs`` is off unless asked for, as in kube-controller-manager: a
    controller-manager started on its own (tests, hosts whose kubelets pin their
    ``--pod-cidr``) must not start writing podCIDRs into Nodes whose network it was not
    told about; ``skiff up`` turns it on.
    """

    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    identity: str = "controller-manager"
    controllers: tuple[str, ...] = ALL_CONTROLLERS
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    concurrent_syncs: int = 5
    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0
    pod_eviction_timeout: float = 300.0
    allocate_node_cidrs: bool = False
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    node_cidr_mask_size: int = DEFAULT_NODE_CIDR_MASK_SIZE
    load_balancer_ip_range: str = DEFAULT_LOAD_BALANCER_IP_RANGE
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
    p.add_argument("--allocate-node-cidrs", nargs="?", const="true", default="false",
                   choices=("true", "false"),
                   help="give each Node a podCIDR from --cluster-cidr (default false)")
    p.add_argument("--cluster-cidr", default=DEFAULT_CLUSTER_CIDR,
                   help=f"the pods' network (default {DEFAULT_CLUSTER_CIDR})")
    p.add_argument("--node-cidr-mask-size", type=int, default=DEFAULT_NODE_CIDR_MASK_SIZE,
                   help=f"each node's podCIDR prefix length (default "
                        f"{DEFAULT_NODE_CIDR_MASK_SIZE})")
    p.add_argument("--load-balancer-ip-range", default=DEFAULT_LOAD_BALANCER_IP_RANGE,
                   help=f"where LoadBalancer Services' ingress IPs come from (default "
                        f"{DEFAULT_LOAD_BALANCER_IP_RANGE})")
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
    try:
        parse_cluster_cidr(args.cluster_cidr, args.node_cidr_mask_size)
        parse_ip_range(args.load_balancer_ip_range)
    except ValueError as e:
        parser.error(str(e))
    election = LeaderElectionConfig.from_args(args, name="kube-controller-manager")
    return ControllerManagerConfig(
        servers=servers, identity=args.identity, controllers=controllers,
        leader_election=election, concurrent_syncs=args.concurrent_syncs,
        node_monitor_grace_period=args.node_monitor_grace_period,
        node_monitor_period=args.node_monitor_period,
        pod_eviction_timeout=args.pod_eviction_timeout,
        allocate_node_cidrs=args.allocate_node_cidrs == "true",
        cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
        load_balancer_ip_range=args.load_balancer_ip_range,
        metrics_url=args.metrics_url,
        log_level=args.log_level)
