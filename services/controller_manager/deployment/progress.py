"""The deployment controller's rollout progress (Kubernetes' ``progress.go``): the
Progressing condition (moving, complete, or past ``progressDeadlineSeconds``), the
ReplicaFailure condition from the ReplicaSets, and when to look again at a rollout that
is not moving so its deadline is seen to pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.controller_manager.deployment.sync import DeploymentSyncer, calculate_status
from services.controller_manager.deployment.util import (
    NEW_RS_AVAILABLE,
    PROGRESSING,
    REPLICA_FAILURE,
    REPLICA_SET_UPDATED,
    TIMED_OUT,
    Deployment,
    ReplicaSet,
    deployment_complete,
    deployment_progressing,
    deployment_timed_out,
    get_condition,
    has_progress_deadline,
    new_condition,
    remove_condition,
    set_condition,
)
from skiff.api.v1 import apps_pb2
from skiff.client.store import key_of


def _about(d: Deployment, new_rs: ReplicaSet | None) -> str:
    if new_rs is not None:
        return f'ReplicaSet "{new_rs.metadata.name}"'
    return f'Deployment "{d.metadata.name}"'


def replica_failures(all_rss: Iterable[ReplicaSet | None],
                     new_rs: ReplicaSet | None) -> list[apps_pb2.DeploymentCondition]:
    """ReplicaFailure conditions of the ReplicaSets, the new one's first."""
    def failures(rs: ReplicaSet) -> list[apps_pb2.DeploymentCondition]:
        found = []
        for c in rs.status.conditions:
            if c.type == REPLICA_FAILURE:
                condition = apps_pb2.DeploymentCondition(type=c.type, status=c.status,
                                                         reason=c.reason, message=c.message)
                condition.last_transition_time.CopyFrom(c.last_transition_time)
                condition.last_update_time.CopyFrom(c.last_transition_time)
                found.append(condition)
        return found

    if new_rs is not None and (found := failures(new_rs)):
        return found
    return [c for rs in all_rss if rs is not None for c in failures(rs)]


def calculate_rollout_status(d: Deployment, all_rss: Sequence[ReplicaSet | None],
                             new_rs: ReplicaSet | None, now: float) -> apps_pb2.DeploymentStatus:
    """The status during a rollout (pure; Kubernetes' syncRolloutStatus): the counts,
    Available, and Progressing: True NewReplicaSetAvailable once complete, True
    ReplicaSetUpdated while it moves, False ProgressDeadlineExceeded when it has not
    moved for ``progressDeadlineSeconds``; ReplicaFailure from the ReplicaSets."""
    status = calculate_status(d, all_rss, new_rs, now)
    if not has_progress_deadline(d):
        remove_condition(status, PROGRESSING)
    current = get_condition(d.status, PROGRESSING)
    already_complete = (status.replicas == status.updated_replicas and current is not None
                        and current.reason == NEW_RS_AVAILABLE)
    if has_progress_deadline(d) and not already_complete:
        about = _about(d, new_rs)
        if deployment_complete(d, status):
            set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                                f"{about} has successfully progressed.", now))
        elif deployment_progressing(d, status):
            condition = new_condition(PROGRESSING, "True", REPLICA_SET_UPDATED,
                                      f"{about} is progressing.", now)
            # Progress moves lastUpdateTime on (the deadline counts from it); a
            # condition already True keeps its transition time.
            if current is not None:
                if current.status == "True":
                    condition.last_transition_time.CopyFrom(current.last_transition_time)
                remove_condition(status, PROGRESSING)
            set_condition(status, condition)
        elif deployment_timed_out(d, status, now):
            set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT,
                                                f"{about} has timed out progressing.", now))
    failures = replica_failures(all_rss, new_rs)
    if failures:
        set_condition(status, failures[0])
    else:
        remove_condition(status, REPLICA_FAILURE)
    return status


def requeue_after(d: Deployment, status: apps_pb2.DeploymentStatus, now: float) -> float | None:
    """When to look at a rollout that is not moving, to see its deadline pass; None
    when there is nothing to wait for (no deadline, complete, or already timed out)."""
    current = get_condition(d.status, PROGRESSING)
    if not has_progress_deadline(d) or current is None:
        return None
    if deployment_complete(d, status) or current.reason == TIMED_OUT:
        return None
    due = current.last_update_time.seconds + d.spec.progress_deadline_seconds - now
    return max(due, 0.0) + 1.0


# ------------------------------------------------------------------ controller


class ProgressSyncer(DeploymentSyncer):
    """Writes a rollout's status, and requeues it for its progress deadline."""

    async def _sync_rollout_status(self, d: Deployment, all_rss: list[ReplicaSet | None],
                                   new_rs: ReplicaSet | None) -> None:
        now = self.now()
        status = calculate_rollout_status(d, all_rss, new_rs, now)
        if status != d.status:
            await self._write_status(d, status)
        elif (after := requeue_after(d, status, now)) is not None:
            # Nothing moved: look again when the progress deadline is due.
            self.enqueue_after(key_of(d), after)
