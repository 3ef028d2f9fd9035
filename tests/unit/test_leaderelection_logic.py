"""Leader election's decisions as pure functions, and the elector's loop over an
in-memory lease API, both on a fake clock: no sockets, no real sleeps.

The pure part answers "may I take (or keep) the lease, given what I observed and when?";
the loop part checks what the elector does with those answers: one leader at a time,
stepping down before anyone else can take over, releasing on cancel.
"""

from __future__ import annotations

import asyncio

import pytest

from skiff.api import errors
from skiff.api.v1 import coordination_pb2
from skiff.client.clock import FakeClock, settle
from skiff.client.controller import run_with_leader_election
from skiff.client.leaderelection import (
    JITTER_FACTOR,
    LeaderElectionRecord,
    LeaderElector,
    Observation,
    lease_valid,
    may_acquire,
    next_record,
    observe,
    released_record,
)

WALL = 1_700_000_000.0


def held_by(holder: str, *, renew: float = WALL, duration: int = 15,
            transitions: int = 0) -> LeaderElectionRecord:
    return LeaderElectionRecord(holder, duration, WALL - 100, renew, transitions)


# --------------------------------------------------------------------- observe


def test_an_unchanged_record_keeps_the_time_it_was_first_seen() -> None:
    first = observe(None, held_by("a"), now=10.0)
    again = observe(first, held_by("a"), now=14.0)
    assert again == Observation(held_by("a"), 10.0)


def test_a_renewal_or_a_new_holder_restarts_the_count() -> None:
    first = observe(None, held_by("a"), now=10.0)
    assert observe(first, held_by("a", renew=WALL + 2), now=12.0).observed_at == 12.0
    assert observe(first, held_by("b"), now=13.0).observed_at == 13.0


# ---------------------------------------------------------------- lease_valid


def test_a_lease_is_valid_for_its_duration_after_it_was_seen_to_change() -> None:
    clock = FakeClock()
    seen = observe(None, held_by("a", duration=15), clock.now())
    clock.advance(14.999)
    assert lease_valid(seen, clock.now())
    clock.advance(0.001)
    assert not lease_valid(seen, clock.now())


def test_the_lease_age_is_measured_by_the_local_clock_not_the_remote_one() -> None:
    clock = FakeClock()
    # The holder's clock runs an hour behind ours: by its timestamps the lease expired
    # long ago, yet we just saw it renewed, so it is valid.
    behind = observe(None, held_by("a", renew=clock.wall() - 3600), clock.now())
    assert lease_valid(behind, clock.now())
    # An hour ahead: by its timestamps it would be valid for an hour; by what we saw,
    # it expires 15 s after it stopped changing.
    ahead = observe(None, held_by("a", renew=clock.wall() + 3600), clock.now())
    clock.advance(15)
    assert not lease_valid(ahead, clock.now())


def test_a_lease_without_a_holder_is_never_valid() -> None:
    seen = observe(None, LeaderElectionRecord("", 15, WALL, WALL, 3), now=0.0)
    assert not lease_valid(seen, now=0.0)


# ---------------------------------------------------------------- may_acquire


def test_a_holder_may_always_renew_its_own_lease() -> None:
    seen = observe(None, held_by("me"), now=0.0)
    assert may_acquire(seen, "me", now=0.0)
    assert may_acquire(seen, "me", now=1000.0)


def test_another_may_take_over_only_once_the_lease_expired() -> None:
    clock = FakeClock()
    seen = observe(None, held_by("a", duration=2), clock.now())
    clock.advance(1.9)
    seen = observe(seen, held_by("a", duration=2), clock.now())  # read again: unchanged
    assert not may_acquire(seen, "b", clock.now())
    clock.advance(0.1)
    assert may_acquire(seen, "b", clock.now())


def test_a_renewal_seen_late_postpones_the_takeover() -> None:
    clock = FakeClock()
    seen = observe(None, held_by("a", duration=2), clock.now())
    clock.advance(1.5)
    seen = observe(seen, held_by("a", renew=WALL + 1.5, duration=2), clock.now())
    clock.advance(1.9)
    assert not may_acquire(seen, "b", clock.now())
    clock.advance(0.1)
    assert may_acquire(seen, "b", clock.now())


def test_a_released_lease_may_be_taken_at_once() -> None:
    seen = observe(None, released_record(held_by("a"), wall_now=WALL), now=0.0)
    assert may_acquire(seen, "b", now=0.0)


# ---------------------------------------------------------------- next_record


def test_a_new_lease_starts_with_zero_transitions() -> None:
    record = next_record(None, identity="me", lease_duration=15.0, wall_now=WALL)
    assert record == LeaderElectionRecord("me", 15, WALL, WALL, 0)


def test_a_renewal_keeps_acquire_time_and_transitions() -> None:
    old = LeaderElectionRecord("me", 15, WALL - 50, WALL - 2, 4)
    assert next_record(old, identity="me", lease_duration=15.0, wall_now=WALL) == (
        LeaderElectionRecord("me", 15, WALL - 50, WALL, 4))


def test_a_takeover_counts_a_transition_and_sets_the_acquire_time() -> None:
    old = LeaderElectionRecord("a", 15, WALL - 50, WALL - 20, 4)
    assert next_record(old, identity="b", lease_duration=15.0, wall_now=WALL) == (
        LeaderElectionRecord("b", 15, WALL, WALL, 5))
    released = released_record(old, wall_now=WALL - 10)
    assert next_record(released, identity="a", lease_duration=15.0, wall_now=WALL) == (
        LeaderElectionRecord("a", 15, WALL, WALL, 5))


def test_fractional_durations_round_up_to_whole_seconds() -> None:
    assert next_record(None, identity="me", lease_duration=1.5,
                       wall_now=WALL).lease_duration_seconds == 2
    assert next_record(None, identity="me", lease_duration=0.2,
                       wall_now=WALL).lease_duration_seconds == 1


def test_release_clears_the_holder_and_shortens_the_lease() -> None:
    old = LeaderElectionRecord("a", 15, WALL - 50, WALL - 1, 7)
    assert released_record(old, wall_now=WALL) == LeaderElectionRecord("", 1, WALL, WALL, 7)


def test_a_record_round_trips_through_a_lease() -> None:
    record = LeaderElectionRecord("me", 15, WALL + 0.123456, WALL + 7.5, 3)
    lease = coordination_pb2.Lease()
    record.write_to(lease)
    assert lease.spec.renew_time.seconds == int(WALL + 7)
    assert LeaderElectionRecord.from_lease(lease) == record
    empty = LeaderElectionRecord()
    empty.write_to(lease)
    assert not lease.spec.HasField("renew_time")
    assert LeaderElectionRecord.from_lease(lease) == empty


# ----------------------------------------------------- the elector, over a fake API


class FakeLeases:
    """An in-memory Lease API with the apiserver's concurrency rules: create fails on an
    existing name, update on a stale resource_version. ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], coordination_pb2.Lease] = {}
        self.revision = 0
        self.down = False
        self.writes: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise errors.Unavailable("apiserver down")

    def _save(self, lease: coordination_pb2.Lease) -> coordination_pb2.Lease:
        self.revision += 1
        saved = coordination_pb2.Lease()
        saved.CopyFrom(lease)
        saved.metadata.resource_version = str(self.revision)
        self.stored[(saved.metadata.namespace, saved.metadata.name)] = saved
        self.writes.append(saved.spec.holder_identity)
        return _copy(saved)

    async def get(self, name: str, namespace: str = "default") -> coordination_pb2.Lease:
        self._check()
        try:
            return _copy(self.stored[(namespace, name)])
        except KeyError:
            raise errors.NotFound(f"leases {name!r} not found") from None

    async def create(self, lease: coordination_pb2.Lease) -> coordination_pb2.Lease:
        self._check()
        if (lease.metadata.namespace, lease.metadata.name) in self.stored:
            raise errors.AlreadyExists("exists")
        return self._save(lease)

    async def update(self, lease: coordination_pb2.Lease) -> coordination_pb2.Lease:
        self._check()
        stored = self.stored[(lease.metadata.namespace, lease.metadata.name)]
        if lease.metadata.resource_version != stored.metadata.resource_version:
            raise errors.Conflict("stale resource_version")
        return self._save(lease)

    def holder(self) -> str:
        return next(iter(self.stored.values())).spec.holder_identity


def _copy(lease: coordination_pb2.Lease) -> coordination_pb2.Lease:
    copied = coordination_pb2.Lease()
    copied.CopyFrom(lease)
    return copied


class FakeClient:
    def __init__(self, leases: FakeLeases) -> None:
        self.leases = leases


class Candidate:
    """An elector and what its callbacks saw."""

    def __init__(self, identity: str, leases: FakeLeases, clock: FakeClock, *,
                 work_fails: bool = False) -> None:
        self.started = 0
        self.stopped = 0
        self.work_cancelled = 0
        self.leaders: list[str] = []
        self.work_fails = work_fails
        self.elector = LeaderElector(
            FakeClient(leases), name="ctrl", identity=identity, lease_duration=2.0,  # type: ignore[arg-type]
            renew_deadline=1.5, retry_period=0.2, on_started_leading=self.lead,
            on_stopped_leading=self.stop, on_new_leader=self.leaders.append, clock=clock)
        self.task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.started += 1
        if self.work_fails:
            raise RuntimeError("the leader's work crashed")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.work_cancelled += 1
            raise

    def stop(self) -> None:
        self.stopped += 1

    def run(self, *, release_on_cancel: bool = True) -> None:
        self.task = asyncio.create_task(self.elector.run(release_on_cancel=release_on_cancel))

    async def cancel(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 5)


async def sample(clock: FakeClock, candidates: list[Candidate], seconds: float,
                 step: float = 0.05) -> list[str]:
    """Run for ``seconds``, checking every ``step`` that at most one leads; the leaders
    seen at each step ("" for none)."""
    seen = []
    for _ in range(round(seconds / step)):
        await clock.run_for(step)
        leaders = [c.elector.identity for c in candidates if c.elector.is_leader]
        assert len(leaders) <= 1, f"two leaders at once: {leaders}"
        seen.append(leaders[0] if leaders else "")
    return seen


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_the_first_candidate_creates_the_lease_and_leads(clock: FakeClock) -> None:
    leases = FakeLeases()
    a = Candidate("a", leases, clock)
    a.run()
    await settle()
    assert a.elector.is_leader and a.started == 1 and leases.holder() == "a"
    assert a.leaders == ["a"]
    await clock.run_for(10)
    assert a.elector.is_leader and a.started == 1
    assert len(leases.writes) >= 10 / 0.2 - 1  # renewed every retry period
    await a.cancel()
    assert leases.holder() == "" and a.stopped == 1 and a.work_cancelled == 1


async def test_only_one_of_several_candidates_leads(clock: FakeClock) -> None:
    leases = FakeLeases()
    candidates = [Candidate(name, leases, clock) for name in "abc"]
    for c in candidates:
        c.run()
    seen = await sample(clock, candidates, 10)
    assert len(set(seen[1:])) == 1 and seen[-1] != ""
    assert sum(c.started for c in candidates) == 1
    leader = next(c for c in candidates if c.elector.is_leader)
    assert all(c.leaders == [leader.elector.identity] for c in candidates)
    for c in candidates:
        await c.cancel()


async def test_a_released_lease_is_taken_over_within_a_retry(clock: FakeClock) -> None:
    leases = FakeLeases()
    a, b = Candidate("a", leases, clock), Candidate("b", leases, clock)
    a.run()
    await settle()
    b.run()
    await sample(clock, [a, b], 1)
    await a.cancel()
    assert leases.holder() == ""
    seen = await sample(clock, [a, b], 1)
    took = seen.index("b") * 0.05 + 0.05
    assert took <= 0.2 * (1 + JITTER_FACTOR) + 0.05
    stored = next(iter(leases.stored.values()))
    assert stored.spec.lease_transitions == 1
    await b.cancel()


async def test_a_dead_leader_is_replaced_after_the_lease_expires(clock: FakeClock) -> None:
    leases = FakeLeases()
    a, b = Candidate("a", leases, clock), Candidate("b", leases, clock)
    a.run(release_on_cancel=False)
    await settle()
    b.run()
    await sample(clock, [a, b], 1)
    await a.cancel()  # "killed": the lease still names it
    assert leases.holder() == "a"
    seen = await sample(clock, [a, b], 4)
    took = seen.index("b") * 0.05 + 0.05
    # b first saw a's last renewal up to one (jittered) retry period after a died, or
    # before it; b notices the expiry up to one more retry period after it came.
    retry = 0.2 * (1 + JITTER_FACTOR)
    assert 2.0 - retry <= took <= 2.0 + 2 * retry + 0.05
    await b.cancel()


async def test_a_leader_cut_off_from_the_api_steps_down_in_time(clock: FakeClock) -> None:
    leases = FakeLeases()
    a = Candidate("a", leases, clock)
    a.run()
    await clock.run_for(1)
    last_write = len(leases.writes)
    leases.down = True
    # It stops leading within renew_deadline of its last successful renewal (sent at
    # most a retry period ago), well before the lease could expire for the others.
    await clock.run_for(1.5)
    assert not a.elector.is_leader
    await settle()
    assert a.stopped == 1 and a.work_cancelled == 1
    assert len(leases.writes) == last_write
    leases.down = False  # back: it still holds the lease (nobody took it), leads again
    await clock.run_for(1)
    assert a.elector.is_leader and a.started == 2
    await a.cancel()


async def test_is_leader_turns_false_at_the_deadline_even_before_the_loop_runs(
        clock: FakeClock) -> None:
    leases = FakeLeases()
    a = Candidate("a", leases, clock)
    a.run()
    await settle()
    leases.down = True
    clock.advance(1.5)  # no await: the elector has had no chance to notice
    assert not a.elector.is_leader
    await a.cancel()


async def test_a_leader_whose_lease_was_taken_steps_down_at_once(clock: FakeClock) -> None:
    leases = FakeLeases()
    a = Candidate("a", leases, clock)
    a.run()
    await settle()
    # Someone overwrites the lease (an operator, a bug): at the next renewal a sees it.
    stolen = await leases.get("ctrl", "kube-system")
    stolen.spec.holder_identity = "intruder"
    await leases.update(stolen)
    await clock.run_for(0.25)
    assert not a.elector.is_leader and a.stopped == 1
    assert "intruder" in a.leaders
    await a.cancel()
    assert leases.holder() == "intruder"  # not ours: not released


async def test_a_crashing_leader_steps_down_and_lets_another_lead(clock: FakeClock) -> None:
    leases = FakeLeases()
    a = Candidate("a", leases, clock, work_fails=True)
    b = Candidate("b", leases, clock)
    a.run()
    await settle()
    b.run()
    await sample(clock, [a, b], 1)
    assert a.started == 1 and a.stopped == 1
    assert b.elector.is_leader
    await a.cancel()
    await b.cancel()


async def test_run_with_leader_election_runs_the_work_only_while_leading(
        clock: FakeClock) -> None:
    leases = FakeLeases()
    runs: list[str] = []

    async def work() -> None:
        runs.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            runs.append("stopped")

    task = asyncio.create_task(run_with_leader_election(
        FakeClient(leases), "manager", "me", work, lease_duration=2.0,  # type: ignore[arg-type]
        renew_deadline=1.5, retry_period=0.2, clock=clock))
    await clock.run_for(1)
    assert runs == ["started"] and leases.holder() == "me"
    leases.down = True
    await clock.run_for(2)
    assert runs == ["started", "stopped"]
    leases.down = False
    await clock.run_for(1)
    assert runs == ["started", "stopped", "started"]  # afresh on winning again
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert runs[-1] == "stopped" and leases.holder() == ""


def test_the_timings_must_make_sense() -> None:
    client = FakeClient(FakeLeases())

    def make(**timings: float) -> LeaderElector:
        async def lead() -> None: ...

        return LeaderElector(client, name="x", identity="me", on_started_leading=lead,  # type: ignore[arg-type]
                             on_stopped_leading=lambda: None, **timings)

    make()
    with pytest.raises(ValueError, match="lease_duration"):
        make(lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="renew_deadline"):
        make(renew_deadline=2, retry_period=2)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(client, name="x", identity="", on_started_leading=None,  # type: ignore[arg-type]
                      on_stopped_leading=lambda: None)
