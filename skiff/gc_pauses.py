"""How long the garbage collector stops a daemon: a Prometheus histogram, and a log line
for each pause long enough for clients to notice.

A daemon runs its event loop on one thread, so a collection of the oldest generation (a
scan of every tracked object it holds) is a pause in every request in flight; the store
and the apiserver hold many. Like Go's GC pause metrics, this says when a latency tail
was the collector's.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

from skiff.logging import get_logger

log = get_logger("skiff.gc")

GC_PAUSE_SECONDS = Histogram(
    "skiff_gc_pause_seconds", "Time one garbage collection stopped the process",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

#: Pauses at least this long are logged.
SLOW_PAUSE = 0.05


class _PauseObserver:
    def __init__(self, slow: float) -> None:
        self._slow = slow
        self._started = 0.0
        self._observe = [GC_PAUSE_SECONDS.labels(str(g)).observe for g in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        paused = time.perf_counter() - self._started
        generation = info["generation"]
        self._observe[generation](paused)
        if paused >= self._slow:
            log.warning("garbage collection paused the process", generation=generation,
                        ms=round(paused * 1000, 1), collected=info["collected"])


def observe_gc_pauses(slow: float = SLOW_PAUSE) -> None:
    """Time every collection from now on (once per process)."""
    if not any(isinstance(cb, _PauseObserver) for cb in gc.callbacks):
        gc.callbacks.append(_PauseObserver(slow))
