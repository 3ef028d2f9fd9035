"""GC pause timing: every collection observed once, slow ones logged."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from skiff import gc_pauses


def _count(generation: str) -> float:
    return REGISTRY.get_sample_value("skiff_gc_pause_seconds_count",
                                     {"generation": generation}) or 0.0


def test_each_collection_is_timed_once_and_a_slow_one_is_logged(monkeypatch):
    saved = gc.callbacks[:]
    gc.callbacks.clear()  # the interpreter's own list: it cannot be swapped for another
    logged = []
    monkeypatch.setattr(gc_pauses.log, "warning", lambda event, **kw: logged.append(kw))
    try:
        gc_pauses.observe_gc_pauses(slow=0.0)
        gc_pauses.observe_gc_pauses(slow=0.0)  # a second call adds nothing
        assert len(gc.callbacks) == 1
        before = _count("2")
        gc.collect()
        assert _count("2") == before + 1
        assert logged and logged[-1]["generation"] == 2 and logged[-1]["ms"] >= 0
    finally:
        gc.callbacks[:] = saved
