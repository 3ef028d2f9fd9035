"""Leader election on a Lease object, as client-go's ``tools/leaderelection``.

Candidates share one Lease (``kube-system/<name>`` by default). The holder writes its
identity into ``spec.holder_identity`` and renews ``spec.renew_time`` every
``retry_period``; the others read the lease every ``retry_period`` and may take it over
once it has gone unrenewed for ``spec.lease_duration_seconds``. Every write is
conditional on the lease's resource_version, so of two candidates racing for it one
gets ``Conflict`` and knows it lost.

Clocks are never compared across machines: a candidate measures a lease's age by its
*own* monotonic clock from the moment it first saw the lease's current record
(:class:`Observation`); the timestamps in the lease are for people to read.

Why at most one leader at a time: the holder stops leading (``is_leader`` turns False
and its work is cancelled) ``renew_deadline`` after *sending* its last successful
renewal, and that renewal was committed before any other candidate could read it;
another candidate takes over no sooner than ``lease_duration`` after reading it. With
``renew_deadline < lease_duration`` (enforced), and clocks that run at about the same
rate, the two leaderships never overlap. (client-go counts its renew deadline from the
start of a renew round instead; counting from the last success's request is stricter.)

The decisions are pure functions (:func:`observe`, :func:`lease_valid`,
:func:`may_acquire`, :func:`next_record`, :func:`released_record`), unit-tested with a
fake clock; :class:`LeaderElector` does the I/O around them.

Unlike client-go's ``Run``, which returns when leadership is lost (and a component
then usually exits), :meth:`LeaderElector.run` goes back to competing until cancelled.
Identities must be unique per candidate process: a candidate renews a lease that
names it without waiting for it to expire.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import inspect
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from skiff.api import errors
from skiff.api.v1 import coordination_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.clock import Clock, RealClock, wait_event, with_timeout
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("skiff.client.leaderelection")

#: Acquire retries wait retry_period * (1 + random() * JITTER_FACTOR), as client-go,
#: so candidates that started together do not keep colliding.
JITTER_FACTOR = 1.2
#: The lease duration a released lease carries (client-go's ReleaseOnCancel).
RELEASED_LEASE_SECONDS = 1

__all__ = [
    "JITTER_FACTOR", "LeaderElectionRecord", "LeaderElector", "Observation", "lease_valid",
    "may_acquire", "next_record", "observe", "released_record",
]


# ------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class LeaderElectionRecord:
    """What a Lease's spec says, as plain values (times are epoch seconds, or None)."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: float | None = None
    renew_time: float | None = None
    lease_transitions: int = 0

    @classmethod
    def from_lease(cls, lease: coordination_pb2.Lease) -> LeaderElectionRecord:
        spec = lease.spec
        return cls(holder_identity=spec.holder_identity,
                   lease_duration_seconds=spec.lease_duration_seconds,
                   acquire_time=_seconds(spec, "acquire_time"),
                   renew_time=_seconds(spec, "renew_time"),
                   lease_transitions=spec.lease_transitions)

    def write_to(self, lease: coordination_pb2.Lease) -> None:
        """Set ``lease.spec`` to this record."""
        spec = lease.spec
        spec.holder_identity = self.holder_identity
        spec.lease_duration_seconds = self.lease_duration_seconds
        spec.lease_transitions = self.lease_transitions
        _set_seconds(spec, "acquire_time", self.acquire_time)
        _set_seconds(spec, "renew_time", self.renew_time)


def _seconds(spec: coordination_pb2.LeaseSpec, field: str) -> float | None:
    if not spec.HasField(field):
        return None
    return getattr(spec, field).ToNanoseconds() / 1e9


def _set_seconds(spec: coordination_pb2.LeaseSpec, field: str, value: float | None) -> None:
    if value is None:
        spec.ClearField(field)
        return
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(value * 1e9))
    getattr(spec, field).CopyFrom(stamp)


@dataclass(frozen=True)
class Observation:
    """A lease record and when (our monotonic clock) we first saw the lease say that."""

    record: LeaderElectionRecord
    observed_at: float


def observe(previous: Observation | None, record: LeaderElectionRecord,
            now: float) -> Observation:
    """The observation after reading ``record`` at ``now`` (pure).

    An unchanged record keeps the time it was first seen: a holder that stopped renewing
    ages from then. Any change (a renewal, a new holder) restarts the count.
    """
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def lease_valid(observation: Observation, now: float) -> bool:
    """Whether the observed holder may still rely on the lease at ``now`` (pure): it has
    a holder and less than its duration has passed since we saw it last change."""
    record = observation.record
    return bool(record.holder_identity) and (
        now < observation.observed_at + record.lease_duration_seconds)


def may_acquire(observation: Observation, identity: str, now: float) -> bool:
    """Whether ``identity`` may write itself into the observed lease at ``now`` (pure):
    it holds the lease already (renewal), or nobody validly does (released, expired)."""
    return (observation.record.holder_identity == identity
            or not lease_valid(observation, now))


def next_record(old: LeaderElectionRecord | None, *, identity: str, lease_duration: float,
                wall_now: float) -> LeaderElectionRecord:
    """The record ``identity`` writes to acquire or renew the lease (pure).

    A renewal keeps the acquire time and transition count; a takeover (including of a
    released lease) sets the acquire time and counts one more transition; a new lease
    starts at zero transitions.
    """
    duration = max(1, math.ceil(lease_duration))
    if old is None:
        return LeaderElectionRecord(identity, duration, wall_now, wall_now, 0)
    if old.holder_identity == identity:
        acquired = old.acquire_time if old.acquire_time is not None else wall_now
        return LeaderElectionRecord(identity, duration, acquired, wall_now,
                                    old.lease_transitions)
    return LeaderElectionRecord(identity, duration, wall_now, wall_now,
                                old.lease_transitions + 1)


def released_record(old: LeaderElectionRecord, *, wall_now: float) -> LeaderElectionRecord:
    """The record a holder writes to give the lease up (pure): no holder and a 1 s
    duration, so any candidate takes it at once (client-go's ReleaseOnCancel)."""
    return LeaderElectionRecord("", RELEASED_LEASE_SECONDS, wall_now, wall_now,
                                old.lease_transitions)


# ------------------------------------------------------------------ the elector


class _Outcome(enum.Enum):
    ACQUIRED = "acquired"  # the lease is ours (created, taken over or renewed)
    HELD = "held"          # someone else validly holds it
    FAILED = "failed"      # we could not tell or could not write: try again


class LeaderElector:
    """Competes for the Lease ``namespace/name`` as ``identity``; runs
    ``on_started_leading()`` as a task while leading (cancelled when leadership ends),
    then calls ``on_stopped_leading()``; ``on_new_leader(identity)`` hears of every new
    holder seen (ourselves included).

    ``on_stopped_leading`` may be a plain function or a coroutine function. If the
    leading task raises, the error is logged and the elector steps down (releasing the
    lease) so that another candidate can lead; if it returns, leadership is kept. The
    leading task must end promptly when cancelled: the elector waits for it before
    calling ``on_stopped_leading`` and before releasing the lease, so that a successor
    never starts while our work still runs.

    Invariants: ``_observed`` is the last lease record read or written and when it was
    first seen; ``_lease`` is the lease object it came from (its resource_version is
    what our next write is conditional on), None before the first read; ``_leading``
    is True exactly between starting and stopping the leading task; while it is,
    ``_valid_until`` is ``renew_deadline`` after our last successful write was sent.
    """

    def __init__(self, client: Client, *, name: str, namespace: str = "kube-system",
                 identity: str, lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, on_started_leading: Callable[[], Awaitable[None]],
                 on_stopped_leading: Callable[[], object],
                 on_new_leader: Callable[[str], object] | None = None,
                 clock: Clock | None = None) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if not lease_duration > renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if not renew_deadline > retry_period * JITTER_FACTOR:
            raise ValueError(f"renew_deadline must be greater than retry_period * "
                             f"{JITTER_FACTOR}")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.clock: Clock = clock or RealClock()
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)
        self._observed: Observation | None = None
        self._lease: coordination_pb2.Lease | None = None
        self._leading = False
        self._valid_until = 0.0
        self._reported_leader = ""
        #: Set by the leading task when it dies of an error: time to step down.
        self._work_failed = asyncio.Event()

    # ----------------------------------------------------------------- state

    @property
    def is_leader(self) -> bool:
        """Whether we lead right now: leading, and our last renewal is recent enough
        that no one else can have taken the lease (see the module docstring)."""
        return self._leading and self.clock.now() < self._valid_until

    @property
    def leader(self) -> str:
        """The holder of the lease as last read ("" when none, or not read yet)."""
        return self._observed.record.holder_identity if self._observed else ""

    # ------------------------------------------------------------------- run

    async def run(self, *, release_on_cancel: bool = True) -> None:
        """Compete for the lease, lead while holding it, compete again when it is lost;
        until cancelled. On cancellation the leading task is stopped and, if
        ``release_on_cancel``, the lease is released so another candidate takes over at
        once (``False`` leaves it to expire, as a crashed process would)."""
        self._log.info("leader election started")
        try:
            while True:
                await self._acquire()
                if await self._lead():
                    # Our work crashed: make way for another candidate before trying again.
                    await self._release()
                    await self.clock.sleep(self.retry_period)
        finally:
            if release_on_cancel:
                await self._release()
            self._log.info("leader election stopped")

    async def _acquire(self) -> None:
        """Try every retry_period (jittered) until the lease is ours."""
        while True:
            sent = self.clock.now()
            if await self._try_acquire_or_renew(timeout=self.renew_deadline) is \
                    _Outcome.ACQUIRED:
                self._valid_until = sent + self.renew_deadline
                return
            await self.clock.sleep(self.retry_period * (1 + random.random() * JITTER_FACTOR))

    async def _lead(self) -> bool:
        """Lead until renewal fails or the leading task fails; whether we stepped down
        because the leading task failed."""
        self._leading = True
        self._work_failed.clear()
        self._log.info("started leading")
        work = spawn(self._run_leading(), name=f"leader-{self.namespace}/{self.name}")
        try:
            return await self._keep_renewing()
        finally:
            self._leading = False
            work.cancel()
            await asyncio.wait({work})
            self._log.info("stopped leading")
            await self._notify(self.on_stopped_leading)

    async def _run_leading(self) -> None:
        try:
            await self.on_started_leading()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("leading task failed; stepping down")
            self._work_failed.set()

    async def _keep_renewing(self) -> bool:
        """Renew every retry_period; return when we may no longer lead (False) or the
        leading task failed (True)."""
        while True:
            if await wait_event(self.clock, self._work_failed, self.retry_period):
                return True
            if not await self._renew():
                return False

    async def _renew(self) -> bool:
        """One renewal, retried every retry_period until ``_valid_until``; whether the
        lease is still ours."""
        while True:
            remaining = self._valid_until - self.clock.now()
            if remaining <= 0:
                self._log.warning("failed to renew the lease in time; stepping down",
                                  renew_deadline=self.renew_deadline)
                return False
            sent = self.clock.now()
            outcome = await self._try_acquire_or_renew(timeout=remaining)
            if outcome is _Outcome.ACQUIRED:
                self._valid_until = sent + self.renew_deadline
                return True
            if outcome is _Outcome.HELD:
                self._log.warning("the lease was taken over", holder=self.leader)
                return False
            await self.clock.sleep(min(self.retry_period,
                                       self._valid_until - self.clock.now()))

    # ------------------------------------------------------------------- I/O

    async def _try_acquire_or_renew(self, *, timeout: float) -> _Outcome:
        try:
            return await with_timeout(self.clock, timeout, self._acquire_or_renew_once())
        except TimeoutError:
            self._log.info("lease request timed out", timeout=timeout)
        except errors.Conflict:
            self._log.debug("lease changed under us")  # someone else wrote first
        except errors.APIError as e:
            self._log.info("lease request failed", error=str(e), code=e.code.name)
        return _Outcome.FAILED

    async def _acquire_or_renew_once(self) -> _Outcome:
        """Read the lease and, if it may be ours, write ourselves into it (client-go's
        tryAcquireOrRenew)."""
        try:
            lease = await self.client.leases.get(self.name, self.namespace)
        except errors.NotFound:
            return await self._create()
        self._remember(lease)
        assert self._observed is not None
        if not may_acquire(self._observed, self.identity, self.clock.now()):
            return _Outcome.HELD
        record = next_record(self._observed.record, identity=self.identity,
                             lease_duration=self.lease_duration, wall_now=self.clock.wall())
        if record.holder_identity != self._observed.record.holder_identity:
            self._log.info("taking over the lease", previous=self._observed.record.holder_identity,
                           transitions=record.lease_transitions)
        updated = coordination_pb2.Lease()
        updated.CopyFrom(lease)
        record.write_to(updated)
        self._remember(await self.client.leases.update(updated))
        return _Outcome.ACQUIRED

    async def _create(self) -> _Outcome:
        lease = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(
            name=self.name, namespace=self.namespace))
        next_record(None, identity=self.identity, lease_duration=self.lease_duration,
                    wall_now=self.clock.wall()).write_to(lease)
        self._remember(await self.client.leases.create(lease))
        self._log.info("created the lease")
        return _Outcome.ACQUIRED

    async def _release(self) -> None:
        """Give the lease up if it names us (client-go's ReleaseOnCancel); best effort,
        bounded by renew_deadline: if it fails, the lease simply expires."""
        if self._lease is None or self.leader != self.identity:
            return
        released = coordination_pb2.Lease()
        released.CopyFrom(self._lease)
        released_record(LeaderElectionRecord.from_lease(self._lease),
                        wall_now=self.clock.wall()).write_to(released)
        try:
            lease = await with_timeout(self.clock, self.renew_deadline,
                                       self.client.leases.update(released))
        except (errors.APIError, TimeoutError) as e:
            self._log.warning("could not release the lease; it will expire", error=repr(e))
            return
        self._remember(lease)
        self._log.info("released the lease")

    def _remember(self, lease: coordination_pb2.Lease) -> None:
        """Record a lease just read or written; report a new holder."""
        self._lease = lease
        self._observed = observe(self._observed, LeaderElectionRecord.from_lease(lease),
                                 self.clock.now())
        holder = self._observed.record.holder_identity
        if holder and holder != self._reported_leader:
            self._reported_leader = holder
            self._log.info("new leader observed", leader=holder)
            if self.on_new_leader is not None:
                self._notify_new_leader(holder)

    def _notify_new_leader(self, holder: str) -> None:
        assert self.on_new_leader is not None
        try:
            result = self.on_new_leader(holder)
            if inspect.isawaitable(result):
                spawn(_await(result), name=f"on-new-leader-{self.name}")
        except Exception:
            self._log.exception("on_new_leader failed")

    async def _notify(self, callback: Callable[[], object]) -> None:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("leader election callback failed",
                                callback=getattr(callback, "__name__", repr(callback)))


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable


@dataclass(frozen=True)
class LeaderElectionConfig:
    """A daemon's leader election settings (Kubernetes' defaults and flag names)."""

    enabled: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    namespace: str = "kube-system"
    name: str = ""

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        """``--leader-elect`` and its timings, as kube-scheduler and
        kube-controller-manager spell them."""
        parser.add_argument("--leader-elect", default="true", choices=("true", "false"))
        parser.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
        parser.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
        parser.add_argument("--leader-elect-retry-period", type=float, default=2.0)

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, name: str) -> LeaderElectionConfig:
        """The settings parsed by :meth:`add_flags`, for the Lease ``kube-system/name``."""
        return cls(enabled=args.leader_elect == "true",
                   lease_duration=args.leader_elect_lease_duration,
                   renew_deadline=args.leader_elect_renew_deadline,
                   retry_period=args.leader_elect_retry_period, name=name)
