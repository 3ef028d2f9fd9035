"""The work queue's three layers, on a fake clock: no sockets, no real sleeps.

Each test states one promise of :mod:`skiff.client.workqueue`: de-duplication, one
worker per key, re-queueing a key added while it was processed, delays, back-off and
the token bucket, shutdown and drain.
"""

from __future__ import annotations

import asyncio

import pytest

from skiff.client.clock import FakeClock, settle
from skiff.client.workqueue import (
    DEFAULT_BASE_DELAY,
    DEFAULT_BURST,
    DEFAULT_MAX_DELAY,
    DEFAULT_QPS,
    BucketRateLimiter,
    DelayingQueue,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    Queue,
    RateLimitingQueue,
    ShutDown,
    default_controller_rate_limiter,
)


def pending(task: asyncio.Task) -> bool:
    return not task.done()


# --------------------------------------------------------------- de-duplicating


async def test_a_key_added_twice_is_queued_once_in_fifo_order() -> None:
    queue: Queue[str] = Queue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == queue.len() == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]


async def test_get_waits_for_a_key() -> None:
    queue: Queue[str] = Queue()
    getter = asyncio.create_task(queue.get())
    await settle()
    assert pending(getter)
    queue.add("a")
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_a_key_being_processed_is_not_handed_to_a_second_worker() -> None:
    queue: Queue[str] = Queue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    second = asyncio.create_task(queue.get())
    await settle()
    assert pending(second) and len(queue) == 0
    queue.done("a")  # re-added while processing: queued again, once
    assert await asyncio.wait_for(second, 1) == "a"
    assert len(queue) == 0


async def test_done_without_a_re_add_does_not_queue_the_key_again() -> None:
    queue: Queue[str] = Queue()
    queue.add("a")
    await queue.get()
    queue.done("a")
    assert len(queue) == 0 and queue.processing == frozenset()


async def test_other_keys_are_handed_out_while_one_is_processed() -> None:
    queue: Queue[str] = Queue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "b"
    assert queue.processing == {"a", "b"}


async def test_each_waiting_worker_gets_a_different_key() -> None:
    queue: Queue[str] = Queue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await settle()
    queue.add("a")
    queue.add("b")
    await settle()
    done = [g.result() for g in getters if g.done()]
    assert sorted(done) == ["a", "b"]
    queue.add("c")
    assert sorted([await g for g in getters]) == ["a", "b", "c"]


async def test_a_cancelled_getter_that_was_woken_passes_the_key_on() -> None:
    queue: Queue[str] = Queue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await settle()
    queue.add("a")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it can take the key
    assert await asyncio.wait_for(second, 1) == "a"
    assert first.cancelled()


async def test_get_raises_shutdown_for_waiting_and_later_callers() -> None:
    queue: Queue[str] = Queue()
    waiting = asyncio.create_task(queue.get())
    await settle()
    queue.add("a")
    queue.add("b")
    assert await waiting == "a"
    queue.shutdown()
    # Keys still queued are dropped: whoever runs next derives the work again.
    with pytest.raises(ShutDown):
        await queue.get()
    queue.add("c")
    assert queue.shutting_down


async def test_shutdown_wakes_every_waiting_getter() -> None:
    queue: Queue[str] = Queue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await settle()
    queue.shutdown()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, ShutDown) for r in results)


async def test_shutdown_with_drain_waits_for_keys_in_flight() -> None:
    clock = FakeClock()
    queue: Queue[str] = Queue(clock=clock)
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "a"
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await settle()
    assert pending(drain)
    queue.add("a")  # ignored: shutting down
    queue.done("a")
    assert await asyncio.wait_for(drain, 1) is True
    assert len(queue) == 1  # "b" was never handed out, and never will be


async def test_shutdown_with_drain_returns_at_once_when_nothing_is_in_flight() -> None:
    queue: Queue[str] = Queue(clock=FakeClock())
    queue.add("a")
    assert await asyncio.wait_for(queue.shutdown_with_drain(), 1) is True


async def test_shutdown_with_drain_gives_up_after_its_timeout() -> None:
    clock = FakeClock()
    queue: Queue[str] = Queue(clock=clock)
    queue.add("a")
    await queue.get()
    drain = asyncio.create_task(queue.shutdown_with_drain(timeout=5))
    await clock.run_for(4.9)
    assert pending(drain)
    await clock.run_for(0.1)
    assert drain.done() and drain.result() is False


# ---------------------------------------------------------------------- delaying


async def test_add_after_adds_the_key_when_its_time_comes() -> None:
    clock = FakeClock()
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("a", 1.0)
    await clock.run_for(0.999)
    assert len(queue) == 0 and queue.waiting == 1
    await clock.run_for(0.001)
    assert len(queue) == 1 and queue.waiting == 0
    assert await queue.get() == "a"


async def test_add_after_zero_or_less_adds_at_once() -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=FakeClock())
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert len(queue) == 2 and queue.waiting == 0


async def test_a_waiting_key_keeps_the_earlier_time() -> None:
    clock = FakeClock()
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add_after("a", 1)  # earlier: wins
    queue.add_after("a", 5)  # later: ignored
    assert queue.waiting == 1
    await clock.run_for(1)
    assert len(queue) == 1
    await queue.get()
    await clock.run_for(20)  # the stale 5 s and 10 s entries add nothing
    assert len(queue) == 0


async def test_delayed_keys_come_in_order_of_their_time() -> None:
    clock = FakeClock()
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("late", 3)
    queue.add_after("early", 1)
    queue.add_after("middle", 2)
    await clock.run_for(3)
    assert [await queue.get() for _ in range(3)] == ["early", "middle", "late"]


async def test_a_new_earlier_key_wakes_the_waiting_loop() -> None:
    clock = FakeClock()
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("late", 100)
    await settle()  # the loop now sleeps until +100
    queue.add_after("soon", 1)
    await clock.run_for(1)
    assert await asyncio.wait_for(queue.get(), 1) == "soon"


async def test_a_delayed_key_that_is_being_processed_waits_for_done() -> None:
    clock = FakeClock()
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add("a")
    await queue.get()
    queue.add_after("a", 1)
    await clock.run_for(1)
    assert len(queue) == 0
    queue.done("a")
    assert len(queue) == 1


async def test_shutdown_drops_waiting_keys_and_stops_the_loop() -> None:
    clock = FakeClock()
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("a", 1)
    await settle()
    queue.shutdown()
    await clock.run_for(2)
    assert queue.waiting == 0 and len(queue) == 0
    assert clock.sleepers == 0
    queue.add_after("b", 1)  # ignored
    assert queue.waiting == 0


# ------------------------------------------------------------------ rate limiters


def test_exponential_back_off_doubles_per_key_up_to_the_cap() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(
        0.005, 0.1)
    assert [limiter.when("a") for _ in range(7)] == pytest.approx(
        [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1])
    assert limiter.when("b") == pytest.approx(0.005)  # per key
    assert limiter.num_requeues("a") == 7
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_exponential_back_off_does_not_overflow_after_many_failures() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(2000)]
    assert delays[-1] == DEFAULT_MAX_DELAY
    assert max(delays) == DEFAULT_MAX_DELAY


def test_exponential_back_off_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ItemExponentialFailureRateLimiter(0, 1)
    with pytest.raises(ValueError):
        ItemExponentialFailureRateLimiter(2, 1)


def test_token_bucket_allows_a_burst_then_spaces_retries_by_qps() -> None:
    clock = FakeClock()
    bucket: BucketRateLimiter[str] = BucketRateLimiter(10, 100, clock=clock)
    assert [bucket.when(str(i)) for i in range(100)] == [0.0] * 100
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.advance(0.3)  # the debt is repaid, one token saved
    assert bucket.when("z") == pytest.approx(0.0, abs=1e-9)
    assert bucket.when("z") == pytest.approx(0.1)
    clock.advance(1000)  # saved tokens never exceed the burst
    assert [bucket.when("w") for _ in range(100)] == [0.0] * 100
    assert bucket.when("w") > 0
    assert bucket.num_requeues("w") == 0


def test_max_of_takes_the_longest_delay_and_forgets_everywhere() -> None:
    clock = FakeClock()
    limiter = MaxOfRateLimiter(ItemExponentialFailureRateLimiter(1.0, 100.0),
                               BucketRateLimiter(1, 1, clock=clock))
    assert limiter.when("a") == 1.0  # back-off 1 s; bucket had a token
    assert limiter.when("a") == 2.0  # back-off 2 s > bucket's 1 s
    assert limiter.when("b") == 2.0  # back-off 1 s < bucket's 2 s
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


def test_the_default_limiter_is_client_gos() -> None:
    assert (DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY, DEFAULT_QPS, DEFAULT_BURST) == (
        0.005, 1000.0, 10.0, 100)
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock)
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.when("a") == pytest.approx(0.01)
    custom = default_controller_rate_limiter(clock, base_delay=1, max_delay=2, qps=1, burst=1)
    assert [custom.when("a") for _ in range(3)] == [1, 2, 2]


# ---------------------------------------------------------------- rate limiting


async def test_add_rate_limited_backs_off_exponentially_until_forgotten() -> None:
    clock = FakeClock()
    queue: RateLimitingQueue[str] = RateLimitingQueue(clock=clock)
    for delay in (0.005, 0.01, 0.02, 0.04):
        queue.add_rate_limited("a")
        await clock.run_for(delay * 0.99)
        assert len(queue) == 0
        await clock.run_for(delay * 0.01)
        assert len(queue) == 1
        assert await queue.get() == "a"
        queue.done("a")
    assert queue.num_requeues("a") == 4
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("a")
    await clock.run_for(0.005)
    assert len(queue) == 1


async def test_many_failing_keys_are_held_back_by_the_token_bucket() -> None:
    clock = FakeClock()
    queue: RateLimitingQueue[int] = RateLimitingQueue(clock=clock)
    for key in range(150):
        queue.add_rate_limited(key)
    await clock.run_for(0.005)
    assert len(queue) == 100  # the burst
    await clock.run_for(1.0)
    assert len(queue) == 110  # then 10 a second
    await clock.run_for(4.0)
    assert len(queue) == 150


async def test_a_custom_rate_limiter_is_used() -> None:
    clock = FakeClock()
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(1, 8)
    queue: RateLimitingQueue[str] = RateLimitingQueue(limiter, clock=clock, name="custom")
    queue.add_rate_limited("a")
    await clock.run_for(0.99)
    assert len(queue) == 0
    await clock.run_for(0.01)
    assert len(queue) == 1
