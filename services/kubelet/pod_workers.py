"""Pod workers: one worker per pod, syncs of one pod serialised, pods in parallel.

Kubernetes' ``pod_workers.go``, simplified to what a level-triggered sync needs:

- :meth:`PodWorkers.update` asks for a sync of a pod (by uid). If no worker runs for it,
  one starts; if one is syncing it now, the pod is marked dirty and synced once more
  when that sync ends. Many requests while a sync runs make one more sync, not many.
- A sync returns when it wants to look again (seconds: a back-off ending, a grace
  period) or None; a timer per pod keeps the earliest such wish.
- A sync that raises is logged and retried after a per-pod back-off.
- ``max_parallel`` bounds how many pods sync at once (Docker is shared).

Invariants: a uid is in ``_workers`` iff a task runs its syncs; ``_dirty`` only holds
uids that are in ``_workers``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from services.kubelet.backoff import Backoff
from skiff.api import errors
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("skiff.kubelet.pod_workers")

SyncPod = Callable[[str], Awaitable[float | None]]


class PodWorkers:
    """See the module. ``sync(uid)`` does the work."""

    def __init__(self, sync: SyncPod, *, max_parallel: int = 16,
                 error_backoff: Backoff | None = None) -> None:
        self._sync = sync
        self._slots = asyncio.Semaphore(max_parallel)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._errors = error_backoff or Backoff(0.5, 30.0, 120.0)
        self._stopped = False

    @property
    def active(self) -> frozenset[str]:
        """The uids being synced now (or about to be)."""
        return frozenset(self._workers)

    def update(self, uid: str) -> None:
        """Sync the pod ``uid`` soon (once more if it is being synced now)."""
        if self._stopped:
            return
        if uid in self._workers:
            self._dirty.add(uid)
            return
        self._workers[uid] = spawn(self._work(uid), name=f"pod-worker {uid}")

    def update_after(self, uid: str, seconds: float) -> None:
        """Sync the pod in ``seconds`` (an earlier wish wins over a later one)."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, seconds)
        timer = self._timers.get(uid)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[uid] = loop.call_at(when, self._fire, uid)

    def forget(self, uid: str) -> None:
        """Drop the pod's pending timer and error back-off (it is gone)."""
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()
        self._errors.forget(uid)

    def _fire(self, uid: str) -> None:
        self._timers.pop(uid, None)
        self.update(uid)

    async def _work(self, uid: str) -> None:
        try:
            while True:
                self._dirty.discard(uid)
                again = await self._sync_once(uid)
                if again is not None:
                    self.update_after(uid, again)
                if uid not in self._dirty:
                    return
        finally:
            # No await between the dirty check and here: a request that came in during
            # the sync was seen above; one that comes later starts a new worker.
            self._workers.pop(uid, None)
            self._dirty.discard(uid)

    async def _sync_once(self, uid: str) -> float | None:
        async with self._slots:
            try:
                again = await self._sync(uid)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                delay = self._errors.next(uid, asyncio.get_running_loop().time())
                log.warning("pod sync failed; will retry", pod_uid=uid, error=repr(e),
                            retry_in=delay, exc_info=not isinstance(e, errors.APIError))
                return delay
        self._errors.forget(uid)
        return again

    async def stop(self) -> None:
        """Cancel every worker and timer (the kubelet stops; containers keep running)."""
        self._stopped = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
