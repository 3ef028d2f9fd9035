"""Benchmark the proxy's kernel rules at scale, and print JSON.

    python bench/proxy_rules.py                       # 1,000 Services x 3 endpoints
    python bench/proxy_rules.py --services 5000 --changes 100

For each mode (``userspace``, ``nftables``), in a network namespace made for the run
(deleted after; the host's ruleset is never touched; needs root and ``nft``):

- ``generate_ms``: building the ruleset from the service ports and rendering the full
  ``nft -f`` text (best and median of 5);
- ``apply_full_ms``: writing the whole table with ``nft -f`` (median of 3);
- ``endpoints_change_ms``: from an Endpoints change (one service port's endpoints
  replaced) to the kernel having it: the whole ruleset built again, the difference
  planned and written (``nft -f`` returned: the transaction is committed). p50 / p99 /
  max over ``--changes`` changes; also split into ``build_ms`` and ``write_ms``, and
  the CPU it took (this process and nft): on a loaded machine the wall time is mostly
  waiting for a core, and ``cpu_ms`` says what the change itself costs;
- ``full_rewrite_ms``: the same change written as a whole-table replacement instead,
  the alternative this design does not take (median of 5);
- ``sync_check_ms``: the level-triggered check (``nft -j list table`` and the
  comparison), which the proxy runs on its resync period, not per change.

With ``--daemon`` (what the issue's target is about), the real thing end to end, in a
network namespace of its own where a store, an apiserver (cluster IPs from
10.96.0.0/12) and ``skiff-proxy`` run, all on the namespace's loopback: ``--services``
Services with ``--endpoints`` endpoints each, created through the API, then

- ``daemon.<mode>.ready_s``: from the proxy's start to health SERVING (caches synced,
  the whole table written once);
- ``daemon.nftables.endpoints_change_ms``: from an Endpoints update sent to the
  apiserver to the kernel having the new endpoint's chain (``nft monitor`` reports
  each committed object as it happens), one change at a time; and
  ``burst_all_in_kernel_ms``: 100 Endpoints updates sent at once, until the last is in
  the kernel (they are batched into a few writes);
- ``daemon.userspace.service_add_ms``: a new Service until its redirect is in the
  kernel (an Endpoints change needs no kernel change in userspace mode: the listener's
  load balancer has it as soon as the proxy's informer does);
- ``daemon.<mode>.rss_mib``: the proxy's resident memory after the changes.

Debugging: ``BENCH_KEEP_DIR`` keeps the daemons' logs there, ``BENCH_PROXY_LOG`` sets
the proxy's log level (info).

Target: an Endpoints change in the kernel within p99 200 ms at 1,000 Services x 3, and
the proxy within 150 MiB. Figures taken while other work runs on the machine are noisy:
``host.loadavg_at_start``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from report import emit, stop_on_sigterm  # noqa: E402

from services.proxy.nftables import NftablesApplier, describe_drift  # noqa: E402
from services.proxy.nftables_rules import (  # noqa: E402
    MODES,
    Endpoint,
    ServicePort,
    Settings,
    build_ruleset,
    render,
)
from services.proxy.nftables_rules import NFTABLES as NFTABLES_MODE  # noqa: E402
from skiff.api.errors import Conflict  # noqa: E402
from skiff.api.v1 import core_pb2, meta_pb2  # noqa: E402
from skiff.client.client import Client  # noqa: E402
from skiff.logging import configure  # noqa: E402
from skiff.testing.processes import Proxy, control_plane  # noqa: E402

TARGET_P99_MS = 200.0
TARGET_RSS_MIB = 150.0


def service_ports(count: int, endpoints: int) -> list[ServicePort]:
    """``count`` service ports: a tenth with NodePorts, a tenth with ClientIP affinity,
    a fifth UDP, each with ``endpoints`` ready endpoints in 10.244/16."""
    ports = []
    for i in range(count):
        ports.append(ServicePort(
            namespace=f"ns{i % 20}", name=f"svc{i}", protocol="UDP" if i % 5 == 0 else "TCP",
            cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}", port=80 + i % 3,
            node_port=30000 + i if i % 10 == 0 else 0,
            session_affinity="ClientIP" if i % 10 == 3 else "None",
            proxy_port=20000 + i,
            endpoints=tuple(_endpoint(i, j) for j in range(endpoints))))
    return ports


def _endpoint(service: int, index: int, generation: int = 0) -> Endpoint:
    n = service * 8 + index + generation * 7919
    return Endpoint(f"10.244.{(n // 250) % 256}.{n % 250 + 2}", 8080)


def enter(netns: str) -> tuple[str, ...]:
    """Run commands in ``netns`` the cheap way (``ip netns exec`` also remounts /sys)."""
    return ("nsenter", f"--net=/run/netns/{netns}")


def cpu_seconds() -> float:
    """CPU used so far by this process and its waited-for children (nft)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def measure_mode(mode: str, netns: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(mode=mode)
    ports = service_ports(args.services, args.endpoints)
    generate = []
    for _ in range(5):
        started = time.perf_counter()
        text = render(build_ruleset(ports, settings))
        generate.append(time.perf_counter() - started)
    ruleset = build_ruleset(ports, settings)

    full = []
    for _ in range(3):
        applier = NftablesApplier(wrap=enter(netns))
        result = await applier.apply(ruleset)
        assert result.full
        full.append(result.seconds)

    total, build, write, commands, cpu = [], [], [], [], []
    for change in range(args.changes):
        i = (change * 37) % len(ports)
        ports[i] = dataclasses.replace(ports[i], endpoints=tuple(
            _endpoint(i, j, change + 1) for j in range(args.endpoints)))
        started, cpu_started = time.perf_counter(), cpu_seconds()
        new = build_ruleset(ports, settings)
        built = time.perf_counter()
        result = await applier.apply(new)
        done = time.perf_counter()
        cpu.append(cpu_seconds() - cpu_started)
        assert not result.full
        total.append(done - started)
        build.append(built - started)
        write.append(done - built)
        commands.append(result.commands)
        ruleset = new

    started = time.perf_counter()
    drift = describe_drift(ruleset, await applier.list_table())
    sync_check = time.perf_counter() - started
    assert drift == [], drift

    rewrite = []
    for change in range(5):
        ports[0] = dataclasses.replace(ports[0], endpoints=tuple(
            _endpoint(0, j, 1000 + change) for j in range(args.endpoints)))
        started = time.perf_counter()
        new = build_ruleset(ports, settings)
        fresh = NftablesApplier(wrap=enter(netns))
        await fresh.apply(new)
        rewrite.append(time.perf_counter() - started)
    await fresh.cleanup()

    return {
        "ruleset": {"lines": text.count("\n"), "bytes": len(text),
                    "chains": len(ruleset.chains),
                    "collections": len(ruleset.collections)},
        "generate_ms": {"best": ms(min(generate)), "median": ms(statistics.median(generate))},
        "apply_full_ms": ms(statistics.median(full)),
        "endpoints_change_ms": {
            "p50": ms(percentile(total, 0.5)), "p99": ms(percentile(total, 0.99)),
            "max": ms(max(total)),
            "build_ms_p50": ms(percentile(build, 0.5)),
            "write_ms_p50": ms(percentile(write, 0.5)),
            "cpu_ms_p50": ms(percentile(cpu, 0.5)),
            "cpu_ms_p99": ms(percentile(cpu, 0.99)),
            "nft_commands_p50": int(percentile([float(c) for c in commands], 0.5)),
        },
        "full_rewrite_ms": ms(statistics.median(rewrite)),
        "sync_check_ms": ms(sync_check),
    }


async def measure(args: argparse.Namespace, netns: str) -> dict[str, Any]:
    return {mode: await measure_mode(mode, netns, args) for mode in args.modes}


def run(args: argparse.Namespace) -> dict[str, Any]:
    netns = f"skiff-bench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        modes = asyncio.run(measure(args, netns))
        daemon = run_daemon_inside(netns, args) if args.daemon else None
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    version = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout
    return {
        "benchmark": "proxy_rules",
        "services": args.services, "endpoints_per_service": args.endpoints,
        "changes": args.changes, "target_p99_ms": TARGET_P99_MS,
        "modes": modes,
        "targets": {
            f"{mode}_endpoints_change_p99_ms": {
                "value": figures["endpoints_change_ms"]["p99"], "target": TARGET_P99_MS,
                "met": figures["endpoints_change_ms"]["p99"] <= TARGET_P99_MS}
            for mode, figures in modes.items()},
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "nft": version.strip(), "loadavg_at_start": args.loadavg},
        **({"daemon": daemon} if daemon is not None else {}),
    } | ({"daemon_targets": daemon_targets(daemon)} if daemon else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=[*MODES])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--daemon", action="store_true",
                        help="also measure the real proxy end to end (see above)")
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: it makes a network namespace and runs nft in it")
    args.loadavg = [round(x, 2) for x in os.getloadavg()]
    configure("bench", level="warning")
    stop_on_sigterm()
    if args.inside_netns:
        emit(asyncio.run(daemon_figures(args)), None)
        return
    emit(run(args), args.output)



# ------------------------------------------------------------ the real daemon

BENCH_NS = "bench"


def run_daemon_inside(netns: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run this script again inside ``netns`` for the daemon figures (its JSON)."""
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    argv = ["ip", "netns", "exec", netns, sys.executable, str(Path(__file__).resolve()),
            "--inside-netns", "--services", str(args.services),
            "--endpoints", str(args.endpoints), "--changes", str(args.changes),
            "--modes", *args.modes]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise RuntimeError(f"the daemon run failed: {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout))


def daemon_targets(daemon: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nft = daemon.get("nftables")
    if nft:
        p99 = nft["endpoints_change_ms"]["p99"]
        out["daemon_nftables_endpoints_change_p99_ms"] = {
            "value": p99, "target": TARGET_P99_MS, "met": p99 <= TARGET_P99_MS}
    for mode, figures in daemon.items():
        out[f"daemon_{mode}_rss_mib"] = {"value": figures["rss_mib"],
                                         "target": TARGET_RSS_MIB,
                                         "met": figures["rss_mib"] <= TARGET_RSS_MIB}
    return out


async def daemon_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Inside the namespace: a control plane, the Services, then each mode's proxy."""
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        base = Path(os.environ.get("BENCH_KEEP_DIR") or tmp)
        async with control_plane(base, log_level="warning", apiserver_args=[
                "--service-cluster-ip-range", "10.96.0.0/12"]) as (_, apiserver):
            async with Client(apiserver.address) as client:
                services = await create_services(client, args.services, args.endpoints)
                out = {}
                for mode in args.modes:
                    out[mode] = await measure_daemon(mode, base, apiserver.address, client,
                                                     services, args)
                return out


async def create_services(client: Client, count: int, endpoints: int
                          ) -> list[core_pb2.Service]:
    await client.namespaces.create(core_pb2.Namespace(
        metadata=meta_pb2.ObjectMeta(name=BENCH_NS)))
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> core_pb2.Service:
        spec = core_pb2.ServiceSpec()
        spec.ports.add(name="http", port=80, protocol="TCP")
        async with semaphore:
            created = await client.services.create(core_pb2.Service(
                metadata=meta_pb2.ObjectMeta(name=f"svc{i}", namespace=BENCH_NS), spec=spec))
            await client.endpoints.create(endpoints_object(i, endpoints, 0))
        return created

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def endpoints_object(i: int, count: int, generation: int) -> core_pb2.EndpointsObject:
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name=f"svc{i}",
                                                                namespace=BENCH_NS))
    subset = obj.subsets.add()
    subset.addresses.extend(core_pb2.EndpointAddress(ip=_endpoint(i, j, generation).ip)
                            for j in range(count))
    subset.ports.add(name="http", port=8080, protocol="TCP")
    return obj


class Monitor:
    """``nft monitor``: the kernel's committed changes, each line with when it arrived."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.seen: list[tuple[float, str]] = []
        self._reader: asyncio.Task[None] | None = None
        self._new = asyncio.Event()

    async def start(self) -> None:
        # Line-buffered: into a pipe nft's stdio would hold events until 4 KiB pile up.
        self.process = await asyncio.create_subprocess_exec(
            "stdbuf", "-oL", "nft", "monitor", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.create_task(self._read())
        # nft monitor subscribes only after reading the whole ruleset (seconds, for a
        # 1,000-Service table): events before that are lost. Ready once it reports one.
        for attempt in range(60):
            probe = f"skiff-bench-probe{attempt}"
            await nft("add", "table", "ip", probe)
            try:
                await self.wait(probe, 0, timeout=1.0)
                break
            except TimeoutError:
                continue
            finally:
                await nft("delete", "table", "ip", probe)
        else:
            raise RuntimeError("nft monitor reported nothing within a minute")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.seen.append((time.perf_counter(), line.decode(errors="replace")))
            self._new.set()

    async def wait(self, needle: str, since: int, timeout: float = 30.0) -> float:
        """When a line containing ``needle`` (from index ``since``) arrived."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for at, line in self.seen[since:]:
                        if needle in line:
                            return at
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            last = [line for _, line in self.seen[-5:]]
            raise TimeoutError(f"{needle!r} not in the kernel within {timeout}s; "
                               f"nft monitor's last lines: {last}") from None

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


async def nft(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec("nft", *argv)
    await process.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def measure_daemon(mode: str, base: Path, server: str, client: Client,
                         services: list[core_pb2.Service], args: argparse.Namespace
                         ) -> dict[str, Any]:
    proxy = Proxy(base / f"proxy-{mode}", [server], node_name=f"bench-{mode}",
                  node_address="127.0.1.9", log_level=os.environ.get("BENCH_PROXY_LOG", "info"),
                  extra_args=["--proxy-mode", mode])
    monitor = Monitor()
    started = time.perf_counter()
    proxy.start()
    figures: dict[str, Any] = {}
    try:
        await proxy.wait_healthy(timeout=300)
        figures["ready_s"] = round(time.perf_counter() - started, 2)
        # Started after the first whole-table write, which would overflow its socket.
        await monitor.start()
        assert proxy.pid is not None
        table = f"skiff-proxy-bench-{mode}"
        if mode == NFTABLES_MODE:
            figures.update(await endpoint_changes(client, monitor, table, args))
        else:
            figures.update(await service_adds(client, monitor, table, args))
        figures["rss_mib"] = rss_mib(proxy.pid)
    finally:
        monitor.stop()
        proxy.stop()
    return figures


async def endpoint_changes(client: Client, monitor: Monitor, table: str,
                           args: argparse.Namespace) -> dict[str, Any]:
    latencies = []
    for change in range(args.changes):
        i = (change * 37) % args.services
        obj = endpoints_object(i, args.endpoints, change + 1)
        new_ip = _endpoint(i, 0, change + 1).ip
        since = len(monitor.seen)
        sent = time.perf_counter()
        await update_endpoints(client, obj)
        arrived = await monitor.wait(f"/{new_ip}/8080", since)
        latencies.append(arrived - sent)
        await asyncio.sleep(0.05)  # spaced like separate events, not a burst
    # Distinct Services: two updates of one object in flight would race each other.
    burst = list(range(0, args.services, max(1, args.services // 100)))[:100]
    objects = [endpoints_object(i, args.endpoints, 10_000 + n) for n, i in enumerate(burst)]
    since = len(monitor.seen)
    sent = time.perf_counter()
    await asyncio.gather(*(update_endpoints(client, o) for o in objects))
    last_ip = _endpoint(burst[-1], 0, 10_000 + len(burst) - 1).ip
    arrived = await monitor.wait(f"/{last_ip}/8080", since)
    return {"endpoints_change_ms": {
        "p50": ms(percentile(latencies, 0.5)), "p99": ms(percentile(latencies, 0.99)),
        "max": ms(max(latencies)), "changes": len(latencies)},
        "burst_all_in_kernel_ms": ms(arrived - sent), "burst_changes": len(burst)}


async def update_endpoints(client: Client, obj: core_pb2.EndpointsObject) -> None:
    """Write ``obj`` over the current version (unconditionally: an empty
    resourceVersion, as ``kubectl replace --force`` without the delete)."""
    for _ in range(10):
        current = await client.endpoints.get(obj.metadata.name, BENCH_NS)
        obj.metadata.resource_version = current.metadata.resource_version
        try:
            await client.endpoints.update(obj)
            return
        except Conflict:
            continue
    raise RuntimeError(f"endpoints {obj.metadata.name}: conflicts on every try")


async def service_adds(client: Client, monitor: Monitor, table: str,
                       args: argparse.Namespace) -> dict[str, Any]:
    latencies = []
    for n in range(min(args.changes, 20)):
        spec = core_pb2.ServiceSpec()
        spec.ports.add(name="http", port=80, protocol="TCP")
        since = len(monitor.seen)
        sent = time.perf_counter()
        created = await client.services.create(core_pb2.Service(
            metadata=meta_pb2.ObjectMeta(name=f"added{n}", namespace=BENCH_NS), spec=spec))
        arrived = await monitor.wait(f"{created.spec.cluster_ip} . 80", since)
        latencies.append(arrived - sent)
    return {"service_add_ms": {"p50": ms(percentile(latencies, 0.5)),
                               "p99": ms(percentile(latencies, 0.99)),
                               "max": ms(max(latencies))}}


if __name__ == "__main__":
    main()
