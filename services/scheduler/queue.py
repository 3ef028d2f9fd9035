"""The scheduling queue: pods waiting for a node (Kubernetes' ``PriorityQueue``).

Three places a pending pod can wait, and at most one at a time:

- **active**: ready to be tried. A heap ordered by priority (higher first), then by
  when the pod entered the queue (earlier first), then by arrival order. ``pop()``
  takes from here, waiting when it is empty.
- **backoff**: failed recently and waits out its backoff before becoming active
  again: 1 s after the first failed attempt, doubling per attempt up to 10 s
  (``podInitialBackoffSeconds`` / ``podMaxBackoffSeconds``), counted from the failure.
- **unschedulable**: no node fit, and trying again is pointless until the cluster
  changes. ``move_all_to_active(event)`` (a node added or changed, a pod deleted...)
  moves these pods on: to backoff if theirs has not expired yet, to active otherwise.
  Pods unschedulable for longer than 60 s are moved anyway by the periodic flush,
  in case an event that mattered was missed.

A popped pod is *in flight* until ``add_unschedulable`` (it failed) or ``done`` (it
was placed, or given up on). What happens to it meanwhile is remembered: if it is
deleted, a later ``add_unschedulable`` drops it; if it is updated, the update may
have made it schedulable, so it goes to backoff rather than waiting for an event.
Likewise a pod whose cycle overlapped a ``move_all_to_active`` (the
``scheduling_cycle`` passed to ``add_unschedulable`` is older than the move) goes to
backoff: the event came too late for the attempt that failed but may help the next.
A pod that failed with an error rather than a fit failure (no
``unschedulable_plugins``) also goes to backoff.

Updates keep position: a queued pod updated in place keeps its place in active or
backoff (re-sorted only if its priority changed); an unschedulable pod whose spec or
labels changed is moved on as by an event (status-only updates leave it waiting).

Time is ``clock()`` (injected): moves out of backoff and the 60 s flush happen when
``flush()`` runs — each ``pop()`` does it, and :meth:`run_flusher` does it every
second for a waiting scheduler. Tests move a fake clock and call ``flush``; nothing
sleeps. Pods are keyed ``namespace/name``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.scheduler.framework import PodInfo, pod_key
from skiff.api.v1 import core_pb2

DEFAULT_POD_INITIAL_BACKOFF = 1.0
DEFAULT_POD_MAX_BACKOFF = 10.0
DEFAULT_POD_MAX_IN_UNSCHEDULABLE = 60.0
#: How often :meth:`SchedulingQueue.run_flusher` moves backed-off pods (Kubernetes: 1 s).
FLUSH_INTERVAL = 1.0

# Cluster events that may make unschedulable pods schedulable (for logs and pre_checks).
NODE_ADD = "NodeAdd"
NODE_UPDATE = "NodeUpdate"
ASSIGNED_POD_DELETE = "AssignedPodDelete"
ASSIGNED_POD_UPDATE = "AssignedPodUpdate"
SERVICE_CHANGE = "ServiceChange"
UNSCHEDULABLE_TIMEOUT = "UnschedulableTimeout"

PodRef = core_pb2.Pod | PodInfo | str


@dataclass(eq=False, slots=True)
class QueuedPodInfo:
    """A pod in the queue and its scheduling history."""

    pod_info: PodInfo
    #: When the pod last entered the queue (orders active; backoff counts from it).
    timestamp: float
    #: When it was first popped; None until then.
    initial_attempt_timestamp: float | None = None
    #: How many times it was popped (tried).
    attempts: int = 0
    #: The plugins that rejected it last time (from FitError); empty after an error.
    unschedulable_plugins: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return self.pod_info.key

    @property
    def pod(self) -> core_pb2.Pod:
        return self.pod_info.pod


@dataclass(slots=True)
class _InFlight:
    """What happened to a popped pod while it was being scheduled."""

    deleted: bool = False
    updated: PodInfo | None = None


def _pod_info(pod: core_pb2.Pod | PodInfo) -> PodInfo:
    return pod if isinstance(pod, PodInfo) else PodInfo(pod)


def _key(pod: PodRef | QueuedPodInfo) -> str:
    if isinstance(pod, str):
        return pod
    return pod.key if isinstance(pod, PodInfo | QueuedPodInfo) else pod_key(pod)


def is_pod_updated(old: core_pb2.Pod, new: core_pb2.Pod) -> bool:
    """Whether anything but status and bookkeeping changed (Kubernetes' ``isPodUpdated``):
    only such a change can make an unschedulable pod schedulable."""
    def stripped(pod: core_pb2.Pod) -> core_pb2.Pod:
        copy = core_pb2.Pod()
        copy.CopyFrom(pod)
        copy.ClearField("status")
        copy.metadata.resource_version = ""
        copy.metadata.generation = 0
        return copy
    return stripped(old) != stripped(new)


class SchedulingQueue:
    """See the module docstring.

    Invariants:

    - a key is in at most one of ``_active``, ``_backoff``, ``_unschedulable``;
    - ``_active_heap`` holds one live entry ``(-priority, timestamp, seq, key)`` per key
      of ``_active`` — the one whose seq is ``_active_seq[key]`` — and stale entries
      (deleted or re-sorted pods), skipped when popped and purged when they outnumber
      live ones; likewise ``_backoff_heap`` ``(expiry, seq, key)`` for ``_backoff``;
    - ``_in_flight`` holds the keys popped and not yet given back or done;
    - ``_wakeup`` is set while active is non-empty or the queue is closed.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 initial_backoff: float = DEFAULT_POD_INITIAL_BACKOFF,
                 max_backoff: float = DEFAULT_POD_MAX_BACKOFF,
                 max_in_unschedulable: float = DEFAULT_POD_MAX_IN_UNSCHEDULABLE) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("backoff: need 0 < initial_backoff <= max_backoff")
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_in_unschedulable = max_in_unschedulable
        self._active: dict[str, QueuedPodInfo] = {}
        self._active_heap: list[tuple[int, float, int, str]] = []
        self._active_seq: dict[str, int] = {}
        self._backoff: dict[str, QueuedPodInfo] = {}
        self._backoff_heap: list[tuple[float, int, str]] = []
        self._backoff_seq: dict[str, int] = {}
        self._unschedulable: dict[str, QueuedPodInfo] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._seq = itertools.count()
        self._scheduling_cycle = 0
        #: The scheduling cycle at the last move_all_to_active.
        self._move_request_cycle = -1
        self._closed = False
        self._wakeup = asyncio.Event()

    # ------------------------------------------------------------ informer side

    def add(self, pod: core_pb2.Pod | PodInfo) -> None:
        """A new pending pod: straight to active (an already queued pod is updated)."""
        info = _pod_info(pod)
        key = info.key
        flight = self._in_flight.get(key)
        if self._queued(key) or (flight is not None and not flight.deleted):
            self.update(info)
            return
        self._push_active(QueuedPodInfo(info, self.clock()))

    def update(self, pod: core_pb2.Pod | PodInfo) -> None:
        """A pending pod changed (see the module docstring for where it goes)."""
        info = _pod_info(pod)
        key = info.key
        if key in self._active:
            queued = self._active[key]
            old_priority = queued.pod_info.priority
            queued.pod_info = info
            if info.priority != old_priority:
                self._push_active(queued)  # re-sorted; the old entry goes stale
                self._purge_stale()
        elif key in self._backoff:
            self._backoff[key].pod_info = info
        elif key in self._unschedulable:
            queued = self._unschedulable[key]
            old, queued.pod_info = queued.pod_info, info
            if is_pod_updated(old.pod, info.pod):
                del self._unschedulable[key]
                self._move_on(queued)
        elif key in self._in_flight and not self._in_flight[key].deleted:
            self._in_flight[key].updated = info
        else:
            self._push_active(QueuedPodInfo(info, self.clock()))

    def delete(self, pod: PodRef | QueuedPodInfo) -> None:
        """The pod is gone, or no longer pending (bound): forget it wherever it waits."""
        key = _key(pod)
        self._active.pop(key, None)
        self._active_seq.pop(key, None)
        self._backoff.pop(key, None)
        self._backoff_seq.pop(key, None)
        self._unschedulable.pop(key, None)
        if key in self._in_flight:
            self._in_flight[key] = _InFlight(deleted=True)
        self._purge_stale()

    # ------------------------------------------------------------ scheduler side

    async def pop(self) -> QueuedPodInfo | None:
        """The next pod to schedule (highest priority, then longest waiting), waiting
        until there is one; None once the queue is closed. The pod is in flight until
        ``add_unschedulable`` or ``done``."""
        while True:
            if self._closed:
                return None
            self.flush_backoff_completed()
            if self._active:
                return self._pop_active()
            self._wakeup.clear()
            await self._wakeup.wait()

    def add_unschedulable(self, queued: QueuedPodInfo, cycle: int) -> None:
        """Give back a popped pod that could not be placed in scheduling ``cycle`` (the
        ``scheduling_cycle`` read right after its pop). Set
        ``queued.unschedulable_plugins`` from the FitError first; leave it empty after
        an error. Ends the pod's flight."""
        key = queued.key
        flight = self._in_flight.pop(key, None)
        if (flight is not None and flight.deleted) or self._queued(key):
            return  # deleted meanwhile, or re-added as a new pod: that one wins
        changed = flight is not None and flight.updated is not None
        if changed:
            queued.pod_info = flight.updated  # type: ignore[union-attr,assignment]
        queued.timestamp = self.clock()
        if changed or self._move_request_cycle >= cycle or not queued.unschedulable_plugins:
            self._push_backoff(queued)
        else:
            self._unschedulable[key] = queued

    def done(self, pod: PodRef | QueuedPodInfo) -> None:
        """The pod's scheduling attempt is over (placed, or given back)."""
        self._in_flight.pop(_key(pod), None)

    @property
    def scheduling_cycle(self) -> int:
        """How many pods were popped so far: the cycle number of the latest pop."""
        return self._scheduling_cycle

    # ------------------------------------------------------------ cluster events

    def move_all_to_active(self, event: str,
                           pre_check: Callable[[QueuedPodInfo], bool] | None = None) -> int:
        """A cluster event that may make unschedulable pods schedulable: move them on
        (to backoff while theirs lasts, else active). ``pre_check`` may keep some
        waiting (say, pods no plugin interested in ``event`` rejected). How many moved."""
        moved = 0
        for key, queued in list(self._unschedulable.items()):
            if pre_check is not None and not pre_check(queued):
                continue
            del self._unschedulable[key]
            self._move_on(queued)
            moved += 1
        self._move_request_cycle = self._scheduling_cycle
        return moved

    # ------------------------------------------------------------ time

    def flush(self) -> None:
        """Everything time-driven: expired backoffs to active, long-unschedulable pods
        on."""
        self.flush_backoff_completed()
        self.flush_unschedulable_leftover()

    def flush_backoff_completed(self) -> int:
        """Move pods whose backoff has expired to active; how many."""
        now = self.clock()
        moved = 0
        heap = self._backoff_heap
        while heap:
            expiry, seq, key = heap[0]
            if self._backoff_seq.get(key) != seq:
                heapq.heappop(heap)  # stale
                continue
            if expiry > now:
                break
            heapq.heappop(heap)
            del self._backoff_seq[key]
            self._push_active(self._backoff.pop(key))
            moved += 1
        return moved

    def flush_unschedulable_leftover(self) -> int:
        """Move on pods unschedulable for longer than ``max_in_unschedulable``; how many."""
        now = self.clock()
        stale = {key for key, q in self._unschedulable.items()
                 if now - q.timestamp > self.max_in_unschedulable}
        if not stale:
            return 0
        return self.move_all_to_active(UNSCHEDULABLE_TIMEOUT, lambda q: q.key in stale)

    async def run_flusher(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                          *, interval: float = FLUSH_INTERVAL) -> None:
        """``flush()`` every ``interval`` seconds until closed (the daemon spawns this;
        ``sleep`` is its clock's)."""
        while not self._closed:
            await sleep(interval)
            self.flush()  # pods it makes active wake pop()

    def backoff_duration(self, queued: QueuedPodInfo) -> float:
        """initial * 2^(attempts-1), capped at max: 1, 2, 4, 8, 10, 10, ... seconds."""
        if queued.attempts == 0:
            return 0.0
        return min(self.initial_backoff * 2 ** (queued.attempts - 1), self.max_backoff)

    def backoff_expiry(self, queued: QueuedPodInfo) -> float:
        return queued.timestamp + self.backoff_duration(queued)

    def next_backoff_expiry(self) -> float | None:
        """When the next pod leaves backoff (clock time), None if none waits there."""
        self._purge_stale()
        while self._backoff_heap:
            expiry, seq, key = self._backoff_heap[0]
            if self._backoff_seq.get(key) == seq:
                return expiry
            heapq.heappop(self._backoff_heap)
        return None

    # ------------------------------------------------------------ lifecycle, views

    def close(self) -> None:
        """Stop: every ``pop`` (waiting or future) returns None."""
        self._closed = True
        self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Pods waiting (active, backoff and unschedulable; not those in flight)."""
        return len(self._active) + len(self._backoff) + len(self._unschedulable)

    def __contains__(self, pod: object) -> bool:
        return isinstance(pod, core_pb2.Pod | PodInfo | str) and self._queued(_key(pod))

    def where(self, pod: PodRef | QueuedPodInfo) -> str | None:
        """``active``, ``backoff``, ``unschedulable``, ``in-flight`` or None."""
        key = _key(pod)
        for name, place in (("active", self._active), ("backoff", self._backoff),
                            ("unschedulable", self._unschedulable)):
            if key in place:
                return name
        return "in-flight" if key in self._in_flight else None

    def counts(self) -> dict[str, int]:
        """How many pods wait where (for metrics)."""
        return {"active": len(self._active), "backoff": len(self._backoff),
                "unschedulable": len(self._unschedulable), "in-flight": len(self._in_flight)}

    # ------------------------------------------------------------ internals

    def _queued(self, key: str) -> bool:
        return key in self._active or key in self._backoff or key in self._unschedulable

    def _push_active(self, queued: QueuedPodInfo) -> None:
        seq = next(self._seq)
        key = queued.key
        self._active[key] = queued
        self._active_seq[key] = seq
        heapq.heappush(self._active_heap, (-queued.pod_info.priority, queued.timestamp, seq, key))
        self._wakeup.set()

    def _push_backoff(self, queued: QueuedPodInfo) -> None:
        seq = next(self._seq)
        key = queued.key
        self._backoff[key] = queued
        self._backoff_seq[key] = seq
        heapq.heappush(self._backoff_heap, (self.backoff_expiry(queued), seq, key))

    def _move_on(self, queued: QueuedPodInfo) -> None:
        """An unschedulable pod may be schedulable now: active, unless still backing off."""
        if self.backoff_expiry(queued) > self.clock():
            self._push_backoff(queued)
        else:
            self._push_active(queued)

    def _pop_active(self) -> QueuedPodInfo:
        heap = self._active_heap
        while True:
            _, _, seq, key = heapq.heappop(heap)
            if self._active_seq.get(key) == seq:
                break
        del self._active_seq[key]
        queued = self._active.pop(key)
        if not self._active:
            self._wakeup.clear()
        now = self.clock()
        queued.attempts += 1
        if queued.initial_attempt_timestamp is None:
            queued.initial_attempt_timestamp = now
        self._scheduling_cycle += 1
        self._in_flight[key] = _InFlight()
        return queued

    def _purge_stale(self) -> None:
        """Rebuild a heap whose stale entries outnumber its live ones (bounded memory)."""
        if len(self._active_heap) > 2 * len(self._active) + 64:
            self._active_heap = [e for e in self._active_heap if self._active_seq.get(e[3]) == e[2]]
            heapq.heapify(self._active_heap)
        if len(self._backoff_heap) > 2 * len(self._backoff) + 64:
            self._backoff_heap = [e for e in self._backoff_heap
                                  if self._backoff_seq.get(e[2]) == e[1]]
            heapq.heapify(self._backoff_heap)
