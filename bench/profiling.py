"""Sample the store's replicas with py-spy while a benchmark phase runs, and summarize.

``bench/store.py --profile DIR`` records one folded-stack file per replica and phase
(``py-spy record --format raw --threads``; flame graphs can be drawn from them with
``flamegraph.pl`` or speedscope) and puts a short summary in the JSON: the functions
where the samples were (self time), the ones they passed through (inclusive time), and
the share of each thread. Sampling pauses the process it samples, so figures measured
with ``--profile`` are not comparable with figures measured without it.

Only samples taken while a thread holds the GIL are kept (``--gil``): a replica runs
Python on one core at a time, so where the GIL goes is where its capacity goes, and
threads blocked in poll/epoll are left out (py-spy's own idle detection does not
recognise them on every kernel). ``gil_held_pct`` is the share of wall time some
thread of the replica held the GIL: near 100 means the replica is CPU-bound in Python.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: py-spy's samples per second: enough for percentages, cheap enough not to dominate.
RATE = 100
#: Frames at the root of every stack of a thread: they say nothing about where time goes.
_ROOTS = ("Thread._bootstrap", "Thread.run ", "_run_code ", "_run_module_as_main ",
          "<module> ", "main (services/", "Runner.run ", "run (uvloop",
          "SyncObj._autoTickThread ", "SyncObj._onTick ")
#: "function (path/to/file.py:123)" -> function and file, without the line.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


@dataclass
class Recording:
    """One py-spy process recording one replica."""

    label: str
    output: Path
    process: asyncio.subprocess.Process
    seconds: int

    @classmethod
    async def start(cls, *, pid: int, seconds: float, output: Path, label: str) -> Recording:
        output.parent.mkdir(parents=True, exist_ok=True)
        whole = max(1, round(seconds))
        process = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--duration", str(whole), "--rate", str(RATE),
            "--gil", "--format", "raw", "--threads", "--output", str(output),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        return cls(label, output, process, whole)

    async def finish(self, top: int = 12) -> dict[str, Any]:
        _, stderr = await self.process.communicate()
        if self.process.returncode != 0 or not self.output.exists():
            return {"error": stderr.decode(errors="replace").strip()[-500:]}
        summary = summarize(self.output.read_text(), top=top)
        summary["gil_held_pct"] = round(100 * summary["samples"] / (RATE * self.seconds), 1)
        return {"file": str(self.output), **summary}


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['function']} ({file})"


def summarize(folded: str, *, top: int = 12) -> dict[str, Any]:
    """Self and inclusive shares (percent of samples) from py-spy's folded stacks.

    A line is ``thread;outermost;...;innermost count`` (``--threads`` puts the thread
    first). Self time goes to the innermost frame; inclusive time to every distinct
    function on the stack once.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        names = [_frame_name(f) for f in frames] or [thread]
        total += count
        threads[_thread_name(thread)] += count
        own[names[-1]] += count
        for name in set(names):
            if not name.startswith(_ROOTS):
                inclusive[name] += count

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    if not total:
        return {"samples": 0}
    return {"samples": total, "threads_pct": dict(shares(threads)),
            "self_pct": shares(own), "inclusive_pct": shares(inclusive)}


def _thread_name(frame: str) -> str:
    # py-spy writes 'thread (1234): MainThread': keep the name (ids differ per run).
    return frame.partition("): ")[2].strip() or frame.strip()
