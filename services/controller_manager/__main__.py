"""``skiff-controller-manager``: the built-in controllers (flags -> config -> run).

Leader-elected by default on the ``kube-system/kube-controller-manager`` Lease: run two
and one reconciles while the other waits. As kube-controller-manager does, each
leadership term builds everything afresh (informer factory, controllers, event
recorder), starts the informers, waits for their caches, then runs every enabled
controller concurrently until leadership is lost (or one of them crashes: then the
term ends and the next one starts clean).

Controllers are found by name in :data:`CONTROLLERS` (``"module:Class"``), imported
when enabled, so a controller that fails to import is reported and skipped rather than
taking the others down. Each is constructed as ``Cls(client, factory, recorder, config)``
and provides ``async run()``.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from services.controller_manager.config import ControllerManagerConfig, parse_args
from skiff import metrics
from skiff.client.client import Client
from skiff.client.controller import run_with_leader_election
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.daemon import run, until_stopped
from skiff.logging import configure

#: How long the informers get to list everything before the controllers start.
SYNC_TIMEOUT = 120.0

#: Every controller by its ``--controllers`` name.
CONTROLLERS: dict[str, str] = {
    "replication": "services.controller_manager.replication:ReplicationManager",
    "deployment": ("services.controller_manager.deployment.deployment_controller"
                   ":DeploymentController"),
    "garbagecollector": "services.controller_manager.garbage_collector:GarbageCollector",
    "endpoints": "services.controller_manager.endpoints:EndpointsController",
    "namespace": "services.controller_manager.namespace:NamespaceController",
    "nodelifecycle": "services.controller_manager.node_lifecycle:NodeLifecycleController",
    "nodeipam": "services.controller_manager.nodeipam:NodeIpamController",
    "servicelb": "services.controller_manager.service_lb:ServiceLBController",
    "serviceaccounts": "services.controller_manager.serviceaccounts:ServiceAccountsController",
}


def load(name: str) -> type[Any]:
    """The controller class registered as ``name`` (ImportError/AttributeError if absent)."""
    module, _, attr = CONTROLLERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def build(client: Client, factory: SharedInformerFactory, recorder: EventRecorder,
          config: ControllerManagerConfig, log: Any) -> dict[str, Any]:
    """The enabled controllers that could be loaded, by name."""
    built: dict[str, Any] = {}
    for name in config.controllers:
        try:
            cls = load(name)
        except (ImportError, AttributeError) as e:
            log.error("controller not available; skipped", controller=name, error=repr(e))
            continue
        built[name] = cls(client, factory, recorder, config)
    return built


async def run_term(client: Client, config: ControllerManagerConfig, log: Any) -> None:
    """One leadership term: fresh informers and controllers, run until cancelled."""
    factory = SharedInformerFactory(client)
    recorder = EventRecorder(client, "controller-manager", host=config.identity)
    controllers = build(client, factory, recorder, config, log)
    try:
        await factory.start_all()
        if not await factory.wait_for_cache_sync(SYNC_TIMEOUT):
            raise RuntimeError("informers did not sync")
        log.info("running controllers", controllers=sorted(controllers))
        async with asyncio.TaskGroup() as group:
            for name, controller in controllers.items():
                group.create_task(controller.run(), name=f"controller {name}")
    finally:
        await factory.stop_all()
        await recorder.flush(1.0)


async def serve(config: ControllerManagerConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    log = configure("controller-manager", config.log_level, identity=config.identity)
    if config.metrics_url:
        metrics.serve(config.metrics_url)
    client = Client(config.servers)

    async def lead() -> None:
        await run_term(client, config, log)

    election = config.leader_election
    if election.enabled:
        main = run_with_leader_election(
            client, election.name, config.identity, lead, namespace=election.namespace,
            lease_duration=election.lease_duration, renew_deadline=election.renew_deadline,
            retry_period=election.retry_period)
    else:
        main = lead()
    await until_stopped(main, what="controller manager")
    await client.close()


def main(argv: list[str] | None = None) -> None:
    run(serve(parse_args(argv)))

if __name__ == "__main__":
    main()
