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

Target: an Endpoints change in the kernel within p99 200 ms at 1,000 Services x 3.
Figures taken while other work runs on the machine are noisy: ``host.loadavg_at_start``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
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
from skiff.logging import configure  # noqa: E402

TARGET_P99_MS = 200.0


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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=[*MODES])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: it makes a network namespace and runs nft in it")
    args.loadavg = [round(x, 2) for x in os.getloadavg()]
    configure("bench", level="warning")
    stop_on_sigterm()
    emit(run(args), args.output)


if __name__ == "__main__":
    main()
