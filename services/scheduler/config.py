"""The scheduler's configuration, from kube-scheduler-like flags."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field, replace

from services.scheduler.profile import SchedulerConfiguration
from skiff.client.client import DEFAULT_SERVER, parse_addresses
from skiff.client.leaderelection import LeaderElectionConfig


@dataclass(frozen=True)
class SchedulerDaemonConfig:
    """Everything the daemon needs; see ``skiff-scheduler --help``."""

    servers: tuple[str, ...]
    identity: str
    configuration: SchedulerConfiguration = field(default_factory=SchedulerConfiguration)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    metrics_url: str | None = None
    log_level: str = "info"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-scheduler",
                                description="Binds pending pods to the best node.")
    p.add_argument("--server", default=os.environ.get("SKIFF_SERVER", DEFAULT_SERVER),
                   help="apiserver address(es), comma-separated ($SKIFF_SERVER)")
    p.add_argument("--config", default=None,
                   help="a KubeSchedulerConfiguration YAML file (profiles, plugin weights)")
    p.add_argument("--scheduler-name", default=None,
                   help="schedule pods with this schedulerName (overrides the config's "
                        "single profile name; default default-scheduler)")
    LeaderElectionConfig.add_flags(p)
    p.add_argument("--leader-elect-resource-name", default=None,
                   help="the Lease's name (default kube-scheduler, or the scheduler name "
                        "for a second scheduler)")
    p.add_argument("--identity", default=f"{socket.gethostname()}_{os.getpid()}")
    p.add_argument("--listen-metrics-urls", dest="metrics_url", default=None)
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: list[str] | None = None) -> SchedulerDaemonConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        servers = parse_addresses(args.server)
        configuration = (SchedulerConfiguration.load(args.config) if args.config
                         else SchedulerConfiguration())
    except (OSError, ValueError) as e:
        parser.error(str(e))
    if args.scheduler_name:
        if len(configuration.profiles) != 1:
            parser.error("--scheduler-name needs a configuration with exactly one profile")
        profile = replace(configuration.profiles[0], scheduler_name=args.scheduler_name)
        configuration = replace(configuration, profiles=(profile,))
    names = [p.scheduler_name for p in configuration.profiles]
    lease_name = args.leader_elect_resource_name or (
        "kube-scheduler" if names == ["default-scheduler"] else names[0])
    election = LeaderElectionConfig.from_args(args, name=lease_name)
    return SchedulerDaemonConfig(servers=servers, identity=args.identity,
                                 configuration=configuration, leader_election=election,
                                 metrics_url=args.metrics_url, log_level=args.log_level)
