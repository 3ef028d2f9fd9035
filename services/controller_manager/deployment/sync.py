"""The deployment controller's sync steps (Kubernetes' ``sync.go``): find or create the
new ReplicaSet and bring revisions up to date, scale proportionally on a scaling event
or while paused (:func:`plan_scale`), delete old ReplicaSets beyond
``revisionHistoryLimit`` (:func:`plan_cleanup`), and write status (counts and the
Available condition, :func:`calculate_status`). The pure decisions come first; the
I/O is :class:`DeploymentSyncer`, the base the rollout strategies build on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from services.controller_manager.deployment.util import (
    AVAILABLE,
    FAILED_RS_CREATE,
    FOUND_NEW_RS,
    MAX_REPLICAS_ANNOTATION,
    MINIMUM_REPLICAS_AVAILABLE,
    MINIMUM_REPLICAS_UNAVAILABLE,
    NEW_RS_CREATED,
    PAUSED,
    PROGRESSING,
    RESUMED,
    REVISION_ANNOTATION,
    TIMED_OUT,
    Deployment,
    ReplicaSet,
    WrittenObjects,
    active,
    collision_count_of,
    compute_hash,
    copy_of,
    creation_key,
    desired_replicas_annotation,
    equal_ignoring_hash,
    find_active_or_latest,
    find_new_replica_set,
    get_condition,
    has_progress_deadline,
    int_annotation,
    is_rolling_update,
    is_saturated,
    max_revision,
    max_surge,
    max_unavailable,
    new_condition,
    new_replica_set,
    new_rs_new_replicas,
    plan_recreate_scale_down,
    replicas_annotations_need_update,
    revision_of,
    set_condition,
    set_new_replica_set_annotations,
    set_replicas_annotations,
    spec_replicas,
)
from services.controller_manager.replication import (
    controller_ref,
    desired_replicas,
)
from skiff.api import errors
from skiff.api.v1 import apps_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import NORMAL, WARNING, EventRecorder
from skiff.client.store import key_of


def is_scaling_event(d: Deployment, new_rs: ReplicaSet | None,
                     old_rss: Iterable[ReplicaSet]) -> bool:
    """Whether ``spec.replicas`` changed since the active ReplicaSets were last scaled
    (their desired-replicas annotation says otherwise)."""
    replicas = desired_replicas(d)
    for rs in active([*old_rss, new_rs]):
        desired = desired_replicas_annotation(rs)
        if desired is not None and desired != replicas:
            return True
    return False


def _fraction(rs: ReplicaSet, d: Deployment) -> int:
    """How many replicas ``rs`` gains (or loses) when the deployment is resized, in
    proportion to its share of the size it was scaled for."""
    replicas = desired_replicas(d)
    if replicas == 0:
        return -spec_replicas(rs)
    target = replicas + max_surge(d)
    annotated = int_annotation(rs, MAX_REPLICAS_ANNOTATION)
    if annotated is None:
        annotated = d.status.replicas
    if annotated <= 0:
        return 0  # nothing to be proportional to; the leftover goes to the largest one
    # spec * target / annotated rounded half up (Go's math.Round), in integers.
    rounded = (2 * spec_replicas(rs) * target + annotated) // (2 * annotated)
    return rounded - spec_replicas(rs)


def _proportion(rs: ReplicaSet, d: Deployment, to_add: int, added: int) -> int:
    if spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction, allowed = _fraction(rs, d), to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def plan_scale(d: Deployment, new_rs: ReplicaSet | None,
               old_rss: Sequence[ReplicaSet]) -> dict[str, int]:
    """Sizes after ``spec.replicas`` changed (or a paused deployment), by name (pure;
    Kubernetes' ``scale``): one active ReplicaSet takes it all; a saturated new one
    means old ones go to zero; otherwise (RollingUpdate) every active ReplicaSet is
    resized in proportion, the rounding leftover going to the largest. Sizes equal to
    the current ones are included: writing them brings the replicas annotations up to
    date."""
    replicas = desired_replicas(d)
    only = find_active_or_latest(new_rs, old_rss)
    if only is not None:
        return {only.metadata.name: replicas}
    if is_saturated(d, new_rs):
        return plan_recreate_scale_down(old_rss)
    if not is_rolling_update(d):
        return {}
    running = active([*old_rss, new_rs])
    allowed = replicas + max_surge(d) if replicas > 0 else 0
    to_add = allowed - sum(spec_replicas(rs) for rs in running)
    if to_add > 0:  # largest first, the newer of equals first
        running = sorted(sorted(running, key=creation_key, reverse=True),
                         key=lambda rs: -spec_replicas(rs))
    elif to_add < 0:  # largest first, the older of equals first
        running = sorted(sorted(running, key=creation_key), key=lambda rs: -spec_replicas(rs))
    sizes: dict[str, int] = {}
    added = 0
    for rs in running:
        proportion = _proportion(rs, d, to_add, added)
        sizes[rs.metadata.name] = spec_replicas(rs) + proportion
        added += proportion
    if to_add != 0 and running:
        largest = running[0].metadata.name
        sizes[largest] = max(0, sizes[largest] + to_add - added)
    return sizes


def plan_cleanup(d: Deployment, old_rss: Iterable[ReplicaSet]) -> list[ReplicaSet]:
    """Old ReplicaSets to delete beyond ``revisionHistoryLimit``, oldest revision first
    (pure): only those with no replicas wanted or running and a status that has seen
    their spec; one being deleted counts for nothing."""
    if not d.spec.HasField("revision_history_limit"):
        return []
    alive = [rs for rs in old_rss if not rs.metadata.HasField("deletion_timestamp")]
    excess = len(alive) - d.spec.revision_history_limit
    if excess <= 0:
        return []
    oldest = sorted(alive, key=lambda rs: (revision_of(rs), creation_key(rs)))[:excess]
    return [rs for rs in oldest
            if rs.status.replicas == 0 and spec_replicas(rs) == 0
            and rs.metadata.generation <= rs.status.observed_generation]


def calculate_status(d: Deployment, all_rss: Iterable[ReplicaSet | None],
                     new_rs: ReplicaSet | None, now: float) -> apps_pb2.DeploymentStatus:
    """The counts and the Available condition from the ReplicaSets (pure); the other
    conditions are carried over from ``d``."""
    rss = [rs for rs in all_rss if rs is not None]
    available = sum(rs.status.available_replicas for rs in rss)
    total = sum(spec_replicas(rs) for rs in rss)
    status = apps_pb2.DeploymentStatus(
        observed_generation=d.metadata.generation,
        replicas=sum(rs.status.replicas for rs in rss),
        updated_replicas=new_rs.status.replicas if new_rs is not None else 0,
        ready_replicas=sum(rs.status.ready_replicas for rs in rss),
        available_replicas=available, unavailable_replicas=max(0, total - available))
    if (count := collision_count_of(d)) is not None:
        status.collision_count = count
    status.conditions.extend(d.status.conditions)
    if available >= desired_replicas(d) - max_unavailable(d):
        set_condition(status, new_condition(AVAILABLE, "True", MINIMUM_REPLICAS_AVAILABLE,
                                            "Deployment has minimum availability.", now))
    else:
        set_condition(status, new_condition(AVAILABLE, "False", MINIMUM_REPLICAS_UNAVAILABLE,
                                            "Deployment does not have minimum availability.",
                                            now))
    return status


def paused_condition_status(d: Deployment, now: float) -> apps_pb2.DeploymentStatus | None:
    """``d.status`` with Progressing Unknown DeploymentPaused (or DeploymentResumed)
    when pausing (resuming) was not reported yet; None when nothing is to change. A
    timed-out rollout keeps saying so."""
    if not has_progress_deadline(d):
        return None
    current = get_condition(d.status, PROGRESSING)
    if current is not None and current.reason == TIMED_OUT:
        return None
    paused_reported = current is not None and current.reason == PAUSED
    if d.spec.paused == paused_reported:
        return None
    status = apps_pb2.DeploymentStatus()
    status.CopyFrom(d.status)
    if d.spec.paused:
        set_condition(status, new_condition(PROGRESSING, "Unknown", PAUSED,
                                            "Deployment is paused", now))
    else:
        set_condition(status, new_condition(PROGRESSING, "Unknown", RESUMED,
                                            "Deployment is resumed", now))
    return status


# ------------------------------------------------------------------ controller


class DeploymentSyncer(Controller):
    """The writes every rollout strategy shares: the new ReplicaSet, scaling,
    cleanup, status. :class:`~.deployment_controller.DeploymentController` sets the
    attributes below."""

    client: Client
    recorder: EventRecorder
    now: Callable[[], float]
    written_deployments: WrittenObjects
    written_rss: WrittenObjects

    # ------------------------------------------------------ the new ReplicaSet

    async def _new_and_old(self, d: Deployment, rss: list[ReplicaSet], *, create: bool
                           ) -> tuple[Deployment, ReplicaSet | None, list[ReplicaSet]]:
        """(deployment, new ReplicaSet, old ones), the revisions brought up to date;
        with ``create``, the new ReplicaSet is made if there is none (Kubernetes'
        getAllReplicaSetsAndSyncRevision)."""
        existing = find_new_replica_set(d, rss)
        old_rss = [rs for rs in rss if existing is None or rs.metadata.uid != existing.metadata.uid]
        new_revision = max_revision(old_rss) + 1
        if existing is not None:
            d, new_rs = await self._sync_existing(d, existing, new_revision)
        elif create:
            d, new_rs = await self._create_new(d, old_rss, new_revision)
        else:
            new_rs = None
        return d, new_rs, old_rss

    async def _sync_existing(self, d: Deployment, existing: ReplicaSet,
                             new_revision: int) -> tuple[Deployment, ReplicaSet]:
        rs = copy_of(existing)
        annotated = set_new_replica_set_annotations(d, rs, new_revision, exists=True)
        if annotated or rs.spec.min_ready_seconds != d.spec.min_ready_seconds:
            rs.spec.min_ready_seconds = d.spec.min_ready_seconds
            updated = await self._update_rs(rs)
            if updated is None:
                raise errors.Conflict(f"replica set {rs.metadata.name} is gone")
            # The deployment's revision follows on the next sync, which this write causes.
            return d, updated
        d = await self._sync_revision(d, rs.metadata.annotations.get(REVISION_ANNOTATION, ""))
        if has_progress_deadline(d) and get_condition(d.status, PROGRESSING) is None:
            status = copy_of(d.status)
            set_condition(status, new_condition(
                PROGRESSING, "True", FOUND_NEW_RS,
                f'Found new replica set "{rs.metadata.name}"', self.now()))
            d = await self._write_status(d, status)
        return d, rs

    async def _create_new(self, d: Deployment, old_rss: list[ReplicaSet],
                          new_revision: int) -> tuple[Deployment, ReplicaSet]:
        template_hash = compute_hash(d.spec.template, collision_count_of(d))
        rs = new_replica_set(d, template_hash)
        replicas = new_rs_new_replicas(d, [*old_rss, rs], rs)
        rs.spec.replicas = replicas
        set_new_replica_set_annotations(d, rs, new_revision, exists=False)
        created = True
        try:
            result: ReplicaSet = await self.client.replica_sets.create(rs)  # type: ignore[assignment]
        except errors.AlreadyExists:
            created = False
            result = await self._existing_or_collision(d, rs)
        except errors.APIError as e:
            message = f'Failed to create new replica set "{rs.metadata.name}": {e}'
            self.recorder.event(d, WARNING, FAILED_RS_CREATE, message)
            if has_progress_deadline(d):
                status = copy_of(d.status)
                set_condition(status, new_condition(PROGRESSING, "False", FAILED_RS_CREATE,
                                                    message, self.now()))
                await self._write_status(d, status)
            raise
        self.written_rss.remember(result)
        if created:
            self._log.info("created replica set", deployment=key_of(d),
                           replica_set=rs.metadata.name, replicas=replicas)
            if replicas > 0:
                self.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                    f"Scaled up replica set {rs.metadata.name} from 0 to "
                                    f"{replicas}")
        d = await self._sync_revision(d, str(new_revision) if created else
                                      result.metadata.annotations.get(REVISION_ANNOTATION, ""))
        if created and has_progress_deadline(d):
            status = copy_of(d.status)
            set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_CREATED,
                                                f'Created new replica set "{rs.metadata.name}"',
                                                self.now()))
            d = await self._write_status(d, status)
        return d, result

    async def _existing_or_collision(self, d: Deployment, wanted: ReplicaSet) -> ReplicaSet:
        """The ReplicaSet named as the one just refused (AlreadyExists): ours for this
        template (a stale cache did not show it), or a hash collision, for which
        ``status.collisionCount`` is raised so the next try picks another name."""
        existing: ReplicaSet = await self.client.replica_sets.get(  # type: ignore[assignment]
            wanted.metadata.name, wanted.metadata.namespace)
        ref = controller_ref(existing)
        if (ref is not None and ref.uid == d.metadata.uid
                and equal_ignoring_hash(existing.spec.template, d.spec.template)):
            return existing
        status = copy_of(d.status)
        status.collision_count = (collision_count_of(d) or 0) + 1
        await self._write_status(d, status)
        self._log.info("pod template hash collision", deployment=key_of(d),
                       replica_set=wanted.metadata.name, collision_count=status.collision_count)
        raise errors.Conflict(f"replica set {wanted.metadata.name} exists with another "
                              "template; retrying with a new collision count")

    async def _sync_revision(self, d: Deployment, revision: str) -> Deployment:
        """Copy the new ReplicaSet's revision onto the deployment (a metadata update)."""
        if not revision or d.metadata.annotations.get(REVISION_ANNOTATION) == revision:
            return d
        updated = copy_of(d)
        updated.metadata.annotations[REVISION_ANNOTATION] = revision
        result: Deployment = await self.client.deployments.update(updated)  # type: ignore[assignment]
        self.written_deployments.remember(result)
        return result

    # ----------------------------------------------------------------- scaling

    async def _scale_and_sync(self, d: Deployment, new_rs: ReplicaSet | None,
                              old_rss: list[ReplicaSet]) -> None:
        """A paused deployment or a scaling event: resize, no rollout progress."""
        sizes = plan_scale(d, new_rs, old_rss)
        if new_rs is not None and new_rs.metadata.name in sizes:
            new_rs = await self._scale(d, new_rs, sizes.pop(new_rs.metadata.name))
        old_rss = await self._apply_sizes(d, old_rss, sizes)
        if d.spec.paused:
            await self._cleanup(d, old_rss)
        await self._sync_status(d, [*old_rss, new_rs], new_rs)

    async def _cleanup(self, d: Deployment, old_rss: list[ReplicaSet]) -> None:
        for rs in plan_cleanup(d, old_rss):
            md = rs.metadata
            try:
                await self.client.replica_sets.delete(md.name, md.namespace, uid=md.uid)
            except errors.NotFound:
                continue
            self._log.info("deleted old replica set", deployment=key_of(d), replica_set=md.name,
                           revision=revision_of(rs))

    # ------------------------------------------------------------------ writes

    async def _apply_sizes(self, d: Deployment, rss: list[ReplicaSet],
                           sizes: Mapping[str, int]) -> list[ReplicaSet]:
        """``rss`` with the ones named in ``sizes`` scaled to them."""
        result = []
        for rs in rss:
            if rs.metadata.name in sizes:
                rs = await self._scale(d, rs, sizes[rs.metadata.name])
            result.append(rs)
        return result

    async def _scale(self, d: Deployment, rs: ReplicaSet, size: int) -> ReplicaSet:
        """Set ``rs``'s replicas (and the replicas annotations); a no-op when both are
        as wanted. An event tells the user when the size changed."""
        replicas = desired_replicas(d)
        maximum = replicas + max_surge(d)
        old_size = spec_replicas(rs)
        if old_size == size and not replicas_annotations_need_update(rs, replicas, maximum):
            return rs
        updated = copy_of(rs)
        updated.spec.replicas = size
        set_replicas_annotations(updated, replicas, maximum)
        result = await self._update_rs(updated)
        if result is None:
            raise errors.Conflict(f"replica set {rs.metadata.name} is gone")
        if old_size != size:
            direction = "up" if size > old_size else "down"
            self.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                f"Scaled {direction} replica set {rs.metadata.name} from "
                                f"{old_size} to {size}")
            self._log.info("scaled replica set", deployment=key_of(d),
                           replica_set=rs.metadata.name, replicas=size, was=old_size)
        return result

    async def _update_rs(self, rs: ReplicaSet) -> ReplicaSet | None:
        """Update a ReplicaSet (Conflict when our copy is stale); None if it is gone."""
        try:
            result: ReplicaSet = await self.client.replica_sets.update(rs)  # type: ignore[assignment]
        except errors.NotFound:
            self.written_rss.forget(key_of(rs))
            return None
        self.written_rss.remember(result)
        return result

    async def _check_paused_conditions(self, d: Deployment) -> Deployment:
        status = paused_condition_status(d, self.now())
        return d if status is None else await self._write_status(d, status)

    async def _sync_status(self, d: Deployment, all_rss: list[ReplicaSet | None],
                           new_rs: ReplicaSet | None) -> None:
        """Counts and Available only (scaling, paused, deleting)."""
        status = calculate_status(d, all_rss, new_rs, self.now())
        if status != d.status:
            await self._write_status(d, status)

    async def _write_status(self, d: Deployment,
                            status: apps_pb2.DeploymentStatus) -> Deployment:
        updated = copy_of(d)
        updated.status.CopyFrom(status)
        try:
            result: Deployment = await self.client.deployments.update_status(updated)  # type: ignore[assignment]
        except errors.NotFound:
            return d
        self.written_deployments.remember(result)
        return result
