"""The node's own CPU and memory usage, as Kubernetes reports a node's (cAdvisor's root
container), rather than the sum of its pods.

CPU: the root cgroup's cumulative usage (cgroup v2 ``cpu.stat`` ``usage_usec``; v1
``cpuacct.usage``; else ``/proc/stat``'s busy jiffies), sampled twice: the rate between
the samples in nanocores. Memory: the working set from ``/proc/meminfo``, MemTotal -
MemFree - Inactive(file) (usage less the file cache the kernel can reclaim first).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_V2_CPU = Path("/sys/fs/cgroup/cpu.stat")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpuacct/cpuacct.usage")
PROC_STAT = Path("/proc/stat")
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU time used (ns) at a monotonic time (ns)."""

    used_ns: int
    at_ns: int


def parse_cpu_stat_v2(text: str) -> int:
    """``usage_usec`` of a cgroup v2 ``cpu.stat``, in nanoseconds (pure)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    raise ValueError("cpu.stat has no usage_usec")


def parse_proc_stat(text: str, ticks_per_second: int) -> int:
    """Busy CPU time of ``/proc/stat``'s ``cpu`` line (all but idle and iowait), in
    nanoseconds (pure)."""
    fields = text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError("/proc/stat does not start with the cpu line")
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(values) - values[3] - values[4]
    return busy * 10**9 // ticks_per_second


def parse_meminfo_working_set(text: str) -> int:
    """MemTotal - MemFree - Inactive(file), in bytes, from ``/proc/meminfo`` (pure)."""
    kib: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            kib[key] = int(rest.split()[0])
    used = kib["MemTotal"] - kib["MemFree"] - kib.get("Inactive(file)", 0)
    return max(0, used) * 1024


def _read_cpu() -> CpuSample:
    at = time.monotonic_ns()
    if CGROUP_V2_CPU.exists():
        used = parse_cpu_stat_v2(CGROUP_V2_CPU.read_text())
    elif CGROUP_V1_CPU.exists():
        used = int(CGROUP_V1_CPU.read_text().strip())
    else:
        used = parse_proc_stat(PROC_STAT.read_text(), os.sysconf("SC_CLK_TCK"))
    return CpuSample(used_ns=used, at_ns=at)


async def cpu_sample() -> CpuSample:
    """The root cgroup's CPU usage now (read in a thread: file I/O)."""
    return await asyncio.to_thread(_read_cpu)


def cpu_rate(before: CpuSample, after: CpuSample) -> int:
    """Nanocores between two samples (pure); 0 when they are not in order."""
    elapsed = after.at_ns - before.at_ns
    used = after.used_ns - before.used_ns
    if elapsed <= 0 or used <= 0:
        return 0
    return used * 10**9 // elapsed


async def memory_working_set() -> int:
    """The machine's memory working set in bytes."""
    return parse_meminfo_working_set(await asyncio.to_thread(MEMINFO.read_text))
