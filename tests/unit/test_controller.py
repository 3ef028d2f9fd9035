"""The controller base over a fake clock: retries with back-off, one sync per key at a
time, waiting for caches, and draining on shutdown. No sockets, no real sleeps."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.clock import FakeClock, settle
from skiff.client.controller import Controller
from skiff.client.workqueue import ItemExponentialFailureRateLimiter, RateLimitingQueue


class Recorder(Controller):
    """A controller whose sync records calls, fails a key a set number of times, and can
    be held inside a sync until released."""

    def __init__(self, clock: FakeClock, *, workers: int = 2,
                 queue: RateLimitingQueue[str] | None = None,
                 drain_timeout: float | None = 30.0) -> None:
        super().__init__("recorder", workers=workers, queue=queue, clock=clock,
                         drain_timeout=drain_timeout)
        self.calls: list[tuple[str, float]] = []
        self.failures: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Event] = {}
        self.running: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    async def sync(self, key: str) -> None:
        self.calls.append((key, self.clock.now()))
        self.running[key] += 1
        self.most_at_once[key] = max(self.most_at_once[key], self.running[key])
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            if self.failures[key] > 0:
                self.failures[key] -= 1
                raise errors.Unavailable("try later")
            self.finished.append(key)
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.running[key] -= 1

    def hold(self, key: str) -> asyncio.Event:
        self.gates[key] = asyncio.Event()
        return self.gates[key]


class FakeInformer:
    """Syncs when told to."""

    name = "fake"

    def __init__(self) -> None:
        self._synced = asyncio.Event()

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float) -> bool:
        await self._synced.wait()  # the fake ignores the timeout: nothing to warn about
        return True

    def sync(self) -> None:
        self._synced.set()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def start(controller: Controller) -> asyncio.Task[None]:
    task = asyncio.create_task(controller.run())
    await settle()
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_a_key_is_synced_once_per_enqueue_burst(clock: FakeClock) -> None:
    controller = Recorder(clock)
    task = await start(controller)
    for _ in range(5):
        controller.enqueue("default/a")
    await settle()
    assert [key for key, _ in controller.calls] == ["default/a"]
    await stop(task)


async def test_objects_are_enqueued_by_namespace_and_name(clock: FakeClock) -> None:
    controller = Recorder(clock)
    controller.enqueue(core_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="ns", name="p")))
    controller.enqueue(core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1")))
    task = await start(controller)
    assert sorted(key for key, _ in controller.calls) == ["n1", "ns/p"]
    await stop(task)


async def test_a_failing_sync_is_retried_with_exponential_back_off(clock: FakeClock) -> None:
    controller = Recorder(clock)
    controller.failures["default/a"] = 3
    task = await start(controller)
    started = clock.now()
    controller.enqueue("default/a")
    await clock.run_for(1.0)
    offsets = [round(at - started, 6) for _, at in controller.calls]
    assert offsets == [0.0, 0.005, 0.015, 0.035]  # 5 ms, then 10, then 20
    assert controller.finished == ["default/a"]
    assert controller.queue.num_requeues("default/a") == 0  # forgotten on success
    await stop(task)


async def test_success_resets_the_back_off(clock: FakeClock) -> None:
    controller = Recorder(clock)
    task = await start(controller)
    controller.failures["k"] = 2
    controller.enqueue("k")
    await clock.run_for(1.0)
    controller.failures["k"] = 1
    started = clock.now()
    controller.enqueue("k")
    await clock.run_for(1.0)
    assert [round(at - started, 6) for _, at in controller.calls[-2:]] == [0.0, 0.005]
    await stop(task)


async def test_a_key_is_never_synced_by_two_workers_at_once(clock: FakeClock) -> None:
    controller = Recorder(clock, workers=4)
    gate = controller.hold("a")
    task = await start(controller)
    controller.enqueue("a")
    await settle()
    for _ in range(10):
        controller.enqueue("a")
    controller.enqueue("b")
    await settle()
    assert controller.running["a"] == 1 and controller.finished == ["b"]
    gate.set()
    await settle()
    # Changed during its sync: synced exactly once more, afterwards.
    assert [key for key, _ in controller.calls].count("a") == 2
    assert controller.most_at_once["a"] == 1
    await stop(task)


async def test_workers_sync_different_keys_in_parallel(clock: FakeClock) -> None:
    controller = Recorder(clock, workers=2)
    gates = [controller.hold("a"), controller.hold("b")]
    task = await start(controller)
    controller.enqueue("a")
    controller.enqueue("b")
    controller.enqueue("c")
    await settle()
    assert controller.running == Counter({"a": 1, "b": 1})  # "c" waits for a worker
    for gate in gates:
        gate.set()
    await settle()
    assert sorted(controller.finished) == ["a", "b", "c"]
    await stop(task)


async def test_workers_start_only_after_the_informers_synced(clock: FakeClock) -> None:
    controller = Recorder(clock)
    informers = [FakeInformer(), FakeInformer()]
    controller.wait_for(*informers)
    controller.enqueue("a")
    task = await start(controller)
    informers[0].sync()
    await settle()
    assert controller.calls == []
    informers[1].sync()
    await settle()
    assert [key for key, _ in controller.calls] == ["a"]
    await stop(task)


async def test_enqueue_after_syncs_when_the_time_comes(clock: FakeClock) -> None:
    controller = Recorder(clock)
    task = await start(controller)
    controller.enqueue_after("a", 30)
    await clock.run_for(29.9)
    assert controller.calls == []
    await clock.run_for(0.1)
    assert [key for key, _ in controller.calls] == ["a"]
    await stop(task)


async def test_shutdown_drains_syncs_in_flight_and_drops_queued_keys(clock: FakeClock) -> None:
    controller = Recorder(clock, workers=1)
    gate = controller.hold("a")
    task = await start(controller)
    controller.enqueue("a")
    controller.enqueue("b")
    await settle()
    task.cancel()
    await settle()
    assert not task.done()  # waiting for "a" to finish, not cancelling it
    assert controller.running["a"] == 1 and controller.cancelled == []
    controller.enqueue("c")  # ignored: the queue is shut down
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert controller.finished == ["a"]  # "b" was queued, not started: dropped
    assert controller.queue.processing == frozenset()


async def test_shutdown_cancels_syncs_that_outlive_the_drain_timeout(clock: FakeClock) -> None:
    controller = Recorder(clock, workers=1, drain_timeout=10)
    controller.hold("stuck")
    task = await start(controller)
    controller.enqueue("stuck")
    await settle()
    task.cancel()
    await clock.run_for(9.9)
    assert not task.done() and controller.cancelled == []
    await clock.run_for(0.1)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert controller.cancelled == ["stuck"]
    assert controller.queue.processing == frozenset()  # done() even when cancelled


async def test_a_bug_in_sync_is_retried_like_any_failure(clock: FakeClock) -> None:
    class Buggy(Controller):
        calls = 0

        async def sync(self, key: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise KeyError(key)

    queue: RateLimitingQueue[str] = RateLimitingQueue(
        ItemExponentialFailureRateLimiter(1.0, 10.0), clock=clock)
    controller = Buggy("buggy", queue=queue)
    task = await start(controller)
    controller.enqueue("a")
    await clock.run_for(0.9)
    assert controller.calls == 1
    await clock.run_for(0.1)
    assert controller.calls == 2
    await stop(task)


async def test_process_next_is_false_once_the_queue_is_shut_down(clock: FakeClock) -> None:
    controller = Recorder(clock)
    controller.enqueue("a")
    assert await controller.process_next() is True
    controller.queue.shutdown()
    assert await controller.process_next() is False


def test_a_controller_needs_a_worker(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        Recorder(clock, workers=0)
