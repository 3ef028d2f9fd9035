"""Background tasks that are named and guarded: a crash is logged, never silent."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from skiff.logging import get_logger

log = get_logger("skiff.tasks")
_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """Run ``coro`` as a task named ``name``; log it if it dies of an exception.

    A reference is kept until the task ends, so it is not garbage-collected mid-run.
    """
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", task=task.get_name(), exc_info=task.exception())
