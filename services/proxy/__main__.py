"""``skiff-proxy``: one per node, forwarding Services to endpoints (flags -> config -> run).

Not leader-elected: every node runs its own and each serves every Service (cluster IP
listeners are shared between the proxies of one machine through SO_REUSEPORT). gRPC
health says SERVING once the caches synced and every Service was set up once.
"""

from __future__ import annotations

from services.proxy import metrics as proxy_metrics
from services.proxy.config import ProxyConfig, parse_args
from services.proxy.proxier import Proxier
from skiff import metrics
from skiff.client.client import Client
from skiff.client.informer import SharedInformerFactory
from skiff.daemon import HealthEndpoint, run, until_stopped
from skiff.logging import configure
from skiff.tasks import spawn

#: How long the caches get to sync before a warning that health stays NOT_SERVING.
SYNC_TIMEOUT = 120.0


async def serve(config: ProxyConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    log = configure("proxy", config.log_level, node=config.node_name)
    client = Client(config.servers)
    factory = SharedInformerFactory(client)
    proxier = Proxier(factory, node_name=config.node_name, node_address=config.node_address,
                      connect_timeout=config.connect_timeout)
    if config.metrics_url:
        proxy_metrics.register(proxier.ports)
        metrics.serve(config.metrics_url)
    health_endpoint = HealthEndpoint(config.health_listen, prog="skiff-proxy")
    await health_endpoint.start()
    await factory.start_all()

    async def report_ready() -> None:
        if await proxier.wait_ready(SYNC_TIMEOUT):
            log.info("serving", listeners=len(proxier.listeners),
                     node_address=proxier.node_address)
            await health_endpoint.serving()
        else:
            log.warning("not synced in time; health stays NOT_SERVING", timeout=SYNC_TIMEOUT)

    ready = spawn(report_ready(), name="proxy readiness")
    log.info("starting", servers=list(config.servers), node_address=config.node_address)
    await until_stopped(proxier.run(), what="proxy")
    ready.cancel()
    proxier.close_all()
    await health_endpoint.stop()
    await factory.stop_all()
    await client.close()


def main(argv: list[str] | None = None) -> None:
    """The ``skiff-proxy`` console script."""
    run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
