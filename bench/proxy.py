"""Benchmark skiff-proxy against a direct connection to the backend, and print JSON.

    python bench/proxy.py                       # pod -> Service, both modes, vs pod -> pod
    python bench/proxy.py --path host           # host -> cluster IP (userspace) vs direct
    python bench/proxy.py --duration 10 --rounds 3

``--path pod`` (the default) is what a workload sees: a control plane, a kubelet on the
``bridge`` network plugin and two pods (``bench-client``, ``bench-server``) are started
here; the backend and the load generator run inside those pods' network namespaces
(``nsenter --net``: this host's Python in the pod's network, so the busybox image needs
no benchmark tool), and a selector-less Service points at the server pod. Each proxy
mode in turn (``--modes``) serves the Service: pod -> Service IP through that mode,
alternating with pod -> pod IP direct. Targets: nftables mode >= 0.9x direct in
requests/s and MB/s (the kernel DNATs; nothing else is in the path); userspace mode is
reported (every byte crosses the proxy process).

``--path host`` is the older measurement, host to host on loopback: a ``skiff-proxy``
in userspace mode between the load generator and a backend on 127.0.0.1.

Two workloads, each measured direct to the backend and through the proxy (a real
``skiff-proxy`` process, the Service and its Endpoints created through a real
apiserver), alternating direct / proxy for ``--rounds`` rounds so that both see the
same background load; each figure is the best of its rounds:

- ``requests_per_s``: short connections. ``--clients`` concurrent clients each loop:
  connect, send a 64-byte request, read the 64-byte reply, close.
- ``mb_per_s``: bulk. ``--streams`` connections each receive from the backend as fast
  as they can read, for ``--duration`` seconds (MB = 10**6 bytes).

The backend and the load generator are separate processes from the proxy (and from
each other), both uvloop Protocols that do nothing per byte, so the cores go to the
path being measured. ``cpu`` gives each process's CPU seconds per second of the
window: on a 2-core machine the three share the cores, so the ratio also says how much
CPU the proxy costs per request or per byte. Figures taken while other work runs on
the machine are noisy: ``host.loadavg_at_start`` is there to say so.

Targets of ``--path host`` (2 cores): through the proxy >= 0.8x direct for requests/s,
>= 0.6x for MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from report import emit  # noqa: E402

from skiff.api.v1 import core_pb2, meta_pb2  # noqa: E402
from skiff.client.client import Client  # noqa: E402
from skiff.health import wait_for  # noqa: E402
from skiff.logging import configure  # noqa: E402
from skiff.testing.processes import Proxy, control_plane, free_port  # noqa: E402

REQUEST = b"q" * 64
REPLY = b"r" * 64
CHUNK = b"x" * (256 * 1024)
TARGET_RPS_RATIO = 0.8
TARGET_MBPS_RATIO = 0.6
BACKEND_IP = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# =================================================================== the backend


class EchoOnce(asyncio.Protocol):
    """Reply REPLY once REQUEST has arrived; close when the client closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.seen = 0

    def data_received(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen >= len(REQUEST):
            self.seen = -(1 << 62)  # reply once
            self.transport.write(REPLY)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # close our side too


class Source(asyncio.Protocol):
    """Send CHUNK after CHUNK for as long as the client reads, honouring back-pressure."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.paused = False
        transport.set_write_buffer_limits(high=1 << 20)  # type: ignore[attr-defined]
        self.fill()

    def fill(self) -> None:
        while not self.paused and not self.transport.is_closing():
            self.transport.write(CHUNK)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.fill()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False


async def backend(rr_port: int, bulk_port: int, host: str = BACKEND_IP) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(EchoOnce, host, rr_port, backlog=4096)
    await loop.create_server(Source, host, bulk_port, backlog=128)
    print("ready", flush=True)
    await asyncio.Event().wait()


# ============================================================== the load generator


class Requester(asyncio.Protocol):
    """One short connection: send REQUEST, wait for the whole REPLY, close."""

    def __init__(self, done: asyncio.Future[bool]) -> None:
        self.done = done
        self.got = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(REPLY):
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.got >= len(REPLY))


class Sink(asyncio.Protocol):
    """Count what arrives."""

    def __init__(self) -> None:
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


async def load_requests(host: str, port: int, clients: int, duration: float
                        ) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = time.monotonic() + duration
    ok = failed = 0

    async def client() -> None:
        nonlocal ok, failed
        while time.monotonic() < end:
            done: asyncio.Future[bool] = loop.create_future()
            try:
                await loop.create_connection(lambda d=done: Requester(d), host, port)
                if await done:
                    ok += 1
                else:
                    failed += 1
            except OSError:
                failed += 1

    cpu0, started = os.times(), time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed, cpu1 = time.monotonic() - started, os.times()
    return {"requests": ok, "failed": failed, "seconds": elapsed,
            "requests_per_s": ok / elapsed,
            "cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed}


async def load_bulk(host: str, port: int, streams: int, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sinks: list[Sink] = []
    transports = []
    cpu0, started = os.times(), time.monotonic()
    for _ in range(streams):
        transport, sink = await loop.create_connection(Sink, host, port)
        sinks.append(sink)
        transports.append(transport)
    await asyncio.sleep(duration)  # the window itself is what is measured
    received = sum(s.received for s in sinks)
    elapsed, cpu1 = time.monotonic() - started, os.times()
    for transport in transports:
        transport.close()
    return {"bytes": received, "seconds": elapsed, "mb_per_s": received / elapsed / 1e6,
            "cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed}


# ==================================================================== the driver


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_load(kind: str, host: str, port: int, args: argparse.Namespace,
                   watched: dict[str, int], *, netns_pid: int | None = None,
                   ) -> dict[str, Any]:
    """One measurement by a load generator process (in the network namespace of
    ``netns_pid`` if given); CPU of the ``watched`` pids added."""
    width = args.clients if kind == "requests" else args.streams
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    proc = await asyncio.create_subprocess_exec(
        *_in_netns(netns_pid), sys.executable, __file__, "_load", kind, host, str(port),
        str(width),
        str(args.duration), stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    result: dict[str, Any] = json.loads(out)
    cpu = {"load_generator": round(result.pop("cpu"), 3)}
    for name, pid in watched.items():
        cpu[name] = round((cpu_seconds(pid) - before[name]) / result["seconds"], 3)
    result["cpu"] = cpu
    return result


def _in_netns(pid: int | None) -> list[str]:
    return [] if pid is None else ["nsenter", f"--net=/proc/{pid}/ns/net"]


def _report_head(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bench": "proxy",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                 "python": platform.python_version()},
        "settings": {"path": args.path, "clients": args.clients, "streams": args.streams,
                     "duration_s": args.duration, "rounds": args.rounds},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report = _report_head(args)
    rr_port, bulk_port = free_port(BACKEND_IP), free_port(BACKEND_IP)
    with tempfile.TemporaryDirectory(prefix="skiff-proxy-bench-") as tmp:
        base = Path(tmp)
        async with control_plane(base, log_level="warning") as (_, apiserver):
            backend_proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "_backend", str(rr_port), str(bulk_port),
                stdout=subprocess.PIPE)
            proxy = Proxy(base / "proxy", [apiserver.address], node_name="bench",
                          log_level="warning")
            proxy.start()
            try:
                assert backend_proc.stdout is not None
                await backend_proc.stdout.readline()  # "ready"
                await proxy.wait_healthy(timeout=60)
                async with Client(apiserver.address) as client:
                    ip = await create_service(client, f"bench-{os.getpid()}", BACKEND_IP,
                                              rr_port, bulk_port)
                assert proxy.pid is not None
                watched = {"proxy": proxy.pid, "backend": backend_proc.pid}
                await wait_for(lambda: reachable(ip, 80), timeout=30,
                               what="the service reachable through the proxy")
                rss_before = rss_mb(proxy.pid)
                results: dict[str, list[dict[str, Any]]] = {
                    "requests_direct": [], "requests_proxy": [],
                    "bulk_direct": [], "bulk_proxy": []}
                for round_ in range(args.rounds):
                    for kind, port_d, port_p in (("requests", rr_port, 80),
                                                 ("bulk", bulk_port, 81)):
                        for where, host, port in (("direct", BACKEND_IP, port_d),
                                                  ("proxy", ip, port_p)):
                            progress(f"round {round_ + 1}: {kind} {where}")
                            results[f"{kind}_{where}"].append(
                                await run_load(kind, host, port, args, watched))
                report["proxy_rss_mb"] = {"before": round(rss_before, 1),
                                          "after": round(rss_mb(proxy.pid), 1)}
            finally:
                proxy.stop()
                backend_proc.terminate()
                await backend_proc.wait()
    report["results"] = results
    report.update(summarize(results, "proxy", TARGET_RPS_RATIO, TARGET_MBPS_RATIO))
    return report


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r.get("requests_per_s", r.get("mb_per_s", 0)))


def summarize(results: dict[str, list[dict[str, Any]]], via: str, rps_target: float | None,
              mb_target: float | None) -> dict[str, Any]:
    """Best of the rounds, ``via`` against direct: the figures, CPU per unit of work
    through ``via``, and the targets (None: reported only)."""
    best = {k: _best(v) for k, v in results.items() if k.endswith(("_direct", f"_{via}"))}
    rps_d, rps_p = best["requests_direct"]["requests_per_s"], \
        best[f"requests_{via}"]["requests_per_s"]
    mb_d, mb_p = best["bulk_direct"]["mb_per_s"], best[f"bulk_{via}"]["mb_per_s"]
    # CPU per unit of work is far less sensitive to other load on the machine than the
    # rates are: it says what the proxy costs, whoever else wanted the cores.
    per_request = {name: round(cpu / rps_p * 1e6, 1)
                   for name, cpu in best[f"requests_{via}"]["cpu"].items()}
    per_mb = {name: round(cpu / mb_p * 1e6, 1)
              for name, cpu in best[f"bulk_{via}"]["cpu"].items()}
    summary = {
        "requests_per_s": {"direct": round(rps_d), via: round(rps_p),
                           "ratio": round(rps_p / rps_d, 3),
                           f"cpu_us_per_request_through_{via}": per_request},
        "mb_per_s": {"direct": round(mb_d, 1), via: round(mb_p, 1),
                     "ratio": round(mb_p / mb_d, 3),
                     f"cpu_us_per_mb_through_{via}": per_mb},
    }
    targets = {}
    for name, value, target in (("requests_per_s_ratio", rps_p / rps_d, rps_target),
                                ("mb_per_s_ratio", mb_p / mb_d, mb_target)):
        targets[name] = {"value": round(value, 3), "target": target,
                         "met": None if target is None else value >= target}
    return {"summary": summary, "targets": targets}


async def create_service(client: Client, name: str, backend_ip: str, rr_port: int,
                         bulk_port: int) -> str:
    """A selector-less Service ``name`` with ports rr (80) and bulk (81), its Endpoints
    ``backend_ip``'s ``rr_port`` and ``bulk_port``; returns its cluster IP."""
    service = core_pb2.Service(metadata=meta_pb2.ObjectMeta(name=name, namespace="default"))
    service.spec.ports.add(name="rr", port=80)
    service.spec.ports.add(name="bulk", port=81)
    created = await client.services.create(service)
    endpoints = core_pb2.EndpointsObject(
        metadata=meta_pb2.ObjectMeta(name=name, namespace="default"))
    subset = endpoints.subsets.add()
    subset.addresses.add(ip=backend_ip)
    subset.ports.add(name="rr", port=rr_port, protocol="TCP")
    subset.ports.add(name="bulk", port=bulk_port, protocol="TCP")
    await client.endpoints.create(endpoints)
    return created.spec.cluster_ip  # type: ignore[attr-defined,no-any-return]


async def reachable(host: str, port: int) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(REQUEST)
        return len(await asyncio.wait_for(reader.readexactly(len(REPLY)), 2)) == len(REPLY)
    finally:
        writer.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--path", choices=("pod", "host"), default="pod",
                   help="pod: pod -> Service vs pod -> pod; host: host -> proxy vs direct")
    p.add_argument("--modes", default="nftables,userspace",
                   help="the proxy modes --path pod measures, in this order")
    p.add_argument("--clients", type=int, default=32, help="concurrent short-connection clients")
    p.add_argument("--streams", type=int, default=1, help="concurrent bulk streams")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=2, help="direct/proxy alternations")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_backend"]:
        run_loop(backend(int(argv[1]), int(argv[2]), *argv[3:4]))
        return
    if argv[:1] == ["_load"]:
        kind, host, port, width, duration = argv[1:6]
        load = load_requests if kind == "requests" else load_bulk
        result = run_loop(load(host, int(port), int(width), float(duration)))
        print(json.dumps(result))
        return
    args = parse_args(argv)
    configure("bench-proxy", "warning")
    if args.path == "pod":
        from proxy_pods import run_pods  # the pod path's driver, beside this file

        report = run_loop(run_pods(args))
    else:
        report = run_loop(run(args))
    emit(report, args.output)


if __name__ == "__main__":
    main()
