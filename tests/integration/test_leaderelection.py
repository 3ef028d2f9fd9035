"""Leader election against a real apiserver on a real three-replica store.

Several electors run in this process with short timings (lease 2 s, renew deadline
1.5 s, retry 0.2 s). A referee task samples every elector's ``is_leader`` every 10 ms
for the whole test and records any moment at which two led at once; every test ends by
asserting there was none. Takeovers are timed: after a release, within a lease
duration (in practice within a retry period or two); after a leader dies without
releasing, only once its lease has expired, and soon after.

Every wait polls a condition with a deadline (``skiff.health.wait_for``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from skiff.client.client import Client
from skiff.client.leaderelection import JITTER_FACTOR, LeaderElector
from skiff.health import wait_for
from skiff.testing.processes import APIServer, StoreCluster

LEASE = 2.0
RENEW = 1.5
RETRY = 0.2
#: The longest an acquiring candidate waits between two looks at the lease.
JITTERED_RETRY = RETRY * (1 + JITTER_FACTOR)
#: Room for slow RPCs on a busy machine.
SLACK = 1.5
#: How long a test waits for something that should happen at once.
DEADLINE = 15.0
NAMESPACE = "kube-system"


@dataclass
class Candidate:
    """One elector, its task, and how often it started and stopped leading."""

    elector: LeaderElector
    release_on_cancel: bool = True
    started: int = 0
    stopped: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def identity(self) -> str:
        return self.elector.identity

    def run(self) -> None:
        self.task = asyncio.create_task(
            self.elector.run(release_on_cancel=self.release_on_cancel),
            name=f"elector {self.identity}")

    async def cancel(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=DEADLINE)
        assert self.task.done(), f"{self.identity} did not stop"


@dataclass
class Referee:
    """Samples who leads, all the time; remembers any overlap."""

    candidates: list[Candidate]
    samples: int = 0
    overlaps: list[list[str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def leaders(self) -> list[str]:
        return [c.identity for c in self.candidates if c.elector.is_leader]

    async def _watch(self) -> None:
        while True:
            leaders = self.leaders()
            if len(leaders) > 1:
                self.overlaps.append(leaders)
            self.samples += 1
            await asyncio.sleep(0.01)  # the sampling interval, not a wait for a condition

    def start(self) -> None:
        self.task = asyncio.create_task(self._watch(), name="referee")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait({self.task})

    async def leader(self, *, among: list[Candidate] | None = None,
                     timeout: float = DEADLINE) -> Candidate:
        """The one candidate (of ``among``) that leads, once one does."""
        pool = among if among is not None else self.candidates

        async def one() -> Candidate | None:
            leading = [c for c in pool if c.elector.is_leader]
            return leading[0] if len(leading) == 1 else None

        return await wait_for(one, timeout=timeout, interval=0.01, what="a leader")


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients the test opens (``clients.append(Client(...))``), closed after it."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


def candidate(client: Client, identity: str, *, lease_name: str = "controller",
              release_on_cancel: bool = True) -> Candidate:
    made = Candidate(None, release_on_cancel)  # type: ignore[arg-type]

    async def lead() -> None:
        made.started += 1
        await asyncio.Event().wait()  # the leader's work: runs until cancelled

    def stop() -> None:
        made.stopped += 1

    made.elector = LeaderElector(client, name=lease_name, namespace=NAMESPACE,
                                 identity=identity, lease_duration=LEASE,
                                 renew_deadline=RENEW, retry_period=RETRY,
                                 on_started_leading=lead, on_stopped_leading=stop)
    return made


@contextlib.asynccontextmanager
async def running(candidates: list[Candidate]) -> AsyncIterator[Referee]:
    """The candidates competing under a referee; all stopped afterwards."""
    referee = Referee(candidates)
    referee.start()
    for c in candidates:
        c.run()
    try:
        yield referee
    finally:
        for c in candidates:
            await c.cancel()
        await referee.stop()


async def observe_for(seconds: float) -> None:
    """Let the electors run while the referee watches (a span of time to observe, not a
    wait for a condition)."""
    await asyncio.sleep(seconds)


async def lease_spec(client: Client, name: str = "controller"):  # type: ignore[no-untyped-def]
    return (await client.leases.get(name, NAMESPACE)).spec


async def test_one_leader_at_a_time_and_a_fast_takeover_after_release(
        apiserver: APIServer, clients: list[Client]) -> None:
    client = Client(apiserver.address)
    clients.append(client)
    candidates = [candidate(client, f"cand-{i}") for i in range(3)]
    async with running(candidates) as referee:
        first = await referee.leader()
        await observe_for(3 * LEASE)
        assert first.elector.is_leader and first.started == 1
        spec = await lease_spec(client)
        assert spec.holder_identity == first.identity
        assert spec.lease_duration_seconds == LEASE and spec.lease_transitions == 0
        others = [c for c in candidates if c is not first]
        assert all(c.started == 0 for c in others)

        stopped_at = time.monotonic()
        await first.cancel()  # releases the lease on the way out
        assert first.stopped == 1
        spec = await lease_spec(client)
        assert spec.holder_identity in ("", *(c.identity for c in others))
        second = await referee.leader(among=others)
        took = time.monotonic() - stopped_at
        assert took < LEASE, f"takeover after release took {took:.2f}s"
        await observe_for(LEASE)
        spec = await lease_spec(client)
        assert spec.holder_identity == second.identity and spec.lease_transitions == 1
        assert spec.acquire_time.ToNanoseconds() > 0
        assert referee.samples > 100
        assert referee.overlaps == []


async def test_a_killed_leader_is_replaced_once_its_lease_expires(
        apiserver: APIServer, clients: list[Client]) -> None:
    client = Client(apiserver.address)
    clients.append(client)
    candidates = [candidate(client, f"cand-{i}", release_on_cancel=False) for i in range(3)]
    async with running(candidates) as referee:
        first = await referee.leader()
        await observe_for(LEASE)
        killed_at = time.monotonic()
        await first.cancel()  # no release: as if its process had died
        assert (await lease_spec(client)).holder_identity == first.identity
        others = [c for c in candidates if c is not first]
        second = await referee.leader(among=others, timeout=LEASE + 2 * JITTERED_RETRY + SLACK)
        took = time.monotonic() - killed_at
        # Not before the lease could have expired (its last renewal was at most a
        # retry period before the kill) ...
        assert took >= LEASE - RETRY - 0.1, f"took over after {took:.2f}s: too early"
        # ... and soon after: within a (jittered) retry period of seeing it unchanged.
        assert took <= LEASE + 2 * JITTERED_RETRY + SLACK, f"took {took:.2f}s"
        await observe_for(LEASE)
        assert second.elector.is_leader
        spec = await lease_spec(client)
        assert spec.holder_identity == second.identity and spec.lease_transitions == 1
        assert referee.overlaps == []


async def test_electors_on_two_apiservers_agree_on_one_leader(
        store_cluster: StoreCluster, apiserver: APIServer, tmp_path,
        clients: list[Client]) -> None:
    other = APIServer(tmp_path / "apiserver-2", store_cluster.endpoints, name="apiserver-2")
    other.start()
    try:
        await other.wait_healthy()
        one, two = Client(apiserver.address), Client(other.address)
        clients.extend([one, two])
        candidates = [candidate(one, "via-one"), candidate(two, "via-two")]
        async with running(candidates) as referee:
            first = await referee.leader()
            await observe_for(2 * LEASE)
            assert first.elector.is_leader and first.started == 1
            second_candidate = next(c for c in candidates if c is not first)
            assert second_candidate.elector.leader == first.identity
            stopped_at = time.monotonic()
            await first.cancel()
            second = await referee.leader(among=[second_candidate])
            assert time.monotonic() - stopped_at < LEASE
            await observe_for(LEASE)
            assert second.elector.is_leader
            assert referee.overlaps == []
    except BaseException:
        print(other.logs())
        raise
    finally:
        other.stop()


async def test_a_stopped_leader_that_comes_back_waits_its_turn(
        apiserver: APIServer, clients: list[Client]) -> None:
    client = Client(apiserver.address)
    clients.append(client)
    a, b = candidate(client, "a"), candidate(client, "b")
    async with running([a, b]) as referee:
        first = await referee.leader()
        rest = b if first is a else a
        await first.cancel()
        await referee.leader(among=[rest])
        first.run()  # back as a candidate: the lease is validly held, so it waits
        await observe_for(2 * LEASE)
        assert rest.elector.is_leader and not first.elector.is_leader
        assert first.started == 1
        assert referee.overlaps == []
