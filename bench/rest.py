"""Benchmark the apiserver's Kubernetes REST API beside its gRPC API, and print JSON.

    python bench/rest.py                    # 3 store replicas + 1 apiserver with REST on
    python bench/rest.py --phases create,list --output out.json

Both APIs are measured in the same run against the same store and apiserver
(``skiff.testing.processes.control_plane(rest=True)``), one after the other:

1. ``create``: pods created at a steady ``--rate`` per second (open loop) for
   ``--duration`` seconds, first through gRPC (``skiff.client``), then through REST
   (aiohttp over HTTPS with the bearer token, JSON bodies): latency from the send to
   the answer, p50/p99. Target: REST p99 <= 1.5x gRPC's.
2. ``list``: ``--big-list`` pods in one namespace, listed ``--list-runs`` times each
   through gRPC, REST as JSON and REST as a Table (``Accept:
   application/json;as=Table;v=v1;g=meta.k8s.io``): time to the client's decoded reply
   (``json.loads`` for REST). Target: each REST form's median <= 2x gRPC's.
3. ``watch``: ``--watchers`` REST watch streams (chunked JSON lines) on one namespace
   from the same resource version; a gRPC writer creates pods at ``--watch-rate`` per
   second, each carrying its sequence number in an annotation; lag = each watcher's
   receipt minus the write's acknowledgement. Target: p99 <= 100 ms.

One client process (uvloop) drives everything, so the client's own CPU is part of
every figure; on a small or busy machine the report's ``cpu`` says how busy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers

from apiserver import SEQ, Servers, cpu_report, dig, host_facts, make_pod
from report import emit, stop_on_sigterm
from store import CpuSample, progress, sleep_until, summarize_ms

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client import Client
from skiff.testing.processes import APIServer, control_plane

PHASE_NAMES = ("create", "list", "watch")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
REQUEST_TIMEOUT = 30.0
#: How long watchers may take, after the last write, to receive every event.
WATCH_DRAIN_S = 10.0


@dataclass(frozen=True)
class Settings:
    """The scale knobs (see ``--help``)."""

    rate: float = 200.0
    duration: float = 10.0
    big_list: int = 10_000
    list_runs: int = 5
    populate_in_flight: int = 64
    watchers: int = 100
    watch_rate: float = 20.0
    watch_duration: float = 10.0
    phases: str = ",".join(PHASE_NAMES)


def pod_json(namespace: str, name: str) -> dict[str, Any]:
    """The same pod as ``make_pod``'s, as a REST client sends it."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app": "bench", "group": "g0"}},
        "spec": {"containers": [{
            "name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }


class Rest:
    """An aiohttp session to the apiserver's HTTPS port with its CA and admin token."""

    def __init__(self, api: APIServer) -> None:
        self.url = api.rest_url
        context = ssl.create_default_context(cafile=str(api.ca_file))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            headers={"Authorization": f"Bearer {api.token}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT))

    async def close(self) -> None:
        await self.session.close()

    def pods(self, namespace: str) -> str:
        return f"{self.url}/api/v1/namespaces/{namespace}/pods"

    async def create(self, namespace: str, name: str) -> None:
        async with self.session.post(self.pods(namespace), json=pod_json(namespace, name),
                                     timeout=aiohttp.ClientTimeout(REQUEST_TIMEOUT)) as r:
            await r.read()
            if r.status != 201:
                raise RuntimeError(f"REST create {name}: {r.status}")

    async def list(self, namespace: str, accept: str = "application/json") -> int:
        """List the namespace's pods, decoded; how many rows or items came back."""
        async with self.session.get(self.pods(namespace), headers={"Accept": accept},
                                    timeout=aiohttp.ClientTimeout(REQUEST_TIMEOUT)) as r:
            body = json.loads(await r.read())
            if r.status != 200:
                raise RuntimeError(f"REST list: {r.status} {body}")
        return len(body.get("rows") if "rows" in body else body["items"])


async def open_loop(rate: float, duration: float,
                    op: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
    """``op(i)`` sent at i/rate s for ``duration`` s: latency from the send, failures."""
    latencies: list[float] = []
    failures = 0
    start = time.monotonic() + 0.2

    async def one(i: int) -> None:
        nonlocal failures
        await sleep_until(start + i / rate)
        sent = time.monotonic()
        try:
            await op(i)
        except Exception:  # counted: a benchmark reports failures, it does not stop
            failures += 1
            return
        latencies.append(time.monotonic() - sent)

    await asyncio.gather(*(one(i) for i in range(int(rate * duration))))
    return {**summarize_ms(latencies), "failures": failures}


class Bench:
    """Every measure against one apiserver, through both of its APIs."""

    def __init__(self, servers: Servers, api: APIServer, settings: Settings) -> None:
        self.servers = servers
        self.settings = settings
        self.grpc = Client(api.address, retry_deadline=REQUEST_TIMEOUT)
        self.rest = Rest(api)
        self.run_id = f"{int(time.time()) % 100_000}"

    async def close(self) -> None:
        await self.rest.close()
        await self.grpc.close()

    async def namespace(self, purpose: str) -> str:
        name = f"bench-rest-{self.run_id}-{purpose}"
        await self.grpc.namespaces.create(core_pb2.Namespace(
            api_version="v1", kind="Namespace", metadata=meta_pb2.ObjectMeta(name=name)))
        return name

    async def measured(self, coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """``coro``'s result with the CPU used meanwhile."""
        before, client = CpuSample.take(self.servers.pids()), time.process_time()
        result = await coro
        after = CpuSample.take(self.servers.pids())
        return {**result, "cpu": cpu_report(before, after, time.process_time() - client)}

    async def run(self) -> dict[str, Any]:
        phases = set(self.settings.phases.split(","))
        out: dict[str, Any] = {}
        for name, phase in (("create", self.create), ("list", self.list),
                            ("watch", self.watch)):
            if name in phases:
                progress("rest", f"phase {name}")
                out[name] = await phase()
        return out

    async def create(self) -> dict[str, Any]:
        s = self.settings
        ns = await self.namespace("create")

        async def grpc_create(i: int) -> None:
            await self.grpc.pods.create(make_pod(ns, f"g-{i:06d}"))

        async def rest_create(i: int) -> None:
            await self.rest.create(ns, f"r-{i:06d}")

        return {"rate_per_s": s.rate, "duration_s": s.duration,
                "grpc": await self.measured(open_loop(s.rate, s.duration, grpc_create)),
                "rest": await self.measured(open_loop(s.rate, s.duration, rest_create))}

    async def populate(self, ns: str, count: int) -> None:
        gate = asyncio.Semaphore(self.settings.populate_in_flight)

        async def one(i: int) -> None:
            async with gate:
                await self.grpc.pods.create(make_pod(ns, f"p-{i:06d}", group=i))

        await asyncio.gather(*(one(i) for i in range(count)))

    async def list(self) -> dict[str, Any]:
        s = self.settings
        ns = await self.namespace("list")
        began = time.monotonic()
        await self.populate(ns, s.big_list)
        progress("rest", f"{s.big_list} pods made in {time.monotonic() - began:.1f} s")

        async def grpc_list() -> int:
            return len((await self.grpc.pods.list(ns)).items)

        async def timed(call: Callable[[], Awaitable[int]]) -> dict[str, Any]:
            seconds, counts = [], set()
            for _ in range(s.list_runs):
                t = time.monotonic()
                counts.add(await call())
                seconds.append(time.monotonic() - t)
            return {**summarize_ms(seconds), "items": sorted(counts)}

        forms = {"grpc": grpc_list, "rest_json": lambda: self.rest.list(ns),
                 "rest_table": lambda: self.rest.list(ns, TABLE)}
        out: dict[str, Any] = {"pods": s.big_list, "runs": s.list_runs}
        for name, call in forms.items():
            await call()  # one unmeasured run: connections and caches warm for every form
            out[name] = await self.measured(timed(call))
        return out

    async def watch(self) -> dict[str, Any]:
        s = self.settings
        ns = await self.namespace("watch")
        version = (await self.grpc.pods.list(ns)).metadata.resource_version
        received: list[dict[int, float]] = [{} for _ in range(s.watchers)]
        streams: list[aiohttp.ClientResponse] = []
        for _ in range(s.watchers):
            streams.append(await self.rest.session.get(
                self.rest.pods(ns), params={"watch": "1", "resourceVersion": version}))
        readers = [asyncio.create_task(read_events(r, into)) for r, into in
                   zip(streams, received, strict=True)]
        acked: dict[int, float] = {}

        async def write(i: int) -> None:
            await self.grpc.pods.create(make_pod(ns, f"w-{i:06d}", annotations={SEQ: str(i)}))
            acked[i] = time.monotonic()

        try:
            writes = await self.measured(open_loop(s.watch_rate, s.watch_duration, write))
            deadline = time.monotonic() + WATCH_DRAIN_S
            while time.monotonic() < deadline and any(len(r) < len(acked) for r in received):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling the receipts, with a deadline
        finally:
            for task in readers:
                task.cancel()
            for r in streams:
                r.close()
        lags = [at - acked[i] for into in received for i, at in into.items() if i in acked]
        missing = sum(1 for into in received for i in acked if i not in into)
        return {"watchers": s.watchers, "rate_per_s": s.watch_rate, "writes": writes,
                "lag_from_ack": summarize_ms(lags), "events_missing": missing}


async def read_events(response: aiohttp.ClientResponse, into: dict[int, float]) -> None:
    """Each ADDED event's sequence number -> when this watcher received it."""
    if response.status != 200:
        raise RuntimeError(f"REST watch: {response.status}")
    with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
        async for line in response.content:
            at = time.monotonic()
            event = json.loads(line)
            seq = event["object"]["metadata"].get("annotations", {}).get(SEQ)
            if event["type"] == "ADDED" and seq is not None:
                into[int(seq)] = at


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """REST's targets against gRPC's figures from the same run (None: not measured)."""

    def ratio(a: Any, b: Any) -> float | None:
        return None if a is None or not b else round(a / b, 2)

    def judge(value: float | None, limit: float, **extra: Any) -> dict[str, Any]:
        return {"value": value, "limit": limit,
                "met": None if value is None else value <= limit, **extra}

    grpc_list = dig(result, "list", "grpc", "p50_ms")
    return {
        "create_p99_rest_over_grpc_le_1_5": judge(
            ratio(dig(result, "create", "rest", "p99_ms"), dig(result, "create", "grpc", "p99_ms")),
            1.5, rest_p99_ms=dig(result, "create", "rest", "p99_ms"),
            grpc_p99_ms=dig(result, "create", "grpc", "p99_ms")),
        "list_10k_rest_json_over_grpc_le_2": judge(
            ratio(dig(result, "list", "rest_json", "p50_ms"), grpc_list), 2.0,
            rest_json_p50_ms=dig(result, "list", "rest_json", "p50_ms"), grpc_p50_ms=grpc_list),
        "list_10k_rest_table_over_grpc_le_2": judge(
            ratio(dig(result, "list", "rest_table", "p50_ms"), grpc_list), 2.0,
            rest_table_p50_ms=dig(result, "list", "rest_table", "p50_ms"),
            grpc_p50_ms=grpc_list),
        "watch_100_rest_watchers_lag_p99_le_100ms": judge(
            dig(result, "watch", "lag_from_ack", "p99_ms"), 100.0,
            events_missing=dig(result, "watch", "events_missing")),
    }


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", type=Path, help="also write the JSON here")
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = p.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASE_NAMES)
    if unknown:
        p.error(f"--phases: unknown {', '.join(sorted(unknown))}")
    return args, Settings(**{name: getattr(args, name) for name in asdict(defaults)})


async def run(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "rest", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_facts(), "settings": asdict(settings),
        "method": __doc__.split("\n\n", 2)[2].strip(),
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
        async with control_plane(Path(tmp), rest=True) as (store, api):
            progress("rest", f"healthy at {api.address} and {api.rest_url}")
            bench = Bench(Servers(api.address, api, store), api, settings)
            try:
                report["results"] = await bench.run()
            finally:
                await bench.close()
    report["targets"] = check_targets(report["results"])
    report["seconds"] = round(time.monotonic() - began, 1)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)
    stop_on_sigterm()
    emit(uvloop.run(run(settings)), args.output)


if __name__ == "__main__":
    main()
