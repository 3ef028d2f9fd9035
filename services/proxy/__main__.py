"""``skiff-proxy``: one per node, sending Services to endpoints (flags -> config -> run).

Not leader-elected: every node runs its own, and each serves every Service from its own
nftables table ``ip skiff-proxy-<node>`` (several nodes of one machine share a kernel).
gRPC health says SERVING once the caches synced, every Service was set up once and the
kernel rules were written. A clean stop (SIGTERM) closes the listeners and deletes the
table; established connections forwarded by the kernel (nftables mode) live on in
conntrack.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterable
from pathlib import Path

from services.proxy import metrics as proxy_metrics
from services.proxy.config import ProxyConfig, parse_args
from services.proxy.conntrack import clear_udp_flows
from services.proxy.nftables import NftablesApplier
from services.proxy.nftables_rules import NFTABLES, ServicePort, Settings, table_name
from services.proxy.proxier import Proxier
from services.proxy.rulesync import RulesSyncer
from skiff import metrics
from skiff.client.client import Client
from skiff.client.informer import SharedInformerFactory
from skiff.daemon import HealthEndpoint, run, until_stopped
from skiff.logging import configure
from skiff.tasks import spawn

#: How long the caches get to sync before a warning that health stays NOT_SERVING.
SYNC_TIMEOUT = 120.0
#: bridge-nf-call-iptables: bridged (same-bridge) traffic goes through the ip hooks.
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def settings_of(config: ProxyConfig) -> Settings:
    """The kernel rules' settings for this proxy."""
    return Settings(mode=config.mode, service_cidr=config.service_cidr,
                    cluster_cidr=config.cluster_cidr,
                    node_addresses=config.nodeport_addresses,
                    table=table_name(config.node_name), pod_bridge=config.pod_bridge or "")


def raise_open_files_limit() -> None:
    """Userspace mode holds a listener per service port plus two sockets per connection:
    take the hard limit on open files, not the 1,024 a shell often gives."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bridge_nf_enabled() -> bool | None:
    """Whether bridged IPv4 traffic passes the ip hooks (None: br_netfilter not loaded)."""
    try:
        return BRIDGE_NF.read_text().strip() == "1"
    except OSError:
        return None


async def serve(config: ProxyConfig) -> None:
    """Run until SIGTERM or SIGINT; then remove the kernel rules."""
    log = configure("proxy", config.log_level, node=config.node_name)
    raise_open_files_limit()
    settings = settings_of(config)
    if config.mode == NFTABLES and not bridge_nf_enabled():
        # A pod reaching its own Service (hairpin), or one on the same bridge, is
        # answered across the bridge: without the ip hooks there, conntrack never sees
        # the reply and the DNAT is not undone.
        log.warning("net.bridge.bridge-nf-call-iptables is not 1: hairpin and same-bridge "
                    "Service traffic will fail in nftables mode",
                    value=bridge_nf_enabled())
    client = Client(config.servers)
    factory = SharedInformerFactory(client)
    applier = NftablesApplier(table=settings.table)

    def make_syncer(ports: Callable[[], Iterable[ServicePort]]) -> RulesSyncer:
        return RulesSyncer(applier, settings, ports, min_sync_period=config.min_sync_period,
                           sync_period=config.sync_period,
                           clear_flows=clear_udp_flows if config.mode == NFTABLES else None)

    proxier = Proxier(factory, node_name=config.node_name, settings=settings,
                      syncer_factory=make_syncer, node_address=config.node_address,
                      connect_timeout=config.connect_timeout, udp_timeout=config.udp_timeout)
    if config.metrics_url:
        proxy_metrics.register(proxier.ports)
        metrics.serve(config.metrics_url)
    health_endpoint = HealthEndpoint(config.health_listen, prog="skiff-proxy")
    await health_endpoint.start()
    await factory.start_all()

    async def report_ready() -> None:
        if await proxier.wait_ready(SYNC_TIMEOUT):
            log.info("serving", mode=config.mode, table=settings.table,
                     listeners=len(proxier.listeners), node_address=proxier.node_address)
            await health_endpoint.serving()
        else:
            log.warning("not synced in time; health stays NOT_SERVING", timeout=SYNC_TIMEOUT,
                        rules_error=proxier.rules.last_error)

    ready = spawn(report_ready(), name="proxy readiness")
    log.info("starting", servers=list(config.servers), mode=config.mode, table=settings.table,
             node_address=config.node_address, pod_bridge=config.pod_bridge)
    await until_stopped(proxier.run_all(), what="proxy")
    ready.cancel()
    await health_endpoint.stop()
    proxier.close_all()
    await proxier.rules.cleanup()
    await factory.stop_all()
    await client.close()


def main(argv: list[str] | None = None) -> None:
    """The ``skiff-proxy`` console script."""
    run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
