"""Benchmark an etcd v3 endpoint list (Skiff's store or a real etcd) and print JSON.

    python bench/store.py --endpoints 127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579
    python bench/store.py --start skiff     # our three replicas, in a temp dir
    python bench/store.py --start etcd      # three real etcd members, in a temp dir
    python bench/store.py --start both      # one after the other, plus ratios ours/etcd
    python bench/store.py --start all       # both, and the put load against do-nothing
                                            # grpc.aio servers (bench/grpc_floor.py)

What is measured, all through real gRPC with grpc.aio clients:

1. ``sequential_put``: one client, one Put at a time, to the leader and to a follower.
2. ``put_throughput``: ``--put-clients`` requests in flight (closed loop), fixed duration.
3. ``range_linearizable`` / ``range_serializable``: single-key Range, ``--range-clients``
   in flight.
4. ``txn_cas``: compare-and-swap increments on ``--counters`` counters (compare
   mod_revision, put value+1, else read the key back); conflicts counted, and the sum of
   the counters checked against the increments acknowledged.
5. ``watch``: ``--watchers`` Watch streams on one prefix; a writer puts at
   ``--watch-rate``; lag is measured from each Put's send and from its acknowledgement to
   each watcher's receipt of the event.
6. ``failover``: SIGKILL the leader (found with Maintenance.Status) while puts go to the
   survivors every ``--failover-interval-ms``; the time from the kill to the first
   acknowledged Put sent after it. Only when this program started the cluster.

The load comes from ``--workers`` client processes (multiprocessing, spawn), each with
one event loop and ``--conns-per-endpoint`` channels to every endpoint; client *i* uses
endpoint *i mod n*. Exactly the same client code runs against both stores. Workers start
on a shared monotonic deadline (CLOCK_MONOTONIC is system-wide, so times taken in
different processes compare); a ``--warmup`` precedes every measured window, and an
operation counts when it completes inside the window.

So that a reader can tell who was the bottleneck, every load phase reports CPU use
during its window: the client processes', the server processes' (when started here),
and the whole machine's. A side whose clients, or whose machine, are saturated is
measured as client-bound: its figure is a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, also in workers

import profiling
from grpc_floor import FloorCluster
from report import emit, stop_on_sigterm

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc
from skiff.testing.etcd import DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS, EtcdCluster
from skiff.testing.processes import StoreCluster

KV = rpc_pb2
#: A request that takes longer than this has failed (counted by its status code).
RPC_TIMEOUT = 10.0
#: How long workers get to connect before a load phase starts.
START_DELAY = 1.0


# ============================================================================ settings


PHASE_NAMES = ("sequential_put", "put_throughput", "range", "txn_cas", "watch", "failover")


@dataclass(frozen=True)
class Settings:
    """The scale knobs (see ``--help``); the defaults finish ``--start both`` in minutes."""

    workers: int = 2
    conns_per_endpoint: int = 1
    loop: str = "uvloop"
    seq_puts: int = 1000
    put_clients: int = 256
    range_clients: int = 64
    txn_clients: int = 64
    counters: int = 16
    duration: float = 8.0
    warmup: float = 1.0
    value_size: int = 256
    keyspace: int = 10_000
    range_keys: int = 1000
    watchers: int = 100
    watch_rate: float = 100.0
    watch_duration: float = 10.0
    failover_runs: int = 3
    failover_interval_ms: float = 5.0
    failover_put_timeout: float = 5.0
    etcd_heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    etcd_election_ms: int = DEFAULT_ELECTION_MS
    #: Which phases run (comma-separated); all of them by default.
    phases: str = ",".join(PHASE_NAMES)
    #: Start skiff's replicas with --unsafe-no-fsync (etcd 3.4 has no such flag: it
    #: always syncs, so only a syncing skiff compares like for like).
    unsafe_no_fsync: bool = False


# ========================================================================= statistics


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of an ascending, non-empty sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, mean, p50, p90, p99 and max of durations in seconds, reported in ms."""
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    ms = 1000.0
    return {
        "n": len(ordered),
        "mean_ms": round(sum(ordered) / len(ordered) * ms, 3),
        "p50_ms": round(percentile(ordered, 0.50) * ms, 3),
        "p90_ms": round(percentile(ordered, 0.90) * ms, 3),
        "p99_ms": round(percentile(ordered, 0.99) * ms, 3),
        "max_ms": round(ordered[-1] * ms, 3),
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


# ============================================================================== CPU use

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid`` (all its threads), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True)
class CpuSample:
    at: float
    servers: tuple[float | None, ...]
    busy: int
    total: int

    @classmethod
    def take(cls, pids: Sequence[int | None]) -> CpuSample:
        busy, total = machine_cpu_ticks()
        return cls(time.monotonic(), tuple(process_cpu_seconds(p) if p else None for p in pids),
                   busy, total)


def cpu_report(before: CpuSample, after: CpuSample, client_seconds: float) -> dict[str, Any]:
    """CPU used in a window, in cores (1.0 = one CPU busy throughout)."""
    wall = max(after.at - before.at, 1e-9)
    report: dict[str, Any] = {"client_cores": round(client_seconds / wall, 2)}
    servers = [b2 - b1 for b1, b2 in zip(before.servers, after.servers, strict=True)
               if b1 is not None and b2 is not None]
    if servers:
        report["server_cores"] = round(sum(servers) / wall, 2)
        report["server_cores_max_member"] = round(max(servers) / wall, 2)
    busy = (after.busy - before.busy) / max(after.total - before.total, 1)
    report["machine_busy"] = round(busy, 3)
    # What neither our clients nor the servers used: anything else running on the host.
    cores = busy * (os.cpu_count() or 1)
    report["other_cores"] = round(max(0.0, cores - client_seconds / wall
                                      - sum(servers) / wall), 2) if servers else None
    return report


# ================================================================ client side (workers)


def open_channels(endpoints: Sequence[str], per_endpoint: int) -> list[grpc.aio.Channel]:
    """Channels in endpoint order, ``per_endpoint`` each, every one its own connection."""
    return [grpc.aio.insecure_channel(e, options=[("grpc.use_local_subchannel_pool", 1),
                                                  ("grpc.channel_id", k)])
            for k in range(per_endpoint) for e in endpoints]


async def connect(channels: Sequence[grpc.aio.Channel], timeout: float = 10.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), timeout)


async def close(channels: Sequence[grpc.aio.Channel]) -> None:
    await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Workload(Protocol):
    """One kind of request: ``await workload(client)`` performs one and names its outcome."""

    async def __call__(self, client: int) -> str: ...


class PutWorkload:
    def __init__(self, stubs: Sequence[rpc_pb2_grpc.KVStub], p: dict[str, Any],
                 rng: random.Random) -> None:
        self._stubs, self._rng = stubs, rng
        self._prefix, self._keyspace = p["prefix"], p["keyspace"]
        self._value = rng.randbytes(p["value_size"])

    async def __call__(self, client: int) -> str:
        key = b"%s%08d" % (self._prefix, self._rng.randrange(self._keyspace))
        await self._stubs[client % len(self._stubs)].Put(
            KV.PutRequest(key=key, value=self._value), timeout=RPC_TIMEOUT)
        return "ok"


class RangeWorkload:
    def __init__(self, stubs: Sequence[rpc_pb2_grpc.KVStub], p: dict[str, Any],
                 rng: random.Random) -> None:
        self._stubs, self._rng = stubs, rng
        self._prefix, self._keys = p["prefix"], p["keys"]
        self._serializable = p["serializable"]

    async def __call__(self, client: int) -> str:
        key = b"%s%08d" % (self._prefix, self._rng.randrange(self._keys))
        reply = await self._stubs[client % len(self._stubs)].Range(
            KV.RangeRequest(key=key, serializable=self._serializable), timeout=RPC_TIMEOUT)
        return "ok" if len(reply.kvs) == 1 else "missing"


class TxnCasWorkload:
    """Increment a random counter: compare its mod_revision with what this worker last saw.

    The worker's cache of (value, mod_revision) per counter is shared by its clients, as
    an informer's would be; a lost race answers with the key's current state (the
    failure branch reads it), which refreshes the cache.
    """

    def __init__(self, stubs: Sequence[rpc_pb2_grpc.KVStub], p: dict[str, Any],
                 rng: random.Random) -> None:
        self._stubs, self._rng = stubs, rng
        self._keys = [b"%s%04d" % (p["prefix"], i) for i in range(p["counters"])]
        self._cache: dict[bytes, tuple[int, int]] = {}

    async def __call__(self, client: int) -> str:
        stub = self._stubs[client % len(self._stubs)]
        key = self._keys[self._rng.randrange(len(self._keys))]
        if key not in self._cache:
            reply = await stub.Range(KV.RangeRequest(key=key), timeout=RPC_TIMEOUT)
            self._cache[key] = (int(reply.kvs[0].value), reply.kvs[0].mod_revision)
        value, revision = self._cache[key]
        reply = await stub.Txn(KV.TxnRequest(
            compare=[KV.Compare(result=KV.Compare.EQUAL, target=KV.Compare.MOD, key=key,
                                mod_revision=revision)],
            success=[KV.RequestOp(request_put=KV.PutRequest(key=key, value=b"%d" % (value + 1)))],
            failure=[KV.RequestOp(request_range=KV.RangeRequest(key=key))],
        ), timeout=RPC_TIMEOUT)
        if reply.succeeded:
            # A transaction bumps the revision once: the header's is the put's mod_revision.
            self._cache[key] = (value + 1, reply.header.revision)
            return "ok"
        kv = reply.responses[0].response_range.kvs[0]
        self._cache[key] = (int(kv.value), kv.mod_revision)
        return "conflict"


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "put": PutWorkload, "range": RangeWorkload, "txn_cas": TxnCasWorkload,
}


class Control:
    """A worker's end of its pipe, usable from its event loop."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def send(self, message: Any) -> None:
        self._conn.send(message)

    async def recv(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._conn.recv)


async def closed_loop(p: dict[str, Any], _ctl: Control) -> dict[str, Any]:
    """Run ``p["clients"]`` clients, each one request at a time, until the window ends."""
    channels = open_channels(p["endpoints"], p["conns_per_endpoint"])
    await connect(channels)
    stubs = [rpc_pb2_grpc.KVStub(c) for c in channels]
    workload = WORKLOADS[p["workload"]](stubs, p, random.Random(p["seed"]))
    window_start = p["start_at"] + p["warmup"]
    window_end = window_start + p["duration"]
    latencies = array("d")
    in_window: Counter[str] = Counter()
    total: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cpu: list[float] = []

    async def client(index: int) -> None:
        while (started := time.monotonic()) < window_end:
            try:
                outcome = await workload(index)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                await asyncio.sleep(0.01)
                continue
            done = time.monotonic()
            total[outcome] += 1
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
    return {"latencies": latencies, "in_window": dict(in_window), "total": dict(total),
            "errors": dict(errors), "cpu_seconds": cpu[1] - cpu[0]}


async def sequential(p: dict[str, Any], _ctl: Control) -> dict[str, Any]:
    """One client, one Put at a time, to one endpoint."""
    channels = open_channels([p["endpoint"]], 1)
    await connect(channels)
    stub = rpc_pb2_grpc.KVStub(channels[0])
    rng = random.Random(p["seed"])
    value = rng.randbytes(p["value_size"])
    latencies = array("d")
    for i in range(p["warmup"] + p["count"]):
        key = b"%s%08d" % (p["prefix"], rng.randrange(p["keyspace"]))
        started = time.monotonic()
        await stub.Put(KV.PutRequest(key=key, value=value), timeout=RPC_TIMEOUT)
        if i >= p["warmup"]:
            latencies.append(time.monotonic() - started)
    await close(channels)
    return {"latencies": latencies}


async def watch(p: dict[str, Any], ctl: Control) -> dict[str, Any]:
    """Open watch streams on a prefix, report ready, record every event until told to stop.

    An event's value starts with the writer's sequence number; what is recorded is
    (sequence number, receipt time) per event, for the parent to turn into lags.
    """
    channels = open_channels(p["endpoints"], p["conns_per_endpoint"])
    await connect(channels)
    stubs = [rpc_pb2_grpc.WatchStub(c) for c in channels]
    prefix = p["prefix"]
    create = KV.WatchRequest(create_request=KV.WatchCreateRequest(
        key=prefix, range_end=prefix_end(prefix)))
    sequence, received_at, owner = array("q"), array("d"), array("q")
    highest: dict[int, int] = {}
    last = math.inf  # the writer's last sequence number, once told
    caught_up = asyncio.Event()  # every watcher has seen ``last``
    calls = []
    for w in p["watcher_ids"]:
        call = stubs[w % len(stubs)].Watch()
        await call.write(create)
        reply = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
        if reply is grpc.aio.EOF or not reply.created or reply.canceled:
            raise RuntimeError(f"watch {w} was not created: {reply}")
        highest[w] = -1
        calls.append((w, call))

    async def follow(w: int, call: Any) -> None:
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                return
            now = time.monotonic()
            for event in reply.events:
                n = int(event.kv.value[:12])
                sequence.append(n)
                received_at.append(now)
                owner.append(w)
                highest[w] = max(highest[w], n)
            if highest[w] >= last and min(highest.values()) >= last:
                caught_up.set()

    readers = [asyncio.create_task(follow(w, call), name=f"watch-{w}") for w, call in calls]
    ctl.send(("ready", {"watchers": len(calls)}))
    cpu_before = time.process_time()
    _, stop = await ctl.recv()
    cpu_seconds = time.process_time() - cpu_before  # while the writer wrote
    last = stop["last"]
    if min(highest.values()) < last:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caught_up.wait(), stop["timeout"])
    for _, call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await close(channels)
    return {"sequence": sequence, "received_at": received_at, "owner": owner,
            "cpu_seconds": cpu_seconds}


PHASES: dict[str, Callable[[dict[str, Any], Control], Awaitable[dict[str, Any]]]] = {
    "closed_loop": closed_loop, "sequential": sequential, "watch": watch,
}


def _run_loop(coro: Awaitable[None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    else:
        asyncio.run(coro)  # type: ignore[arg-type]


def worker_main(conn: Any, loop: str) -> None:
    """A client process: run the phases the parent sends until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us

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

    _run_loop(serve(), loop)


class WorkerPool:
    """``count`` client processes, each driven through a pipe (spawned: no forked gRPC).

    Each runs ``target(conn, *args)``: this module's :func:`worker_main` unless another
    benchmark brings its own worker (same pipe protocol: run / done / error / exit).
    """

    def __init__(self, count: int, *args: Any,
                 target: Callable[..., None] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns = []
        self._processes = []
        for i in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=target or worker_main, args=(theirs, *args),
                                      name=f"bench-client-{i}", daemon=True)
            process.start()
            theirs.close()
            self._conns.append(ours)
            self._processes.append(process)

    def __len__(self) -> int:
        return len(self._conns)

    def start(self, phase: str, params: Sequence[dict[str, Any]]) -> None:
        """Start ``phase`` on the first len(params) workers, one params dict each."""
        for conn, p in zip(self._conns, params, strict=False):
            conn.send(("run", phase, p))

    def send(self, message: Any, count: int) -> None:
        for conn in self._conns[:count]:
            conn.send(message)

    async def gather(self, expected: str, count: int) -> list[Any]:
        """The next message of each of the first ``count`` workers, which must be ``expected``."""
        loop = asyncio.get_running_loop()
        replies = await asyncio.gather(*(loop.run_in_executor(None, c.recv)
                                         for c in self._conns[:count]))
        for kind, body in replies:
            if kind == "error":
                raise RuntimeError(f"a client worker failed:\n{body}")
            if kind != expected:
                raise RuntimeError(f"a client worker said {kind!r}, expected {expected!r}")
        return [body for _, body in replies]

    async def run(self, phase: str, params: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        self.start(phase, params)
        return await self.gather("done", len(params))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("exit",))
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def split(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` dealt round-robin into ``parts`` lists (empty ones dropped)."""
    return [chunk for chunk in (list(items[i::parts]) for i in range(parts)) if chunk]


# ======================================================================= the clusters


class Cluster(Protocol):
    """What the failover measure needs of a cluster this program started."""

    @property
    def endpoints(self) -> list[str]: ...
    def kill(self, index: int, sig: int = signal.SIGKILL) -> None: ...
    def restart(self, index: int) -> None: ...
    async def wait_healthy(self, timeout: float = 30.0,
                           members: list[int] | None = None) -> None: ...


def cluster_pids(cluster: Any) -> list[int | None]:
    return [m.daemon.process.pid if m.daemon.alive else None for m in cluster.members]


@contextlib.asynccontextmanager
async def started_cluster(kind: str, settings: Settings) -> AsyncIterator[Any]:
    """Start a three-member ``kind`` cluster in a temp dir, wait for health, stop it after."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        if kind == "skiff":
            cluster: Any = StoreCluster(Path(tmp), unsafe_no_fsync=settings.unsafe_no_fsync)
        elif kind == "floor":
            cluster = FloorCluster(Path(tmp))
        else:
            cluster = EtcdCluster(Path(tmp), heartbeat_ms=settings.etcd_heartbeat_ms,
                                  election_ms=settings.etcd_election_ms)
        cluster.start()
        try:
            await cluster.wait_healthy(timeout=60)
            yield cluster
        except BaseException:
            print(cluster.logs(30), file=sys.stderr)
            raise
        finally:
            cluster.stop()


# ===================================================================== the measures


def progress(target: str, message: str) -> None:
    print(f"[{target}] {message}", file=sys.stderr, flush=True)


async def statuses(endpoints: Sequence[str]) -> list[rpc_pb2.StatusResponse | None]:
    async def one(endpoint: str) -> rpc_pb2.StatusResponse | None:
        try:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                return await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                    KV.StatusRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return None

    return list(await asyncio.gather(*(one(e) for e in endpoints)))


async def leader_index(endpoints: Sequence[str], *, timeout: float = 15.0,
                       skip: int | None = None) -> int:
    """The index of the endpoint whose member leads, as the members report it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, status in enumerate(await statuses(endpoints)):
            if i != skip and status is not None and status.leader \
                    and status.leader == status.header.member_id:
                return i
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no leader among {list(endpoints)} within {timeout}s")


class Bench:
    """Every measure against one endpoint list; ``cluster`` set when we started it."""

    def __init__(self, target: str, endpoints: Sequence[str], settings: Settings,
                 pool: WorkerPool, *, cluster: Any = None,
                 profile_dir: Path | None = None) -> None:
        self.target = target
        self.endpoints = list(endpoints)
        self.settings = settings
        self.pool = pool
        self.cluster = cluster
        self.profile_dir = profile_dir
        self.leader = 0
        self.prefix = b"bench-%d-%d/" % (os.getpid(), time.time_ns() // 1_000_000)

    def _pids(self) -> list[int | None]:
        return cluster_pids(self.cluster) if self.cluster is not None else []

    async def _start_profiles(self, phase: str, seconds: float) -> list[profiling.Recording]:
        """py-spy on every replica for ``seconds``, when asked to profile (--profile)."""
        if self.profile_dir is None:
            return []
        recordings = []
        for i, pid in enumerate(self._pids()):
            if pid is not None:
                label = f"m{i}-{'leader' if i == self.leader else 'follower'}"
                recordings.append(await profiling.Recording.start(
                    pid=pid, seconds=seconds, label=label,
                    output=self.profile_dir / f"{self.target}-{phase}-{label}.txt"))
        return recordings

    @staticmethod
    async def _finish_profiles(recordings: list[profiling.Recording]) -> dict[str, Any]:
        return {r.label: await r.finish() for r in recordings}

    async def run(self) -> dict[str, Any]:
        found = await statuses(self.endpoints)
        if any(s is None for s in found):
            raise RuntimeError(f"not every endpoint answers Status: {self.endpoints}")
        leader = self.leader = await leader_index(self.endpoints)
        result: dict[str, Any] = {
            "target": self.target,
            "endpoints": self.endpoints,
            "server_version": found[0].version,  # type: ignore[union-attr]
            "started_by_bench": self.cluster is not None,
        }
        progress(self.target, f"leader is {self.endpoints[leader]}")
        phases = set(self.settings.phases.split(","))
        if "sequential_put" in phases:
            result["sequential_put"] = await self.sequential_put(leader)
        if "put_throughput" in phases:
            result["put_throughput"] = await self.closed_loop(
                "put", self.settings.put_clients, prefix=self.prefix + b"put/")
        if "range" in phases:
            await self.populate(self.prefix + b"range/", self.settings.range_keys)
            for name, serializable in (("range_linearizable", False),
                                       ("range_serializable", True)):
                result[name] = await self.closed_loop(
                    "range", self.settings.range_clients, prefix=self.prefix + b"range/",
                    keys=self.settings.range_keys, serializable=serializable)
        if "txn_cas" in phases:
            result["txn_cas"] = await self.txn_cas()
        if "watch" in phases:
            result["watch"] = await self.watch(leader)
        if "failover" not in phases:
            pass
        elif self.cluster is not None:
            result["failover"] = await self.failover()
        else:
            result["failover"] = {
                "measured": False,
                "reason": "it SIGKILLs the leader, so it runs only on a cluster the bench "
                          "started itself (--start)"}
        await self.clean_up()
        return result

    # --------------------------------------------------------------- 1. sequential

    async def sequential_put(self, leader: int) -> dict[str, Any]:
        roles = [("leader", leader)]
        if len(self.endpoints) > 1:
            roles.append(("follower", (leader + 1) % len(self.endpoints)))
        out: dict[str, Any] = {"clients": 1}
        for role, index in roles:
            [reply] = await self.pool.run("sequential", [{
                "endpoint": self.endpoints[index], "count": self.settings.seq_puts,
                "warmup": max(10, self.settings.seq_puts // 20), "seed": 1,
                "prefix": self.prefix + b"seq/", "keyspace": self.settings.keyspace,
                "value_size": self.settings.value_size}])
            out[role] = {"endpoint": self.endpoints[index], **summarize_ms(reply["latencies"])}
            progress(self.target, f"sequential put ({role}): {out[role]}")
        return out

    # ---------------------------------------------------------- 2-4. closed loops

    async def closed_loop(self, workload: str, clients: int, **params: Any) -> dict[str, Any]:
        s = self.settings
        groups = split(range(clients), len(self.pool))
        start_at = time.monotonic() + START_DELAY
        window_start, window_end = start_at + s.warmup, start_at + s.warmup + s.duration
        common = {"workload": workload, "endpoints": self.endpoints, "start_at": start_at,
                  "warmup": s.warmup, "duration": s.duration, "value_size": s.value_size,
                  "keyspace": s.keyspace, "conns_per_endpoint": s.conns_per_endpoint, **params}
        self.pool.start("closed_loop", [{**common, "client_ids": ids, "seed": n}
                                        for n, ids in enumerate(groups)])

        phase = workload + ("" if "serializable" not in params
                            else ("-serializable" if params["serializable"] else "-linearizable"))

        async def sample() -> tuple[CpuSample, CpuSample, list[profiling.Recording]]:
            await sleep_until(window_start)
            before = CpuSample.take(self._pids())
            recordings = await self._start_profiles(phase, s.duration)
            await sleep_until(window_end)
            return before, CpuSample.take(self._pids()), recordings

        replies, (before, after, recordings) = await asyncio.gather(
            self.pool.gather("done", len(groups)), sample())
        latencies = [x for r in replies for x in r["latencies"]]
        in_window = sum((Counter(r["in_window"]) for r in replies), Counter())
        total = sum((Counter(r["total"]) for r in replies), Counter())
        errors = sum((Counter(r["errors"]) for r in replies), Counter())
        out: dict[str, Any] = {
            "clients": clients, "workers": len(groups),
            "connections": len(groups) * len(self.endpoints) * s.conns_per_endpoint,
            "duration_s": s.duration,
            "ops_per_s": round(sum(in_window.values()) / s.duration, 1),
            "latency": summarize_ms(latencies),
            "outcomes": dict(in_window), "errors": dict(errors),
            "cpu": cpu_report(before, after, sum(r["cpu_seconds"] for r in replies)),
            "_total": dict(total),
        }
        if recordings:
            out["profile"] = await self._finish_profiles(recordings)
        progress(self.target, f"{phase}: {out['ops_per_s']} ops/s, {out['latency']}, "
                              f"errors {out['errors']}, cpu {out['cpu']}")
        return out

    async def populate(self, prefix: bytes, count: int) -> None:
        value = random.Random(0).randbytes(self.settings.value_size)
        async with grpc.aio.insecure_channel(self.endpoints[0]) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            gate = asyncio.Semaphore(64)

            async def put(i: int) -> None:
                async with gate:
                    await stub.Put(KV.PutRequest(key=b"%s%08d" % (prefix, i), value=value),
                                   timeout=RPC_TIMEOUT)

            await asyncio.gather(*(put(i) for i in range(count)))

    async def txn_cas(self) -> dict[str, Any]:
        prefix = self.prefix + b"counter/"
        counters = self.settings.counters
        keys = [b"%s%04d" % (prefix, i) for i in range(counters)]
        async with grpc.aio.insecure_channel(self.endpoints[0]) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            for key in keys:
                await stub.Put(KV.PutRequest(key=key, value=b"0"), timeout=RPC_TIMEOUT)
            out = await self.closed_loop("txn_cas", self.settings.txn_clients,
                                         prefix=prefix, counters=counters)
            reply = await stub.Range(KV.RangeRequest(key=prefix, range_end=prefix_end(prefix)),
                                     timeout=RPC_TIMEOUT)
        stored = sum(int(kv.value) for kv in reply.kvs)
        increments = out.pop("_total").get("ok", 0)
        window = out["outcomes"]
        attempts = window.get("ok", 0) + window.get("conflict", 0)
        out.update({
            "counters": counters,
            "increments_per_s": round(window.get("ok", 0) / self.settings.duration, 1),
            "conflicts": window.get("conflict", 0),
            "conflict_rate": round(window.get("conflict", 0) / attempts, 3) if attempts else None,
            # Every acknowledged increment is in the counters, and nothing else is.
            "check": {"increments_acknowledged": increments, "sum_of_counters": stored,
                      "consistent": stored == increments},
        })
        return out

    # ------------------------------------------------------------------- 5. watch

    async def watch(self, leader: int) -> dict[str, Any]:
        s = self.settings
        prefix = self.prefix + b"watch/"
        groups = split(range(s.watchers), len(self.pool))
        self.pool.start("watch", [{"endpoints": self.endpoints, "prefix": prefix,
                                   "watcher_ids": ids, "conns_per_endpoint": s.conns_per_endpoint}
                                  for ids in groups])
        await self.pool.gather("ready", len(groups))
        count = max(1, round(s.watch_rate * s.watch_duration))
        sent_at, acked_at = array("d", [math.nan]) * count, array("d", [math.nan]) * count
        padding = b"." * max(0, s.value_size - 12)
        errors: Counter[str] = Counter()
        async with grpc.aio.insecure_channel(self.endpoints[leader]) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            await connect([channel])

            async def put(n: int) -> None:
                request = KV.PutRequest(key=b"%s%04d" % (prefix, n % 100),
                                        value=b"%012d" % n + padding)
                sent_at[n] = time.monotonic()
                try:
                    await stub.Put(request, timeout=RPC_TIMEOUT)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    return
                acked_at[n] = time.monotonic()

            writes = []
            before = CpuSample.take(self._pids())
            recordings = await self._start_profiles("watch", s.watch_duration)
            began = time.monotonic()
            for n in range(count):  # open loop: a steady rate whatever the latency
                await sleep_until(began + n / s.watch_rate)
                writes.append(asyncio.create_task(put(n)))
            await asyncio.gather(*writes)
            after = CpuSample.take(self._pids())
        self.pool.send(("stop", {"last": count - 1, "timeout": 10.0}), len(groups))
        replies = await self.pool.gather("done", len(groups))
        from_send, from_ack = [], []
        seen: set[tuple[int, int]] = set()
        duplicates = 0
        for r in replies:
            for n, at, w in zip(r["sequence"], r["received_at"], r["owner"], strict=True):
                if (w, n) in seen:
                    duplicates += 1
                    continue
                seen.add((w, n))
                from_send.append(at - sent_at[n])
                if not math.isnan(acked_at[n]):
                    from_ack.append(at - acked_at[n])
        expected = (count - sum(errors.values())) * s.watchers
        out = {
            "watchers": s.watchers, "streams": s.watchers, "workers": len(groups),
            "connections": len(groups) * len(self.endpoints) * s.conns_per_endpoint,
            "rate_per_s": s.watch_rate, "puts": count, "put_errors": dict(errors),
            "events_expected": expected, "events_received": len(seen),
            "events_missing": expected - len(seen), "events_duplicated": duplicates,
            "lag_from_send": summarize_ms(from_send),
            "lag_from_ack": summarize_ms(from_ack),
            "events_before_ack": sum(1 for x in from_ack if x < 0),
            "cpu": cpu_report(before, after, sum(r["cpu_seconds"] for r in replies)),
        }
        if recordings:
            out["profile"] = await self._finish_profiles(recordings)
        progress(self.target, f"watch: from send {out['lag_from_send']}, "
                              f"from ack {out['lag_from_ack']}, missing {out['events_missing']}")
        return out

    # ---------------------------------------------------------------- 6. failover

    async def failover(self) -> dict[str, Any]:
        runs = []
        for run in range(self.settings.failover_runs):
            await self.cluster.wait_healthy(timeout=60)
            leader = await leader_index(self.endpoints)
            outcome = await self.kill_leader_under_load(leader)
            runs.append(outcome)
            progress(self.target, f"failover {run + 1}: {outcome}")
            self.cluster.restart(leader)
            await self.cluster.wait_healthy(timeout=60)
            await leader_index(self.endpoints)
        measured = [r["recovery_ms"] for r in runs if r["recovery_ms"] is not None]
        return {
            "measured": True, "runs": runs,
            "recovery_ms": [r["recovery_ms"] for r in runs],
            "max_ms": max(measured) if len(measured) == len(runs) else None,
            "put_interval_ms": self.settings.failover_interval_ms,
        }

    async def kill_leader_under_load(self, leader: int) -> dict[str, Any]:
        """Put to the survivors every interval; SIGKILL the leader; time the first ack after."""
        s = self.settings
        survivors = [e for i, e in enumerate(self.endpoints) if i != leader]
        channels = open_channels(survivors, 1)
        await connect(channels)
        stubs = [rpc_pb2_grpc.KVStub(c) for c in channels]
        value = b"x" * s.value_size
        acks: list[tuple[float, float]] = []  # (sent, acknowledged)
        errors: Counter[str] = Counter()
        killed_at = math.inf
        first_ack = asyncio.Event()

        async def put(n: int) -> None:
            sent = time.monotonic()
            try:
                await stubs[n % len(stubs)].Put(
                    KV.PutRequest(key=self.prefix + b"failover/%d" % (n % 100), value=value),
                    timeout=s.failover_put_timeout)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                return
            acks.append((sent, time.monotonic()))
            if sent >= killed_at:
                first_ack.set()

        tasks: set[asyncio.Task[None]] = set()

        async def load() -> None:
            began = time.monotonic()
            for n in range(sys.maxsize):
                await sleep_until(began + n * s.failover_interval_ms / 1000)
                task = asyncio.create_task(put(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        loader = asyncio.create_task(load(), name="failover-load")
        await asyncio.sleep(0.5)  # the load runs, and is acknowledged, before the kill
        before = len(acks)
        killed_at = time.monotonic()
        self.cluster.kill(leader)
        try:
            await asyncio.wait_for(first_ack.wait(), 30.0)
            recovered = min(ack for sent, ack in acks if sent >= killed_at)
            recovery_ms: float | None = round((recovered - killed_at) * 1000, 1)
        except TimeoutError:
            recovery_ms = None
        loader.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(loader, *tasks, return_exceptions=True)
        await close(channels)
        new_leader = await leader_index(self.endpoints, skip=leader)
        return {"killed": self.endpoints[leader], "new_leader": self.endpoints[new_leader],
                "recovery_ms": recovery_ms, "acks_before_kill": before,
                "errors_during": dict(errors)}

    async def clean_up(self) -> None:
        """Delete every key this run wrote (it matters on a cluster we did not start)."""
        async with grpc.aio.insecure_channel(self.endpoints[0]) as channel:
            await rpc_pb2_grpc.KVStub(channel).DeleteRange(
                KV.DeleteRangeRequest(key=self.prefix, range_end=prefix_end(self.prefix)),
                timeout=RPC_TIMEOUT)


# ============================================================================ report

#: (name, path into a result, higher is better)
COMPARED: list[tuple[str, tuple[str, ...], bool]] = [
    ("sequential_put_leader_p50_ms", ("sequential_put", "leader", "p50_ms"), False),
    ("sequential_put_leader_p99_ms", ("sequential_put", "leader", "p99_ms"), False),
    ("sequential_put_follower_p50_ms", ("sequential_put", "follower", "p50_ms"), False),
    ("put_throughput_ops_per_s", ("put_throughput", "ops_per_s"), True),
    ("put_throughput_p99_ms", ("put_throughput", "latency", "p99_ms"), False),
    ("range_linearizable_ops_per_s", ("range_linearizable", "ops_per_s"), True),
    ("range_linearizable_p99_ms", ("range_linearizable", "latency", "p99_ms"), False),
    ("range_serializable_ops_per_s", ("range_serializable", "ops_per_s"), True),
    ("range_serializable_p99_ms", ("range_serializable", "latency", "p99_ms"), False),
    ("txn_cas_ops_per_s", ("txn_cas", "ops_per_s"), True),
    ("txn_cas_increments_per_s", ("txn_cas", "increments_per_s"), True),
    ("txn_cas_p99_ms", ("txn_cas", "latency", "p99_ms"), False),
    ("watch_lag_from_ack_p99_ms", ("watch", "lag_from_ack", "p99_ms"), False),
    ("watch_lag_from_send_p99_ms", ("watch", "lag_from_send", "p99_ms"), False),
    ("failover_max_ms", ("failover", "max_ms"), False),
]


def dig(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def compare(ours: dict[str, Any], etcd: dict[str, Any]) -> dict[str, Any]:
    """ours / etcd for each compared figure (above 1 is better for rates, worse for times)."""
    return {name: {"skiff": dig(ours, path), "etcd": dig(etcd, path),
                   "ratio": ratio(dig(ours, path), dig(etcd, path)),
                   "better": "higher" if higher else "lower"}
            for name, path, higher in COMPARED}


def check_targets(ours: dict[str, Any], etcd: dict[str, Any] | None,
                  floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """The store's targets, judged on our figures (None: not measured in this run).

    With ``floor`` (do-nothing gRPC servers under the same put load), the throughput
    target also says what share of etcd's rate Python's gRPC server alone reaches, and
    what share of that the store reaches.
    """

    def judge(value: Any, ok: Callable[[Any], bool], **extra: Any) -> dict[str, Any]:
        return {"value": value, "met": None if value is None else ok(value), **extra}

    throughput_ratio = ratio(dig(ours, ("put_throughput", "ops_per_s")),
                             dig(etcd, ("put_throughput", "ops_per_s"))) if etcd else None
    sequential = ("sequential_put", "leader", "p50_ms")
    sequential_ratio = ratio(dig(ours, sequential), dig(etcd, sequential)) if etcd else None
    return {
        # Both sync before acknowledging (etcd's WAL, our journal): p50 against etcd's.
        "sequential_put_p50_le_1_5x_etcd": judge(
            sequential_ratio, lambda v: v <= 1.5, note="one client, to the leader; both "
            "fsync", skiff_ms=dig(ours, sequential), etcd_ms=dig(etcd, sequential)),
        "sequential_put_p50_le_2ms": judge(
            dig(ours, ("sequential_put", "leader", "p50_ms")), lambda v: v <= 2.0,
            note="one client, to the leader"),
        "put_throughput_ge_half_of_etcd": judge(throughput_ratio, lambda v: v >= 0.5,
                                                **floor_figures(ours, etcd, floor)),
        "watch_lag_p99_le_50ms": judge(
            dig(ours, ("watch", "lag_from_send", "p99_ms")), lambda v: v <= 50.0,
            note="lag from the Put's send (the stricter of the two)",
            lag_from_ack_p99_ms=dig(ours, ("watch", "lag_from_ack", "p99_ms"))),
        "failover_le_1s": judge(dig(ours, ("failover", "max_ms")), lambda v: v <= 1000.0),
    }


def floor_figures(ours: dict[str, Any], etcd: dict[str, Any] | None,
                  floor: dict[str, Any] | None) -> dict[str, Any]:
    if floor is None:
        return {}
    floor_rate = dig(floor, ("put_throughput", "ops_per_s"))
    return {"floor_over_etcd": ratio(floor_rate, dig(etcd, ("put_throughput", "ops_per_s")))
            if etcd else None,
            "ours_over_floor": ratio(dig(ours, ("put_throughput", "ops_per_s")), floor_rate)}


def strip_private(result: dict[str, Any]) -> dict[str, Any]:
    for value in result.values():
        if isinstance(value, dict):
            value.pop("_total", None)
    return result


# ============================================================================== main

#: How to read the figures; printed into every report.
METHOD = {
    "client": "grpc.aio in --workers spawned processes, one event loop each; the same code "
              "for every target; client i talks to endpoint i mod n",
    "closed_loop": "each client sends its next request when the last one answers; an "
                   "operation counts when it completes inside the measured window, after "
                   "--warmup; ops_per_s = those / duration_s",
    "sequential_put": "one client, one Put at a time, to the leader and to a follower",
    "txn_cas": "Txn(compare mod_revision == cached, put value+1, else range the key); "
               "conflicts are failed compares; check: sum of counters == increments acked",
    "watch": "watchers on one prefix, each its own Watch stream; a writer puts to the leader "
             "at rate_per_s (open loop); lag_from_send / lag_from_ack: receipt time minus "
             "the Put's send / acknowledgement time, per watcher and event",
    "failover": "a put is sent to the surviving members every put_interval_ms (open loop); "
                "SIGKILL the leader; recovery_ms = first acknowledgement of a put sent after "
                "the kill, minus the kill time; the member is restarted and the cluster "
                "healthy again before the next run",
    "cpu": "cores used in the window: client_cores (our worker processes), server_cores "
           "(when the bench started the servers), machine_busy (all CPUs, 0-1), other_cores "
           "(whatever else ran on the host); a saturated machine means the figures are "
           "bounded by the host, not the server alone",
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoints", help="host:port,... of a running etcd v3 cluster")
    where.add_argument("--start", choices=("skiff", "etcd", "both", "all"),
                       help="start a 3-member cluster in a temp dir, bench it, stop it "
                            "(all: skiff, etcd, and the put load against do-nothing "
                            "grpc.aio servers, the floor Python's gRPC sets)")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy every replica of a started skiff cluster during each load "
                        "phase; folded stacks go to DIR, a summary into the JSON (sampling "
                        "slows the replicas: do not compare these figures)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="client processes generating load")
    p.add_argument("--conns-per-endpoint", type=int, default=defaults.conns_per_endpoint,
                   help="gRPC connections per endpoint in each worker")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=defaults.loop,
                   help="the client processes' event loop")
    p.add_argument("--seq-puts", type=int, default=defaults.seq_puts,
                   help="sequential puts measured per endpoint role")
    p.add_argument("--put-clients", type=int, default=defaults.put_clients,
                   help="puts in flight in the throughput measure")
    p.add_argument("--range-clients", type=int, default=defaults.range_clients)
    p.add_argument("--txn-clients", type=int, default=defaults.txn_clients)
    p.add_argument("--counters", type=int, default=defaults.counters,
                   help="counters the CAS transactions increment")
    p.add_argument("--duration", type=float, default=defaults.duration,
                   help="seconds measured per throughput phase")
    p.add_argument("--warmup", type=float, default=defaults.warmup,
                   help="seconds of load before each measured window")
    p.add_argument("--value-size", type=int, default=defaults.value_size, help="bytes")
    p.add_argument("--keyspace", type=int, default=defaults.keyspace,
                   help="distinct keys the puts write")
    p.add_argument("--range-keys", type=int, default=defaults.range_keys,
                   help="keys written first and then read")
    p.add_argument("--watchers", type=int, default=defaults.watchers)
    p.add_argument("--watch-rate", type=float, default=defaults.watch_rate,
                   help="puts per second while watched")
    p.add_argument("--watch-duration", type=float, default=defaults.watch_duration)
    p.add_argument("--failover-runs", type=int, default=defaults.failover_runs)
    p.add_argument("--failover-interval-ms", type=float, default=defaults.failover_interval_ms,
                   help="a put is sent this often to the survivors during failover")
    p.add_argument("--failover-put-timeout", type=float, default=defaults.failover_put_timeout,
                   help="seconds a put may take during failover before it counts as failed")
    p.add_argument("--etcd-heartbeat-ms", type=int, default=defaults.etcd_heartbeat_ms)
    p.add_argument("--etcd-election-ms", type=int, default=defaults.etcd_election_ms)
    p.add_argument("--phases", default=defaults.phases,
                   help=f"comma-separated subset of {','.join(PHASE_NAMES)}")
    p.add_argument("--unsafe-no-fsync", action="store_true",
                   help="start skiff's replicas with --unsafe-no-fsync (no syncs to disk)")
    args = p.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASE_NAMES)
    if unknown:
        p.error(f"--phases: unknown {', '.join(sorted(unknown))}")
    if args.loop == "uvloop" and not _has_uvloop():
        p.error("--loop uvloop: uvloop is not installed")
    if args.profile and not profiling.available():
        p.error("--profile: py-spy is not installed (pip install py-spy)")
    settings = Settings(**{name: getattr(args, name) for name in asdict(defaults)})
    return args, settings


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def host_facts() -> dict[str, Any]:
    etcd = shutil.which("etcd")
    version = None
    if etcd:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run([etcd, "--version"], capture_output=True, text=True,
                                     timeout=10).stdout.split("\n", 1)[0]
    return {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__, "platform": platform.platform(), "etcd_binary": version}


#: The kinds ``--start`` runs, in order.
START_KINDS = {"skiff": ("skiff",), "etcd": ("etcd",), "both": ("skiff", "etcd"),
               "all": ("skiff", "etcd", "floor")}


async def bench_started(kind: str, settings: Settings, pool: WorkerPool, *,
                        profile_dir: Path | None) -> dict[str, Any]:
    if kind == "floor":  # nothing is stored there: only the put load means anything
        settings = replace(settings, phases="put_throughput")
    async with started_cluster(kind, settings) as cluster:
        progress(kind, f"cluster healthy at {cluster.endpoints}")
        result = await Bench(kind, cluster.endpoints, settings, pool, cluster=cluster,
                             profile_dir=profile_dir if kind == "skiff" else None).run()
    if kind == "etcd":
        result["etcd_flags"] = {"heartbeat_interval_ms": settings.etcd_heartbeat_ms,
                                "election_timeout_ms": settings.etcd_election_ms}
    return strip_private(result)


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "store", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_facts(), "settings": asdict(settings), "method": METHOD, "results": {},
    }
    if args.profile:
        report["profiled"] = ("replicas were sampled with py-spy: these figures are slowed "
                              "by it and are not for comparison")
    pool = WorkerPool(settings.workers, settings.loop)
    try:
        if args.endpoints:
            endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
            result = await Bench("endpoints", endpoints, settings, pool).run()
            report["results"]["endpoints"] = strip_private(result)
        else:
            for kind in START_KINDS[args.start]:
                report["results"][kind] = await bench_started(kind, settings, pool,
                                                              profile_dir=args.profile)
            if "skiff" in report["results"]:
                etcd = report["results"].get("etcd")
                if etcd is not None:
                    report["ratios_ours_over_etcd"] = compare(report["results"]["skiff"], etcd)
                report["targets"] = check_targets(report["results"]["skiff"], etcd,
                                                  report["results"].get("floor"))
    finally:
        pool.close()
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)

    stop_on_sigterm()
    report = asyncio.run(run(args, settings))
    emit(report, args.output)


if __name__ == "__main__":
    main()
