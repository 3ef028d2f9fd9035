"""Benchmark the scheduler through the real apiserver and store, and print JSON.

    python bench/scheduler.py --start                       # 100x1000 and 1000x5000
    python bench/scheduler.py --start --large               # and 5000x10000
    python bench/scheduler.py --start --configs 1000x5000 --profile /tmp/prof
    python bench/scheduler.py --server 127.0.0.1:6443       # a running apiserver

In the manner of Kubernetes' ``scheduler_perf`` (SchedulingBasic): for each
configuration ``NxM``, N Node objects (Ready; 4 cpu, 32Gi, 110 pods: scheduler_perf's
default node) are created, then M pods (one container requesting 100m cpu and 500Mi
memory, so every pod fits somewhere) as fast as the apiserver takes them, and the
scheduler binds them. Measured from the first create sent to the last bind seen:

- ``pods_per_s``: M over that window (what the issue's target judges);
- ``throughput``: scheduler_perf's SchedulingThroughput, pods bound in each whole second
  of the binding window (average and percentiles);
- ``latency``: per pod, from its create being sent to its ``spec.nodeName`` appearing on
  a watch (CLOCK_MONOTONIC is system-wide, so the load generators' send times and this
  process's watch compare) — p50, p99;
- ``creation``: the creates per second the load generators achieved (when the scheduler
  keeps up, pods_per_s can not exceed it);
- ``cpu``: cores used in the window by the scheduler, the apiserver and the store
  replicas (the latter two only when started here), the load generators, and the whole
  machine; the scheduler's RSS at the end and its peak;
- ``placement``: every pod bound, none on a node beyond its allocatable.

On a small machine the apiserver and the store share the cores with the scheduler, and
the creates are what runs out first: ``pods_per_s`` then says how fast pods can be
created, not how fast they can be scheduled. So a second phase, ``drain`` (skip it with
``--no-drain``), measures the scheduler itself: the scheduler is stopped, M more pods are
created, a new scheduler process is started and binds that backlog; ``pods_per_s`` there
is M over first bind to last bind (the scheduler's cycles plus its Binds and Events
through the apiserver), and ``from_start_s`` includes its start-up and informer lists.

Each configuration gets a fresh cluster when ``--start`` is given (3 store replicas, 1
apiserver, all logging at warning); with ``--server`` its nodes and pods are deleted
afterwards. The scheduler is always a process started here (``--leader-elect false``);
against ``--server`` it and the pods use a scheduler name of their own, so a scheduler
already running there leaves them alone. It starts after the nodes exist, and the
window opens only once it has bound a warm-up pod. The pods are created by
``--workers`` processes (multiprocessing, spawn), each with ``--concurrency`` creates in
flight; the watch runs here.

``--profile DIR`` samples the scheduler and the apiserver with py-spy (``--gil``, raw
folded stacks) for ``--profile-seconds`` during the window and adds where their time
went to the JSON; sampling slows them, so such figures are not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import secrets
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, also in workers

import profiling
from report import emit
from store import machine_cpu_ticks, percentile, process_cpu_seconds

from skiff.api import errors
from skiff.api.quantity import milli_value, value
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.logging import configure
from skiff.testing.processes import Scheduler, control_plane

#: The issue's target: pods bound per second at 1,000 nodes x 5,000 pods.
TARGET_CONFIG = "1000x5000"
TARGET_PODS_PER_S = 300.0
DEFAULT_CONFIGS = "100x1000,1000x5000"
LARGE_CONFIG = "5000x10000"
#: How long anything that should finish may take before the bench gives up (seconds).
DEADLINE = 300.0
#: Creates in flight while making the nodes.
NODE_CONCURRENCY = 64
#: Names of the pods created with the scheduler running, and of the drain's backlog.
LIVE_PREFIX, DRAIN_PREFIX = "pod", "backlog"


def progress(message: str) -> None:
    print(f"[bench-scheduler {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


@dataclass(frozen=True)
class Configuration:
    """N nodes x M pods."""

    nodes: int
    pods: int

    @classmethod
    def parse(cls, text: str) -> Configuration:
        nodes, sep, pods = text.strip().lower().partition("x")
        if not sep or not nodes.isdigit() or not pods.isdigit():
            raise ValueError(f"a configuration is NODESxPODS, not {text!r}")
        return cls(int(nodes), int(pods))

    @property
    def name(self) -> str:
        return f"{self.nodes}x{self.pods}"


@dataclass(frozen=True)
class Settings:
    configs: tuple[str, ...] = tuple(DEFAULT_CONFIGS.split(","))
    workers: int = 3
    concurrency: int = 32
    node_cpu: str = "4"
    node_memory: str = "32Gi"
    node_pods: int = 110
    pod_cpu: str = "100m"
    pod_memory: str = "500Mi"
    loop: str = "uvloop"
    drain: bool = True
    profile_dir: str | None = None
    profile_seconds: float = 15.0


# ====================================================================== objects


def new_node(name: str, settings: Settings) -> core_pb2.Node:
    """A Ready node with scheduler_perf's default capacity."""
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name, labels={
        "kubernetes.io/hostname": name}))
    resources = {"cpu": settings.node_cpu, "memory": settings.node_memory,
                 "pods": str(settings.node_pods)}
    node.status.capacity.update(resources)
    node.status.allocatable.update(resources)
    node.status.conditions.add(type="Ready", status="True", reason="KubeletReady")
    return node


def new_pod(name: str, namespace: str, job: dict[str, Any]) -> core_pb2.Pod:
    pod = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace))
    if job["scheduler_name"] != "default-scheduler":
        pod.spec.scheduler_name = job["scheduler_name"]
    container = pod.spec.containers.add(name="pause", image="registry.k8s.io/pause:3.9")
    container.resources.requests.update({"cpu": job["pod_cpu"], "memory": job["pod_memory"]})
    return pod


def pod_name(prefix: str, i: int) -> str:
    return f"{prefix}-{i:06d}"


def pod_index(name: str, prefix: str) -> int | None:
    """``i`` of a pod named ``prefix-i``; None for any other name."""
    head, _, number = name.rpartition("-")
    return int(number) if head == prefix and number.isdigit() else None


# ================================================================ load generator


def run_loop(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        return uvloop.run(coro)
    return asyncio.run(coro)


async def create_pods(address: str, job: dict[str, Any]) -> dict[str, Any]:
    """Create pods ``start`` .. ``stop - 1``, ``concurrency`` at a time, from
    ``start_at`` (monotonic). Each pod's send time goes in ``sent[i - start]`` (NaN if its
    create failed)."""
    count = job["stop"] - job["start"]
    sent = array("d", [math.nan]) * count
    acked_last = 0.0
    failures: dict[str, int] = {}
    indexes = iter(range(job["start"], job["stop"]))
    async with Client(address, retry_deadline=60.0) as client:
        pods = client.pods
        # One request first: the channel is connected before the clock starts.
        await pods.list(job["namespace"], limit=1)

        async def one_at_a_time() -> None:
            nonlocal acked_last
            for i in indexes:
                pod = new_pod(pod_name(job["prefix"], i), job["namespace"], job)
                at = time.monotonic()
                try:
                    await pods.create(pod)
                except errors.APIError as e:
                    failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                    continue
                sent[i - job["start"]] = at
                acked_last = max(acked_last, time.monotonic())

        await asyncio.sleep(max(0.0, job["start_at"] - time.monotonic()))
        cpu = time.process_time()
        await asyncio.gather(*(one_at_a_time() for _ in range(job["concurrency"])))
        return {"start": job["start"], "sent": sent, "acked_last": acked_last,
                "failures": failures, "cpu": time.process_time() - cpu}


def worker_main(conn: Any, address: str, job: dict[str, Any], loop: str) -> None:
    """A load generator process: run one job, send back its result."""
    configure("bench-scheduler-load", "warning")
    with contextlib.suppress(KeyboardInterrupt):
        conn.send(run_loop(create_pods(address, job), loop))
    conn.close()


@dataclass
class Load:
    """The load generator processes of one configuration."""

    procs: list[Any]
    conns: list[Any]
    start_at: float

    @classmethod
    def start(cls, address: str, settings: Settings, *, namespace: str, count: int,
              prefix: str, scheduler_name: str, pod_cpu: str, pod_memory: str,
              delay: float = 2.5) -> Load:
        ctx = multiprocessing.get_context("spawn")
        start_at = time.monotonic() + delay  # the processes need time to import
        per = -(-count // settings.workers)
        procs, conns = [], []
        for w in range(settings.workers):
            job = {"namespace": namespace, "start": w * per, "stop": min(count, (w + 1) * per),
                   "concurrency": settings.concurrency, "start_at": start_at,
                   "prefix": prefix, "scheduler_name": scheduler_name, "pod_cpu": pod_cpu,
                   "pod_memory": pod_memory}
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=worker_main, args=(child, address, job, settings.loop),
                               daemon=True)
            proc.start()
            child.close()
            procs.append(proc)
            conns.append(parent)
        return cls(procs, conns, start_at)

    async def results(self, count: int) -> dict[str, Any]:
        """Wait for every worker; the send time of each pod (by index), merged."""
        loop = asyncio.get_running_loop()
        try:
            results = [await loop.run_in_executor(None, c.recv) for c in self.conns]
        finally:
            for proc in self.procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
        sent = array("d", [math.nan]) * count
        failures: dict[str, int] = {}
        for r in results:
            sent[r["start"]:r["start"] + len(r["sent"])] = r["sent"]
            for name, n in r["failures"].items():
                failures[name] = failures.get(name, 0) + n
        return {"sent": sent, "acked_last": max(r["acked_last"] for r in results),
                "failures": failures, "cpu": sum(r["cpu"] for r in results)}


# ====================================================================== watching


@dataclass
class BindWatch:
    """Watches the namespace's pods from a list's resource version: when each pod was
    first seen with a node, and on which."""

    count: int
    prefix: str
    bound_at: array = field(init=False)
    node_of: dict[int, str] = field(default_factory=dict)
    bound: int = 0
    rebound: int = 0
    all_bound: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.bound_at = array("d", [math.nan]) * self.count

    async def run(self, client: Client, namespace: str, resource_version: str) -> None:
        async for event in client.pods.watch(namespace, resource_version=resource_version):
            pod = event.object  # type: ignore[attr-defined]
            node = pod.spec.node_name
            if not node:
                continue
            i = pod_index(pod.metadata.name, self.prefix)
            if i is None or i >= self.count:
                continue
            if i in self.node_of:
                if self.node_of[i] != node:
                    self.rebound += 1
                continue
            self.node_of[i] = node
            self.bound_at[i] = time.monotonic()
            self.bound += 1
            if self.bound == self.count:
                self.all_bound.set()


# ============================================================================ CPU


def rss_mib(pid: int) -> dict[str, float | None]:
    """Resident set size now and its peak (VmRSS, VmHWM), MiB."""
    found: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                kib = int(value.split()[0])
                found["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = round(kib / 1024, 1)
    return found


def main_thread_run_delay(pid: int) -> float | None:
    """Seconds the process's main thread has spent runnable but waiting for a CPU
    (``/proc/PID/schedstat``'s second field), None if unavailable."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds per role (a role is one or more processes) and of the machine; for
    the scheduler also how long its main thread waited for a CPU."""

    at: float
    processes: dict[str, float | None]
    busy: int
    total: int
    scheduler_run_delay: float | None = None

    @classmethod
    def take(cls, pids: dict[str, list[int]]) -> CpuSample:
        busy, total = machine_cpu_ticks()
        processes: dict[str, float | None] = {}
        for role, role_pids in pids.items():
            seconds = [process_cpu_seconds(p) for p in role_pids]
            processes[role] = (sum(s for s in seconds if s is not None)
                               if any(s is not None for s in seconds) else None)
        scheduler = pids.get("scheduler")
        delay = main_thread_run_delay(scheduler[0]) if scheduler else None
        return cls(time.monotonic(), processes, busy, total, delay)

    def since(self, before: CpuSample) -> dict[str, Any]:
        """Cores used per role between ``before`` and this sample, and CPU seconds."""
        wall = max(self.at - before.at, 1e-9)
        report: dict[str, Any] = {}
        for role, seconds in self.processes.items():
            earlier = before.processes.get(role)
            if seconds is not None and earlier is not None:
                report[f"{role}_cores"] = round((seconds - earlier) / wall, 2)
                report[f"{role}_cpu_s"] = round(seconds - earlier, 2)
        report["machine_busy"] = round((self.busy - before.busy)
                                       / max(self.total - before.total, 1), 3)
        if self.scheduler_run_delay is not None and before.scheduler_run_delay is not None:
            # The share of the window the scheduler's loop was ready to run but no CPU
            # was free: near 0, it had what it wanted; high, the host starved it.
            report["scheduler_waiting_for_cpu"] = round(
                (self.scheduler_run_delay - before.scheduler_run_delay) / wall, 2)
        return report


# ====================================================================== clusters


@dataclass
class Servers:
    """Where the apiserver is, and the pids of what was started here (none with
    ``--server``)."""

    address: str
    apiserver_pid: int | None = None
    store_pids: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fresh_cluster(base: Path) -> AsyncIterator[Servers]:
    """Three store replicas and an apiserver, stopped on the way out."""
    async with control_plane(base, log_level="warning") as (store, apiserver):
        assert apiserver.daemon.process is not None
        yield Servers(apiserver.address, apiserver.daemon.process.pid,
                      [m.daemon.process.pid for m in store.members if m.daemon.process])


async def gather_limited(coros: Sequence[Any], limit: int) -> None:
    """Await ``coros`` with at most ``limit`` running at once."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> None:
        async with semaphore:
            await coro

    await asyncio.gather(*(one(c) for c in coros))


# ======================================================================= a run


class Run:
    """One configuration: nodes, a scheduler, pods created live, then (``--drain``) a
    backlog for a restarted scheduler; measurements of both."""

    def __init__(self, servers: Servers, config: Configuration, settings: Settings,
                 base: Path, *, own_scheduler_name: bool) -> None:
        self.servers = servers
        self.config = config
        self.settings = settings
        self.base = base
        tag = secrets.token_hex(3)
        self.namespace = f"bench-sched-{tag}"
        self.node_prefix = f"bench-{tag}"
        self.scheduler_name = f"bench-scheduler-{tag}" if own_scheduler_name \
            else "default-scheduler"
        self.schedulers: list[Scheduler] = []

    async def run(self) -> dict[str, Any]:
        config, settings = self.config, self.settings
        async with Client(self.servers.address, retry_deadline=60.0) as client:
            await client.namespaces.create(core_pb2.Namespace(
                metadata=meta_pb2.ObjectMeta(name=self.namespace)))
            progress(f"{config.name}: creating {config.nodes} nodes")
            started = time.monotonic()
            await gather_limited([client.nodes.create(new_node(self.node_name(i), settings))
                                  for i in range(config.nodes)], NODE_CONCURRENCY)
            nodes_s = time.monotonic() - started
            try:
                result = await self.live(client, nodes_s)
                if settings.drain:
                    result["drain"] = await self.drain(client)
            except BaseException:
                for scheduler in self.schedulers:
                    print(scheduler.logs(40), file=sys.stderr)
                raise
            finally:
                for scheduler in self.schedulers:
                    scheduler.stop()
                if not self.servers.store_pids:  # a cluster of someone else's: tidy up
                    await self.clean_up(client)
        return result

    def node_name(self, i: int) -> str:
        return f"{self.node_prefix}-{i:05d}"

    def start_scheduler(self) -> Scheduler:
        args = ["--leader-elect", "false"]
        if self.scheduler_name != "default-scheduler":
            args += ["--scheduler-name", self.scheduler_name]
        scheduler = Scheduler(self.base / "scheduler", [self.servers.address],
                              name=f"bench-scheduler-{len(self.schedulers)}", extra_args=args,
                              log_level="warning")
        self.schedulers.append(scheduler)
        scheduler.start()
        return scheduler

    def pids(self, scheduler: Scheduler) -> dict[str, list[int]]:
        return {"scheduler": [scheduler.pid] if scheduler.pid else [],
                "apiserver": [self.servers.apiserver_pid] if self.servers.apiserver_pid else [],
                "store": self.servers.store_pids}

    async def watch_binds(self, client: Client, prefix: str
                          ) -> tuple[BindWatch, asyncio.Task[None]]:
        """A BindWatch on the pods named ``prefix-N``, from now on."""
        listed = await client.pods.list(self.namespace, limit=1)
        watch = BindWatch(self.config.pods, prefix)
        task = asyncio.create_task(
            watch.run(client, self.namespace, listed.metadata.resource_version),  # type: ignore[attr-defined]
            name=f"bind watch {prefix}")
        return watch, task

    async def wait_all_bound(self, watch: BindWatch, task: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(watch.all_bound.wait(), DEADLINE)
        except TimeoutError:
            raise RuntimeError(f"only {watch.bound} of {self.config.pods} pods bound within "
                               f"{DEADLINE}s") from None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.APIError):
                await task

    async def live(self, client: Client, nodes_s: float) -> dict[str, Any]:
        """Pods created as fast as possible while the scheduler runs (the main figure)."""
        config, settings = self.config, self.settings
        scheduler = self.start_scheduler()
        # Ready means: it has bound a pod (its informers have every node by then).
        started = time.monotonic()
        await client.pods.create(new_pod("warmup", self.namespace, self.job_fields()))
        while not (await client.pods.get("warmup", self.namespace)).spec.node_name:  # type: ignore[attr-defined]
            if time.monotonic() - started > DEADLINE or not scheduler.alive:
                raise RuntimeError("the scheduler did not bind the warm-up pod")
            await asyncio.sleep(0.1)
        ready_s = time.monotonic() - started
        progress(f"{config.name}: scheduler ready after {ready_s:.1f}s; creating "
                 f"{config.pods} pods")

        watch, watcher = await self.watch_binds(client, LIVE_PREFIX)
        load = Load.start(self.servers.address, settings, namespace=self.namespace,
                          count=config.pods, prefix=LIVE_PREFIX, **self.job_fields())
        await asyncio.sleep(max(0.0, load.start_at - time.monotonic()))
        before = CpuSample.take(self.pids(scheduler))
        recordings = await self.start_profiles(scheduler)
        created = await load.results(config.pods)
        progress(f"{config.name}: {config.pods} pods created; waiting for the binds")
        await self.wait_all_bound(watch, watcher)
        after = CpuSample.take(self.pids(scheduler))
        memory = rss_mib(scheduler.pid) if scheduler.pid else {}
        profiles = {label: await r.finish() for label, r in recordings.items()}

        result = self.report(created, watch, nodes_s=nodes_s, ready_s=ready_s)
        result["cpu"] = after.since(before)
        window = after.at - before.at
        result["cpu"]["load_generator_cores"] = round(created["cpu"] / max(window, 1e-9), 2)
        result["cpu"].update(_per_scheduler_cpu(result["cpu"].get("scheduler_cpu_s"),
                                                config.pods))
        result["cpu"]["scheduler_memory"] = memory
        if profiles:
            result["profiles"] = profiles
        progress(f"{config.name}: {result['pods_per_s']} pods/s, latency p50 "
                 f"{result['latency']['p50_ms']} ms p99 {result['latency']['p99_ms']} ms, "
                 f"creation {result['creation']['pods_per_s']}/s")
        return result

    async def drain(self, client: Client) -> dict[str, Any]:
        """The scheduler's own rate: M more pods are created while no scheduler runs,
        then a new scheduler process starts (its informers list everything) and binds
        them. Creation is out of the window, so this is what the scheduler (with the
        apiserver's binds) sustains when pods are waiting."""
        config, settings = self.config, self.settings
        for scheduler in self.schedulers:
            scheduler.stop()
        progress(f"{config.name}: drain: creating {config.pods} pods with no scheduler")
        load = Load.start(self.servers.address, settings, namespace=self.namespace,
                          count=config.pods, prefix=DRAIN_PREFIX, **self.job_fields())
        await load.results(config.pods)
        watch, watcher = await self.watch_binds(client, DRAIN_PREFIX)
        scheduler = self.start_scheduler()
        started = time.monotonic()
        before = CpuSample.take(self.pids(scheduler))
        await self.wait_all_bound(watch, watcher)
        after = CpuSample.take(self.pids(scheduler))
        # The process started just before `before`: its whole CPU is in the window.
        cpu = after.since(before)
        scheduler_cpu = after.processes.get("scheduler")
        bound = [t for t in watch.bound_at if not math.isnan(t)]
        first, last = min(bound), max(bound)
        result = {
            "pods": config.pods, "bound": watch.bound, "rebound": watch.rebound,
            "pods_per_s": round(config.pods / max(last - first, 1e-9), 1),
            "first_bind_after_start_s": round(first - started, 2),
            "from_start_s": round(last - started, 2),
            "throughput": _throughput(watch.bound_at),
            "cpu": {**cpu, "scheduler_cpu_s": scheduler_cpu,
                    **_per_scheduler_cpu(scheduler_cpu, config.pods),
                    "scheduler_memory": rss_mib(scheduler.pid) if scheduler.pid else {}},
        }
        progress(f"{config.name}: drain: {result['pods_per_s']} pods/s once binding started "
                 f"({result['first_bind_after_start_s']}s after the scheduler started)")
        return result

    def job_fields(self) -> dict[str, Any]:
        return {"scheduler_name": self.scheduler_name, "pod_cpu": self.settings.pod_cpu,
                "pod_memory": self.settings.pod_memory}

    async def start_profiles(self, scheduler: Scheduler) -> dict[str, profiling.Recording]:
        directory = self.settings.profile_dir
        if not directory:
            return {}
        if not profiling.available():
            progress("py-spy not found: no profiles")
            return {}
        targets = {"scheduler": scheduler.pid, "apiserver": self.servers.apiserver_pid}
        recordings = {}
        for label, pid in targets.items():
            if pid:
                recordings[label] = await profiling.Recording.start(
                    pid=pid, seconds=self.settings.profile_seconds, label=label,
                    output=Path(directory) / f"{self.config.name}-{label}.txt")
        return recordings

    def report(self, created: dict[str, Any], watch: BindWatch, *, nodes_s: float,
               ready_s: float) -> dict[str, Any]:
        config, settings = self.config, self.settings
        sent, bound_at = created["sent"], watch.bound_at
        first = min(t for t in sent if not math.isnan(t))
        last_bind = max(t for t in bound_at if not math.isnan(t))
        window = last_bind - first
        latencies = sorted(b - s for s, b in zip(sent, bound_at, strict=True)
                           if not math.isnan(s) and not math.isnan(b))
        created_count = sum(1 for t in sent if not math.isnan(t))
        creation_s = created["acked_last"] - first
        per_node = Counter(watch.node_of.values())
        fits = _fit_per_node(settings)
        return {
            "config": config.name, "nodes": config.nodes, "pods": config.pods,
            "pods_per_s": round(config.pods / window, 1),
            "window_s": round(window, 2),
            "throughput": _throughput(bound_at),
            "latency": {
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p90_ms": round(percentile(latencies, 0.9) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "max_ms": round(latencies[-1] * 1000, 1)},
            "creation": {"pods": created_count, "failures": created["failures"],
                         "seconds": round(creation_s, 2),
                         "pods_per_s": round(created_count / max(creation_s, 1e-9), 1)},
            "setup": {"nodes_created_s": round(nodes_s, 2),
                      "nodes_per_s": round(config.nodes / max(nodes_s, 1e-9), 1),
                      "scheduler_ready_s": round(ready_s, 2)},
            "placement": {"bound": watch.bound, "rebound": watch.rebound,
                          "nodes_used": len(per_node),
                          "max_pods_on_a_node": max(per_node.values(), default=0),
                          "fit_per_node": fits,
                          "overcommitted_nodes": sum(1 for n in per_node.values() if n > fits)},
        }

    async def clean_up(self, client: Client) -> None:
        progress(f"{self.config.name}: deleting the pods and nodes")
        listed = await client.pods.list(self.namespace)
        await gather_limited([client.pods.delete(p.metadata.name, self.namespace,
                                                 grace_period_seconds=0)
                              for p in listed.items], NODE_CONCURRENCY)  # type: ignore[attr-defined]
        await gather_limited([client.nodes.delete(self.node_name(i))
                              for i in range(self.config.nodes)], NODE_CONCURRENCY)
        with contextlib.suppress(errors.APIError):
            await client.namespaces.delete(self.namespace)


def _per_scheduler_cpu(cpu_s: float | None, pods: int) -> dict[str, Any]:
    """The scheduler's CPU per pod, and the pods/s that makes with a core of its own (what
    it would sustain where the apiserver and store do not share its CPUs)."""
    if not cpu_s:
        return {}
    return {"scheduler_ms_per_pod": round(cpu_s / pods * 1000, 2),
            "pods_per_scheduler_cpu_s": round(pods / cpu_s, 1)}


def _throughput(bound_at: Sequence[float]) -> dict[str, Any]:
    """scheduler_perf's SchedulingThroughput: pods bound in each whole second from the
    first bind on (a last, partial second is left out: it would read low)."""
    times = [t for t in bound_at if not math.isnan(t)]
    if not times:
        return {}
    first = min(times)
    seconds = int(max(times) - first)
    buckets = [0] * max(seconds, 1)
    for t in times:
        buckets[min(int(t - first), len(buckets) - 1)] += 1
    if seconds >= 2:
        buckets = buckets[:seconds]
    ordered = sorted(buckets)
    return {"average": round(sum(buckets) / len(buckets), 1),
            "p50": ordered[len(ordered) // 2], "p90": percentile(ordered, 0.9),
            "p99": percentile(ordered, 0.99), "max": ordered[-1], "seconds": len(buckets)}


def _fit_per_node(settings: Settings) -> int:
    """How many of the bench's pods one node takes (cpu, memory and pod count)."""
    return min(milli_value(settings.node_cpu) // milli_value(settings.pod_cpu),
               value(settings.node_memory) // value(settings.pod_memory),
               settings.node_pods)


# ========================================================================= main

METHOD = {
    "nodes": "Node objects created through the API (Ready; cpu/memory/pods allocatable), "
             "no kubelets",
    "pods": "one container requesting pod_cpu / pod_memory; created by `workers` spawned "
            "processes with `concurrency` creates in flight each, after the scheduler has "
            "bound a warm-up pod",
    "pods_per_s": "pods / (last bind seen on the watch - first create sent)",
    "throughput": "pods bound in each whole second from the first bind to the last "
                  "(scheduler_perf's SchedulingThroughput)",
    "latency": "per pod: bind seen on the watch - its create sent (CLOCK_MONOTONIC)",
    "cpu": "cores over the window (first create to last bind); apiserver / store only when "
           "started here; machine_busy is all CPUs (0-1); scheduler_waiting_for_cpu the share "
           "of the window its main thread was runnable with no CPU free (schedstat)",
    "drain": "no scheduler; M more pods created; a new scheduler process started: pods_per_s "
             "= M / (last bind - first bind); cpu over its whole life",
}


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    found = results.get(TARGET_CONFIG)
    if not found or "pods_per_s" not in found:
        return {f"{TARGET_CONFIG}_ge_{TARGET_PODS_PER_S:g}_pods_per_s": {"met": None,
                "note": f"{TARGET_CONFIG} was not run"}}
    return {f"{TARGET_CONFIG}_ge_{TARGET_PODS_PER_S:g}_pods_per_s": {
        "value": found["pods_per_s"], "target": TARGET_PODS_PER_S,
        "met": found["pods_per_s"] >= TARGET_PODS_PER_S and found["placement"]["bound"]
        == found["pods"] and not found["placement"]["overcommitted_nodes"],
        "creation_pods_per_s": found["creation"]["pods_per_s"],
        "drain_pods_per_s": found.get("drain", {}).get("pods_per_s"),
        "pods_per_scheduler_cpu_s": found["cpu"].get("pods_per_scheduler_cpu_s"),
        "machine_busy": found["cpu"].get("machine_busy"),
        "note": "pods/s cannot exceed the creation rate the load generators reached; "
                "drain_pods_per_s is the scheduler binding a backlog; "
                "pods_per_scheduler_cpu_s what it does per CPU-second of its own"}}


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "scheduler", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                 "python": platform.python_version(), "grpcio": grpc.__version__},
        "settings": asdict(settings), "method": METHOD,
        "server": args.server or "started here per configuration: 3 store replicas + 1 "
                                 "apiserver",
    }
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="skiff-scheduler-bench-") as tmp:
        for text in settings.configs:
            config = Configuration.parse(text)
            base = Path(tmp) / config.name
            try:
                if args.server:
                    servers = Servers(args.server)
                    results[config.name] = await Run(servers, config, settings, base,
                                                     own_scheduler_name=True).run()
                else:
                    async with fresh_cluster(base) as servers:
                        results[config.name] = await Run(servers, config, settings, base,
                                                         own_scheduler_name=False).run()
            except (RuntimeError, errors.APIError, TimeoutError, OSError) as e:
                progress(f"{config.name} failed: {e}")
                results[config.name] = {"config": config.name, "error": str(e)}
    report["results"] = results
    report["targets"] = check_targets(results)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--start", action="store_true",
                       help="start 3 store replicas and an apiserver per configuration")
    where.add_argument("--server", help="host:port of a running apiserver")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help="comma-separated NODESxPODS configurations")
    p.add_argument("--large", action="store_true", help=f"also run {LARGE_CONFIG}")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="load generator processes")
    p.add_argument("--concurrency", type=int, default=defaults.concurrency,
                   help="creates in flight per load generator")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=defaults.loop)
    p.add_argument("--no-drain", dest="drain", action="store_false",
                   help="skip the drain phase (a backlog bound by a restarted scheduler)")
    p.add_argument("--profile", dest="profile_dir", default=None,
                   help="py-spy the scheduler and apiserver, folded stacks into this dir")
    p.add_argument("--profile-seconds", type=float, default=defaults.profile_seconds)
    p.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if args.large and LARGE_CONFIG not in configs:
        configs.append(LARGE_CONFIG)
    for c in configs:
        try:
            Configuration.parse(c)
        except ValueError as e:
            p.error(str(e))
    settings = Settings(configs=tuple(configs), workers=args.workers,
                        concurrency=args.concurrency, loop=args.loop, drain=args.drain,
                        profile_dir=args.profile_dir, profile_seconds=args.profile_seconds)
    return args, settings


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)
    configure("bench-scheduler", "warning")
    report = run_loop(run(args, settings), settings.loop)
    emit(report, args.output)
    failed = any("error" in r for r in report["results"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
