"""``skiff-dns``: the cluster DNS (flags -> config -> run).

Not leader-elected: every instance answers every query from its own informer caches,
so two instances (one per node, or two on one machine sharing an address through
SO_REUSEPORT) give the same answers and losing one loses nothing. It answers only
once its caches have synced (before that it would say NXDOMAIN for names that exist);
gRPC health then says SERVING.

With ``--register-endpoints kube-system/kube-dns`` it then adds its listen addresses to
that Endpoints object and takes them out on SIGTERM (:mod:`services.dns.registration`).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from google.protobuf.message import Message

from services.dns import metrics as dns_metrics
from services.dns.answers import Responder
from services.dns.config import DnsConfig, parse_args
from services.dns.forwarder import Forwarder, without_self
from services.dns.records import RecordTable
from services.dns.registration import EndpointsRegistration
from services.dns.server import DnsServer
from services.dns.watch import RecordWatcher
from skiff import metrics
from skiff.api import errors
from skiff.client.client import Client, backoff
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of
from skiff.daemon import HealthEndpoint, run, until_stopped
from skiff.logging import configure
from skiff.tasks import spawn

#: How long the caches get to sync before a warning (it keeps waiting).
SYNC_TIMEOUT = 120.0
#: How long a stopping instance tries to take itself out of the Endpoints.
DEREGISTER_TIMEOUT = 5.0


def registration_for(config: DnsConfig, client: Client,
                     factory: SharedInformerFactory) -> EndpointsRegistration | None:
    """The instance's Endpoints registration, watching that object, or None."""
    if config.register_endpoints is None:
        return None
    namespace, name = config.register_endpoints
    registration = EndpointsRegistration(client, namespace, name, config.listen)
    key = registration.key

    def changed(obj: Message) -> None:
        if key_of(obj) == key:
            registration.on_change(obj)

    def deleted(obj: Message) -> None:
        if key_of(obj) == key:
            registration.on_change(None)

    factory.informer("endpoints").add_handler(
        changed, lambda old, new: changed(new), deleted, name="dns registration")
    return registration


async def register(registration: EndpointsRegistration, log: Any) -> None:
    """Register, retrying with back-off until it worked (the apiserver may be away)."""
    attempt = 0
    while True:
        try:
            await registration.register()
            return
        except errors.APIError as e:
            log.warning("could not register in the endpoints; retrying",
                        endpoints=registration.key, error=repr(e))
        await asyncio.sleep(backoff(attempt))
        attempt += 1


async def deregister(registration: EndpointsRegistration, log: Any) -> None:
    """Take the instance out of the Endpoints, within :data:`DEREGISTER_TIMEOUT`."""
    try:
        await asyncio.wait_for(registration.deregister(), DEREGISTER_TIMEOUT)
    except (errors.APIError, TimeoutError) as e:
        log.warning("could not take our addresses out of the endpoints",
                    endpoints=registration.key, error=repr(e))


async def serve(config: DnsConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    log = configure("dns", config.log_level)
    client = Client(config.servers)
    factory = SharedInformerFactory(client)
    table = RecordTable(config.zone)
    watcher = RecordWatcher(factory, table)
    upstreams = without_self(config.upstreams, config.listen)
    forwarder = Forwarder(upstreams, timeout=config.forward_timeout)
    responder = Responder(table)
    stats = dns_metrics.DnsStats()
    server = DnsServer(responder, forwarder, stats)
    if config.metrics_url:
        dns_metrics.register(dns_metrics.DnsCollector(
            stats, services=lambda: table.services, cache_hits=lambda: responder.cache_hits,
            forward_failures=lambda: forwarder.failures))
        metrics.serve(config.metrics_url)
    registration = registration_for(config, client, factory)
    health_endpoint = HealthEndpoint(config.health_listen, prog="skiff-dns")
    await health_endpoint.start()
    log.info("starting", servers=list(config.servers), zone=config.zone,
             upstreams=[f"{h}:{p}" for h, p in upstreams])
    await factory.start_all()

    failure: list[str] = []

    async def answer() -> None:
        while not await watcher.wait_ready(SYNC_TIMEOUT):
            log.warning("caches not synced yet; not answering", waited=SYNC_TIMEOUT)
        for address in config.listen:
            try:
                await server.listen(address)
            except OSError as e:
                # Ends this task, so until_stopped returns; serve then exits non-zero.
                failure.append(f"skiff-dns: cannot listen on {address[0]}:{address[1]}: "
                               f"{e.strerror or e}")
                log.error("cannot listen", address=f"{address[0]}:{address[1]}",
                          error=str(e))
                return
        # What the first lists brought lives as long as the process: keep the collector
        # from scanning it again (a full collection is a pause in every query).
        gc.freeze()
        log.info("serving", services=table.services,
                 listen=[f"{h}:{p}" for h, p in config.listen])
        await health_endpoint.serving()
        if registration is not None:
            spawn(register(registration, log), name="dns endpoints registration")
        await asyncio.Event().wait()  # serve until cancelled

    await until_stopped(answer(), what="dns")
    if registration is not None and registration.active:
        # Out of the Endpoints first, so that clients stop being sent here, then close.
        await deregister(registration, log)
    server.close()
    await health_endpoint.stop()
    await factory.stop_all()
    await client.close()
    if failure:
        raise SystemExit(failure[0])


def main(argv: list[str] | None = None) -> None:
    """The ``skiff-dns`` console script."""
    run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
