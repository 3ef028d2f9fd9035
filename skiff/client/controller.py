"""The controller pattern: informers -> handlers enqueue keys -> workers reconcile one key.

A controller subclasses :class:`Controller` and reads top to bottom as in Kubernetes:

    class ReplicaSetController(Controller):
        def __init__(self, client, factory):
            super().__init__("replicaset", workers=5)
            self.replica_sets = factory.informer("replicasets")
            self.replica_sets.add_handler(self.enqueue, lambda old, new: self.enqueue(new),
                                          self.enqueue)
            self.wait_for(self.replica_sets)

        async def sync(self, key: str) -> None:
            ...  # read the cache, plan with a pure function, act; raise to retry

Handlers only enqueue a key (``namespace/name``); the work queue makes sure a key is
synced by one worker at a time and that a key changed during its sync is synced again
afterwards. ``sync`` is level-triggered: it looks at the state now, not at the event
that enqueued it, so dropping, merging or repeating keys is harmless. A ``sync`` that
raises is retried with the queue's rate limiting (per-key exponential back-off);
one that returns resets the key's back-off.

A controller runs once: :meth:`Controller.run` shuts its queue down when cancelled.
Under leader election (:func:`run_with_leader_election`) build fresh controllers each
time leadership is won, as kube-controller-manager does.

Neighbours: :mod:`skiff.client.informer` (the caches), :mod:`skiff.client.workqueue`
(the queue), :mod:`skiff.client.leaderelection` (who runs the controllers).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from google.protobuf.message import Message

from skiff.api import errors
from skiff.client.client import Client
from skiff.client.clock import Clock
from skiff.client.leaderelection import LeaderElector
from skiff.client.store import key_of
from skiff.client.workqueue import RateLimitingQueue, ShutDown
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("skiff.client.controller")

#: How long run() waits between "still waiting for caches" warnings.
SYNC_WARNING_INTERVAL = 30.0
#: How long a stopping controller lets in-flight syncs finish before cancelling them.
DEFAULT_DRAIN_TIMEOUT = 30.0

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "Controller", "Syncable", "run_with_leader_election"]


class Syncable(Protocol):
    """What a controller waits for before its workers start: an informer or a handler
    registration (synced once the handlers were given the first list)."""

    @property
    def has_synced(self) -> bool: ...

    async def wait_synced(self, timeout: float) -> bool: ...


class Controller(abc.ABC):
    """Workers that take keys off a rate-limiting queue and :meth:`sync` them.

    ``queue`` defaults to a :class:`RateLimitingQueue` named after the controller, on
    ``clock``; ``drain_timeout`` bounds how long a cancelled :meth:`run` waits for
    in-flight syncs (seconds of the queue's clock; None: forever) before cancelling them.

    Invariants: every key a worker takes from ``queue`` is passed to ``done`` exactly
    once, after its sync ended (returned, raised, or was cancelled); a key whose sync
    raised was handed to ``add_rate_limited`` before ``done``.
    """

    def __init__(self, name: str, *, workers: int = 2,
                 queue: RateLimitingQueue[str] | None = None, clock: Clock | None = None,
                 drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.workers = workers
        self.queue: RateLimitingQueue[str] = (
            queue if queue is not None else RateLimitingQueue(name=name, clock=clock))
        self.clock: Clock = clock or self.queue.clock
        self.drain_timeout = drain_timeout
        self._informers: list[Syncable] = []
        self._log = log.bind(controller=name)

    # --------------------------------------------------------------- wiring

    def wait_for(self, *informers: Syncable) -> None:
        """Have :meth:`run` wait until these informers (or handler registrations) have
        synced before starting workers, so a sync never acts on a half-filled cache."""
        self._informers.extend(informers)

    def enqueue(self, obj_or_key: Message | str) -> None:
        """Queue an object's key (``namespace/name``) for a sync: what handlers call."""
        self.queue.add(_key(obj_or_key))

    def enqueue_after(self, obj_or_key: Message | str, seconds: float) -> None:
        """Queue a key for a sync in ``seconds`` (to look again when something is due)."""
        self.queue.add_after(_key(obj_or_key), seconds)

    def enqueue_rate_limited(self, obj_or_key: Message | str) -> None:
        """Queue a key after its back-off, as a failed sync is."""
        self.queue.add_rate_limited(_key(obj_or_key))

    # ------------------------------------------------------------------ work

    @abc.abstractmethod
    async def sync(self, key: str) -> None:
        """Make the world match the desired state of the object ``key``.

        Level-triggered and idempotent; an object missing from the cache was deleted.
        Raise to have the key retried after a back-off; return to forget its failures.
        """

    async def run(self) -> None:
        """Wait for the informers, then run the workers until cancelled; then stop
        taking keys and let in-flight syncs finish (up to ``drain_timeout``)."""
        self._log.info("starting", workers=self.workers)
        workers: list[asyncio.Task[None]] = []
        try:
            await self._wait_for_informers()
            workers = [spawn(self._worker(), name=f"{self.name}-worker-{i}")
                       for i in range(self.workers)]
            self._log.info("started")
            await asyncio.wait(workers)  # they return only once the queue shuts down
        finally:
            await self._stop(workers)

    async def process_next(self) -> bool:
        """Take one key and sync it; False once the queue is shut down (a worker's step)."""
        try:
            key = await self.queue.get()
        except ShutDown:
            return False
        try:
            await self._sync_one(key)
        finally:
            self.queue.done(key)
        return True

    async def _worker(self) -> None:
        while await self.process_next():
            pass

    async def _sync_one(self, key: str) -> None:
        started = self.clock.now()
        try:
            await self.sync(key)
        except Exception as e:
            self.queue.add_rate_limited(key)
            # An API error is the world's doing (retry); anything else is a bug: show it.
            self._log.warning("sync failed; will retry", key=key, error=repr(e),
                              requeues=self.queue.num_requeues(key),
                              seconds=round(self.clock.now() - started, 6),
                              exc_info=not isinstance(e, errors.APIError))
            return
        self.queue.forget(key)
        self._log.debug("synced", key=key, seconds=round(self.clock.now() - started, 6))

    async def _wait_for_informers(self) -> None:
        for informer in self._informers:
            while not await informer.wait_synced(SYNC_WARNING_INTERVAL):
                self._log.warning("still waiting for a cache to sync",
                                  informer=getattr(informer, "name", repr(informer)))
        if self._informers:
            self._log.info("caches synced", informers=len(self._informers))

    async def _stop(self, workers: list[asyncio.Task[None]]) -> None:
        in_flight = sorted(self.queue.processing)
        drained = await self.queue.shutdown_with_drain(self.drain_timeout)
        if not drained:
            self._log.warning("in-flight syncs did not finish in time; cancelling them",
                              keys=sorted(self.queue.processing), timeout=self.drain_timeout)
            for worker in workers:
                worker.cancel()
        if workers:
            await asyncio.wait(workers)
        self._log.info("stopped", in_flight_at_stop=in_flight)


def _key(obj_or_key: Message | str) -> str:
    return obj_or_key if isinstance(obj_or_key, str) else key_of(obj_or_key)


async def run_with_leader_election(
        client: Client, name: str, identity: str, run: Callable[[], Awaitable[None]], *,
        namespace: str = "kube-system", lease_duration: float = 15.0,
        renew_deadline: float = 10.0, retry_period: float = 2.0,
        clock: Clock | None = None) -> None:
    """Run ``run()`` only while ``identity`` holds the Lease ``namespace/name``: it is
    cancelled when leadership is lost and called afresh when leadership is won again;
    until cancelled (then the lease is released). What a leader-elected daemon's main
    calls with a ``run`` that builds and runs its controllers."""
    lease = f"{namespace}/{name}"

    def stopped() -> None:
        log.info("no longer leading", lease=lease, identity=identity)

    elector = LeaderElector(client, name=name, namespace=namespace, identity=identity,
                            lease_duration=lease_duration, renew_deadline=renew_deadline,
                            retry_period=retry_period, on_started_leading=run,
                            on_stopped_leading=stopped, clock=clock)
    await elector.run()
