"""The chaos run (:func:`run_chaos`: load and kills for a while, convergence, checks,
the report) and the ``skiff chaos`` subcommand that runs it against ``skiff up``'s
cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.chaos.checks import (
    check_containers,
    check_deployment,
    check_replicas_agree,
    check_writes,
    current_revision,
    leases_in_keyspace,
    make_report,
    read_replicas,
    running_containers,
)
from skiff.chaos.config import (
    CALL_TIMEOUT,
    CONVERGENCE_TIMEOUT,
    FINAL_REPLICAS,
    HEALTHY_TIMEOUT,
    WRITERS,
)
from skiff.chaos.faults import run_killer
from skiff.chaos.history import Failover, History, Outcome
from skiff.chaos.targets import SupervisorTarget, Target
from skiff.chaos.workload import deployment, run_scaler, run_writer, scale
from skiff.chaos_watch import LayerWatchers
from skiff.client.client import Client
from skiff.health import wait_for

# ------------------------------------------------------------------ the run


def _spawn(coro: Awaitable[None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def converged_problems(client: Client, namespace: str, nodes: Sequence[str]) -> list[str]:
    """What still keeps the run's Deployment and the nodes' containers from converged."""
    deployments = (await client.deployments.list(namespace)).items
    replica_sets = (await client.replica_sets.list(namespace)).items
    pods = (await client.pods.list("")).items
    problems = [p for d in deployments
                for p in check_deployment(d, replica_sets,
                                          [p for p in pods if p.metadata.namespace == namespace])]
    problems += check_containers(pods, await running_containers(nodes), nodes)
    return problems


async def run_chaos(target: Target, *, seconds: float, seed: int, writers: int = WRITERS,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load, kill for ``seconds``, let the cluster converge, check; the report."""
    rng = random.Random(seed)
    namespace = f"chaos-{rng.getrandbits(24):06x}"
    history = History()
    stop = asyncio.Event()
    async with Client(target.apiservers, timeout=CALL_TIMEOUT, retry_deadline=60) as client:
        await client.namespaces.create(core_pb2.Namespace(
            metadata=meta_pb2.ObjectMeta(name=namespace)))
        await client.deployments.create(deployment(namespace, FINAL_REPLICAS))
        # Watchers of the writers' Leases at every layer, checked against the store's
        # history at the end (skiff.chaos_watch); the prefix is empty until now.
        watchers = LayerWatchers(
            store_endpoints=target.store_endpoints, apiservers=target.apiservers,
            kind="Lease", namespace=namespace, prefix=f"/registry/leases/{namespace}/",
            start=await current_revision(target.store_endpoints))
        await watchers.start()
        began = time.monotonic()
        history.began = began
        tasks = [_spawn(run_writer(i, target.apiservers, history, namespace=namespace,
                                   stop=stop, rng=random.Random(f"{seed}-{i}")),
                        f"chaos-writer-{i}") for i in range(writers)]
        tasks.append(_spawn(run_scaler(target.apiservers, history, namespace=namespace,
                                       stop=stop, rng=random.Random(f"{seed}-scale")),
                            "chaos-scaler"))
        try:
            await run_killer(target, history, until=began + seconds, rng=rng, log=log)
            # Available again after the last kill: a write started after it acknowledged.
            last_kill = max((k.at for k in history.kills), default=began)

            async def acknowledged_since() -> bool:
                for task in tasks:
                    if task.done():
                        task.result()  # raises what stopped it
                return any(w.started >= last_kill for w in history.acknowledged_writes())

            await wait_for(acknowledged_since, timeout=HEALTHY_TIMEOUT,
                           what="a write acknowledged after the last kill")
            stop.set()
            await asyncio.gather(*tasks)
        except BaseException:
            await watchers.cancel()
            raise
        finally:
            await _cancel(tasks)
        try:
            return await _converge_and_check(target, client, history, watchers,
                                             namespace=namespace, seed=seed, seconds=seconds,
                                             writers=writers, log=log)
        finally:
            await watchers.cancel()


async def _converge_and_check(target: Target, client: Client, history: History,
                              watchers: LayerWatchers, *, namespace: str, seed: int,
                              seconds: float, writers: int, log: Callable[[str], None]
                              ) -> dict[str, Any]:
    """After the load: scale to the final size, wait for convergence, check; the report."""
    began = history.began
    load_seconds = time.monotonic() - began
    log(f"load stopped after {load_seconds:.0f}s: {len(history.writes)} writes, "
        f"{len(history.kills)} kills; converging")

    # Scale to a known size, then wait until everything matches it.
    final = Failover(target.apiservers, history, name="final")
    try:
        async def scaled() -> bool:
            return await scale(final, namespace, FINAL_REPLICAS) is Outcome.ACKNOWLEDGED
        await wait_for(scaled, timeout=HEALTHY_TIMEOUT, what="the final scale")
    finally:
        await final.close()
    problems: list[str] = []
    converge_began = time.monotonic()

    async def converged() -> bool:
        problems[:] = await converged_problems(client, namespace, target.nodes)
        return not problems

    try:
        await wait_for(converged, timeout=CONVERGENCE_TIMEOUT, interval=1.0,
                       what="convergence")
    except TimeoutError:
        problems.insert(0, f"not converged within {CONVERGENCE_TIMEOUT:.0f}s")
    convergence_seconds = round(time.monotonic() - converge_began, 1)

    revision, states = await read_replicas(target.store_endpoints)
    problems += check_replicas_agree(states)
    watch_problems, watches = await watchers.check(revision)
    problems += watch_problems
    for state in states:
        problems += check_writes(history.writes,
                                 leases_in_keyspace(state.kvs, namespace),
                                 where=f"store {state.endpoint}")
    listed = (await client.leases.list(namespace)).items
    problems += check_writes(history.writes,
                             {o.metadata.name: (o.spec.holder_identity,
                                                int(o.metadata.resource_version))
                              for o in listed}, where="the API")
    pods = [p for p in (await client.pods.list(namespace)).items]
    containers = await running_containers(target.nodes)
    report = make_report(
        history, began=began, target=type(target).__name__, seed=seed, seconds=seconds,
        load_seconds=round(load_seconds, 1), namespace=namespace, writers=writers,
        nodes=list(target.nodes), final_replicas=FINAL_REPLICAS,
        convergence_s=convergence_seconds,
        store={"revision": revision, "compact_revision": states[0].compact_revision,
               "hash": states[0].hash, "keys": len(states[0].kvs),
               "replicas": len(states)},
        objects={"leases": len(listed), "pods": len(pods),
                 "running_containers": len(containers)},
        watches=watches,
        problems=problems)
    if not problems:
        # Leave nothing behind on a cluster that outlives the run.
        await client.namespaces.delete(namespace)
    return report


# ------------------------------------------------------------------ the CLI


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``chaos`` to the ``skiff`` command's subcommands."""
    chaos = commands.add_parser(
        "chaos", help="kill parts of the running local cluster under load, then check it")
    chaos.add_argument("--duration", type=float, default=300.0,
                       help="seconds of kills under load (default 300)")
    chaos.add_argument("--seed", type=int, default=None,
                       help="the random seed (choices, not timing, are reproducible)")
    chaos.add_argument("--writers", type=int, default=WRITERS)
    # SUPPRESS: given only before the subcommand, the top-level value stands.
    chaos.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                       help="the cluster's data directory (as for skiff up)")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    """Run ``skiff chaos ...`` against the cluster in ``data_dir``; the exit status."""
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    try:
        target = SupervisorTarget(data_dir)
        report = asyncio.run(run_chaos(target, seconds=args.duration, seed=seed,
                                       writers=args.writers))
    except Exception as e:  # a CLI reports what went wrong instead of a traceback
        print(f"skiff chaos: {type(e).__name__}: {e}")
        return 1
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0
