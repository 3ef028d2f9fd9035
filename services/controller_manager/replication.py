"""ReplicationControllers and ReplicaSets: keep ``spec.replicas`` pods running.

Kubernetes' ReplicaSet controller, one class for both kinds (they differ only in how
the selector is written: an RC's is an equality map, a ReplicaSet's a LabelSelector).

Watches the kind and pods. Handlers only enqueue an owner's key: a pod maps to its
controlling owner (the ownerReference with ``controller: true``) or, for an orphan, to
every owner of the kind whose selector matches it. ``sync(key)``:

1. reads the owner from the cache (missing: it was deleted; the garbage collector
   deletes its pods);
2. claims pods: adopts matching orphans (adds a controller ownerReference), releases
   owned pods whose labels no longer match (removes it);
3. if the expectations are satisfied, creates or deletes pods to reach
   ``spec.replicas`` (creates in slow-start batches; deletes the lowest-ranked first);
4. writes status (UpdateStatus) only when it changed.

Invariant (expectations): while creations or deletions this controller made are not yet
seen in the pod informer, it does not act again on that owner, so a lagging watch never
makes it create (or delete) twice. Expectations expire after :data:`EXPECTATIONS_TTL`
so a lost event cannot wedge an owner forever.

Pure decisions (:func:`plan_claims`, :func:`rank_for_deletion`, :func:`slow_start_batches`,
:func:`calculate_status`, :class:`Expectations`) live apart from the I/O for unit tests.
Neighbours: :mod:`.garbage_collector` (deletes pods of deleted owners).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import Kind, lookup
from skiff.api.labels import Selector, nothing, selector_from_label_selector, selector_from_map
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import NORMAL, WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of, split_key
from skiff.logging import get_logger

log = get_logger("services.controller_manager.replication")

#: Most pods created or deleted by one sync (Kubernetes' burstReplicas).
BURST_REPLICAS = 500
#: Expectations older than this are considered satisfied (a watch event was lost).
EXPECTATIONS_TTL = 300.0
#: Phases whose pods no longer count: they are done and will not run again.
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_PHASE_ORDER = {"Pending": 0, "": 0, "Unknown": 1, "Running": 2}


# ----------------------------------------------------------------- pure helpers


def controller_ref(obj: Message) -> meta_pb2.OwnerReference | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in obj.metadata.owner_references:  # type: ignore[attr-defined]
        if ref.HasField("controller") and ref.controller:
            return ref
    return None


def is_active(pod: core_pb2.Pod) -> bool:
    """Whether a pod counts toward replicas: not being deleted, not finished."""
    return (not pod.metadata.HasField("deletion_timestamp")
            and pod.status.phase not in TERMINAL_PHASES)


def ready_condition(pod: core_pb2.Pod) -> core_pb2.PodCondition | None:
    for condition in pod.status.conditions:
        if condition.type == "Ready":
            return condition
    return None


def is_ready(pod: core_pb2.Pod) -> bool:
    condition = ready_condition(pod)
    return condition is not None and condition.status == "True"


def is_available(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    """Ready, and for at least ``min_ready_seconds`` (by the condition's transition time)."""
    condition = ready_condition(pod)
    if condition is None or condition.status != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = condition.last_transition_time.seconds
    return since > 0 and since + min_ready_seconds <= now


def selector_of(owner: Message) -> Selector:
    """The pods an RC or ReplicaSet selects; an invalid selector selects nothing."""
    spec = owner.spec  # type: ignore[attr-defined]
    try:
        if isinstance(owner, core_pb2.ReplicationController):
            # An RC without a selector selects its template's labels (API defaulting).
            return selector_from_map(dict(spec.selector) or dict(spec.template.metadata.labels))
        return selector_from_label_selector(spec.selector if spec.HasField("selector") else None)
    except errors.BadRequest:
        return nothing()


def desired_replicas(owner: Message) -> int:
    spec = owner.spec  # type: ignore[attr-defined]
    return spec.replicas if spec.HasField("replicas") else 1


@dataclass(frozen=True)
class ClaimPlan:
    """What claiming decided: pods kept, orphans to adopt, owned pods to release."""

    owned: tuple[core_pb2.Pod, ...]
    adopt: tuple[core_pb2.Pod, ...]
    release: tuple[core_pb2.Pod, ...]


def plan_claims(owner_uid: str, selector: Selector, pods: Iterable[core_pb2.Pod], *,
                owner_deleting: bool) -> ClaimPlan:
    """Kubernetes' ClaimPods as a decision (pure): pods controlled by someone else are
    left alone; a deleting owner neither adopts nor releases."""
    owned: list[core_pb2.Pod] = []
    adopt: list[core_pb2.Pod] = []
    release: list[core_pb2.Pod] = []
    for pod in pods:
        ref = controller_ref(pod)
        matches = selector.matches(pod.metadata.labels)
        if ref is not None:
            if ref.uid != owner_uid:
                continue
            if matches:
                owned.append(pod)
            elif not owner_deleting:
                release.append(pod)
        elif matches and not owner_deleting and not pod.metadata.HasField("deletion_timestamp"):
            adopt.append(pod)
    return ClaimPlan(tuple(owned), tuple(adopt), tuple(release))


def slow_start_batches(count: int, initial: int = 1) -> list[int]:
    """Batch sizes 1, 2, 4, ... summing to ``count`` (the last one clipped): a failing
    create (quota, bad template) fails once, not ``count`` times."""
    batches: list[int] = []
    size, remaining = initial, count
    while remaining > 0:
        batch = min(size, remaining)
        batches.append(batch)
        remaining -= batch
        size *= 2
    return batches


def _ready_since(pod: core_pb2.Pod) -> int:
    condition = ready_condition(pod)
    if condition is None or condition.status != "True":
        return 0
    return condition.last_transition_time.seconds


def _restarts(pod: core_pb2.Pod) -> int:
    return max((s.restart_count for s in pod.status.container_statuses), default=0)


def deletion_key(pod: core_pb2.Pod, rank: int) -> tuple[Any, ...]:
    """Sort key: smaller is deleted first (Kubernetes' ActivePodsWithRanks).

    Unassigned < assigned; Pending < Unknown < Running; not ready < ready; more pods
    on the same node first; ready more recently first; more restarts first; newer first.
    """
    created = pod.metadata.creation_timestamp
    return (bool(pod.spec.node_name), _PHASE_ORDER.get(pod.status.phase, 0), is_ready(pod),
            -rank, -_ready_since(pod), -_restarts(pod), -created.seconds, -created.nanos)


def rank_for_deletion(pods: Sequence[core_pb2.Pod]) -> list[core_pb2.Pod]:
    """``pods`` in deletion order (pure): the first ones are the cheapest to lose."""
    per_node = Counter(p.spec.node_name for p in pods if p.spec.node_name)
    return sorted(pods, key=lambda p: deletion_key(p, per_node.get(p.spec.node_name, 0)))


@dataclass(frozen=True)
class ReplicaStatus:
    """The status fields this controller owns."""

    replicas: int
    fully_labeled_replicas: int
    ready_replicas: int
    available_replicas: int
    observed_generation: int

    @classmethod
    def of(cls, owner: Message) -> ReplicaStatus:
        s = owner.status  # type: ignore[attr-defined]
        return cls(s.replicas, s.fully_labeled_replicas, s.ready_replicas,
                   s.available_replicas, s.observed_generation)


def calculate_status(owner: Message, pods: Sequence[core_pb2.Pod], now: float) -> ReplicaStatus:
    """Status from the owner's active, claimed pods (pure)."""
    spec = owner.spec  # type: ignore[attr-defined]
    template_labels = dict(spec.template.metadata.labels)
    fully_labeled = sum(1 for p in pods
                        if all(p.metadata.labels.get(k) == v for k, v in template_labels.items()))
    return ReplicaStatus(
        replicas=len(pods), fully_labeled_replicas=fully_labeled,
        ready_replicas=sum(1 for p in pods if is_ready(p)),
        available_replicas=sum(1 for p in pods if is_available(p, spec.min_ready_seconds, now)),
        observed_generation=owner.metadata.generation)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ expectations


@dataclass
class _Expected:
    adds: int
    #: The uids of the pods whose deletion is awaited.
    dels: set[str]
    set_at: float


class Expectations:
    """Creates and deletes a controller is waiting to see, per owner key.

    Creations are counted (a new pod's uid is not known before it exists); deletions
    are tracked by pod uid, as Kubernetes' UIDTrackingControllerExpectations. A pod is
    seen going twice (its deletionTimestamp set, then its removal) and pods deleted by
    others go too: counted, either would stand in for a deletion not yet seen.
    Satisfied when no create and no deletion is awaited (each observed via the
    informer, or given up on after a failed call), when nothing is recorded, or ``ttl``
    seconds after they were set (a lost event must not wedge the owner). ``now`` is
    injected.
    """

    def __init__(self, *, ttl: float = EXPECTATIONS_TTL,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._now = now
        self._expected: dict[str, _Expected] = {}

    def expect(self, key: str, *, adds: int = 0, deleting: Iterable[str] = ()) -> None:
        """Record the creates (a count) and deletes (pod uids) about to be made for
        ``key``, replacing any record."""
        self._expected[key] = _Expected(adds, set(deleting), self._now())

    def creation_observed(self, key: str) -> None:
        if (e := self._expected.get(key)) is not None:
            e.adds = max(0, e.adds - 1)

    def deletion_observed(self, key: str, uid: str) -> None:
        """The pod ``uid`` was seen deleting or deleted (or will never be: given up)."""
        if (e := self._expected.get(key)) is not None:
            e.dels.discard(uid)

    def satisfied(self, key: str) -> bool:
        e = self._expected.get(key)
        if e is None:
            return True
        return (e.adds <= 0 and not e.dels) or self._now() - e.set_at > self.ttl

    def pending(self, key: str) -> tuple[int, int]:
        """(creates, deletes) still awaited for ``key``."""
        e = self._expected.get(key)
        return (e.adds, len(e.dels)) if e is not None else (0, 0)

    def forget(self, key: str) -> None:
        self._expected.pop(key, None)


# -------------------------------------------------------------------- controller


def owner_reference(owner: Message, kind: Kind) -> meta_pb2.OwnerReference:
    md = owner.metadata  # type: ignore[attr-defined]
    return meta_pb2.OwnerReference(api_version=kind.api_version, kind=kind.kind, name=md.name,
                                   uid=md.uid, controller=True, block_owner_deletion=True)


def pod_from_template(owner: Message, kind: Kind) -> core_pb2.Pod:
    """A new pod for ``owner``: its template, named ``<owner>-<random>``, owned by it."""
    md, template = owner.metadata, owner.spec.template  # type: ignore[attr-defined]
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.generate_name = f"{md.name}-"
    pod.metadata.namespace = md.namespace
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.finalizers.extend(template.metadata.finalizers)
    pod.metadata.owner_references.append(owner_reference(owner, kind))
    pod.spec.CopyFrom(template.spec)
    return pod


class ReplicaSetController(Controller):
    """Keeps the pods of every object of one kind (``ReplicaSet`` or
    ``ReplicationController``) at ``spec.replicas``."""

    def __init__(self, client: Client, factory: SharedInformerFactory, recorder: EventRecorder,
                 config: Any = None, *, kind: str = "ReplicaSet",
                 now: Callable[[], float] = time.time) -> None:
        workers = getattr(config, "concurrent_syncs", 5)
        self.kind = lookup(kind)
        super().__init__(self.kind.plural, workers=workers)
        self.client = client
        self.recorder = recorder
        self.burst = BURST_REPLICAS
        self.now = now  # wall clock: availability compares with condition timestamps
        self.expectations = Expectations()
        self.owners = factory.informer(self.kind)
        self.pods = factory.informer("pods")
        self.owners.add_handler(self.enqueue, self._owner_updated, self._owner_deleted,
                                name=f"{self.name} owners")
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted,
                              name=f"{self.name} pods")
        self.wait_for(self.owners, self.pods)

    # -------------------------------------------------------------- handlers

    def _owner_updated(self, old: Message, new: Message) -> None:
        self.enqueue(new)

    def _owner_deleted(self, owner: Message) -> None:
        self.expectations.forget(key_of(owner))
        self.enqueue(owner)

    def _owner_key(self, pod: core_pb2.Pod, ref: meta_pb2.OwnerReference | None) -> str | None:
        """The key of the cached owner ``ref`` names, if it is of this kind and exists."""
        if ref is None or ref.kind != self.kind.kind:
            return None
        key = f"{pod.metadata.namespace}/{ref.name}"
        owner = self.owners.store.get(key)
        if owner is None or owner.metadata.uid != ref.uid:  # type: ignore[attr-defined]
            return None
        return key

    def _enqueue_matching(self, pod: core_pb2.Pod) -> None:
        """An orphan: every owner whose selector matches it may want to adopt it."""
        for owner in self.owners.store.by_index("namespace", pod.metadata.namespace):
            if selector_of(owner).matches(pod.metadata.labels):
                self.enqueue(owner)

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        if pod.metadata.HasField("deletion_timestamp"):
            # Seen for the first time already deleting (a relist): a deletion to observe.
            self._pod_deleted(pod)
            return
        ref = controller_ref(pod)
        if ref is not None:
            if (key := self._owner_key(pod, ref)) is not None:
                self.expectations.creation_observed(key)
                self.enqueue(key)
            return
        self._enqueue_matching(pod)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return  # a resync: nothing changed
        old_ref, new_ref = controller_ref(old), controller_ref(new)
        if (new.metadata.HasField("deletion_timestamp")
                and not old.metadata.HasField("deletion_timestamp")):
            # Graceful deletion began: count it now, as Kubernetes does, not when it goes.
            self._pod_deleted(new)
            if old_ref is not None and old_ref != new_ref:
                self._pod_deleted(old)
            return
        if old_ref != new_ref and (old_key := self._owner_key(old, old_ref)) is not None:
            self.enqueue(old_key)
        if new_ref is not None:
            if (key := self._owner_key(new, new_ref)) is not None:
                self.enqueue(key)
            return
        if old.metadata.labels != new.metadata.labels or old_ref != new_ref:
            self._enqueue_matching(new)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        if (key := self._owner_key(pod, controller_ref(pod))) is not None:
            self.expectations.deletion_observed(key, pod.metadata.uid)
            self.enqueue(key)

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        started = time.monotonic()
        namespace, _ = split_key(key)
        owner = self.owners.store.get(key)
        if owner is None:
            self.expectations.forget(key)  # deleted: the garbage collector takes its pods
            return
        needs_sync = self.expectations.satisfied(key)
        active = [p for p in self.pods.store.by_index("namespace", namespace) if is_active(p)]
        pods = await self._claim(owner, active)
        deleting = owner.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]
        try:
            if needs_sync and not deleting:
                await self._manage(owner, key, pods)
        finally:
            await self._update_status(owner, pods)
        self._log.debug("synced owner", key=key, pods=len(pods),
                        seconds=round(time.monotonic() - started, 6))

    async def _claim(self, owner: Message, pods: list[core_pb2.Pod]) -> list[core_pb2.Pod]:
        """Adopt and release as :func:`plan_claims` says; the pods owned afterwards."""
        md = owner.metadata  # type: ignore[attr-defined]
        plan = plan_claims(md.uid, selector_of(owner), pods,
                           owner_deleting=md.HasField("deletion_timestamp"))
        owned = list(plan.owned)
        for pod in plan.adopt:
            if (adopted := await self._adopt(owner, pod)) is not None:
                owned.append(adopted)
        for pod in plan.release:
            await self._release(owner, pod)
        return owned

    async def _adopt(self, owner: Message, pod: core_pb2.Pod) -> core_pb2.Pod | None:
        # Recheck the owner live (Kubernetes' canAdopt): a stale cache must not adopt
        # for an owner that was deleted or is being deleted.
        md = owner.metadata  # type: ignore[attr-defined]
        fresh = await self.client.resource(self.kind).get(md.name, md.namespace)
        if fresh.metadata.uid != md.uid or fresh.metadata.HasField("deletion_timestamp"):
            return None
        updated = core_pb2.Pod()
        updated.CopyFrom(pod)
        updated.metadata.owner_references.append(owner_reference(owner, self.kind))
        try:
            result = await self.client.pods.update(updated)
        except errors.NotFound:
            return None
        self._log.info("adopted pod", owner=key_of(owner), pod=pod.metadata.name)
        return result  # type: ignore[return-value]

    async def _release(self, owner: Message, pod: core_pb2.Pod) -> None:
        uid = owner.metadata.uid  # type: ignore[attr-defined]
        updated = core_pb2.Pod()
        updated.CopyFrom(pod)
        refs = [r for r in updated.metadata.owner_references if r.uid != uid]
        del updated.metadata.owner_references[:]
        updated.metadata.owner_references.extend(refs)
        try:
            await self.client.pods.update(updated)
        except errors.NotFound:
            return
        self._log.info("released pod", owner=key_of(owner), pod=pod.metadata.name)

    async def _manage(self, owner: Message, key: str, pods: list[core_pb2.Pod]) -> None:
        diff = len(pods) - desired_replicas(owner)
        if diff < 0:
            await self._create(owner, key, min(-diff, self.burst))
        elif diff > 0:
            await self._delete(owner, key, rank_for_deletion(pods)[:min(diff, self.burst)])

    async def _create(self, owner: Message, key: str, count: int) -> None:
        self.expectations.expect(key, adds=count)
        created = 0
        for batch in slow_start_batches(count):
            results = await asyncio.gather(*(self._create_one(owner) for _ in range(batch)),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            created += batch - len(failures)
            for _ in failures:
                self.expectations.creation_observed(key)  # never coming
            if failures:
                # Stop here: the rest would likely fail the same way. Skipped ones are
                # not expected either; the retry creates them.
                for _ in range(count - created - len(failures)):
                    self.expectations.creation_observed(key)
                self._log.info("creating pods failed", key=key, created=created,
                               wanted=count, error=repr(failures[0]))
                raise failures[0]
        self._log.info("created pods", key=key, count=created)

    async def _create_one(self, owner: Message) -> None:
        try:
            pod = await self.client.pods.create(pod_from_template(owner, self.kind))
        except errors.APIError as e:
            self.recorder.event(owner, WARNING, "FailedCreate", f"Error creating: {e}")
            raise
        self.recorder.event(owner, NORMAL, "SuccessfulCreate",
                            f"Created pod: {pod.metadata.name}")  # type: ignore[attr-defined]

    async def _delete(self, owner: Message, key: str, victims: list[core_pb2.Pod]) -> None:
        self.expectations.expect(key, deleting=[p.metadata.uid for p in victims])
        results = await asyncio.gather(*(self._delete_one(owner, key, p) for p in victims),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self._log.info("deleted pods", key=key, count=len(victims) - len(failures))
        if failures:
            raise failures[0]

    async def _delete_one(self, owner: Message, key: str, pod: core_pb2.Pod) -> None:
        md = pod.metadata
        try:
            await self.client.pods.delete(md.name, md.namespace, uid=md.uid)
        except errors.NotFound:
            self.expectations.deletion_observed(key, md.uid)  # already gone: no event comes
            return
        except errors.APIError as e:
            self.expectations.deletion_observed(key, md.uid)
            self.recorder.event(owner, WARNING, "FailedDelete", f"Error deleting: {e}")
            raise
        self.recorder.event(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {md.name}")

    async def _update_status(self, owner: Message, pods: list[core_pb2.Pod]) -> None:
        status = calculate_status(owner, pods, self.now())
        if status != ReplicaStatus.of(owner):
            try:
                await self._write_status(owner, status)
            except errors.NotFound:
                return
        min_ready = owner.spec.min_ready_seconds  # type: ignore[attr-defined]
        if min_ready > 0 and status.ready_replicas != status.available_replicas:
            # Pods become available by time passing, which no event reports: look again.
            self.enqueue_after(key_of(owner), float(min_ready))


    async def _write_status(self, owner: Message, status: ReplicaStatus) -> None:
        """UpdateStatus on the cached object; on Conflict once more on a fresh read (the
        cache lags behind spec writes), as Kubernetes' updateReplicaSetStatus does."""
        resource = self.client.resource(self.kind)
        try:
            await resource.update_status(with_status(owner, status))
        except errors.Conflict:
            md = owner.metadata  # type: ignore[attr-defined]
            fresh = await resource.get(md.name, md.namespace)
            if fresh.metadata.uid != md.uid:  # type: ignore[attr-defined]
                return
            await resource.update_status(with_status(fresh, status))


def with_status(owner: Message, status: ReplicaStatus) -> Message:
    """A copy of ``owner`` carrying ``status`` (pure)."""
    updated = type(owner)()
    updated.CopyFrom(owner)
    s = updated.status  # type: ignore[attr-defined]
    s.replicas = status.replicas
    s.fully_labeled_replicas = status.fully_labeled_replicas
    s.ready_replicas = status.ready_replicas
    s.available_replicas = status.available_replicas
    s.observed_generation = status.observed_generation
    return updated


class ReplicationManager:
    """Both kinds' controllers as one unit: ``replication`` in the controller-manager."""

    def __init__(self, client: Client, factory: SharedInformerFactory, recorder: EventRecorder,
                 config: Any = None) -> None:
        self.controllers = [
            ReplicaSetController(client, factory, recorder, config, kind=kind)
            for kind in ("ReplicationController", "ReplicaSet")]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for controller in self.controllers:
                group.create_task(controller.run(), name=f"controller {controller.name}")


__all__ = ["BURST_REPLICAS", "EXPECTATIONS_TTL", "ClaimPlan", "Expectations",
           "ReplicaSetController", "ReplicaStatus", "ReplicationManager", "calculate_status",
           "controller_ref", "deletion_key", "desired_replicas", "is_active", "is_available",
           "is_ready", "owner_reference", "plan_claims", "pod_from_template",
           "rank_for_deletion", "selector_of", "slow_start_batches", "with_status"]
