"""Benchmark the controller-manager through the real apiserver and store, and print JSON.

    python bench/controllers.py                                  # 1,000 replicas, 500 pods
    python bench/controllers.py --replicas 200 --service-pods 100 --flip-duration 5
    python bench/controllers.py --profile /tmp/prof              # py-spy the daemons

Starts its own three store replicas, apiserver and controller-manager
(``skiff.testing.processes``, all logging at warning; the controller-manager with every
controller and ``--leader-elect false``), waits until the controller-manager has made
the pod of a one-replica warm-up RC, then measures:

- ``replication``: a ReplicationController of ``--replicas`` replicas is created; from
  that create's send to the last of its pods seen on a watch of the namespace's pods
  (the watch is this process's, begun before the create). ``pods_per_s`` is replicas
  over that window (the issue's target: at least 300); ``throughput`` the pods seen in
  each whole second; ``status_s`` when the RC's status.replicas said so too.
- ``ceiling``: for comparison, the same number of pods created by this process itself
  (``--setup-concurrency`` creates in flight): what the apiserver and store take on this
  machine with no controller in between. The replication figure cannot exceed it by much.
- ``endpoints``: a Service selecting ``--service-pods`` pods, created bound to a node
  name (no scheduler, no kubelet) and made Running and Ready by this process through
  UpdateStatus, as a kubelet would; once the Endpoints hold every address, pods change
  readiness in a steady stream (``--flip-rate`` a second for ``--flip-duration`` s;
  alternately a Ready pod turns not Ready and the longest not-Ready one turns Ready
  again). Lag per change: from the UpdateStatus reply (``lag_from_ack``; the target is a
  p99 of at most 1 s) and from its send (``lag_from_send``) to the Endpoints, watched
  here, listing that pod's IP in ``addresses`` or ``not_ready_addresses`` as it should.

CPU use is reported per window (cores) for the controller-manager, the apiserver and the
store replicas, and the whole machine; on a small machine they share the cores, and
``machine_busy`` near 1 means the host, not one daemon, was the limit.

``--profile DIR`` samples the controller-manager and the apiserver with py-spy during
the replication window (``bench/profiling.py``); sampled figures are not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import secrets
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers

import profiling
from report import emit, stop_on_sigterm
from scheduler import (
    CpuSample,
    Servers,
    _throughput,
    fresh_cluster,
    gather_limited,
    rss_mib,
    run_loop,
)
from store import summarize_ms

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.logging import configure
from skiff.testing.processes import ControllerManager

#: The issue's targets.
TARGET_PODS_PER_S = 300.0
TARGET_ENDPOINTS_P99_MS = 1000.0
#: How long anything that should finish may take before the bench gives up (seconds).
DEADLINE = 300.0
#: How long a readiness change may stay unseen in the Endpoints before it counts as lost.
LOST_AFTER = 30.0
#: The node name the service's pods are bound to (no such Node: nothing runs them).
NODE_NAME = "bench-node"


def progress(message: str) -> None:
    print(f"[bench-controllers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


@dataclass(frozen=True)
class Settings:
    """The scale knobs (see ``--help``)."""

    replicas: int = 1000
    service_pods: int = 500
    flip_rate: float = 20.0
    flip_duration: float = 10.0
    setup_concurrency: int = 64
    ceiling: bool = True
    controllers: str = "all"
    concurrent_syncs: int = 5
    loop: str = "uvloop"
    profile_dir: str | None = None
    profile_seconds: float = 5.0


# ====================================================================== objects


def namespace(name: str) -> core_pb2.Namespace:
    return core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=name))


def container() -> core_pb2.Container:
    return core_pb2.Container(name="app", image="busybox", command=["sleep", "3600"],
                              ports=[core_pb2.ContainerPort(name="http", container_port=8080)])


def replication_controller(name: str, ns: str, replicas: int) -> core_pb2.ReplicationController:
    labels = {"app": name}
    rc = core_pb2.ReplicationController(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns))
    rc.spec.replicas = replicas
    rc.spec.selector.update(labels)
    rc.spec.template.metadata.labels.update(labels)
    rc.spec.template.spec.containers.append(container())
    return rc


def pod(name: str, ns: str, labels: dict[str, str], *, node: str = "") -> core_pb2.Pod:
    found = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns, labels=labels))
    found.spec.containers.append(container())
    if node:
        found.spec.node_name = node
    return found


def service(name: str, ns: str, selector: dict[str, str]) -> core_pb2.Service:
    svc = core_pb2.Service(metadata=meta_pb2.ObjectMeta(name=name, namespace=ns))
    svc.spec.selector.update(selector)
    port = svc.spec.ports.add(name="http", port=80, protocol="TCP")
    port.target_port.str_val = "http"
    port.target_port.type = meta_pb2.IntOrString.STRING
    return svc


def pod_ip(i: int) -> str:
    return f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def set_ready(found: core_pb2.Pod, ip: str, ready: bool) -> None:
    """What a kubelet posts: Running, the pod's IP, its Ready condition (in place)."""
    status = found.status
    status.phase = "Running"
    status.pod_ip = ip
    status.host_ip = "127.0.0.1"
    condition = next((c for c in status.conditions if c.type == "Ready"), None)
    if condition is None:
        condition = status.conditions.add(type="Ready")
    condition.status = "True" if ready else "False"
    condition.last_transition_time.GetCurrentTime()


# ====================================================================== watching


@dataclass
class PodCounter:
    """Watches a namespace's pods: when each pod name was first seen."""

    expected: int
    seen_at: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, client: Client, ns: str, resource_version: str) -> None:
        async for event in client.pods.watch(ns, resource_version=resource_version):
            if event.type != "ADDED":  # type: ignore[attr-defined]
                continue
            name = event.object.metadata.name  # type: ignore[attr-defined]
            if name not in self.seen_at:
                self.seen_at[name] = time.monotonic()
                if len(self.seen_at) >= self.expected:
                    self.done.set()


@dataclass
class Change:
    """One readiness change of one pod: when sent, answered, and seen in the Endpoints."""

    ip: str
    ready: bool
    sent: float
    acked: float = math.nan
    seen: float = math.nan


@dataclass
class EndpointsWatch:
    """Watches one Endpoints object and resolves the changes waiting to show in it.

    Invariant: ``pending`` maps a pod IP to its change not yet seen; a pod has at most
    one change in flight (the flipper only picks pods whose last change was seen).
    """

    pending: dict[str, Change] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    not_ready: set[str] = field(default_factory=set)
    events: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, endpoints: core_pb2.EndpointsObject) -> list[Change]:
        """Take in an Endpoints version; the changes it shows, now resolved."""
        self.ready = {a.ip for s in endpoints.subsets for a in s.addresses}
        self.not_ready = {a.ip for s in endpoints.subsets for a in s.not_ready_addresses}
        now = time.monotonic()
        resolved = [c for c in self.pending.values()
                    if c.ip in (self.ready if c.ready else self.not_ready)]
        for change in resolved:
            change.seen = now
            del self.pending[change.ip]
        self.events += 1
        self.changed.set()
        return resolved

    async def run(self, client: Client, ns: str, name: str, resource_version: str,
                  on_seen: Any) -> None:
        async for event in client.endpoints.watch(
                ns, resource_version=resource_version,
                field_selector=f"metadata.name={name}"):
            if event.type in ("ADDED", "MODIFIED"):  # type: ignore[attr-defined]
                for change in self.apply(event.object):  # type: ignore[attr-defined]
                    on_seen(change)


@contextlib.asynccontextmanager
async def watching(coro: Any, name: str) -> Any:
    """Run a watch coroutine as a task for the block; cancel it after."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, errors.APIError):
            await task


async def wait_event(event: asyncio.Event, task: asyncio.Task[Any], timeout: float,
                     what: str) -> None:
    """Wait for ``event`` while the watch ``task`` lives; RuntimeError on timeout."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter, task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if waiter not in done or not event.is_set():
        if task.done() and task.exception() is not None:
            raise RuntimeError(f"{what}: the watch failed: {task.exception()!r}")
        raise RuntimeError(f"{what}: not within {timeout}s")


# ======================================================================== bench


class Bench:
    """The measures against one cluster started here."""

    def __init__(self, servers: Servers, manager: ControllerManager, settings: Settings,
                 client: Client) -> None:
        self.servers = servers
        self.manager = manager
        self.settings = settings
        self.client = client
        self.tag = secrets.token_hex(3)

    def pids(self) -> dict[str, list[int]]:
        return {"controller_manager": [self.manager.pid] if self.manager.pid else [],
                "apiserver": [self.servers.apiserver_pid] if self.servers.apiserver_pid else [],
                "store": self.servers.store_pids}

    async def new_namespace(self, what: str) -> str:
        name = f"bench-{what}-{self.tag}"
        await self.client.namespaces.create(namespace(name))
        return name

    async def warm_up(self) -> float:
        """Until the controller-manager has listed everything and acts: it made the pod
        of a one-replica RC."""
        started = time.monotonic()
        ns = await self.new_namespace("warmup")
        await self.client.replication_controllers.create(replication_controller("warmup", ns, 1))
        while not (await self.client.pods.list(ns)).items:  # type: ignore[attr-defined]
            if time.monotonic() - started > DEADLINE or not self.manager.alive:
                raise RuntimeError("the controller-manager did not make the warm-up pod")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    # ------------------------------------------------------------ replication

    async def replication(self) -> dict[str, Any]:
        replicas = self.settings.replicas
        ns = await self.new_namespace("rc")
        listed = await self.client.pods.list(ns)
        counter = PodCounter(replicas)
        progress(f"replication: an RC of {replicas} replicas")
        async with watching(counter.run(self.client, ns, listed.metadata.resource_version),  # type: ignore[attr-defined]
                            "pod counter") as watch:
            before = CpuSample.take(self.pids())
            recordings = await self.start_profiles("replication")
            sent = time.monotonic()
            await self.client.replication_controllers.create(
                replication_controller("big", ns, replicas))
            await wait_event(counter.done, watch, DEADLINE, f"{replicas} pods seen")
            after = CpuSample.take(self.pids())
        last = max(counter.seen_at.values())
        first = min(counter.seen_at.values())

        async def status() -> float:
            while True:
                current = await self.client.replication_controllers.get("big", ns)
                if current.status.replicas == replicas:  # type: ignore[attr-defined]
                    return time.monotonic()
                await asyncio.sleep(0.05)

        status_at = await asyncio.wait_for(status(), DEADLINE)
        # The controller's SuccessfulCreate Events share the apiserver and store with
        # its pods (written one at a time in the background; none aggregated, as each
        # names its pod): how many were there when the status caught up.
        events = len((await self.client.events.list(ns)).items)  # type: ignore[attr-defined]
        cpu = after.since(before)
        window = last - sent
        manager_cpu = cpu.get("controller_manager_cpu_s")
        result: dict[str, Any] = {
            "replicas": replicas, "pods_seen": len(counter.seen_at),
            "pods_per_s": round(replicas / window, 1), "window_s": round(window, 2),
            "first_pod_ms": round((first - sent) * 1000, 1),
            "status_s": round(status_at - sent, 2), "events_by_status_s": events,
            "throughput": _throughput(list(counter.seen_at.values())),
            "cpu": {**cpu, "controller_manager_ms_per_pod":
                    round(manager_cpu / replicas * 1000, 2) if manager_cpu else None,
                    "controller_manager_memory": rss_mib(self.manager.pid)
                    if self.manager.pid else {}},
        }
        profiles = {label: await r.finish() for label, r in recordings.items()}
        if profiles:
            result["profiles"] = profiles
        progress(f"replication: {result['pods_per_s']} pods/s ({window:.2f}s), status after "
                 f"{result['status_s']}s")
        return result

    async def ceiling(self) -> dict[str, Any]:
        """The same number of pods created by this process: the apiserver's own pace."""
        count = self.settings.replicas
        ns = await self.new_namespace("ceiling")
        labels = {"app": "ceiling"}
        progress(f"ceiling: {count} pods created from here, "
                 f"{self.settings.setup_concurrency} in flight")
        before = CpuSample.take(self.pids())
        started = time.monotonic()
        await gather_limited([self.client.pods.create(pod(f"p-{i:05d}", ns, labels))
                              for i in range(count)], self.settings.setup_concurrency)
        seconds = time.monotonic() - started
        after = CpuSample.take(self.pids())
        return {"pods": count, "in_flight": self.settings.setup_concurrency,
                "pods_per_s": round(count / seconds, 1), "seconds": round(seconds, 2),
                "cpu": after.since(before)}

    # -------------------------------------------------------------- endpoints

    async def endpoints(self) -> dict[str, Any]:
        settings = self.settings
        count = settings.service_pods
        ns = await self.new_namespace("ep")
        labels = {"app": "svc"}
        await self.client.services.create(service("svc", ns, labels))
        progress(f"endpoints: {count} pods bound to {NODE_NAME}, made Ready")
        started = time.monotonic()
        pods: dict[str, core_pb2.Pod] = {}  # by IP: our last written version

        async def make(i: int) -> None:
            ip = pod_ip(i)
            created = await self.client.pods.create(pod(f"p-{i:05d}", ns, labels,
                                                        node=NODE_NAME))
            set_ready(created, ip, True)  # type: ignore[arg-type]
            pods[ip] = await self.client.pods.update_status(created)  # type: ignore[assignment]

        await gather_limited([make(i) for i in range(count)], settings.setup_concurrency)
        watch = EndpointsWatch()
        listed = await self.client.endpoints.list(ns, field_selector="metadata.name=svc")
        for found in listed.items:  # type: ignore[attr-defined]
            watch.apply(found)
        ready_fifo: deque[str] = deque()  # pods Ready and seen so, oldest first
        not_ready_fifo: deque[str] = deque()  # pods not Ready and seen so, oldest first

        def seen(change: Change) -> None:
            (ready_fifo if change.ready else not_ready_fifo).append(change.ip)

        async with watching(watch.run(self.client, ns, "svc",
                                      listed.metadata.resource_version, seen),  # type: ignore[attr-defined]
                            "endpoints watch") as watcher:
            while len(watch.ready) < count:
                watch.changed.clear()
                if len(watch.ready) >= count:
                    break
                await wait_event(watch.changed, watcher,
                                 DEADLINE - (time.monotonic() - started),
                                 f"the Endpoints listing {count} addresses")
            setup_s = time.monotonic() - started
            progress(f"endpoints: {count} addresses after {setup_s:.1f}s; flipping "
                     f"{settings.flip_rate:g}/s for {settings.flip_duration:g}s")
            ready_fifo.extend(sorted(watch.ready))
            changes, conflicts, flips = [], [0], []
            before = CpuSample.take(self.pids())

            async def flip(ip: str, ready: bool) -> None:
                change = Change(ip, ready, time.monotonic())
                watch.pending[ip] = change
                changes.append(change)
                updated = core_pb2.Pod()
                updated.CopyFrom(pods[ip])
                set_ready(updated, ip, ready)
                while True:
                    try:
                        pods[ip] = await self.client.pods.update_status(updated)  # type: ignore[assignment]
                        break
                    except errors.Conflict:  # someone else wrote the pod: not expected
                        conflicts[0] += 1
                        fresh = await self.client.pods.get(pods[ip].metadata.name, ns)
                        updated.CopyFrom(fresh)
                        set_ready(updated, ip, ready)
                change.acked = time.monotonic()

            total = max(1, round(settings.flip_rate * settings.flip_duration))
            began = time.monotonic()
            for k in range(total):
                delay = began + k / settings.flip_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                # Alternately: a Ready pod goes not Ready, and the longest not-Ready one
                # comes back, so both directions are measured and the set stays balanced.
                if k % 2 and not_ready_fifo:
                    flips.append(asyncio.create_task(flip(not_ready_fifo.popleft(), True)))
                elif ready_fifo:
                    flips.append(asyncio.create_task(flip(ready_fifo.popleft(), False)))
            await asyncio.gather(*flips)
            drain_until = time.monotonic() + LOST_AFTER
            while watch.pending and time.monotonic() < drain_until:
                watch.changed.clear()
                with contextlib.suppress(RuntimeError):
                    await wait_event(watch.changed, watcher, drain_until - time.monotonic(),
                                     "the last changes")
            after = CpuSample.take(self.pids())
        seen_changes = [c for c in changes if not math.isnan(c.seen)]
        from_ack = [max(0.0, c.seen - c.acked) for c in seen_changes]
        early = sum(1 for c in seen_changes if c.seen < c.acked)
        result = {
            "pods": count, "setup_s": round(setup_s, 2),
            "changes": len(changes), "seen": len(seen_changes),
            "lost": len(changes) - len(seen_changes),
            "to_not_ready": sum(1 for c in changes if not c.ready),
            "to_ready": sum(1 for c in changes if c.ready),
            "rate_per_s": round(len(changes) / max(time.monotonic() - began, 1e-9), 1),
            "lag_from_ack": summarize_ms(from_ack),
            "lag_from_send": summarize_ms([c.seen - c.sent for c in seen_changes]),
            "ack": summarize_ms([c.acked - c.sent for c in changes if not math.isnan(c.acked)]),
            "seen_before_ack": early, "conflicts": conflicts[0],
            "endpoints_events": watch.events,
            "cpu": after.since(before),
        }
        progress(f"endpoints: lag from ack p50 {result['lag_from_ack'].get('p50_ms')} ms, "
                 f"p99 {result['lag_from_ack'].get('p99_ms')} ms")
        return result

    # --------------------------------------------------------------- profiles

    async def start_profiles(self, phase: str) -> dict[str, profiling.Recording]:
        directory = self.settings.profile_dir
        if not directory:
            return {}
        targets = {"controller_manager": self.manager.pid,
                   "apiserver": self.servers.apiserver_pid}
        return {label: await profiling.Recording.start(
                    pid=pid, seconds=self.settings.profile_seconds, label=label,
                    output=Path(directory) / f"{phase}-{label}.txt")
                for label, pid in targets.items() if pid}


# ========================================================================= main

METHOD = {
    "cluster": "3 store replicas, 1 apiserver, 1 controller-manager (--leader-elect false), "
               "started here, logging at warning",
    "replication": "pods_per_s = replicas / (last pod ADDED seen on a watch of the namespace "
                   "- the RC's create sent); status_s when status.replicas matched",
    "ceiling": "the same number of pods created by this process, setup_concurrency in "
               "flight: what the apiserver and store take here without a controller",
    "endpoints": "service_pods pods bound to a node name and made Ready by UpdateStatus from "
                 "here; then flip_rate readiness changes a second (alternating directions); "
                 "lag = the Endpoints (watched) showing the change - the UpdateStatus reply "
                 "(lag_from_ack) or send (lag_from_send)",
    "cpu": "cores used in the window per daemon; machine_busy is all CPUs (0-1)",
}


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    """The controller-manager's targets, judged on this run (None: not measured)."""
    rate = results.get("replication", {}).get("pods_per_s")
    p99 = results.get("endpoints", {}).get("lag_from_ack", {}).get("p99_ms")
    lost = results.get("endpoints", {}).get("lost")
    return {
        f"rc_{TARGET_PODS_PER_S:g}_pods_per_s": {
            "value": rate, "target": TARGET_PODS_PER_S,
            "met": None if rate is None else rate >= TARGET_PODS_PER_S,
            "replicas": results.get("replication", {}).get("replicas"),
            "ceiling_pods_per_s": results.get("ceiling", {}).get("pods_per_s")},
        "endpoints_lag_p99_le_1s": {
            "value": p99, "target_ms": TARGET_ENDPOINTS_P99_MS,
            "met": None if p99 is None else p99 <= TARGET_ENDPOINTS_P99_MS and not lost,
            "p50_ms": results.get("endpoints", {}).get("lag_from_ack", {}).get("p50_ms"),
            "lost": lost, "service_pods": results.get("endpoints", {}).get("pods")},
    }


async def run(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "controllers",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                 "python": platform.python_version(), "grpcio": grpc.__version__},
        "settings": asdict(settings), "method": METHOD,
    }
    if settings.profile_dir:
        report["profiled"] = "sampled with py-spy: these figures are not for comparison"
    began = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="skiff-controllers-bench-") as tmp:
        async with fresh_cluster(Path(tmp)) as servers:
            args = ["--leader-elect", "false", "--concurrent-syncs",
                    str(settings.concurrent_syncs)]
            manager = ControllerManager(
                Path(tmp) / "controller-manager", [servers.address], name="bench-cm",
                controllers=None if settings.controllers == "all"
                else settings.controllers.split(","),
                extra_args=args, log_level="warning")
            manager.start()
            try:
                async with Client(servers.address, retry_deadline=60.0) as client:
                    bench = Bench(servers, manager, settings, client)
                    results["warm_up_s"] = round(await bench.warm_up(), 2)
                    progress(f"controller-manager ready after {results['warm_up_s']}s")
                    results["replication"] = await bench.replication()
                    if settings.ceiling:
                        results["ceiling"] = await bench.ceiling()
                    if settings.service_pods:
                        results["endpoints"] = await bench.endpoints()
            except BaseException:
                print(manager.logs(60), file=sys.stderr)
                raise
            finally:
                manager.stop()
    report["results"] = results
    report["targets"] = check_targets(results)
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    return report


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--replicas", type=int, default=defaults.replicas,
                   help="replicas of the RC the replication phase creates")
    p.add_argument("--service-pods", type=int, default=defaults.service_pods,
                   help="pods behind the service of the endpoints phase (0: skip it)")
    p.add_argument("--flip-rate", type=float, default=defaults.flip_rate,
                   help="readiness changes a second")
    p.add_argument("--flip-duration", type=float, default=defaults.flip_duration,
                   help="seconds of readiness changes")
    p.add_argument("--setup-concurrency", type=int, default=defaults.setup_concurrency,
                   help="requests in flight while making pods from here")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                   help="skip creating as many pods from here for comparison")
    p.add_argument("--controllers", default=defaults.controllers,
                   help="the controller-manager's --controllers (all: every one)")
    p.add_argument("--concurrent-syncs", type=int, default=defaults.concurrent_syncs)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=defaults.loop)
    p.add_argument("--profile", dest="profile_dir", default=None,
                   help="py-spy the controller-manager and apiserver, folded stacks here")
    p.add_argument("--profile-seconds", type=float, default=defaults.profile_seconds)
    p.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.replicas < 1 or args.service_pods < 0 or args.flip_rate <= 0:
        p.error("--replicas must be at least 1, --service-pods at least 0, "
                "--flip-rate positive")
    if args.profile_dir and not profiling.available():
        p.error("--profile: py-spy is not installed")
    settings = Settings(**{name: getattr(args, name) for name in asdict(defaults)})
    return args, settings


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)
    configure("bench-controllers", "warning")

    stop_on_sigterm()
    report = run_loop(run(settings), settings.loop)
    emit(report, args.output)


if __name__ == "__main__":
    main()
