"""The deployment controller's pure helpers (Kubernetes' ``pkg/controller/deployment/util``):
the names it writes (labels, annotations, condition reasons), surge and unavailability
amounts, the pod-template hash, revision and replicas annotations, the counts of a
ReplicaSet, the Deployment conditions, and the overlay of objects the controller wrote
(:class:`WrittenObjects`). No I/O: the unit tests call them directly.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

from google.protobuf.message import Message

from services.controller_manager.replication import desired_replicas, owner_reference
from skiff.api.kinds import lookup
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.client.store import key_of

Deployment = apps_pb2.Deployment
ReplicaSet = apps_pb2.ReplicaSet

DEPLOYMENT = lookup("Deployment")
REPLICA_SET = lookup("ReplicaSet")

#: The label added to a new ReplicaSet's selector, template and pods.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
#: Earlier revision numbers of a ReplicaSet that became the new one again (rollbacks).
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
#: ``spec.replicas`` of the deployment when the ReplicaSet was last scaled for it.
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
#: ``spec.replicas + maxSurge`` then: what proportional scaling divides by.
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
#: Deployment annotations not copied onto its ReplicaSets (Kubernetes' annotationsToSkip).
ANNOTATIONS_NOT_COPIED = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to"})
#: Longest revision-history annotation kept (kube-controller-manager's default).
MAX_REVISION_HISTORY_CHARS = 2000
#: progressDeadlineSeconds meaning "no deadline" (Kubernetes' math.MaxInt32).
NO_PROGRESS_DEADLINE = 2**31 - 1
#: How long a written object the informer never shows is still taken as existing.
WRITTEN_TTL = 60.0

# Condition types and reasons, Kubernetes' words (users and skiffctl match on them).
AVAILABLE, PROGRESSING, REPLICA_FAILURE = "Available", "Progressing", "ReplicaFailure"
MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REPLICA_SET_UPDATED = "ReplicaSetUpdated"
TIMED_OUT = "ProgressDeadlineExceeded"
FOUND_NEW_RS = "FoundNewReplicaSet"
NEW_RS_CREATED = "NewReplicaSetCreated"
FAILED_RS_CREATE = "ReplicaSetCreateError"
PAUSED, RESUMED = "DeploymentPaused", "DeploymentResumed"

_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193
#: Kubernetes' rand.SafeEncodeString alphabet: no vowels, no look-alikes (0/o, 1/l).
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --------------------------------------------------------------------- amounts


def is_rolling_update(d: Deployment) -> bool:
    """Whether ``d`` rolls out gradually (RollingUpdate, the default) or Recreates."""
    return d.spec.strategy.type != "Recreate"


def scaled_value(value: meta_pb2.IntOrString, total: int, *, round_up: bool) -> int:
    """A count, or a percentage of ``total`` rounded up or down (Kubernetes'
    ``GetScaledValueFromIntOrPercent``). A malformed percentage counts as 0 (the
    apiserver refuses them)."""
    if value.type == meta_pb2.IntOrString.INT:
        return value.int_val
    text = value.str_val
    if not text.endswith("%") or not text[:-1].isdigit():
        return 0
    percent = int(text[:-1])
    # Integer arithmetic: a float ceil of 0.1 * 30 would round 3.0000000000000004 up.
    quotient, remainder = divmod(percent * total, 100)
    return quotient + 1 if round_up and remainder else quotient


def resolve_fenceposts(max_surge: meta_pb2.IntOrString | None,
                       max_unavailable: meta_pb2.IntOrString | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) as pod counts: surge rounds up, unavailable down; both
    zero (a small percentage of few replicas) becomes unavailable 1, so a rollout
    can always move."""
    zero = meta_pb2.IntOrString()
    surge = scaled_value(max_surge or zero, desired, round_up=True)
    unavailable = scaled_value(max_unavailable or zero, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _fenceposts(d: Deployment) -> tuple[int, int]:
    rolling = d.spec.strategy.rolling_update
    return resolve_fenceposts(
        rolling.max_surge if rolling.HasField("max_surge") else None,
        rolling.max_unavailable if rolling.HasField("max_unavailable") else None,
        desired_replicas(d))


def max_surge(d: Deployment) -> int:
    """How many pods above ``spec.replicas`` a rollout may run (0 for Recreate)."""
    return _fenceposts(d)[0] if is_rolling_update(d) else 0


def max_unavailable(d: Deployment) -> int:
    """How many of ``spec.replicas`` may be unavailable during a rollout (0 for
    Recreate or zero replicas), at most ``spec.replicas``."""
    replicas = desired_replicas(d)
    if not is_rolling_update(d) or replicas == 0:
        return 0
    return min(_fenceposts(d)[1], replicas)


# -------------------------------------------------------- templates and hashes


def template_without_hash(template: core_pb2.PodTemplateSpec) -> core_pb2.PodTemplateSpec:
    """A copy of ``template`` without the ``pod-template-hash`` label."""
    copy = core_pb2.PodTemplateSpec()
    copy.CopyFrom(template)
    copy.metadata.labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return copy


def equal_ignoring_hash(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Whether two templates are the same but for the ``pod-template-hash`` label."""
    return template_without_hash(a) == template_without_hash(b)


def compute_hash(template: core_pb2.PodTemplateSpec, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of a template (Kubernetes' ``ComputeHash``): FNV-1a
    (32 bits) of its deterministic serialization, then of ``collision_count`` (when
    set, little-endian), its decimal digits mapped onto a vowel-free alphabet.

    Stable for equal templates; a different ``collision_count`` gives another name
    when two templates collide.
    """
    data = template.SerializeToString(deterministic=True)
    if collision_count is not None:
        data += struct.pack("<I", collision_count & 0xFFFFFFFF)
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in str(h))


def collision_count_of(d: Deployment) -> int | None:
    return d.status.collision_count if d.status.HasField("collision_count") else None


def new_replica_set(d: Deployment, template_hash: str) -> ReplicaSet:
    """The ReplicaSet to create for ``d``'s template (zero replicas, no annotations yet):
    ``<deployment>-<hash>``, the hash added to selector, template and labels, owned by
    ``d``."""
    rs = ReplicaSet(api_version=REPLICA_SET.api_version, kind=REPLICA_SET.kind)
    rs.metadata.name = f"{d.metadata.name}-{template_hash}"
    rs.metadata.namespace = d.metadata.namespace
    rs.metadata.owner_references.append(owner_reference(d, DEPLOYMENT))
    rs.spec.replicas = 0
    rs.spec.min_ready_seconds = d.spec.min_ready_seconds
    rs.spec.selector.CopyFrom(d.spec.selector)
    rs.spec.selector.match_labels[POD_TEMPLATE_HASH_LABEL] = template_hash
    rs.spec.template.CopyFrom(d.spec.template)
    rs.spec.template.metadata.labels[POD_TEMPLATE_HASH_LABEL] = template_hash
    rs.metadata.labels.update(rs.spec.template.metadata.labels)
    return rs


# ----------------------------------------------------------------- annotations


def revision_of(obj: Message) -> int:
    """The ``deployment.kubernetes.io/revision`` number; 0 when missing or invalid."""
    text = obj.metadata.annotations.get(REVISION_ANNOTATION, "")  # type: ignore[attr-defined]
    return int(text) if text.isdigit() else 0


def max_revision(replica_sets: Iterable[ReplicaSet]) -> int:
    return max((revision_of(rs) for rs in replica_sets), default=0)


def int_annotation(rs: ReplicaSet, key: str) -> int | None:
    text = rs.metadata.annotations.get(key, "")
    return int(text) if text.isdigit() else None


def desired_replicas_annotation(rs: ReplicaSet) -> int | None:
    return int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)


def replicas_annotations_need_update(rs: ReplicaSet, desired: int, maximum: int) -> bool:
    annotations = rs.metadata.annotations
    return (annotations.get(DESIRED_REPLICAS_ANNOTATION) != str(desired)
            or annotations.get(MAX_REPLICAS_ANNOTATION) != str(maximum))


def set_replicas_annotations(rs: ReplicaSet, desired: int, maximum: int) -> bool:
    """Record the deployment's replicas and replicas + surge on ``rs`` (in place);
    whether anything changed."""
    if not replicas_annotations_need_update(rs, desired, maximum):
        return False
    rs.metadata.annotations[DESIRED_REPLICAS_ANNOTATION] = str(desired)
    rs.metadata.annotations[MAX_REPLICAS_ANNOTATION] = str(maximum)
    return True


def set_new_replica_set_annotations(d: Deployment, rs: ReplicaSet, new_revision: int, *,
                                    exists: bool) -> bool:
    """Kubernetes' ``SetNewReplicaSetAnnotations``, in place on ``rs`` (no I/O): copy the
    deployment's annotations, raise the revision to ``new_revision`` (remembering the
    one it had in the revision history), and on a ReplicaSet about to be created record
    the replicas annotations. Whether anything changed."""
    changed = False
    annotations = rs.metadata.annotations
    for key, value in d.metadata.annotations.items():
        if key in ANNOTATIONS_NOT_COPIED or annotations.get(key) == value:
            continue
        annotations[key] = value
        changed = True
    old_text = annotations.get(REVISION_ANNOTATION, "")
    if old_text and not old_text.isdigit():
        return changed  # someone else's value: leave the revision alone
    old_revision = int(old_text) if old_text else 0
    if old_revision < new_revision:
        annotations[REVISION_ANNOTATION] = str(new_revision)
        changed = True
        if old_text:
            history = annotations.get(REVISION_HISTORY_ANNOTATION, "")
            annotations[REVISION_HISTORY_ANNOTATION] = _append_history(history, old_text)
    if not exists:
        replicas = desired_replicas(d)
        changed |= set_replicas_annotations(rs, replicas, replicas + max_surge(d))
    return changed


def _append_history(history: str, revision: str) -> str:
    """``history`` + ``,revision``, dropping the oldest entries past the length limit."""
    entries = [e for e in history.split(",") if e]
    entries.append(revision)
    while len(",".join(entries)) > MAX_REVISION_HISTORY_CHARS and len(entries) > 1:
        entries.pop(0)
    return ",".join(entries)


# ---------------------------------------------------------------- replica sets


def spec_replicas(rs: ReplicaSet | None) -> int:
    return desired_replicas(rs) if rs is not None else 0


def creation_key(rs: ReplicaSet) -> tuple[int, int, str]:
    """Oldest first; the name breaks ties (Kubernetes' ReplicaSetsByCreationTimestamp)."""
    created = rs.metadata.creation_timestamp
    return created.seconds, created.nanos, rs.metadata.name


def active(replica_sets: Iterable[ReplicaSet | None]) -> list[ReplicaSet]:
    """Those that want pods (``spec.replicas > 0``)."""
    return [rs for rs in replica_sets if rs is not None and spec_replicas(rs) > 0]


def find_new_replica_set(d: Deployment, replica_sets: Iterable[ReplicaSet]) -> ReplicaSet | None:
    """The ReplicaSet running ``d``'s template: the oldest one if several do."""
    for rs in sorted(replica_sets, key=creation_key):
        if equal_ignoring_hash(rs.spec.template, d.spec.template):
            return rs
    return None


def pod_count(rs: ReplicaSet | None) -> int:
    """Pods counted against ``replicas + maxSurge``: the wanted ones, or more while a
    scale-down has not been acted on yet (see the module)."""
    return 0 if rs is None else max(spec_replicas(rs), rs.status.replicas)


def available_count(rs: ReplicaSet | None) -> int:
    """Available pods counted against ``replicas - maxUnavailable``: never more than
    the ReplicaSet keeps (see the module)."""
    return 0 if rs is None else max(0, min(rs.status.available_replicas, spec_replicas(rs)))


def new_rs_new_replicas(d: Deployment, all_rss: Sequence[ReplicaSet | None],
                        new_rs: ReplicaSet) -> int:
    """How many replicas the new ReplicaSet may have now (Kubernetes' NewRSNewReplicas):
    Recreate all of them; RollingUpdate as many as keep all pods within
    ``replicas + maxSurge``, never more than ``replicas``."""
    replicas = desired_replicas(d)
    if not is_rolling_update(d):
        return replicas
    current = sum(pod_count(rs) for rs in all_rss)
    allowed = replicas + max_surge(d)
    if current >= allowed:
        return spec_replicas(new_rs)
    scale_up = min(allowed - current, replicas - spec_replicas(new_rs))
    return spec_replicas(new_rs) + max(0, scale_up)


def plan_recreate_scale_down(old_rss: Iterable[ReplicaSet]) -> dict[str, int]:
    """Recreate: every old ReplicaSet that still wants pods goes to zero (pure)."""
    return {rs.metadata.name: 0 for rs in active(old_rss)}


def find_active_or_latest(new_rs: ReplicaSet | None,
                          old_rss: Sequence[ReplicaSet]) -> ReplicaSet | None:
    """The one ReplicaSet with replicas, or the newest if none has; None if several have."""
    if new_rs is None and not old_rss:
        return None
    newest_first = sorted(old_rss, key=creation_key, reverse=True)
    running = active([*newest_first, new_rs])
    if not running:
        return new_rs if new_rs is not None else newest_first[0]
    return running[0] if len(running) == 1 else None


def is_saturated(d: Deployment, rs: ReplicaSet | None) -> bool:
    """Whether ``rs`` runs all of ``d``'s replicas, all available."""
    if rs is None:
        return False
    replicas = desired_replicas(d)
    return (desired_replicas_annotation(rs) == replicas and spec_replicas(rs) == replicas
            and rs.status.available_replicas == replicas)


# ------------------------------------------------------------------ conditions


def has_progress_deadline(d: Deployment) -> bool:
    return (d.spec.HasField("progress_deadline_seconds")
            and d.spec.progress_deadline_seconds != NO_PROGRESS_DEADLINE)


def new_condition(type_: str, status: str, reason: str, message: str,
                  now: float) -> apps_pb2.DeploymentCondition:
    """A condition updated and transitioned ``now`` (whole seconds, as Kubernetes
    serializes times)."""
    condition = apps_pb2.DeploymentCondition(type=type_, status=status, reason=reason,
                                             message=message)
    condition.last_update_time.FromSeconds(int(now))
    condition.last_transition_time.FromSeconds(int(now))
    return condition


def get_condition(status: apps_pb2.DeploymentStatus,
                  type_: str) -> apps_pb2.DeploymentCondition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def remove_condition(status: apps_pb2.DeploymentStatus, type_: str) -> None:
    kept = [c for c in status.conditions if c.type != type_]
    del status.conditions[:]
    status.conditions.extend(kept)


def set_condition(status: apps_pb2.DeploymentStatus,
                  condition: apps_pb2.DeploymentCondition) -> None:
    """Put ``condition`` in ``status`` (in place): nothing changes when one of its type
    has the same status and reason; the transition time is kept when only the reason
    changes."""
    current = get_condition(status, condition.type)
    if current is not None and current.status == condition.status:
        if current.reason == condition.reason:
            return
        condition.last_transition_time.CopyFrom(current.last_transition_time)
    remove_condition(status, condition.type)
    status.conditions.append(condition)


def deployment_complete(d: Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    """Every replica updated and available, none old, the latest spec observed."""
    replicas = desired_replicas(d)
    return (status.updated_replicas == replicas and status.replicas == replicas
            and status.available_replicas == replicas
            and status.observed_generation >= d.metadata.generation)


def deployment_progressing(d: Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    """Whether ``status`` moved on from ``d.status``: more updated, ready or available
    replicas, or fewer old ones."""
    old = d.status
    return (status.updated_replicas > old.updated_replicas
            or status.replicas - status.updated_replicas < old.replicas - old.updated_replicas
            or status.ready_replicas > old.ready_replicas
            or status.available_replicas > old.available_replicas)


def deployment_timed_out(d: Deployment, status: apps_pb2.DeploymentStatus, now: float) -> bool:
    """Whether no progress was reported for ``progressDeadlineSeconds``."""
    if not has_progress_deadline(d):
        return False
    condition = get_condition(status, PROGRESSING)
    if condition is None or condition.reason == NEW_RS_AVAILABLE:
        return False
    if condition.reason == TIMED_OUT:
        return True
    return condition.last_update_time.seconds + d.spec.progress_deadline_seconds < now


# ------------------------------------------------------------------ own writes


class WrittenObjects:
    """The latest version of each object this controller wrote, until its informer
    has caught up with it.

    Invariant: an entry is newer (by resource version) than what the informer had
    when it was stored; :meth:`fresher` drops it once the informer has that version
    or a newer one, or the object was replaced (another uid). An entry the informer
    never shows (the object went again before its watch saw it) is dropped after
    ``ttl`` seconds of ``now`` (injected).
    """

    def __init__(self, *, ttl: float = WRITTEN_TTL,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._now = now
        self._written: dict[str, tuple[Message, float]] = {}

    def remember(self, obj: Message) -> None:
        key = key_of(obj)
        known = self._written.get(key)
        if known is None or _version(known[0]) <= _version(obj):
            self._written[key] = (obj, self._now())

    def forget(self, key: str) -> None:
        self._written.pop(key, None)

    def fresher(self, cached: Message) -> Message:
        """``cached``, or the version written since if the cache has not seen it yet."""
        key = key_of(cached)
        entry = self._written.get(key)
        if entry is None:
            return cached
        written = entry[0]
        if (written.metadata.uid != cached.metadata.uid  # type: ignore[attr-defined]
                or _version(cached) >= _version(written)):
            del self._written[key]
            return cached
        return written

    def unseen(self, namespace: str, cached: Container[str]) -> list[Message]:
        """Objects written in ``namespace`` whose keys the cache has not got yet (a
        create its watch has not delivered); expired ones are dropped."""
        found = []
        for key, (obj, at) in list(self._written.items()):
            if key in cached or obj.metadata.namespace != namespace:  # type: ignore[attr-defined]
                continue
            if self._now() - at > self.ttl:
                del self._written[key]
                continue
            found.append(obj)
        return found

    def __len__(self) -> int:
        return len(self._written)


def _version(obj: Message) -> int:
    text = obj.metadata.resource_version  # type: ignore[attr-defined]
    return int(text) if text.isdigit() else 0


def copy_of(obj: Message) -> Any:
    copy = type(obj)()
    copy.CopyFrom(obj)
    return copy
