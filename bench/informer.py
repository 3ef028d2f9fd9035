"""Benchmark the informer (skiff.client.informer) against a real apiserver; print JSON.

    python bench/informer.py --start                 # 3 store replicas + an apiserver here
    python bench/informer.py --server 127.0.0.1:6443 # a running apiserver (see below)

What is measured (all pods live in a namespace of their own, ``bench-informer-<hex>``):

1. ``populate``: ``--pods`` pods (10,000) created beforehand by the load generator,
   concurrently and as fast as the apiserver takes them.
2. ``sync``: ``--sync-runs`` times, a new client and informer start on them; the time
   until the informer has synced (its cache holds the full paged, consistent list) and
   until a trivial handler was given every add. p50 and max.
3. ``follow``: for ``--follow-seconds`` the load generator creates pods and updates each
   once, as fast as it can, while one running informer with a trivial handler counts
   events. Reported: writes acknowledged per second, events delivered to the handler
   per second, and the lag from each write's acknowledgement (in the writer process) to
   the handler seeing that resource version (CLOCK_MONOTONIC is system-wide, so the
   two processes' times compare). A bare Watch stream in the same process is timed
   alongside, so the lag the apiserver and store add can be told from the informer's.
   Here the writers (through one apiserver) are the bottleneck, not the informer: this
   says the informer keeps up with what one apiserver can write, not how much more it
   could take.
4. ``backlog``: the informer's own rate. It is stopped; the load generator writes
   ``--backlog`` changes (creates and updates); the informer is started again, resumes
   its watch from its old resource version (the apiserver replays the changes from its
   watch cache, so it must run with ``--watch-cache-size`` above ``--backlog``: this
   program starts it with 50,000) and the time to deliver them all to the handler
   gives events per second. ``client_cpu_share`` near 1 means this process (the
   informer) was the bottleneck; lower, the apiserver's sending.

The load generator is ``--workers`` separate processes (multiprocessing, spawn), each
one event loop with ``--concurrency`` requests in flight through the typed client.
CPU use of this process, the workers and (when started here) the servers is reported
per phase, so a reader can tell who was saturated: the host may have few cores.
With ``--server`` the bench namespace and its pods are left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import secrets
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, also in workers

from report import emit, stop_on_sigterm
from store import machine_cpu_ticks, percentile, process_cpu_seconds, summarize_ms

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.informer import Informer
from skiff.logging import configure
from skiff.testing.processes import control_plane

#: The targets this bench judges.
SYNC_TARGET_S = 2.0
FOLLOW_TARGET_PER_S = 5000.0
#: Watch cache the started apiserver keeps, so a backlog of --backlog is replayable.
WATCH_CACHE_SIZE = 50_000
#: How long the bench waits for anything that should finish (a phase's tail).
DEADLINE = 120.0


@dataclass(frozen=True)
class Settings:
    pods: int = 10_000
    sync_runs: int = 5
    follow_seconds: float = 10.0
    backlog: int = 20_000
    workers: int = 3
    concurrency: int = 32
    page_size: int = 500
    loop: str = "uvloop"


# ===================================================================== helpers


def progress(message: str) -> None:
    print(f"[informer bench] {message}", file=sys.stderr, flush=True)


def new_pod(name: str, namespace: str) -> core_pb2.Pod:
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace,
                                     labels={"app": "bench", "gen": "0"}),
        spec=core_pb2.PodSpec(containers=[core_pb2.Container(name="c", image="busybox")]))


def seconds_summary(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"runs": [round(v, 3) for v in values], "p50_s": round(percentile(ordered, 0.5), 3),
            "max_s": round(ordered[-1], 3)}


def run_loop(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# ================================================================ load generator


async def write(address: str, job: dict[str, Any]) -> dict[str, Any]:
    """Create pods ``prefix-start`` .. ``prefix-stop`` (each then updated once if
    ``update``), ``concurrency`` at a time, until done or ``until`` (monotonic).

    Returns each acknowledged write's resource version and acknowledgement time.
    """
    versions, acked_at = array("q"), array("d")
    failures: dict[str, int] = {}
    names = iter(range(job["start"], job["stop"]))
    until = job.get("until")
    async with Client(address, retry_deadline=60.0) as client:
        pods = client.pods

        def ack(obj: Any) -> None:
            acked_at.append(time.monotonic())
            versions.append(int(obj.metadata.resource_version))

        async def one_at_a_time() -> None:
            for i in names:
                if until is not None and time.monotonic() >= until:
                    return
                try:
                    created = await pods.create(new_pod(f"{job['prefix']}-{i}", job["namespace"]))
                    ack(created)
                    if job["update"]:
                        created.metadata.labels["gen"] = "1"
                        ack(await pods.update(created))
                except errors.APIError as e:
                    failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1

        await asyncio.sleep(max(0.0, job["start_at"] - time.monotonic()))
        started = time.monotonic()
        cpu = time.process_time()
        await asyncio.gather(*(one_at_a_time() for _ in range(job["concurrency"])))
        return {"versions": versions, "acked_at": acked_at, "failures": failures,
                "seconds": time.monotonic() - started, "cpu": time.process_time() - cpu}


def worker_main(conn: Any, address: str, job: dict[str, Any], loop: str) -> None:
    """A load generator process: run one job, send back its result."""
    configure("bench-informer-load", "warning")
    with contextlib.suppress(KeyboardInterrupt):
        conn.send(run_loop(write(address, job), loop))
    conn.close()


async def generate(address: str, settings: Settings, *, namespace: str, prefix: str,
                   count: int, update: bool, duration: float | None = None,
                   start_delay: float = 1.0) -> dict[str, Any]:
    """Run the load generator processes; merged acknowledgements and totals."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.monotonic() + start_delay + 1.0  # the processes need time to import
    per = -(-count // settings.workers)
    procs, conns = [], []
    for w in range(settings.workers):
        job = {"namespace": namespace, "prefix": prefix, "start": w * per,
               "stop": min(count, (w + 1) * per), "update": update,
               "concurrency": settings.concurrency, "start_at": start_at,
               "until": None if duration is None else start_at + duration}
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker_main, args=(child, address, job, settings.loop),
                           daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)
    loop = asyncio.get_running_loop()
    try:
        results = [await loop.run_in_executor(None, c.recv) for c in conns]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    versions, acked_at = array("q"), array("d")
    failures: dict[str, int] = {}
    for r in results:
        versions.extend(r["versions"])
        acked_at.extend(r["acked_at"])
        for name, n in r["failures"].items():
            failures[name] = failures.get(name, 0) + n
    return {"versions": versions, "acked_at": acked_at, "failures": failures,
            "start_at": start_at, "seconds": max(r["seconds"] for r in results),
            "cpu": sum(r["cpu"] for r in results)}


# ===================================================================== counting


class Counter:
    """A trivial handler: counts adds and updates, and when each version was seen."""

    def __init__(self, *, record_times: bool = False) -> None:
        self.events = 0
        self.record_times = record_times
        self.seen_at: dict[int, float] = {}

    def on_add(self, obj: Any) -> None:
        self.events += 1
        if self.record_times:
            self.seen_at[int(obj.metadata.resource_version)] = time.monotonic()

    def on_update(self, old: Any, new: Any) -> None:
        self.on_add(new)


async def wait_until(condition: Any, timeout: float, what: str) -> float:
    """Poll ``condition()`` every millisecond until true; the monotonic time it became so."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.001)
    return time.monotonic()


@dataclass
class Cpu:
    """CPU seconds of this process, of given server processes and of the machine."""

    at: float
    own: float
    servers: float
    busy: int
    total: int

    @classmethod
    def take(cls, pids: Sequence[int]) -> Cpu:
        busy, total = machine_cpu_ticks()
        servers = sum(process_cpu_seconds(p) or 0.0 for p in pids)
        return cls(time.monotonic(), time.process_time(), servers, busy, total)

    def since(self, before: Cpu, workers: float = 0.0) -> dict[str, Any]:
        wall = max(self.at - before.at, 1e-9)
        report = {"informer_process_cores": round((self.own - before.own) / wall, 2),
                  "load_generator_cores": round(workers / wall, 2),
                  "machine_busy": round((self.busy - before.busy)
                                        / max(self.total - before.total, 1), 3)}
        if self.servers:
            report["server_cores"] = round((self.servers - before.servers) / wall, 2)
        return report


# ======================================================================= phases


class Bench:
    def __init__(self, address: str, settings: Settings, server_pids: Sequence[int]) -> None:
        self.address = address
        self.settings = settings
        self.server_pids = list(server_pids)
        self.namespace = f"bench-informer-{secrets.token_hex(3)}"

    async def run(self) -> dict[str, Any]:
        async with Client(self.address, retry_deadline=60.0) as client:
            await client.namespaces.create(core_pb2.Namespace(
                metadata=meta_pb2.ObjectMeta(name=self.namespace)))
        results: dict[str, Any] = {"namespace": self.namespace}
        results["populate"] = await self.populate()
        results["sync"] = await self.sync()
        results["follow"], results["backlog"] = await self.follow_and_backlog()
        return results

    async def populate(self) -> dict[str, Any]:
        n = self.settings.pods
        progress(f"creating {n} pods")
        before = Cpu.take(self.server_pids)
        load = await generate(self.address, self.settings, namespace=self.namespace,
                              prefix="pop", count=n, update=False)
        return {"pods": len(load["versions"]), "failures": load["failures"],
                "seconds": round(load["seconds"], 2),
                "creates_per_s": round(len(load["versions"]) / load["seconds"], 1),
                "cpu": Cpu.take(self.server_pids).since(before, load["cpu"])}

    def informer(self, client: Client) -> Informer:
        return Informer(client, "pods", namespace=self.namespace,
                        page_size=self.settings.page_size)

    async def sync(self) -> dict[str, Any]:
        synced, delivered, objects = [], [], 0
        for run in range(self.settings.sync_runs):
            async with Client(self.address) as client:
                informer = self.informer(client)
                counter = Counter()
                registration = informer.add_handler(counter.on_add, counter.on_update)
                started = time.monotonic()
                await informer.start()
                try:
                    synced_at = await wait_until(lambda i=informer: i.has_synced, DEADLINE,
                                                 "informer synced")
                    done_at = await wait_until(lambda r=registration: r.has_synced, DEADLINE,
                                               "handler given every add")
                finally:
                    await informer.stop()
                objects = len(informer.store)
            synced.append(synced_at - started)
            delivered.append(done_at - started)
            progress(f"sync run {run + 1}: {objects} pods in {synced[-1]:.3f}s")
        return {"objects": objects, "page_size": self.settings.page_size,
                "cache_synced": seconds_summary(synced),
                "handler_synced": seconds_summary(delivered)}

    async def follow_and_backlog(self) -> tuple[dict[str, Any], dict[str, Any]]:
        async with Client(self.address) as client:
            informer = self.informer(client)
            counter = Counter(record_times=True)
            registration = informer.add_handler(counter.on_add, counter.on_update)
            await informer.start()
            try:
                await wait_until(lambda: registration.has_synced, DEADLINE, "handler synced")
                follow = await self.follow(informer, counter)
                backlog = await self.backlog(informer, counter)
            finally:
                await informer.stop()
        return follow, backlog

    async def follow(self, informer: Informer, counter: Counter) -> dict[str, Any]:
        seconds = self.settings.follow_seconds
        progress(f"following {seconds}s of creates and updates")
        counter.seen_at.clear()
        start_events = counter.events
        before = Cpu.take(self.server_pids)
        raw_seen: dict[int, float] = {}
        raw = asyncio.ensure_future(self.raw_watch(informer.last_sync_resource_version,
                                                   raw_seen))
        try:
            load = await generate(self.address, self.settings, namespace=self.namespace,
                                  prefix="follow", count=10_000_000, update=True,
                                  duration=seconds)
            last = max(load["versions"], default=0)
            await wait_until(lambda: last in raw_seen, DEADLINE, "raw watch caught up")
        finally:
            raw.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await raw
        writes = len(load["versions"])
        window_end = load["start_at"] + load["seconds"]
        events_in_window = sum(1 for t in counter.seen_at.values()
                               if load["start_at"] <= t <= window_end)
        caught_up = await wait_until(
            lambda: int(informer.last_sync_resource_version or 0) >= last
            and counter.events - start_events >= writes, DEADLINE, "informer caught up")
        cpu = Cpu.take(self.server_pids).since(before, load["cpu"])
        acks = list(zip(load["versions"], load["acked_at"], strict=True))
        lags = [counter.seen_at[v] - t for v, t in acks if v in counter.seen_at]
        raw_lags = [raw_seen[v] - t for v, t in acks if v in raw_seen]
        return {
            "writes": writes, "failures": load["failures"],
            "window_s": round(load["seconds"], 2),
            "writes_acked_per_s": round(writes / load["seconds"], 1),
            "events_delivered_per_s": round(events_in_window / load["seconds"], 1),
            "events_delivered": counter.events - start_events,
            "drained_s_after_writers_stopped": round(max(0.0, caught_up - window_end), 3),
            "lag_from_ack": summarize_ms(lags),
            "raw_watch_lag_from_ack": summarize_ms(raw_lags),
            "missing_versions": writes - len(lags),
            "cpu": cpu,
            "note": "writer-bound: one apiserver takes the writes; see backlog for the "
                    "informer's own rate. raw_watch_lag_from_ack: a bare Watch stream in "
                    "the same process, for what the apiserver and store add",
        }

    async def raw_watch(self, version: str, seen: dict[int, float]) -> None:
        """A bare watch next to the informer: when each version reached this process."""
        async with Client(self.address) as client:
            async for event in client.pods.watch(self.namespace, resource_version=version):
                seen[int(event.object.metadata.resource_version)] = time.monotonic()

    async def backlog(self, informer: Informer, counter: Counter) -> dict[str, Any]:
        n = self.settings.backlog
        await informer.stop()
        resume_from = informer.last_sync_resource_version
        progress(f"writing a backlog of {n} changes while the informer is stopped")
        load = await generate(self.address, self.settings, namespace=self.namespace,
                              prefix="backlog", count=n // 2, update=True)
        writes = len(load["versions"])
        last = max(load["versions"], default=0)
        start_events, relists = counter.events, informer.relists
        counter.record_times = False
        before = Cpu.take(self.server_pids)
        started = time.monotonic()
        await informer.start()
        done = await wait_until(
            lambda: int(informer.last_sync_resource_version or 0) >= last
            and counter.events - start_events >= writes, DEADLINE, "backlog drained")
        seconds = done - started
        after = Cpu.take(self.server_pids)
        informer_cpu = after.own - before.own
        progress(f"backlog of {writes} drained in {seconds:.3f}s")
        return {
            "changes": writes, "write_failures": load["failures"],
            "resumed_from": resume_from, "relisted": informer.relists > relists,
            "seconds": round(seconds, 3),
            "events_per_s": round((counter.events - start_events) / seconds, 1),
            # What one core of the informer's own would do: the host may be shared.
            "events_per_informer_cpu_s": round(
                (counter.events - start_events) / max(informer_cpu, 1e-9), 1),
            "informer_cpu_us_per_event": round(
                informer_cpu / max(counter.events - start_events, 1) * 1e6, 1),
            "cpu": after.since(before),
        }


# ======================================================================== main

METHOD = {
    "sync": "a new Client and Informer per run; paged consistent list (limit page_size); "
            "cache_synced = start() to has_synced, handler_synced = to a trivial handler "
            "having been given every add",
    "follow": "load generator processes create then update pods closed-loop for window_s; "
              "lag_from_ack = handler time minus the writer's acknowledgement time of the "
              "same resource version (both CLOCK_MONOTONIC)",
    "backlog": "informer stopped; changes written; informer started again from its old "
               "resource version (replayed from the apiserver's watch cache); events_per_s "
               "= changes / time from start() to the handler having them all",
    "cpu": "cores used in the phase: this process (the informer), the load generator, the "
           "servers when started here; machine_busy is all CPUs (0-1)",
}


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    sync = results["sync"]["cache_synced"]
    backlog = results["backlog"]
    follow = results["follow"]
    return {
        "sync_10k_pods_le_2s": {"value": sync["p50_s"], "max_s": sync["max_s"],
                                "met": sync["p50_s"] <= SYNC_TARGET_S,
                                "objects": results["sync"]["objects"]},
        "follow_ge_5000_events_per_s": {
            "value": backlog["events_per_s"],
            "met": backlog["events_per_s"] >= FOLLOW_TARGET_PER_S and not backlog["relisted"],
            "per_informer_cpu_s": backlog["events_per_informer_cpu_s"],
            "note": "value: the informer's wall-clock rate draining a replayed backlog "
                    "(per_informer_cpu_s: the same per CPU-second it used, what one free core "
                    "gives); live, it kept up with all the writers could send: "
                    f"{follow['events_delivered_per_s']}/s, lag p99 "
                    f"{follow['lag_from_ack'].get('p99_ms')} ms (a bare watch: "
                    f"{follow['raw_watch_lag_from_ack'].get('p99_ms')} ms)"},
    }


@contextlib.asynccontextmanager
async def started_servers(base: Path) -> AsyncIterator[tuple[str, list[int]]]:
    async with control_plane(base, log_level="warning", apiserver_args=[
            "--watch-cache-size", str(WATCH_CACHE_SIZE)]) as (store, apiserver):
        pids = [m.daemon.process.pid for m in store.members if m.daemon.process]
        if apiserver.daemon.process:
            pids.append(apiserver.daemon.process.pid)
        yield apiserver.address, pids


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "informer", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                 "python": platform.python_version(), "grpcio": grpc.__version__},
        "settings": asdict(settings), "method": METHOD,
    }
    started = time.monotonic()
    if args.server:
        report["server"] = args.server
        report["results"] = await Bench(args.server, settings, []).run()
    else:
        with tempfile.TemporaryDirectory(prefix="skiff-informer-bench-") as tmp:
            async with started_servers(Path(tmp)) as (address, pids):
                report["server"] = f"started here: 3 store replicas + 1 apiserver " \
                                   f"(--watch-cache-size {WATCH_CACHE_SIZE})"
                report["results"] = await Bench(address, settings, pids).run()
    report["targets"] = check_targets(report["results"])
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--start", action="store_true",
                       help="start 3 store replicas and an apiserver in a temp dir")
    where.add_argument("--server", help="host:port of a running apiserver")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    p.add_argument("--pods", type=int, default=defaults.pods, help="pods the sync lists")
    p.add_argument("--sync-runs", type=int, default=defaults.sync_runs)
    p.add_argument("--follow-seconds", type=float, default=defaults.follow_seconds)
    p.add_argument("--backlog", type=int, default=defaults.backlog,
                   help="changes replayed to a resumed informer (within the watch cache)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="load generator processes")
    p.add_argument("--concurrency", type=int, default=defaults.concurrency,
                   help="requests in flight per load generator process")
    p.add_argument("--page-size", type=int, default=defaults.page_size)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=defaults.loop)
    args = p.parse_args(argv)
    settings = Settings(**{name: getattr(args, name) for name in asdict(defaults)})
    return args, settings


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)
    configure("bench-informer", "warning")  # logs to stderr: stdout is the JSON

    stop_on_sigterm()
    report = run_loop(run(args, settings), settings.loop)
    emit(report, args.output)


if __name__ == "__main__":
    main()
