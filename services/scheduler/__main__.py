"""``skiff-scheduler``: bind pending pods to nodes (flags -> config -> run).

Leader-elected by default: run two and one schedules while the other waits on the
``kube-system/kube-scheduler`` Lease, taking over within a lease duration when the
leader dies. Informers run in every replica (so a new leader starts warm); only the
leader's scheduling loop runs.
"""

from __future__ import annotations

from services.scheduler.config import SchedulerDaemonConfig, parse_args
from services.scheduler.scheduler import INFORMED_KINDS, Scheduler
from skiff import metrics
from skiff.client.client import Client
from skiff.client.controller import run_with_leader_election
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.daemon import run, until_stopped
from skiff.logging import configure

#: How long the informers get to list everything before scheduling starts.
SYNC_TIMEOUT = 120.0


async def serve(config: SchedulerDaemonConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    log = configure("scheduler", config.log_level, identity=config.identity)
    if config.metrics_url:
        metrics.serve(config.metrics_url)
    client = Client(config.servers)
    factory = SharedInformerFactory(client)
    # Informers run before (and whether or not) this replica leads: a new leader starts
    # from a warm cache instead of listing everything after the old one died.
    for kind in INFORMED_KINDS:
        factory.informer(kind)
    await factory.start_all()

    async def schedule() -> None:
        # A fresh scheduler per leadership term: its cache and queue are rebuilt from
        # the (shared, already warm) informers' contents by their handlers.
        recorders = {p.scheduler_name: EventRecorder(client, p.scheduler_name,
                                                     host=config.identity)
                     for p in config.configuration.profiles}
        scheduler = Scheduler(client, factory, config.configuration, recorders=recorders)
        await factory.start_all()
        if not await factory.wait_for_cache_sync(SYNC_TIMEOUT):
            raise RuntimeError("informers did not sync")
        if not await scheduler.wait_for_handlers_sync(SYNC_TIMEOUT):
            raise RuntimeError("the scheduler's cache did not sync")
        log.info("scheduling", profiles=list(scheduler.frameworks))
        await scheduler.run()

    election = config.leader_election
    if election.enabled:
        main = run_with_leader_election(
            client, election.name, config.identity, schedule, namespace=election.namespace,
            lease_duration=election.lease_duration, renew_deadline=election.renew_deadline,
            retry_period=election.retry_period)
    else:
        main = schedule()
    await until_stopped(main, what="scheduler")
    await factory.stop_all()
    await client.close()


def main(argv: list[str] | None = None) -> None:
    run(serve(parse_args(argv)))

if __name__ == "__main__":
    main()
