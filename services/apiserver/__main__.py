"""``skiff-apiserver``: serve the cluster API from the store (flags -> config -> run)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY

from services.apiserver.admission import Chain
from services.apiserver.admission.default_tolerations import DefaultTolerationSeconds
from services.apiserver.admission.namespace_lifecycle import NamespaceLifecycle
from services.apiserver.admission.service_allocation import ServiceAllocation, first_address
from services.apiserver.cacher import Cacher
from services.apiserver.config import APIServerConfig, parse_args
from services.apiserver.endpoint_reconciler import LeaseEndpointReconciler
from services.apiserver.metrics import WatchCacheCollector
from services.apiserver.registry import Registry
from services.apiserver.rest.server import RESTServer
from services.apiserver.server import add_servicer
from services.apiserver.storage import Storage
from services.apiserver.storage_types import decode
from services.apiserver.strategies import STRATEGIES
from skiff import metrics, tokenfile
from skiff.api import errors
from skiff.api.kinds import KINDS, Kind, lookup
from skiff.api.namespaces import SYSTEM_NAMESPACES
from skiff.api.v1 import core_pb2
from skiff.daemon import run, wait_for_signal
from skiff.logging import configure, get_logger

log = get_logger("apiserver")

#: Largest request or response: a list of many thousands of pods.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: How often the apiserver checks that its store calls go to the raft leader.
LEADER_CHECK_SECONDS = 5.0


class APIServer:
    """The registries of every kind over one store client, and their watch caches."""

    def __init__(self, config: APIServerConfig) -> None:
        self.config = config
        self.storage = Storage(config.store_endpoints, timeout=config.store_timeout)
        self._leader_follower: asyncio.Task[None] | None = None
        self.cachers: dict[str, Cacher] = {
            k.kind: Cacher(self.storage, k, capacity=config.watch_cache_size,
                           bookmark_interval=config.bookmark_interval) for k in KINDS}
        admission = Chain([
            NamespaceLifecycle(self._namespace, cached=self._cached_namespace,
                               key=lambda name: self.registries["Namespace"].key("", name)),
            DefaultTolerationSeconds(
                config.default_not_ready_toleration_seconds,
                unreachable_seconds=config.default_unreachable_toleration_seconds),
            ServiceAllocation(config.ranges, self._services),
        ])
        self.registries: dict[str, Registry] = {
            k.kind: Registry(k, STRATEGIES[k.kind], self.storage, self.cachers[k.kind],
                             admission) for k in KINDS}
        self.endpoints = (None if config.endpoint_reconciler_type == "none" else
                          LeaseEndpointReconciler(
                              self.registries, ip=config.advertised_ip,
                              # In-cluster clients speak HTTPS REST when served.
                              port=config.rest.port or config.listen_port,
                              service_ip=first_address(config.ranges.cluster_ips),
                              timing=config.lease_timing))

    async def _namespace(self, name: str) -> core_pb2.Namespace | None:
        """A namespace as the store holds it now (a linearizable read)."""
        namespaces = self.registries["Namespace"]
        key = namespaces.key("", name)
        stored = await self.storage.get(key)
        if stored is None:
            return None
        return decode(namespaces.kind, stored.value, stored.mod_revision)  # type: ignore[return-value]

    def _cached_namespace(self, name: str) -> core_pb2.Namespace | None:
        """A namespace as this apiserver's watch cache holds it (None if not there)."""
        cacher = self.cachers["Namespace"]
        if not cacher.ready:
            return None
        return cacher.get(self.registries["Namespace"].key("", name))  # type: ignore[return-value]

    def _services(self) -> list[core_pb2.Service]:
        items, _ = self.cachers["Service"].list()
        return items  # type: ignore[return-value]

    async def start(self) -> None:
        await asyncio.gather(*(c.start() for c in self.cachers.values()))
        await self.ensure_system_namespaces()
        if self.endpoints is not None:
            await self.endpoints.start()
        self._leader_follower = asyncio.create_task(self._follow_store_leader(),
                                                    name="follow-store-leader")

    async def leave(self) -> None:
        """Take this apiserver out of the ``kubernetes`` Endpoints (a clean stop)."""
        if self.endpoints is not None:
            await self.endpoints.stop()

    async def stop(self) -> None:
        if self._leader_follower is not None:
            self._leader_follower.cancel()
        await asyncio.gather(*(c.stop() for c in self.cachers.values()),
                             return_exceptions=True)
        await self.storage.close()

    async def _follow_store_leader(self) -> None:
        """Keep the store calls on the raft leader's replica, checking every few
        seconds (a leader changes rarely; until this notices, calls only cost more)."""
        while True:
            try:
                await self.storage.prefer_leader()
            except (grpc.aio.AioRpcError, errors.APIError) as e:
                log.debug("could not find the store leader", error=str(e))
            await asyncio.sleep(LEADER_CHECK_SECONDS)

    async def ensure_system_namespaces(self) -> None:
        """Create ``default`` and the other system namespaces if they do not exist."""
        kind: Kind = lookup("Namespace")
        for name in SYSTEM_NAMESPACES:
            with contextlib.suppress(errors.AlreadyExists):
                await self.registries["Namespace"].create(
                    kind.new(metadata={"name": name}))

    def add_services(self, server: grpc.aio.Server) -> None:
        for kind in KINDS:
            add_servicer(self.registries[kind.kind], server)


async def serve(config: APIServerConfig) -> None:
    """Run the apiserver until SIGTERM or SIGINT."""
    log = configure("apiserver", config.log_level, listen=config.listen)
    api = APIServer(config)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ])
    api.add_services(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(k.service for k in KINDS)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME,
                                         reflection.SERVICE_NAME), server)
    try:
        server.add_insecure_port(config.listen)
    except RuntimeError:
        raise SystemExit(f"skiff-apiserver: cannot listen on {config.listen} "
                         f"(address in use?)") from None
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    if config.metrics_url:
        REGISTRY.register(WatchCacheCollector(api.cachers))
        metrics.serve(config.metrics_url)
    log.info("starting", store=list(config.store_endpoints))
    await api.start()
    rest_runner = await _start_rest(config, api)
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving")

    await wait_for_signal()
    log.info("stopping")
    # Out of the kubernetes Endpoints first, while still serving: clients move on.
    await api.leave()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=1.0)
    if rest_runner is not None:
        await rest_runner.cleanup()
    await api.stop()


async def _start_rest(config: APIServerConfig, api: APIServer) -> Any:
    """The Kubernetes REST edge over the same registries, if --secure-port is set."""
    rest = config.rest
    if not rest.port:
        return None
    try:
        tokens = tokenfile.load(rest.token_file) if rest.token_file else None
    except (OSError, tokenfile.TokenFileError) as e:
        raise SystemExit(f"skiff-apiserver: --token-auth-file: {e}") from None
    server = RESTServer(api.registries, tokens=tokens,
                        ready=lambda: all(c.ready for c in api.cachers.values()))
    try:
        runner = await server.start(rest)
    except OSError as e:
        raise SystemExit(f"skiff-apiserver: cannot serve HTTPS on {rest.host}:{rest.port}: "
                         f"{e}") from None
    log.info("serving the Kubernetes API over HTTPS", port=rest.port,
             authentication="token file" if tokens is not None else "none")
    return runner


def main(argv: list[str] | None = None) -> None:
    run(serve(parse_args(argv)))

if __name__ == "__main__":
    main()
