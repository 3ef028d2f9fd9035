"""Time, injected: a :class:`Clock` the work queue, the leader elector and controllers ask.

Everything in :mod:`skiff.client` that waits or measures time does it through a
``Clock``, never through ``time`` or ``asyncio.sleep`` directly, so unit tests hand
it a :class:`FakeClock` and *move* time instead of sleeping (client-go's
``k8s.io/utils/clock``, trio's ``MockClock``).

- ``now()`` is monotonic seconds: for deadlines, back-offs and "how long since";
- ``wall()`` is seconds since the epoch: only for what is written into objects (a
  Lease's renew_time), never for deciding anything about elapsed time;
- ``sleep(seconds)`` waits on this clock.

Both clocks here also answer ``monotonic()`` (the same as ``now()``), so one clock can
be handed to an :class:`~skiff.client.informer.Informer` too.

:func:`with_timeout` and :func:`wait_event` bound a wait by the clock's time, so a
timeout in code under test fires when the test advances a fake clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

__all__ = ["Clock", "FakeClock", "RealClock", "settle", "wait_event", "with_timeout"]


@runtime_checkable
class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> float:
        """Monotonic seconds (any origin): only differences mean anything."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps written into objects."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (zero or less: just yield)."""
        ...


class RealClock:
    """The machine's clocks and the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        """``now()``, under the name the informer's clock protocol uses."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "RealClock()"


@dataclass(order=True)
class _Sleeper:
    deadline: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class FakeClock:
    """A clock that moves only when told to; for unit tests.

    ``advance(seconds)`` moves time and wakes every sleeper whose deadline has come (the
    woken tasks run at the test's next ``await``); ``await run_for(seconds)`` moves time
    step by step through each deadline on the way, letting woken tasks run (and sleep
    again) at every step, which is what a chain of timers needs.

    Invariant: every future in ``_sleepers`` that is not done belongs to a task sleeping
    until its ``deadline`` > ``_now``; done futures (woken, or their sleeper cancelled)
    are dropped lazily when they reach the top of the heap.

    A deadline within :attr:`EPSILON` of the current time counts as come, so that a test
    advancing by 4.9 then 0.1 reaches what was due in 5 despite binary floating point.
    """

    EPSILON = 1e-9

    def __init__(self, start: float = 1000.0, *, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        #: wall() is now() shifted by this: the two move together, as on a real machine.
        self._wall_offset = wall_offset
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def monotonic(self) -> float:
        """``now()``, under the name the informer's clock protocol uses."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, _Sleeper(self._now + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock now."""
        return sum(1 for s in self._sleepers if not s.future.done())

    def next_deadline(self) -> float | None:
        """The earliest deadline a task sleeps until, or None when none sleeps."""
        self._drop_done()
        return self._sleepers[0].deadline if self._sleepers else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers that are due."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        self._wake_due()

    async def run_for(self, seconds: float) -> None:
        """Move time forward by ``seconds``, stopping at each deadline on the way so the
        tasks woken there run (and may sleep again) before time moves on. Tasks that are
        ready to run get to run first, at the current time."""
        target = self._now + seconds
        await settle()  # tasks ready to run start their sleeps now, not at the target
        while (deadline := self.next_deadline()) is not None and (
                deadline <= target + self.EPSILON):
            self._now = max(self._now, deadline)
            self._wake_due()
            await settle()
        self._now = target
        self._wake_due()
        await settle()

    def _drop_done(self) -> None:
        while self._sleepers and self._sleepers[0].future.done():
            heapq.heappop(self._sleepers)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0].deadline <= self._now + self.EPSILON:
            sleeper = heapq.heappop(self._sleepers)
            if not sleeper.future.done():
                sleeper.future.set_result(None)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now}, sleepers={self.sleepers})"


async def settle(rounds: int = 100) -> None:
    """Let every task that can run without time passing run: yield to the loop ``rounds``
    times (each yield runs one round of ready callbacks; chains of a few awaits need a
    few rounds each)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def with_timeout(clock: Clock, seconds: float, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, cancelled after ``seconds`` of ``clock`` time (TimeoutError).

    With a :class:`RealClock` this is ``asyncio.timeout``; with any other clock the work
    races a ``clock.sleep``, so a fake clock's ``advance`` is what times it out.
    """
    if isinstance(clock, RealClock):
        async with asyncio.timeout(seconds):
            return await awaitable
    work = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # We are being cancelled: take the work down with us and let it unwind first,
        # as it would inside asyncio.timeout (asyncio.wait never raises its errors).
        timer.cancel()
        work.cancel()
        await asyncio.wait({work})
        raise
    timer.cancel()
    if not work.done():
        work.cancel()
        await asyncio.wait({work})
        if work.cancelled():
            raise TimeoutError(f"timed out after {seconds}s")
    return work.result()


async def wait_event(clock: Clock, event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds of ``clock`` time pass (None:
    forever); whether the event is set."""
    if event.is_set():
        return True
    if timeout is None:
        await event.wait()
        return True
    try:
        await with_timeout(clock, timeout, event.wait())
    except TimeoutError:
        pass
    return event.is_set()
