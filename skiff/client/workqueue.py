"""Work queues for controllers, in client-go's three layers (``util/workqueue``).

1. :class:`Queue` de-duplicates: a key waits in the queue at most once however often it
   is added, and a key being processed is never handed to a second worker; a key added
   again while it is processed is queued once more when the worker calls ``done(key)``.
   So a controller reconciles each object by at most one worker at a time, and an
   object that changed during its sync is synced again afterwards.
2. :class:`DelayingQueue` adds ``add_after(key, seconds)``: the key is added when the
   time has come (a key already waiting keeps the earlier of its two times).
3. :class:`RateLimitingQueue` adds ``add_rate_limited(key)``: the key is added after
   whatever delay its :class:`RateLimiter` says (by default per-key exponential
   back-off, 5 ms doubling to 1000 s, and an overall token bucket of 10 qps with a burst
   of 100, client-go's ``DefaultControllerRateLimiter``); ``forget(key)`` ends the
   back-off of a key that succeeded.

A worker's loop::

    while True:
        key = await queue.get()          # raises ShutDown once the queue is shut down
        try:
            await sync(key)
        except Exception:
            queue.add_rate_limited(key)  # try again, later and later
        else:
            queue.forget(key)
        finally:
            queue.done(key)

Unlike client-go's, ``get()`` raises :class:`ShutDown` as soon as the queue is shut
down, even when keys are still queued: a controller stops because it lost its
leadership or its process is ending, and the queued work is level-triggered — whoever
runs next derives it again from the cluster's state. ``shutdown_with_drain()`` waits for
the keys already handed out to be ``done``.

Everything here runs on one event loop and never blocks; time comes from an injected
:class:`~skiff.client.clock.Clock`, so unit tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from skiff.client.clock import Clock, RealClock, wait_event
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("skiff.client.workqueue")

K = TypeVar("K", bound=Hashable)

#: client-go's DefaultControllerRateLimiter: per-key back-off from 5 ms up to 1000 s ...
DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0
#: ... and, over all keys, a token bucket of 10 retries a second with a burst of 100.
DEFAULT_QPS = 10.0
DEFAULT_BURST = 100

__all__ = [
    "DEFAULT_BASE_DELAY", "DEFAULT_BURST", "DEFAULT_MAX_DELAY", "DEFAULT_QPS",
    "BucketRateLimiter", "DelayingQueue", "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter", "Queue", "RateLimiter", "RateLimitingQueue", "ShutDown",
    "default_controller_rate_limiter",
]


class ShutDown(Exception):
    """The queue was shut down (by its owner): there is nothing more to get."""


# --------------------------------------------------------------- 1. de-duplicating


class Queue(Generic[K]):
    """A de-duplicating FIFO of keys with at most one worker per key (see the module).

    Invariants:

    - ``_dirty`` is the set of keys that need processing: added and not yet handed out
      since;
    - ``_processing`` is the set of keys handed out by ``get`` and not yet ``done``;
    - ``_queue`` holds, in order, exactly the keys in ``_dirty`` and not in
      ``_processing``, each once. A key in both sets was added during its processing
      and enters ``_queue`` at ``done``;
    - ``_getters`` are the futures of ``get`` calls waiting for a key; while ``_queue``
      is non-empty and the queue is not shut down, none of them waits for long (one is
      woken per key queued).
    """

    def __init__(self, *, name: str = "", clock: Clock | None = None) -> None:
        self.name = name
        self.clock: Clock = clock or RealClock()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        #: Set when shut down and ``_processing`` is empty: what a drain waits for.
        self._drained = asyncio.Event()

    def add(self, key: K) -> None:
        """Mark ``key`` as needing processing (a no-op if it already waits, or after
        shutdown)."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done(): one worker per key
        self._queue.append(key)
        self._wake_one_getter()

    async def get(self) -> K:
        """The next key to process, waiting for one; it is the caller's until ``done``.

        Raises :class:`ShutDown` once the queue is shut down.
        """
        while True:
            if self._shutting_down:
                raise ShutDown(f"work queue {self.name!r} is shut down")
            if self._queue:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._queue:
                    self._wake_one_getter()  # we were woken for a key we will not take
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: K) -> None:
        """The caller finished with ``key``; if it was added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._wake_one_getter()
        if self._shutting_down and not self._processing:
            self._drained.set()

    def __len__(self) -> int:
        """How many keys wait to be handed out (not counting those being processed)."""
        return len(self._queue)

    def len(self) -> int:
        """``len(queue)``, as client-go spells it."""
        return len(self._queue)

    @property
    def processing(self) -> frozenset[K]:
        """The keys handed out and not yet done."""
        return frozenset(self._processing)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        """Stop: ``add`` is ignored from now on and every ``get`` raises ShutDown."""
        if self._shutting_down:
            return
        self._shutting_down = True
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if not self._processing:
            self._drained.set()

    async def shutdown_with_drain(self, timeout: float | None = None) -> bool:
        """Shut down, then wait (up to ``timeout`` seconds of the queue's clock; None:
        forever) until every key handed out is done; whether they all were."""
        self.shutdown()
        return await wait_event(self.clock, self._drained, timeout)

    def _wake_one_getter(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


# ----------------------------------------------------------------------- 2. delaying


@dataclass(order=True)
class _Waiting(Generic[K]):
    ready_at: float
    seq: int
    key: K = field(compare=False)


class DelayingQueue(Queue[K]):
    """A :class:`Queue` whose keys can be added later: ``add_after(key, seconds)``.

    One background task (started by the first delayed add, named after the queue) sleeps
    until the earliest time and adds what is due.

    Invariants: ``_ready_at`` maps each waiting key to the one time it will be added;
    ``_heap`` has an entry for each of those (key, time) pairs, plus stale entries (a
    key whose time moved earlier, or that was added already), recognised by not
    matching ``_ready_at`` and dropped when they reach the top.
    """

    def __init__(self, *, name: str = "", clock: Clock | None = None) -> None:
        super().__init__(name=name, clock=clock)
        self._ready_at: dict[K, float] = {}
        self._heap: list[_Waiting[K]] = []
        self._seq = itertools.count()
        #: Set when the earliest time may have moved earlier: the waiting task re-plans.
        self._rescheduled = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None

    def add_after(self, key: K, seconds: float) -> None:
        """Add ``key`` after ``seconds`` (at once if zero or less); a key that already
        waits keeps the earlier of the two times."""
        if self._shutting_down:
            return
        if seconds <= 0:
            self.add(key)
            return
        ready_at = self.clock.now() + seconds
        current = self._ready_at.get(key)
        if current is not None and current <= ready_at:
            return
        self._ready_at[key] = ready_at
        heapq.heappush(self._heap, _Waiting(ready_at, next(self._seq), key))
        if self._heap[0].key == key and self._heap[0].ready_at == ready_at:
            self._rescheduled.set()
        if self._waiter is None:
            self._waiter = spawn(self._wait_loop(), name=f"workqueue-{self.name or id(self)}")

    @property
    def waiting(self) -> int:
        """How many keys wait for their time."""
        return len(self._ready_at)

    def shutdown(self) -> None:
        """Shut down (see :meth:`Queue.shutdown`); keys still waiting are dropped."""
        super().shutdown()
        self._ready_at.clear()
        self._heap.clear()
        if self._waiter is not None:
            self._waiter.cancel()

    async def _wait_loop(self) -> None:
        while not self._shutting_down:
            self._add_due()
            wait = self._heap[0].ready_at - self.clock.now() if self._heap else None
            self._rescheduled.clear()
            await wait_event(self.clock, self._rescheduled, wait)

    def _add_due(self) -> None:
        now = self.clock.now()
        while self._heap and self._heap[0].ready_at <= now:
            entry = heapq.heappop(self._heap)
            if self._ready_at.get(entry.key) == entry.ready_at:
                del self._ready_at[entry.key]
                self.add(entry.key)
        # Stale entries on top would make the loop wake early for nothing.
        while self._heap and self._ready_at.get(self._heap[0].key) != self._heap[0].ready_at:
            heapq.heappop(self._heap)


# ------------------------------------------------------------------ rate limiters


class RateLimiter(Protocol[K]):
    """How long a key should wait before its next retry."""

    def when(self, key: K) -> float:
        """The delay before retrying ``key`` (and count this retry)."""
        ...

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts the back-off afresh."""
        ...

    def num_requeues(self, key: K) -> int:
        """How many times ``key`` was retried since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[K]):
    """Per key: ``base_delay * 2**failures``, at most ``max_delay``.

    Invariant: ``_failures[key]`` counts the ``when(key)`` calls since ``forget(key)``;
    a key with none is absent.
    """

    def __init__(self, base_delay: float = DEFAULT_BASE_DELAY,
                 max_delay: float = DEFAULT_MAX_DELAY) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        if failures >= 64:  # 2**64 times any base is past any sensible cap; no overflow
            return self.max_delay
        return min(self.max_delay, self.base_delay * 2.0 ** failures)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter(Generic[K]):
    """A token bucket over all keys: ``qps`` tokens a second, at most ``burst`` saved.

    Each ``when`` takes a token, going into debt when there is none (the delay is how
    long the debt takes to repay), as Go's ``rate.Limiter.Reserve``.

    Invariant: ``_tokens`` is the balance at ``_last`` (clock time), at most ``burst``;
    negative means reserved ahead.
    """

    def __init__(self, qps: float = DEFAULT_QPS, burst: int = DEFAULT_BURST, *,
                 clock: Clock | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("need qps > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self.clock: Clock = clock or RealClock()
        self._tokens = float(burst)
        self._last = self.clock.now()

    def when(self, key: K) -> float:
        now = self.clock.now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: K) -> None:
        pass  # the bucket is shared by all keys: nothing to forget about one

    def num_requeues(self, key: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """The longest delay any of its limiters asks for (each one counts every retry)."""

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("need at least one rate limiter")
        self.limiters = limiters

    def when(self, key: K) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: K) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_controller_rate_limiter(
        clock: Clock | None = None, *, base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY, qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST) -> MaxOfRateLimiter[Hashable]:
    """client-go's ``DefaultControllerRateLimiter``: per-key exponential back-off, and an
    overall token bucket so that many failing keys do not hammer the apiserver."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(base_delay, max_delay),
                            BucketRateLimiter(qps, burst, clock=clock))


# ------------------------------------------------------------------- 3. rate limiting


class RateLimitingQueue(DelayingQueue[K]):
    """A :class:`DelayingQueue` that retries keys after their rate limiter's delay."""

    def __init__(self, rate_limiter: RateLimiter[K] | None = None, *, name: str = "",
                 clock: Clock | None = None) -> None:
        super().__init__(name=name, clock=clock)
        self.rate_limiter: RateLimiter[K] = (
            rate_limiter if rate_limiter is not None
            else default_controller_rate_limiter(self.clock))  # type: ignore[assignment]

    def add_rate_limited(self, key: K) -> None:
        """Add ``key`` again when its rate limiter allows (its back-off grows each time)."""
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """``key`` is done with retrying: reset its back-off (it stays queued if it is)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many times ``key`` was retried since it was last forgotten."""
        return self.rate_limiter.num_requeues(key)
