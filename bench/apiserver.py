"""Benchmark Skiff's apiserver through its gRPC API on pods, and print JSON.

    python bench/apiserver.py --start                   # 3 store replicas + 1 apiserver
    python bench/apiserver.py --server 127.0.0.1:6443   # a running apiserver
    python bench/apiserver.py --start --phases list --output out.json

What is measured, all through real gRPC with grpc.aio clients on Pods:

1. ``verbs``: Create, Get, Update and List, each in turn with ``--clients`` requests in
   flight (closed loop) for ``--duration`` seconds: latency mean/p50/p99/max and ops/s.
   Get and Update pick pods at random among ``--pool`` pods made beforehand (Get is a
   consistent read; Update sends no resource_version, so the server reads and retries:
   Kubernetes' GuaranteedUpdate); List is a consistent List of a namespace holding
   ``--list-pods`` pods.
2. ``mixed``: mutations at a fixed open-loop rate (``--mixed-rate`` writes/s: each pod is
   created, updated ``--mixed-update-after`` s later and deleted ``--mixed-delete-after``
   s after its creation, so the three verbs come in equal parts): the mutating latency
   p99 over a window where the rate is steady.
3. ``list``: ``--big-list`` pods are created (concurrently) in one namespace, then that
   namespace is listed ``--list-runs`` times with resource_version "0" (served from the
   watch cache) and with "" (a consistent read: the cache once it has caught up with
   the store's current revision); time to the last byte decoded by the client.
4. ``watch``: ``--watchers`` Watch streams on one namespace, spread over the workers,
   each from the same current resource version; a writer creates and updates pods at
   ``--watch-rate`` per second, each carrying its sequence number in an annotation. Lag
   is measured from each write's send and from its acknowledgement to each watcher's
   receipt of its event; events missing and duplicated are counted per watcher.

The load comes from ``--workers`` client processes (multiprocessing, spawn), each with
uvloop and ``--channels`` channels (connections) to the apiserver, clients spread over
them round-robin. Workers start on a shared monotonic deadline (CLOCK_MONOTONIC is
system-wide); a ``--warmup`` precedes every closed-loop window and an operation counts
when it completes inside the window. The statistics and CPU accounting are
``bench/store.py``'s (imported from it).

Every load phase reports CPU use during its window, in cores: the apiserver's, the
store replicas' (both only when this program started them), the client workers', and
the whole machine's. On a small machine everything shares the same cores: a saturated
machine means a figure is bounded by the host, not the apiserver alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time
import traceback
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, also in workers

import profiling
from report import emit, stop_on_sigterm
from store import (
    Control,
    CpuSample,
    WorkerPool,
    progress,
    sleep_until,
    split,
    summarize_ms,
)

from skiff.api.kinds import lookup
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.testing.processes import APIServer, StoreCluster

PODS = lookup("pods")
NAMESPACES = lookup("namespaces")
#: A request that takes longer than this has failed (counted by its status code).
RPC_TIMEOUT = 10.0
#: How long workers get to connect before a load phase starts.
START_DELAY = 1.0
#: A list of ten thousand pods is several megabytes.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SEQ = "bench.skiff.io/seq"
#: How long watchers may take, after the last write, to receive every event.
WATCH_DRAIN_S = 20.0
PHASE_NAMES = ("verbs", "mixed", "list", "watch")


# ============================================================================ settings


@dataclass(frozen=True)
class Settings:
    """The scale knobs (see ``--help``); the defaults run in about three minutes."""

    workers: int = 2
    channels: int = 4
    clients: int = 50
    duration: float = 6.0
    warmup: float = 1.0
    pool: int = 1000
    list_pods: int = 100
    populate_in_flight: int = 64
    mixed_rate: float = 200.0
    mixed_duration: float = 10.0
    mixed_update_after: float = 1.0
    mixed_delete_after: float = 2.0
    big_list: int = 10_000
    list_runs: int = 5
    watchers: int = 500
    #: 10 writes/s to 500 watchers is 5,000 events/s fanned out (what an informer
    #: must follow). On 2 cores 20/s still holds the target, at its edge, and 30/s
    #: saturates the machine: each event costs the apiserver ~55 us per stream in
    #: gRPC's send path, and the clients as much again to receive.
    watch_rate: float = 10.0
    watch_duration: float = 10.0
    watch_pool: int = 50
    #: Which phases run (comma-separated); all of them by default.
    phases: str = ",".join(PHASE_NAMES)


# ========================================================================== objects


#: What the DefaultTolerationSeconds admission gives every pod. The pods here carry them
#: from the start, as a client that read a pod back would: an update that left them out
#: would be refused (the server validates an update before admission could re-add them).
DEFAULT_TOLERATIONS = [
    core_pb2.Toleration(key=key, operator="Exists", effect="NoExecute", toleration_seconds=300)
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]


def make_pod(namespace: str, name: str, *, group: int = 0,
             annotations: dict[str, str] | None = None) -> core_pb2.Pod:
    """A typical small pod (one container, a port, requests): about 450 bytes stored."""
    return core_pb2.Pod(
        api_version="v1", kind="Pod",
        metadata=meta_pb2.ObjectMeta(
            name=name, namespace=namespace,
            labels={"app": "bench", "group": f"g{group % 100}"},
            annotations=annotations or {}),
        spec=core_pb2.PodSpec(containers=[core_pb2.Container(
            name="app", image="busybox:1.36", command=["sleep", "3600"],
            ports=[core_pb2.ContainerPort(name="http", container_port=8080)],
            resources=core_pb2.ResourceRequirements(
                requests={"cpu": "100m", "memory": "64Mi"}))],
            tolerations=DEFAULT_TOLERATIONS))


def pool_name(i: int) -> str:
    return f"pool-{i:05d}"


# ================================================================ client side (workers)


def open_channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` channels to ``address``, each its own connection."""
    return [grpc.aio.insecure_channel(address, options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", k),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]) for k in range(count)]


async def connect(channels: Sequence[grpc.aio.Channel], timeout: float = 10.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), timeout)


async def close(channels: Sequence[grpc.aio.Channel]) -> None:
    await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


Verb = Callable[[int], Awaitable[str]]


def make_verb(name: str, stubs: Sequence[Any], p: dict[str, Any], rng: random.Random) -> Verb:
    """One request of verb ``name`` by client ``i``; returns the outcome's name."""
    counter = iter(range(sys.maxsize))

    async def create(i: int) -> str:
        pod = make_pod(p["create_ns"], f"c-{p['seed']}-{i}-{next(counter)}", group=i)
        await stubs[i % len(stubs)].Create(pod, timeout=RPC_TIMEOUT)
        return "ok"

    async def get(i: int) -> str:
        await stubs[i % len(stubs)].Get(meta_pb2.GetRequest(
            namespace=p["pool_ns"], name=pool_name(rng.randrange(p["pool"]))),
            timeout=RPC_TIMEOUT)
        return "ok"

    async def update(i: int) -> str:
        n = rng.randrange(p["pool"])
        pod = make_pod(p["pool_ns"], pool_name(n), group=n,
                       annotations={"bench.skiff.io/n": str(next(counter))})
        await stubs[i % len(stubs)].Update(pod, timeout=RPC_TIMEOUT)
        return "ok"

    async def list_(i: int) -> str:
        reply = await stubs[i % len(stubs)].List(meta_pb2.ListOptions(
            namespace=p["list_ns"]), timeout=RPC_TIMEOUT)
        return "ok" if len(reply.items) == p["list_pods"] else "wrong_count"

    return {"create": create, "get": get, "update": update, "list": list_}[name]


async def closed_loop(p: dict[str, Any], _ctl: Control) -> dict[str, Any]:
    """Run ``p["client_ids"]`` clients, each one request at a time, until the window ends."""
    channels = open_channels(p["address"], p["channels"])
    await connect(channels)
    verb = make_verb(p["verb"], [PODS.stub(c) for c in channels], p, random.Random(p["seed"]))
    window_start = p["start_at"] + p["warmup"]
    window_end = window_start + p["duration"]
    latencies = array("d")
    in_window: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cpu: list[float] = []

    async def client(index: int) -> None:
        while (started := time.monotonic()) < window_end:
            try:
                outcome = await verb(index)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                await asyncio.sleep(0.01)
                continue
            done = time.monotonic()
            if window_start <= done <= window_end:
                in_window[outcome] += 1
                latencies.append(done - started)

    async def sample_cpu() -> None:
        for at in (window_start, window_end):
            await sleep_until(at)
            cpu.append(time.process_time())

    await sleep_until(p["start_at"])
    await asyncio.gather(sample_cpu(), *(client(i) for i in p["client_ids"]))
    await close(channels)
    return {"latencies": latencies, "in_window": dict(in_window), "errors": dict(errors),
            "cpu_seconds": cpu[1] - cpu[0]}


async def populate(p: dict[str, Any], _ctl: Control) -> dict[str, Any]:
    """Create the pods ``p["indices"]`` of ``p["namespace"]``, ``p["in_flight"]`` at a time."""
    channels = open_channels(p["address"], p["channels"])
    await connect(channels)
    stubs = [PODS.stub(c) for c in channels]
    gate = asyncio.Semaphore(p["in_flight"])
    errors: Counter[str] = Counter()
    cpu_before = time.process_time()

    async def create(n: int) -> None:
        pod = make_pod(p["namespace"], f"{p['prefix']}{n:05d}", group=n,
                       annotations={SEQ: "-2"})
        async with gate:
            for _ in range(5):
                try:
                    await stubs[n % len(stubs)].Create(pod, timeout=RPC_TIMEOUT)
                    return
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                        return  # a retry of one that had gone through
                    errors[e.code().name] += 1
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        return
                    await asyncio.sleep(0.1)

    await asyncio.gather(*(create(n) for n in p["indices"]))
    await close(channels)
    return {"errors": dict(errors), "cpu_seconds": time.process_time() - cpu_before}


async def open_loop(p: dict[str, Any], _ctl: Control) -> dict[str, Any]:
    """Create, update and delete pods on a fixed schedule, whatever the latency.

    Pod i is created at ``i / create_rate`` (from ``start_at``), updated ``update_after``
    and deleted ``delete_after`` seconds later; an operation is measured when it was
    scheduled inside [window_start, window_end). Latency is from the send;
    ``late`` is how far behind its schedule the client sent it.
    """
    channels = open_channels(p["address"], p["channels"])
    await connect(channels)
    stubs = [PODS.stub(c) for c in channels]
    namespace, start = p["namespace"], p["start_at"]
    schedule = sorted(
        (start + i / p["create_rate"] + offset, op, i)
        for i in p["indices"]
        for op, offset in (("create", 0.0), ("update", p["update_after"]),
                           ("delete", p["delete_after"])))
    latencies: dict[str, array[float]] = {op: array("d") for op in ("create", "update",
                                                                      "delete")}
    late = array("d")
    errors: Counter[str] = Counter()
    window_start, window_end = p["window_start"], p["window_end"]
    cpu: list[float] = []

    async def run(at: float, op: str, i: int) -> None:
        name = f"m-{i:06d}"
        stub = stubs[i % len(stubs)]
        sent = time.monotonic()
        try:
            if op == "create":
                await stub.Create(make_pod(namespace, name, group=i), timeout=RPC_TIMEOUT)
            elif op == "update":
                await stub.Update(make_pod(namespace, name, group=i,
                                           annotations={"bench.skiff.io/updated": "1"}),
                                  timeout=RPC_TIMEOUT)
            else:
                await stub.Delete(meta_pb2.DeleteRequest(namespace=namespace, name=name),
                                  timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            errors[f"{op}:{e.code().name}"] += 1
            return
        if window_start <= at < window_end:
            latencies[op].append(time.monotonic() - sent)
            late.append(sent - at)

    async def sample_cpu() -> None:
        for at in (window_start, window_end):
            await sleep_until(at)
            cpu.append(time.process_time())

    sampler = asyncio.create_task(sample_cpu())
    tasks = []
    for at, op, i in schedule:
        await sleep_until(at)
        tasks.append(asyncio.create_task(run(at, op, i)))
    await asyncio.gather(sampler, *tasks)
    await close(channels)
    return {"latencies": {op: list(v) for op, v in latencies.items()}, "late": late,
            "errors": dict(errors), "cpu_seconds": cpu[1] - cpu[0]}


async def watch(p: dict[str, Any], ctl: Control) -> dict[str, Any]:
    """Open watches from ``p["resource_version"]``, wait until each has seen the priming
    event (sequence -1), report ready, then record every event until told to stop.

    What is recorded is (sequence number, receipt time, watcher) per event, for the
    parent to turn into lags; watch streams the server ended early are counted. Told
    to stop with the acknowledged writes' sequence numbers, the watchers wait (up to a
    timeout) until each has seen every one of them: concurrent writes commit in any
    order, so the highest number is no sign that the others arrived.
    """
    channels = open_channels(p["address"], p["channels"])
    await connect(channels)
    stubs = [PODS.stub(c) for c in channels]
    options = meta_pb2.ListOptions(namespace=p["namespace"],
                                   resource_version=p["resource_version"])
    sequence, received_at, owner = array("q"), array("d"), array("q")
    seen: dict[int, set[int]] = {w: set() for w in p["watcher_ids"]}
    primed: set[int] = set()
    all_primed = asyncio.Event()
    acked: set[int] = set()  # the writes acknowledged, once told
    lacking: dict[int, int] = {}  # per watcher, acknowledged writes not seen yet
    caught_up = asyncio.Event()
    ended_early: list[int] = []
    stopping = False
    calls = {w: stubs[w % len(stubs)].Watch(options) for w in p["watcher_ids"]}

    async def follow(w: int, call: Any) -> None:
        try:
            async for event in call:
                now = time.monotonic()
                n = int(event.object.metadata.annotations.get(SEQ, "-2"))
                if n == -1:
                    primed.add(w)
                    if len(primed) == len(calls):
                        all_primed.set()
                    continue
                if n < 0:
                    continue
                sequence.append(n)
                received_at.append(now)
                owner.append(w)
                if n not in seen[w]:
                    seen[w].add(n)
                    if n in acked:
                        lacking[w] -= 1
                        if lacking[w] == 0 and not any(lacking.values()):
                            caught_up.set()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                ended_early.append(w)
            return
        if not stopping:
            ended_early.append(w)  # the server ended the stream

    readers = [asyncio.create_task(follow(w, call), name=f"watch-{w}")
               for w, call in calls.items()]
    ctl.send(("started", {"watchers": len(calls)}))
    _, prime = await ctl.recv()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_primed.wait(), prime["timeout"])
    ctl.send(("ready", {"primed": len(primed)}))
    cpu_before = time.process_time()
    _, stop = await ctl.recv()
    cpu_seconds = time.process_time() - cpu_before  # while the writer wrote
    acked.update(stop["acked"])
    lacking.update({w: len(acked - numbers) for w, numbers in seen.items()})
    if any(lacking.values()):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caught_up.wait(), stop["timeout"])
    stopping = True
    for call in calls.values():
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await close(channels)
    return {"sequence": sequence, "received_at": received_at, "owner": owner,
            "ended_early": len(ended_early), "cpu_seconds": cpu_seconds}


PHASES: dict[str, Callable[[dict[str, Any], Control], Awaitable[dict[str, Any]]]] = {
    "closed_loop": closed_loop, "populate": populate, "open_loop": open_loop, "watch": watch,
}


def worker_main(conn: Any) -> None:
    """A client process: run the phases the parent sends until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    import uvloop

    async def serve() -> None:
        ctl = Control(conn)
        while True:
            try:
                message = await ctl.recv()
            except EOFError:  # the parent is gone
                return
            if message[0] == "exit":
                return
            _, phase, params = message
            try:
                ctl.send(("done", await PHASES[phase](params, ctl)))
            except Exception:
                ctl.send(("error", traceback.format_exc()))

    uvloop.run(serve())

# ============================================================================ servers


@dataclass
class Servers:
    """Where the apiserver is, and the processes to account CPU to (when started here)."""

    address: str
    apiserver: APIServer | None = None
    store: StoreCluster | None = None

    def pids(self) -> list[int | None]:
        """The apiserver's pid, then each store replica's (None when not ours or gone)."""
        if self.apiserver is None or self.store is None:
            return []
        daemons = [self.apiserver.daemon, *(m.daemon for m in self.store.members)]
        return [d.process.pid if d.process is not None and d.alive else None for d in daemons]

    @property
    def apiserver_pid(self) -> int | None:
        pids = self.pids()
        return pids[0] if pids else None


@contextlib.asynccontextmanager
async def started_servers() -> AsyncIterator[Servers]:
    """Three store replicas and one apiserver in a temp dir, healthy; stopped after."""
    with tempfile.TemporaryDirectory(prefix="bench-apiserver-") as tmp:
        store = StoreCluster(Path(tmp) / "store")
        apiserver = APIServer(Path(tmp) / "apiserver", store.endpoints)
        store.start()
        try:
            await store.wait_healthy(timeout=60)
            apiserver.start()
            await apiserver.wait_healthy(timeout=60)
            yield Servers(apiserver.address, apiserver, store)
        except BaseException:
            print(store.logs(30), file=sys.stderr)
            print(apiserver.logs(30), file=sys.stderr)
            raise
        finally:
            apiserver.stop()
            store.stop()


def cpu_report(before: CpuSample, after: CpuSample, client_seconds: float) -> dict[str, Any]:
    """CPU used in a window, in cores (1.0 = one CPU busy throughout), by whom.

    Like ``bench/store.py``'s, with the apiserver and the store replicas apart: the
    samples hold the apiserver's CPU seconds first, then each replica's.
    """
    wall = max(after.at - before.at, 1e-9)
    used = [b - a if a is not None and b is not None else None
            for a, b in zip(before.servers, after.servers, strict=True)]
    report: dict[str, Any] = {"client_cores": round(client_seconds / wall, 2)}
    servers = 0.0
    if used and used[0] is not None:
        report["apiserver_cores"] = round(used[0] / wall, 2)
        servers += used[0]
    replicas = [u for u in used[1:] if u is not None]
    if replicas:
        report["store_cores"] = round(sum(replicas) / wall, 2)
        report["store_cores_max_member"] = round(max(replicas) / wall, 2)
        servers += sum(replicas)
    busy = (after.busy - before.busy) / max(after.total - before.total, 1)
    report["machine_busy"] = round(busy, 3)
    if used:
        cores = busy * (os.cpu_count() or 1)
        report["other_cores"] = round(max(0.0, cores - (client_seconds + servers) / wall), 2)
    return report


def apiserver_ms_per_op(before: CpuSample, after: CpuSample, ops: int) -> float | None:
    """The apiserver's CPU milliseconds per operation in a window (None: not ours)."""
    if not before.servers or before.servers[0] is None or after.servers[0] is None or not ops:
        return None
    return round((after.servers[0] - before.servers[0]) * 1000 / ops, 3)


# ===================================================================== the measures


class Bench:
    """Every measure against one apiserver."""

    def __init__(self, servers: Servers, settings: Settings, pool: WorkerPool, *,
                 profile_dir: Path | None = None) -> None:
        self.servers = servers
        self.address = servers.address
        self.settings = settings
        self.pool = pool
        self.profile_dir = profile_dir
        self.run_id = f"{os.getpid() % 100_000}-{int(time.time()) % 100_000}"
        self.namespaces: list[str] = []

    def ns(self, purpose: str) -> str:
        return f"bench-{self.run_id}-{purpose}"

    def common(self) -> dict[str, Any]:
        return {"address": self.address, "channels": self.settings.channels}

    async def _profile(self, phase: str, seconds: float) -> list[profiling.Recording]:
        pid = self.servers.apiserver_pid
        if self.profile_dir is None or pid is None:
            return []
        return [await profiling.Recording.start(
            pid=pid, seconds=seconds, label="apiserver",
            output=self.profile_dir / f"apiserver-{phase}.txt")]

    @staticmethod
    async def _profiles(recordings: list[profiling.Recording]) -> dict[str, Any]:
        return {r.label: await r.finish() for r in recordings}

    async def run(self) -> dict[str, Any]:
        phases = set(self.settings.phases.split(","))
        result: dict[str, Any] = {"address": self.address,
                                  "started_by_bench": self.servers.apiserver is not None}
        async with grpc.aio.insecure_channel(self.address, options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]) as channel:
            self.channel = channel
            self.pods = PODS.stub(channel)
            try:
                if "verbs" in phases:
                    result["verbs"] = await self.verbs()
                if "mixed" in phases:
                    result["mixed"] = await self.mixed()
                if "list" in phases:
                    result["list"] = await self.big_list()
                if "watch" in phases:
                    result["watch"] = await self.watch()
            finally:
                if self.servers.apiserver is None:
                    await self.clean_up()
        return result

    # ------------------------------------------------------------------ helpers

    async def make_namespace(self, purpose: str) -> str:
        name = self.ns(purpose)
        await NAMESPACES.stub(self.channel).Create(
            NAMESPACES.new(metadata=meta_pb2.ObjectMeta(name=name)), timeout=RPC_TIMEOUT)
        self.namespaces.append(name)
        return name

    async def populate(self, namespace: str, count: int, prefix: str) -> dict[str, Any]:
        """Create ``count`` pods named ``prefix``NNNNN, concurrently from every worker."""
        groups = split(range(count), len(self.pool))
        before = CpuSample.take(self.servers.pids())
        started = time.monotonic()
        replies = await self.pool.run("populate", [
            {**self.common(), "namespace": namespace, "prefix": prefix, "indices": ids,
             "in_flight": self.settings.populate_in_flight} for ids in groups])
        elapsed = time.monotonic() - started
        after = CpuSample.take(self.servers.pids())
        errors = sum((Counter(r["errors"]) for r in replies), Counter())
        out = {"pods": count, "seconds": round(elapsed, 2),
               "creates_per_s": round(count / elapsed, 1),
               "in_flight": self.settings.populate_in_flight * len(groups),
               "errors": dict(errors),
               "cpu": cpu_report(before, after, sum(r["cpu_seconds"] for r in replies))}
        progress("apiserver", f"populated {namespace}: {out}")
        return out

    # ------------------------------------------------------------ 1. the verbs

    async def verbs(self) -> dict[str, Any]:
        s = self.settings
        pool_ns = await self.make_namespace("pool")
        list_ns = await self.make_namespace("list")
        create_ns = await self.make_namespace("create")
        out: dict[str, Any] = {
            "clients": s.clients, "pool_pods": s.pool, "list_pods": s.list_pods,
            "setup": {"pool": await self.populate(pool_ns, s.pool, "pool-"),
                      "list": await self.populate(list_ns, s.list_pods, "list-")}}
        for verb in ("create", "get", "update", "list"):
            out[verb] = await self.closed_loop(verb, pool_ns=pool_ns, list_ns=list_ns,
                                               create_ns=create_ns, pool=s.pool,
                                               list_pods=s.list_pods)
        return out

    async def closed_loop(self, verb: str, **params: Any) -> dict[str, Any]:
        s = self.settings
        groups = split(range(s.clients), len(self.pool))
        start_at = time.monotonic() + START_DELAY
        window_start, window_end = start_at + s.warmup, start_at + s.warmup + s.duration
        self.pool.start("closed_loop", [
            {**self.common(), **params, "verb": verb, "start_at": start_at,
             "warmup": s.warmup, "duration": s.duration, "client_ids": ids, "seed": n}
            for n, ids in enumerate(groups)])

        async def sample() -> tuple[CpuSample, CpuSample, list[profiling.Recording]]:
            await sleep_until(window_start)
            before = CpuSample.take(self.servers.pids())
            recordings = await self._profile(verb, s.duration)
            await sleep_until(window_end)
            return before, CpuSample.take(self.servers.pids()), recordings

        replies, (before, after, recordings) = await asyncio.gather(
            self.pool.gather("done", len(groups)), sample())
        latencies = [x for r in replies for x in r["latencies"]]
        in_window = sum((Counter(r["in_window"]) for r in replies), Counter())
        errors = sum((Counter(r["errors"]) for r in replies), Counter())
        out: dict[str, Any] = {
            "ops_per_s": round(sum(in_window.values()) / s.duration, 1),
            "latency": summarize_ms(latencies),
            "outcomes": dict(in_window), "errors": dict(errors),
            "cpu": cpu_report(before, after, sum(r["cpu_seconds"] for r in replies)),
            "apiserver_cpu_ms_per_op": apiserver_ms_per_op(before, after, len(latencies)),
        }
        if recordings:
            out["profile"] = await self._profiles(recordings)
        progress("apiserver", f"{verb}: {out['ops_per_s']} ops/s, {out['latency']}, "
                              f"errors {out['errors']}, cpu {out['cpu']}")
        return out

    # ------------------------------------------------------ 2. mixed mutations

    async def mixed(self) -> dict[str, Any]:
        s = self.settings
        namespace = await self.make_namespace("mixed")
        create_rate = s.mixed_rate / 3  # each pod: one create, one update, one delete
        lead = s.mixed_delete_after  # from then on, all three verbs run at full rate
        pods = math.ceil((lead + s.mixed_duration) * create_rate)
        start_at = time.monotonic() + START_DELAY
        window_start = start_at + lead
        window_end = window_start + s.mixed_duration
        groups = split(range(pods), len(self.pool))
        self.pool.start("open_loop", [
            {**self.common(), "namespace": namespace, "indices": ids, "start_at": start_at,
             "create_rate": create_rate, "update_after": s.mixed_update_after,
             "delete_after": s.mixed_delete_after, "window_start": window_start,
             "window_end": window_end} for ids in groups])

        async def sample() -> tuple[CpuSample, CpuSample, list[profiling.Recording]]:
            await sleep_until(window_start)
            before = CpuSample.take(self.servers.pids())
            recordings = await self._profile("mixed", s.mixed_duration)
            await sleep_until(window_end)
            return before, CpuSample.take(self.servers.pids()), recordings

        replies, (before, after, recordings) = await asyncio.gather(
            self.pool.gather("done", len(groups)), sample())
        by_op = {op: [x for r in replies for x in r["latencies"][op]]
                 for op in ("create", "update", "delete")}
        mutating = [x for values in by_op.values() for x in values]
        errors = sum((Counter(r["errors"]) for r in replies), Counter())
        out: dict[str, Any] = {
            "rate_per_s": s.mixed_rate, "duration_s": s.mixed_duration,
            "measured_ops_per_s": round(len(mutating) / s.mixed_duration, 1),
            "mutating": summarize_ms(mutating),
            **{op: summarize_ms(values) for op, values in by_op.items()},
            "send_late": summarize_ms([x for r in replies for x in r["late"]]),
            "errors": dict(errors),
            "cpu": cpu_report(before, after, sum(r["cpu_seconds"] for r in replies)),
            "apiserver_cpu_ms_per_op": apiserver_ms_per_op(before, after, len(mutating)),
        }
        if recordings:
            out["profile"] = await self._profiles(recordings)
        progress("apiserver", f"mixed: {out['measured_ops_per_s']} writes/s, "
                              f"{out['mutating']}, errors {out['errors']}, cpu {out['cpu']}")
        return out

    # ------------------------------------------------------------ 3. big list

    async def big_list(self) -> dict[str, Any]:
        s = self.settings
        namespace = await self.make_namespace("big")
        setup = await self.populate(namespace, s.big_list, "big-")
        out: dict[str, Any] = {"pods": s.big_list, "setup": setup}
        # Untimed: a consistent list first, so that the cache has every pod when "0" is
        # timed (it may serve a slightly older state: that is what "0" allows).
        await self.pods.List(meta_pb2.ListOptions(namespace=namespace), timeout=RPC_TIMEOUT)
        for name, version in (("resource_version_0", "0"), ("consistent", "")):
            times, sizes, counts = [], [], []
            before = CpuSample.take(self.servers.pids())
            cpu_before = time.process_time()
            recordings = await self._profile(f"list-{name}", 3)
            for _ in range(s.list_runs):
                started = time.monotonic()
                reply = await self.pods.List(meta_pb2.ListOptions(
                    namespace=namespace, resource_version=version), timeout=RPC_TIMEOUT)
                times.append(time.monotonic() - started)
                counts.append(len(reply.items))
                sizes.append(reply.ByteSize())
            after = CpuSample.take(self.servers.pids())
            out[name] = {"runs": len(times), **summarize_ms(times),
                         "items": counts[-1], "all_complete": all(c == s.big_list
                                                                  for c in counts),
                         "bytes": sizes[-1],
                         "cpu": cpu_report(before, after, time.process_time() - cpu_before)}
            if recordings:
                out[name]["profile"] = await self._profiles(recordings)
            progress("apiserver", f"list {s.big_list} pods ({name}): {out[name]}")
        return out

    # --------------------------------------------------------------- 4. watch

    async def watch(self) -> dict[str, Any]:
        s = self.settings
        namespace = await self.make_namespace("watch")
        await self.populate(namespace, s.watch_pool, "w-")
        listed = await self.pods.List(meta_pb2.ListOptions(namespace=namespace),
                                      timeout=RPC_TIMEOUT)
        version = listed.metadata.resource_version
        groups = split(range(s.watchers), len(self.pool))
        self.pool.start("watch", [{**self.common(), "namespace": namespace,
                                   "resource_version": version, "watcher_ids": ids}
                                  for ids in groups])
        await self.pool.gather("started", len(groups))
        count = max(2, round(s.watch_rate * s.watch_duration))
        sent_at = array("d", [math.nan]) * count
        acked_at = array("d", [math.nan]) * count
        errors: Counter[str] = Counter()

        async def write(n: int) -> None:
            """Sequence n: even ones create a pod, odd ones update a pool pod."""
            annotations = {SEQ: str(n)}
            if n >= 0:
                sent_at[n] = time.monotonic()
            try:
                if n >= 0 and n % 2 == 0:
                    await self.pods.Create(make_pod(namespace, f"n-{n:06d}",
                                                    annotations=annotations),
                                           timeout=RPC_TIMEOUT)
                else:
                    await self.pods.Update(make_pod(namespace, f"w-{(n // 2) % s.watch_pool:05d}",
                                                    annotations=annotations),
                                           timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                return
            if n >= 0:
                acked_at[n] = time.monotonic()

        # Prime: every watcher has its stream open and has seen one event.
        primed_at = time.monotonic()
        await write(-1)
        self.pool.send(("prime", {"timeout": 30.0}), len(groups))
        ready = await self.pool.gather("ready", len(groups))
        primed = sum(r["primed"] for r in ready)
        prime_s = time.monotonic() - primed_at
        progress("apiserver", f"watch: {primed}/{s.watchers} watchers primed in "
                              f"{prime_s:.2f}s")
        before = CpuSample.take(self.servers.pids())
        recordings = await self._profile("watch", s.watch_duration)
        writes = []
        began = time.monotonic()
        for n in range(count):  # open loop: a steady rate whatever the latency
            await sleep_until(began + n / s.watch_rate)
            writes.append(asyncio.create_task(write(n)))
        await asyncio.gather(*writes)
        after = CpuSample.take(self.servers.pids())
        acked = [n for n in range(count) if not math.isnan(acked_at[n])]
        self.pool.send(("stop", {"acked": acked, "timeout": WATCH_DRAIN_S}), len(groups))
        replies = await self.pool.gather("done", len(groups))
        drained = CpuSample.take(self.servers.pids())  # every event delivered (or given up)
        from_send, from_ack = [], []
        seen: set[tuple[int, int]] = set()
        duplicates = unacknowledged = 0
        for r in replies:
            for n, at, w in zip(r["sequence"], r["received_at"], r["owner"], strict=True):
                if (w, n) in seen:
                    duplicates += 1
                    continue
                seen.add((w, n))
                from_send.append(at - sent_at[n])
                if math.isnan(acked_at[n]):
                    unacknowledged += 1  # a write whose answer timed out, yet applied
                else:
                    from_ack.append(at - acked_at[n])
        expected = len(acked) * s.watchers
        out: dict[str, Any] = {
            "watchers": s.watchers, "workers": len(groups),
            "connections": len(groups) * s.channels, "primed": primed,
            "prime_s": round(prime_s, 2), "rate_per_s": s.watch_rate, "writes": count,
            "write_errors": dict(errors), "events_expected": expected,
            "events_received": len(seen), "events_missing": expected - len(from_ack),
            "events_duplicated": duplicates,
            "events_of_unacknowledged_writes": unacknowledged,
            "streams_ended_by_server": sum(r["ended_early"] for r in replies),
            "lag_from_send": summarize_ms(from_send),
            "lag_from_ack": summarize_ms(from_ack),
            "events_before_ack": sum(1 for x in from_ack if x < 0),
            "cpu": cpu_report(before, after, sum(r["cpu_seconds"] for r in replies)),
            # From the first write until every watcher had every event: the whole cost.
            "apiserver_cpu_us_per_event": (
                None if (ms := apiserver_ms_per_op(before, drained, len(seen))) is None
                else round(ms * 1000, 1)),
        }
        if recordings:
            out["profile"] = await self._profiles(recordings)
        progress("apiserver", f"watch: from ack {out['lag_from_ack']}, missing "
                              f"{out['events_missing']}, duplicated {duplicates}, "
                              f"cpu {out['cpu']}")
        return out

    # --------------------------------------------------------------- clean up

    async def clean_up(self) -> None:
        """Delete this run's namespaces' pods and the namespaces (a server we did not
        start: there may be no namespace controller to empty them)."""
        gate = asyncio.Semaphore(64)

        async def delete(namespace: str, name: str) -> None:
            async with gate:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.pods.Delete(meta_pb2.DeleteRequest(
                        namespace=namespace, name=name, grace_period_seconds=0),
                        timeout=RPC_TIMEOUT)

        for namespace in self.namespaces:
            listed = await self.pods.List(meta_pb2.ListOptions(namespace=namespace,
                                                               resource_version="0"),
                                          timeout=RPC_TIMEOUT)
            await asyncio.gather(*(delete(namespace, p.metadata.name) for p in listed.items))
            with contextlib.suppress(grpc.aio.AioRpcError):
                await NAMESPACES.stub(self.channel).Delete(
                    meta_pb2.DeleteRequest(name=namespace), timeout=RPC_TIMEOUT)


# ============================================================================ report


def dig(result: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """The apiserver's targets, judged on this run (None: not measured)."""

    def judge(value: Any, ok: Callable[[Any], bool], **extra: Any) -> dict[str, Any]:
        return {"value": value, "met": None if value is None else ok(value), **extra}

    missing = dig(result, "watch", "events_missing")
    duplicated = dig(result, "watch", "events_duplicated")
    return {
        "mixed_mutating_p99_le_50ms": judge(
            dig(result, "mixed", "mutating", "p99_ms"), lambda v: v <= 50.0,
            note="creates+updates+deletes at mixed.rate_per_s, open loop, from the send"),
        "list_10k_from_cache_le_300ms": judge(
            dig(result, "list", "resource_version_0", "p50_ms"), lambda v: v <= 300.0,
            note="List resource_version=0 of list.pods pods, p50 of list.runs, to the "
                 "client's decoded reply",
            max_ms=dig(result, "list", "resource_version_0", "max_ms")),
        "watch_lag_p99_le_100ms": judge(
            dig(result, "watch", "lag_from_ack", "p99_ms"), lambda v: v <= 100.0,
            note="from the write's acknowledgement to each watcher's receipt",
            lag_from_send_p99_ms=dig(result, "watch", "lag_from_send", "p99_ms")),
        "watch_no_event_lost_or_repeated": judge(
            None if missing is None else {"missing": missing, "duplicated": duplicated},
            lambda v: v["missing"] == 0 and v["duplicated"] == 0,
            note=f"missing: events of acknowledged writes not received {WATCH_DRAIN_S:g} s "
                 f"after the last write was answered (lost, or that late)"),
    }


#: How to read the figures; printed into every report.
METHOD = {
    "client": "grpc.aio with uvloop in --workers spawned processes, --channels connections "
              "each; clients are spread round-robin over the connections",
    "verbs": "closed loop: each client sends its next request when the last one answers; an "
             "operation counts when it completes inside the window, after --warmup; "
             "ops_per_s = those / duration. Get: consistent read of a random pool pod; "
             "Update: a random pool pod without resource_version (the server reads and "
             "retries); List: consistent List of a namespace of list_pods pods",
    "mixed": "open loop: pod i is created at i/(rate/3) s, updated and deleted later, so "
             "creates, updates and deletes each run at rate/3 in the window; latency from "
             "the send; send_late is the client's lag behind the schedule",
    "list": "the namespace is listed list.runs times after each other by one client; time "
            "from the call to the decoded reply",
    "watch": "watchers each have their own Watch stream from the same resource version; a "
             "writer creates and updates pods at rate_per_s (open loop), each carrying its "
             "sequence number in an annotation; lag = receipt minus the write's send or "
             "acknowledgement, per watcher and event",
    "cpu": "cores used in the window: apiserver_cores, store_cores (all replicas; only when "
           "the bench started the servers), client_cores (our workers), machine_busy (all "
           "CPUs, 0-1), other_cores (whatever else ran)",
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="host:port of a running apiserver")
    where.add_argument("--start", action="store_true",
                       help="start 3 store replicas and an apiserver in a temp dir")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy the apiserver (when started here) during each load phase; "
                        "folded stacks go to DIR, a summary into the JSON (sampling slows "
                        "it: do not compare these figures)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="client processes generating load")
    p.add_argument("--channels", type=int, default=defaults.channels,
                   help="gRPC connections per worker")
    p.add_argument("--clients", type=int, default=defaults.clients,
                   help="requests in flight in the closed-loop verb phases")
    p.add_argument("--duration", type=float, default=defaults.duration,
                   help="seconds measured per verb")
    p.add_argument("--warmup", type=float, default=defaults.warmup,
                   help="seconds of load before each measured window")
    p.add_argument("--pool", type=int, default=defaults.pool,
                   help="pods made first, which Get and Update pick from")
    p.add_argument("--list-pods", type=int, default=defaults.list_pods,
                   help="pods in the namespace the List verb lists")
    p.add_argument("--populate-in-flight", type=int, default=defaults.populate_in_flight,
                   help="creates in flight per worker when making pods")
    p.add_argument("--mixed-rate", type=float, default=defaults.mixed_rate,
                   help="writes per second (creates+updates+deletes)")
    p.add_argument("--mixed-duration", type=float, default=defaults.mixed_duration)
    p.add_argument("--mixed-update-after", type=float, default=defaults.mixed_update_after)
    p.add_argument("--mixed-delete-after", type=float, default=defaults.mixed_delete_after)
    p.add_argument("--big-list", type=int, default=defaults.big_list,
                   help="pods in the namespace of the big List")
    p.add_argument("--list-runs", type=int, default=defaults.list_runs)
    p.add_argument("--watchers", type=int, default=defaults.watchers)
    p.add_argument("--watch-rate", type=float, default=defaults.watch_rate,
                   help="writes per second while watched")
    p.add_argument("--watch-duration", type=float, default=defaults.watch_duration)
    p.add_argument("--watch-pool", type=int, default=defaults.watch_pool,
                   help="pods the watch writer updates")
    p.add_argument("--phases", default=defaults.phases,
                   help=f"comma-separated subset of {','.join(PHASE_NAMES)}")
    args = p.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASE_NAMES)
    if unknown:
        p.error(f"--phases: unknown {', '.join(sorted(unknown))}")
    if args.profile and not profiling.available():
        p.error("--profile: py-spy is not installed")
    settings = Settings(**{name: getattr(args, name) for name in asdict(defaults)})
    return args, settings


def host_facts() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(), "grpcio": grpc.__version__,
            "platform": platform.platform()}


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "apiserver", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_facts(), "settings": asdict(settings), "method": METHOD,
    }
    if args.profile:
        report["profiled"] = ("the apiserver was sampled with py-spy: these figures are "
                              "slowed by it and are not for comparison")
    pool = WorkerPool(settings.workers, target=worker_main)
    began = time.monotonic()
    try:
        if args.server:
            result = await Bench(Servers(args.server), settings, pool).run()
        else:
            async with started_servers() as servers:
                progress("apiserver", f"healthy at {servers.address}")
                result = await Bench(servers, settings, pool,
                                     profile_dir=args.profile).run()
    finally:
        pool.close()
    report["results"] = result
    report["targets"] = check_targets(result)
    report["seconds"] = round(time.monotonic() - began, 1)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)

    stop_on_sigterm()
    report = asyncio.run(run(args, settings))
    emit(report, args.output)


if __name__ == "__main__":
    main()
