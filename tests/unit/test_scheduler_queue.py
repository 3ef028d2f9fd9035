"""The scheduling queue: priority then FIFO order, backoff doubling to 10 s on a fake
clock, the unschedulable pool and the events that move pods on, updates and deletes
(queued or in flight), pop() waiting and close()."""

from __future__ import annotations

import asyncio

import pytest
from test_scheduler_builders import make_pod

from services.scheduler.queue import NODE_ADD, QueuedPodInfo, SchedulingQueue
from skiff.api.v1 import core_pb2

FIT_FAILURE = frozenset({"NodeResourcesFit"})


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def queue(clock: FakeTime) -> SchedulingQueue:
    return SchedulingQueue(clock=clock)


async def pop_names(queue: SchedulingQueue, count: int) -> list[str]:
    names = []
    for _ in range(count):
        queued = await queue.pop()
        assert queued is not None
        names.append(queued.pod.metadata.name)
        queue.done(queued.key)
    return names


async def fail(queue: SchedulingQueue, *, plugins: frozenset[str] = FIT_FAILURE,
               ) -> QueuedPodInfo:
    """Pop the next pod and give it back as unschedulable (rejected by ``plugins``; none:
    an error)."""
    queued = await queue.pop()
    assert queued is not None
    cycle = queue.scheduling_cycle
    queued.unschedulable_plugins = plugins
    queue.add_unschedulable(queued, cycle)
    return queued


# ---- order


async def test_higher_priority_first(queue: SchedulingQueue) -> None:
    queue.add(make_pod("low", priority=0))
    queue.add(make_pod("high", priority=10))
    queue.add(make_pod("mid", priority=5))
    queue.add(make_pod("negative", priority=-1))
    assert await pop_names(queue, 4) == ["high", "mid", "low", "negative"]


async def test_fifo_within_a_priority(queue: SchedulingQueue, clock: FakeTime) -> None:
    for name in ("a", "b", "c"):
        queue.add(make_pod(name))  # same clock time: arrival order decides
    clock.now += 1
    queue.add(make_pod("d"))
    queue.add(make_pod("urgent", priority=1))
    assert await pop_names(queue, 5) == ["urgent", "a", "b", "c", "d"]


async def test_attempts_and_cycles_are_counted(queue: SchedulingQueue, clock: FakeTime) -> None:
    queue.add(make_pod("a"))
    queue.add(make_pod("b"))
    first = await queue.pop()
    assert first is not None and first.attempts == 1
    assert first.initial_attempt_timestamp == clock.now and queue.scheduling_cycle == 1
    await queue.pop()
    assert queue.scheduling_cycle == 2


# ---- backoff


async def test_backoff_doubles_from_1s_to_10s(queue: SchedulingQueue, clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    waits = []
    for _ in range(6):
        failed = await fail(queue, plugins=frozenset())  # an error: straight to backoff
        assert queue.where(failed) == "backoff"
        waited = 0.0
        while queue.where(failed) == "backoff":
            clock.now += 0.5
            waited += 0.5
            queue.flush()
        assert queue.where(failed) == "active"
        waits.append(waited)
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_backoff_duration_formula(queue: SchedulingQueue) -> None:
    queued = QueuedPodInfo(pod_info=None, timestamp=0.0)  # type: ignore[arg-type]
    durations = []
    for attempts in range(7):
        queued.attempts = attempts
        durations.append(queue.backoff_duration(queued))
    assert durations == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_custom_backoff_bounds(clock: FakeTime) -> None:
    queue = SchedulingQueue(clock=clock, initial_backoff=0.5, max_backoff=1.5)
    queued = QueuedPodInfo(pod_info=None, timestamp=0.0, attempts=3)  # type: ignore[arg-type]
    assert queue.backoff_duration(queued) == 1.5
    with pytest.raises(ValueError):
        SchedulingQueue(initial_backoff=2, max_backoff=1)


async def test_pop_flushes_completed_backoff(queue: SchedulingQueue, clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    await fail(queue, plugins=frozenset())
    assert queue.next_backoff_expiry() == clock.now + 1
    clock.now += 1
    assert await pop_names(queue, 1) == ["p"]
    assert queue.next_backoff_expiry() is None


# ---- unschedulable pods and events


async def test_unschedulable_waits_for_an_event(queue: SchedulingQueue, clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    failed = await fail(queue)
    clock.now += 30
    queue.flush()
    assert queue.where(failed) == "unschedulable"
    assert queue.move_all_to_active(NODE_ADD) == 1
    assert queue.where(failed) == "active"  # its 1 s backoff is long over


async def test_event_during_backoff_goes_to_backoff(queue: SchedulingQueue,
                                                    clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    failed = await fail(queue)
    clock.now += 0.5
    queue.move_all_to_active(NODE_ADD)
    assert queue.where(failed) == "backoff"
    clock.now += 0.5
    queue.flush()
    assert queue.where(failed) == "active"


async def test_pre_check_keeps_some_pods_waiting(queue: SchedulingQueue,
                                                 clock: FakeTime) -> None:
    queue.add(make_pod("cpu"))
    queue.add(make_pod("taint"))
    await fail(queue, plugins=frozenset({"NodeResourcesFit"}))
    await fail(queue, plugins=frozenset({"TaintToleration"}))
    clock.now += 5
    moved = queue.move_all_to_active(
        "AssignedPodDelete", lambda q: "NodeResourcesFit" in q.unschedulable_plugins)
    assert moved == 1
    assert queue.where("default/cpu") == "active"
    assert queue.where("default/taint") == "unschedulable"


async def test_event_during_the_cycle_sends_the_failure_to_backoff(
        queue: SchedulingQueue) -> None:
    queue.add(make_pod("p"))
    queued = await queue.pop()
    assert queued is not None
    cycle = queue.scheduling_cycle
    queue.move_all_to_active(NODE_ADD)  # a node came while p was being scheduled
    queued.unschedulable_plugins = FIT_FAILURE
    queue.add_unschedulable(queued, cycle)
    assert queue.where(queued) == "backoff"


async def test_leftover_unschedulable_pods_move_after_60s(queue: SchedulingQueue,
                                                          clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    failed = await fail(queue)
    clock.now += 60
    queue.flush()
    assert queue.where(failed) == "unschedulable"  # more than 60 s, as Kubernetes
    clock.now += 0.1
    queue.flush()
    assert queue.where(failed) == "active"


# ---- updates and deletes


async def test_update_keeps_the_position(queue: SchedulingQueue) -> None:
    for name in ("a", "b", "c"):
        queue.add(make_pod(name))
    queue.update(make_pod("a", labels={"changed": "yes"}))
    popped = await queue.pop()
    assert popped is not None and popped.pod.metadata.labels["changed"] == "yes"
    queue.done(popped)
    assert await pop_names(queue, 2) == ["b", "c"]


async def test_update_of_priority_resorts(queue: SchedulingQueue) -> None:
    for name in ("a", "b", "c"):
        queue.add(make_pod(name))
    queue.update(make_pod("c", priority=100))
    assert await pop_names(queue, 3) == ["c", "a", "b"]
    assert len(queue) == 0


async def test_add_of_a_queued_pod_is_an_update(queue: SchedulingQueue) -> None:
    queue.add(make_pod("a"))
    queue.add(make_pod("b"))
    queue.add(make_pod("a", labels={"v": "2"}))
    assert len(queue) == 2
    assert await pop_names(queue, 2) == ["a", "b"]


async def test_update_in_backoff_stays_there(queue: SchedulingQueue) -> None:
    queue.add(make_pod("p"))
    await fail(queue, plugins=frozenset())
    queue.update(make_pod("p", labels={"v": "2"}))
    assert queue.where("default/p") == "backoff"


async def test_spec_update_moves_an_unschedulable_pod(queue: SchedulingQueue,
                                                      clock: FakeTime) -> None:
    queue.add(make_pod("p", cpu="64"))
    await fail(queue)
    clock.now += 5
    queue.update(make_pod("p", cpu="1"))
    assert queue.where("default/p") == "active"
    popped = await queue.pop()
    assert popped is not None and popped.pod_info.requests.milli_cpu == 1000


async def test_status_only_update_leaves_an_unschedulable_pod(queue: SchedulingQueue,
                                                              clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    await fail(queue)
    pod = make_pod("p")
    pod.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable")
    pod.metadata.resource_version = "42"
    clock.now += 5
    queue.update(pod)
    assert queue.where("default/p") == "unschedulable"
    queued = queue._unschedulable["default/p"]
    assert queued.pod.metadata.resource_version == "42"  # the newest version is kept


async def test_update_in_flight_sends_the_failure_to_backoff(queue: SchedulingQueue) -> None:
    queue.add(make_pod("p"))
    queued = await queue.pop()
    assert queued is not None
    cycle = queue.scheduling_cycle
    queue.update(make_pod("p", labels={"v": "2"}))
    assert queue.where("default/p") == "in-flight" and len(queue) == 0
    queued.unschedulable_plugins = FIT_FAILURE
    queue.add_unschedulable(queued, cycle)
    assert queue.where("default/p") == "backoff"
    assert queued.pod.metadata.labels["v"] == "2"


async def test_delete_removes_a_queued_pod(queue: SchedulingQueue) -> None:
    queue.add(make_pod("a"))
    queue.add(make_pod("b"))
    queue.delete(make_pod("a"))
    assert "default/a" not in queue and len(queue) == 1
    assert await pop_names(queue, 1) == ["b"]


async def test_delete_in_flight_drops_the_failure(queue: SchedulingQueue) -> None:
    queue.add(make_pod("p"))
    queued = await queue.pop()
    assert queued is not None
    cycle = queue.scheduling_cycle
    queue.delete("default/p")
    queued.unschedulable_plugins = FIT_FAILURE
    queue.add_unschedulable(queued, cycle)
    assert queue.where("default/p") is None and len(queue) == 0


async def test_recreated_while_in_flight(queue: SchedulingQueue) -> None:
    queue.add(make_pod("p"))
    queued = await queue.pop()
    assert queued is not None
    queue.delete("default/p")
    queue.add(make_pod("p", labels={"generation": "2"}))  # a new pod of the same name
    queue.add_unschedulable(queued, queue.scheduling_cycle)  # the old one: dropped
    popped = await queue.pop()
    assert popped is not None and popped.pod.metadata.labels["generation"] == "2"


async def test_done_ends_the_flight(queue: SchedulingQueue) -> None:
    queue.add(make_pod("p"))
    queued = await queue.pop()
    assert queue.where("default/p") == "in-flight"
    queue.done(queued)  # type: ignore[arg-type]
    assert queue.where("default/p") is None
    queue.update(make_pod("p"))  # an update afterwards is a fresh pending pod
    assert queue.where("default/p") == "active"


async def test_many_deletes_keep_the_heap_small(queue: SchedulingQueue) -> None:
    for i in range(1000):
        queue.add(make_pod(f"p{i}"))
    for i in range(999):
        queue.delete(f"default/p{i}")
    assert len(queue._active_heap) < 100
    assert await pop_names(queue, 1) == ["p999"]


# ---- waiting, closing, the flusher


async def test_pop_waits_for_a_pod(queue: SchedulingQueue) -> None:
    waiter = asyncio.ensure_future(queue.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add(make_pod("late"))
    queued = await asyncio.wait_for(waiter, timeout=5)
    assert queued is not None and queued.pod.metadata.name == "late"


async def test_close_wakes_pop_with_none(queue: SchedulingQueue) -> None:
    waiter = asyncio.ensure_future(queue.pop())
    await asyncio.sleep(0)
    queue.close()
    assert await asyncio.wait_for(waiter, timeout=5) is None
    assert await queue.pop() is None and queue.closed


async def test_flusher_moves_backed_off_pods_and_wakes_pop(queue: SchedulingQueue,
                                                           clock: FakeTime) -> None:
    queue.add(make_pod("p"))
    await fail(queue, plugins=frozenset())
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds
        if len(sleeps) == 3:
            queue.close()
        await asyncio.sleep(0)

    waiter = asyncio.ensure_future(queue.pop())
    await asyncio.sleep(0)
    await queue.run_flusher(fake_sleep)
    # After the first 1 s sleep the backoff was over and pop() got the pod.
    queued = await asyncio.wait_for(waiter, timeout=5)
    assert queued is not None and queued.attempts == 2
    assert sleeps == [1.0, 1.0, 1.0]


def test_counts_and_membership(queue: SchedulingQueue) -> None:
    queue.add(make_pod("a"))
    assert queue.counts() == {"active": 1, "backoff": 0, "unschedulable": 0, "in-flight": 0}
    assert make_pod("a") in queue and "default/a" in queue and 42 not in queue
    assert isinstance(make_pod("a"), core_pb2.Pod)
