"""Deployments: roll a pod template out through ReplicaSets.

Kubernetes' deployment controller (``pkg/controller/deployment``: ``sync.go``,
``rolling.go``, ``recreate.go``, ``progress.go``). A Deployment owns ReplicaSets, each
running one version of its pod template:

- the *new* ReplicaSet is the one whose template equals the deployment's (ignoring the
  ``pod-template-hash`` label); it is named ``<deployment>-<hash>``, where the hash is
  :func:`compute_hash` of the template (and ``status.collisionCount``), and the hash is
  added to its selector, its template's labels and so to its pods' labels, so the
  ReplicaSets of one deployment never select each other's pods;
- every other owned ReplicaSet is *old*. Revisions are numbered by the annotation
  ``deployment.kubernetes.io/revision`` on each ReplicaSet (copied onto the Deployment);
  a rollback is an update of the template back to an earlier one: the old ReplicaSet
  with that template becomes the new one again and gets the next revision number.

Watches Deployments, ReplicaSets and pods. Handlers only enqueue a deployment's key: a
ReplicaSet maps to its controlling Deployment or, for an orphan, to every Deployment
whose selector matches it; a deleted pod maps (through its ReplicaSet) to a Recreate
deployment, which waits for old pods to be gone. ``sync(key)``:

1. reads the Deployment from the cache (missing: deleted; the garbage collector
   removes its ReplicaSets by their ownerReferences);
2. claims ReplicaSets: adopts matching orphans, releases owned ones that no longer match;
3. a deleting deployment only gets its status written; a paused one, or one whose
   ``spec.replicas`` changed (a *scaling event*), is scaled proportionally across its
   ReplicaSets (:func:`plan_scale`) with no rollout progress;
4. otherwise rolls out: **RollingUpdate** scales the new ReplicaSet up as far as
   ``maxSurge`` allows (:func:`plan_new_replica_set_scale`), then old ones down as far
   as ``maxUnavailable`` allows (:func:`plan_old_replica_sets_scale_down`);
   **Recreate** scales all old ReplicaSets to zero, waits until none of their pods
   exists, then scales the new one up;
5. once the rollout is complete, deletes the oldest zero-sized old ReplicaSets beyond
   ``revisionHistoryLimit`` (:func:`plan_cleanup`);
6. writes status (counts, the Available, Progressing and ReplicaFailure conditions,
   :func:`calculate_rollout_status`) only when it changed, and looks again when the
   progress deadline is due.

One tightening of Kubernetes, so the rollout bounds hold for the pods that exist and
not only for the ReplicaSets' ``spec.replicas``: when counting pods against
``replicas + maxSurge`` a ReplicaSet counts ``max(spec.replicas, status.replicas)``
(a scaled-down ReplicaSet still counts its pods until its controller has begun deleting
them), and when counting available pods against ``replicas - maxUnavailable`` it counts
``min(status.availableReplicas, spec.replicas)`` (pods about to be deleted are not
available). See :func:`pod_count` and :func:`available_count`.

No expectations: every write goes through optimistic concurrency (a stale cache makes
a write fail with Conflict and the key is retried), the new ReplicaSet's name is
deterministic (a create racing a stale cache answers AlreadyExists and the existing one
is used), and the objects this controller wrote are remembered until its informers
catch up (:class:`WrittenObjects`), so a sync right after a write plans from it.

Pure decisions (everything above ``DeploymentController``) are apart from the I/O for
unit tests. Neighbours: :mod:`.replication` (runs the ReplicaSets' pods; its claiming
and ownerReference helpers are reused here), :mod:`.garbage_collector` (cascading
deletion), ``skiffctl rollout`` (history, undo, pause, resume).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from services.controller_manager.garbage_collector import without_owner
from services.controller_manager.replication import (
    TERMINAL_PHASES,
    controller_ref,
    desired_replicas,
    owner_reference,
    plan_claims,
    selector_of,
)
from skiff.api import errors
from skiff.api.kinds import lookup
from skiff.api.labels import Selector
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import NORMAL, WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
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


# ------------------------------------------------------------- amounts (pure)


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


# ------------------------------------------------- templates and hashes (pure)


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


# --------------------------------------------------------- annotations (pure)


def revision_of(obj: Message) -> int:
    """The ``deployment.kubernetes.io/revision`` number; 0 when missing or invalid."""
    text = obj.metadata.annotations.get(REVISION_ANNOTATION, "")  # type: ignore[attr-defined]
    return int(text) if text.isdigit() else 0


def max_revision(replica_sets: Iterable[ReplicaSet]) -> int:
    return max((revision_of(rs) for rs in replica_sets), default=0)


def _int_annotation(rs: ReplicaSet, key: str) -> int | None:
    text = rs.metadata.annotations.get(key, "")
    return int(text) if text.isdigit() else None


def desired_replicas_annotation(rs: ReplicaSet) -> int | None:
    return _int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)


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


# ------------------------------------------------------- replica sets (pure)


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


def plan_new_replica_set_scale(d: Deployment, all_rss: Sequence[ReplicaSet | None],
                               new_rs: ReplicaSet) -> int | None:
    """The new ReplicaSet's next size in a rolling update; None: leave it (pure)."""
    replicas, current = desired_replicas(d), spec_replicas(new_rs)
    if current == replicas:
        return None
    if current > replicas:
        return replicas
    size = new_rs_new_replicas(d, all_rss, new_rs)
    return size if size != current else None


def plan_old_replica_sets_scale_down(d: Deployment, all_rss: Sequence[ReplicaSet | None],
                                     old_rss: Sequence[ReplicaSet],
                                     new_rs: ReplicaSet | None) -> dict[str, int]:
    """Old ReplicaSets' next sizes in a rolling update, by name (pure; Kubernetes'
    reconcileOldReplicaSets): first the unhealthy pods of old ReplicaSets (oldest
    first) as far as ``maxScaledDown`` goes, then available ones while more than
    ``replicas - maxUnavailable`` pods stay available."""
    if sum(spec_replicas(rs) for rs in old_rss) == 0:
        return {}
    replicas = desired_replicas(d)
    min_available = replicas - max_unavailable(d)
    all_pods = sum(spec_replicas(rs) for rs in all_rss)
    new_unavailable = spec_replicas(new_rs) - available_count(new_rs)
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    before = {rs.metadata.name: spec_replicas(rs) for rs in old_rss}
    sizes = dict(before)
    ordered = sorted(old_rss, key=creation_key)

    # Unhealthy replicas first: they would otherwise block the rollout until it times out.
    cleaned = 0
    for rs in ordered:
        if cleaned >= max_scaled_down:
            break
        name = rs.metadata.name
        unhealthy = sizes[name] - available_count(rs)
        if sizes[name] == 0 or unhealthy <= 0:
            continue
        count = min(max_scaled_down - cleaned, unhealthy)
        sizes[name] -= count
        cleaned += count

    # Then available ones, while more than minAvailable stay available. Old ones count
    # at their size after the step above (it removed only unavailable pods).
    old_names = set(sizes)
    available = sum(available_count(rs) for rs in all_rss
                    if rs is not None and rs.metadata.name not in old_names)
    available += sum(min(available_count(rs), sizes[rs.metadata.name]) for rs in old_rss)
    to_scale_down = available - min_available
    scaled = 0
    for rs in ordered:
        if scaled >= to_scale_down:
            break
        name = rs.metadata.name
        if sizes[name] == 0:
            continue
        count = min(sizes[name], to_scale_down - scaled)
        sizes[name] -= count
        scaled += count
    return {name: size for name, size in sizes.items() if size != before[name]}


def plan_recreate_scale_down(old_rss: Iterable[ReplicaSet]) -> dict[str, int]:
    """Recreate: every old ReplicaSet that still wants pods goes to zero (pure)."""
    return {rs.metadata.name: 0 for rs in active(old_rss)}


def old_pods_running(new_rs: ReplicaSet | None, old_rss: Iterable[ReplicaSet],
                     pods_by_replica_set: Mapping[str, Sequence[core_pb2.Pod]]) -> bool:
    """Whether any pod of an old ReplicaSet still exists, even terminating (pure; Recreate
    starts new pods only after that). ``pods_by_replica_set`` is keyed by the uid of a
    pod's controlling ReplicaSet; finished pods do not count."""
    if sum(rs.status.replicas for rs in old_rss) > 0:
        return True
    new_uid = new_rs.metadata.uid if new_rs is not None else None
    for uid, pods in pods_by_replica_set.items():
        if uid == new_uid:
            continue
        if any(p.status.phase not in TERMINAL_PHASES for p in pods):
            return True
    return False


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


def _fraction(rs: ReplicaSet, d: Deployment) -> int:
    """How many replicas ``rs`` gains (or loses) when the deployment is resized, in
    proportion to its share of the size it was scaled for."""
    replicas = desired_replicas(d)
    if replicas == 0:
        return -spec_replicas(rs)
    target = replicas + max_surge(d)
    annotated = _int_annotation(rs, MAX_REPLICAS_ANNOTATION)
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


# ---------------------------------------------------------------- status (pure)


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


# ---------------------------------------------------------- own writes (pure)


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


def _copy(obj: Message) -> Any:
    copy = type(obj)()
    copy.CopyFrom(obj)
    return copy


# -------------------------------------------------------------------- controller


class DeploymentController(Controller):
    """Rolls every Deployment's template out through its ReplicaSets (see the module)."""

    def __init__(self, client: Client, factory: SharedInformerFactory, recorder: EventRecorder,
                 config: Any = None, *, now: Callable[[], float] = time.time) -> None:
        super().__init__("deployment", workers=getattr(config, "concurrent_syncs", 5))
        self.client = client
        self.recorder = recorder
        self.now = now  # wall clock: conditions carry timestamps, deadlines compare them
        # What this controller wrote, per kind, until its informers show it.
        self.written_deployments = WrittenObjects()
        self.written_rss = WrittenObjects()
        self.deployments = factory.informer(DEPLOYMENT)
        self.replica_sets = factory.informer(REPLICA_SET)
        self.pods = factory.informer("pods")
        self.deployments.add_handler(self.enqueue, self._deployment_updated,
                                     self._deployment_deleted, name="deployment deployments")
        self.replica_sets.add_handler(self._rs_added, self._rs_updated, self._rs_deleted,
                                      name="deployment replicasets")
        self.pods.add_handler(None, None, self._pod_deleted, name="deployment pods")
        self.wait_for(self.deployments, self.replica_sets, self.pods)

    # -------------------------------------------------------------- handlers

    def _deployment_updated(self, old: Deployment, new: Deployment) -> None:
        self.enqueue(new)

    def _deployment_deleted(self, d: Deployment) -> None:
        self.written_deployments.forget(key_of(d))
        self.enqueue(d)

    def _deployment_key(self, namespace: str,
                        ref: meta_pb2.OwnerReference | None) -> str | None:
        """The key of the cached Deployment ``ref`` names, if it is one and exists."""
        if ref is None or ref.kind != DEPLOYMENT.kind:
            return None
        key = f"{namespace}/{ref.name}"
        d = self.deployments.store.get(key)
        if d is None or d.metadata.uid != ref.uid:  # type: ignore[attr-defined]
            return None
        return key

    def _enqueue_matching(self, rs: ReplicaSet) -> None:
        """An orphan ReplicaSet: every Deployment whose selector matches may adopt it."""
        for d in self.deployments.store.by_index("namespace", rs.metadata.namespace):
            if selector_of(d).matches(rs.metadata.labels):
                self.enqueue(d)

    def _rs_added(self, rs: ReplicaSet) -> None:
        if rs.metadata.HasField("deletion_timestamp"):
            self._rs_deleted(rs)
            return
        ref = controller_ref(rs)
        if ref is not None:
            if (key := self._deployment_key(rs.metadata.namespace, ref)) is not None:
                self.enqueue(key)
            return
        self._enqueue_matching(rs)

    def _rs_updated(self, old: ReplicaSet, new: ReplicaSet) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return  # a resync: nothing changed
        old_ref, new_ref = controller_ref(old), controller_ref(new)
        namespace = new.metadata.namespace
        if old_ref != new_ref and (old_key := self._deployment_key(namespace, old_ref)):
            self.enqueue(old_key)
        if new_ref is not None:
            if (key := self._deployment_key(namespace, new_ref)) is not None:
                self.enqueue(key)
            return
        if old.metadata.labels != new.metadata.labels or old_ref != new_ref:
            self._enqueue_matching(new)

    def _rs_deleted(self, rs: ReplicaSet) -> None:
        self.written_rss.forget(key_of(rs))
        if (key := self._deployment_key(rs.metadata.namespace, controller_ref(rs))) is not None:
            self.enqueue(key)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        """A Recreate rollout waits for its old pods to be gone: this may be the last."""
        ref = controller_ref(pod)
        if ref is None or ref.kind != REPLICA_SET.kind:
            return
        rs = self.replica_sets.store.get(f"{pod.metadata.namespace}/{ref.name}")
        if rs is None or rs.metadata.uid != ref.uid:  # type: ignore[attr-defined]
            return
        key = self._deployment_key(pod.metadata.namespace, controller_ref(rs))
        if key is None:
            return
        d = self.deployments.store.get(key)
        if d is not None and not is_rolling_update(d):  # type: ignore[arg-type]
            self.enqueue(key)

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        started = time.monotonic()
        cached = self.deployments.store.get(key)
        if cached is None:
            return  # deleted: the garbage collector removes its ReplicaSets
        d: Deployment = _copy(self.written_deployments.fresher(cached))
        selector = selector_of(d)
        if selector.empty:
            await self._selecting_all(d)
            return
        rss = await self._claim_replica_sets(d, selector)
        if d.metadata.HasField("deletion_timestamp"):
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=False)
            await self._sync_status(d, [*old_rss, new_rs], new_rs)
            return
        d = await self._check_paused_conditions(d)
        d, new_rs, old_rss = await self._new_and_old(d, rss, create=False)
        if d.spec.paused or is_scaling_event(d, new_rs, old_rss):
            await self._scale_and_sync(d, new_rs, old_rss)
        elif is_rolling_update(d):
            await self._rollout_rolling(d, rss, new_rs, old_rss)
        else:
            await self._rollout_recreate(d, rss, new_rs, old_rss)
        self._log.debug("synced deployment", key=key, replica_sets=len(rss),
                        seconds=round(time.monotonic() - started, 6))

    async def _selecting_all(self, d: Deployment) -> None:
        # Validation refuses empty selectors; one that slipped through would adopt every
        # ReplicaSet in the namespace, so it is reported and left alone (as Kubernetes).
        self.recorder.event(d, WARNING, "SelectingAll", "This deployment is selecting all "
                            "pods. A non-empty selector is required.")
        if d.status.observed_generation < d.metadata.generation:
            status = _copy(d.status)
            status.observed_generation = d.metadata.generation
            await self._write_status(d, status)

    # -------------------------------------------------------------- claiming

    async def _claim_replica_sets(self, d: Deployment, selector: Selector) -> list[ReplicaSet]:
        """Adopt and release as :func:`plan_claims` says; the ReplicaSets owned after."""
        namespace = d.metadata.namespace
        cached = [self.written_rss.fresher(rs)
                  for rs in self.replica_sets.store.by_index("namespace", namespace)]
        # Ours but not in the cache yet (created by the last sync): they count too, or
        # a sync right after a create would plan without the new ReplicaSet.
        cached += self.written_rss.unseen(namespace, self.replica_sets.store)
        plan = plan_claims(d.metadata.uid, selector, cached,  # type: ignore[arg-type]
                           owner_deleting=d.metadata.HasField("deletion_timestamp"))
        owned: list[ReplicaSet] = list(plan.owned)  # type: ignore[arg-type]
        if plan.adopt and await self._can_adopt(d):
            for rs in plan.adopt:
                adopted = _copy(rs)
                adopted.metadata.owner_references.append(owner_reference(d, DEPLOYMENT))
                if (result := await self._update_rs(adopted)) is not None:
                    self._log.info("adopted replica set", deployment=key_of(d),
                                   replica_set=rs.metadata.name)
                    owned.append(result)
        for rs in plan.release:
            if await self._update_rs(without_owner(rs, [d.metadata.uid])) is not None:
                self._log.info("released replica set", deployment=key_of(d),
                               replica_set=rs.metadata.name)
        return owned

    async def _can_adopt(self, d: Deployment) -> bool:
        # A live read (Kubernetes' canAdopt): a stale cache must not adopt for a
        # deployment that was deleted, replaced, or is being deleted.
        try:
            fresh = await self.client.deployments.get(d.metadata.name, d.metadata.namespace)
        except errors.NotFound:
            return False
        return (fresh.metadata.uid == d.metadata.uid  # type: ignore[attr-defined]
                and not fresh.metadata.HasField("deletion_timestamp"))  # type: ignore[attr-defined]

    def _pods_by_replica_set(self, d: Deployment,
                             rss: Iterable[ReplicaSet]) -> dict[str, list[core_pb2.Pod]]:
        """The deployment's pods (any state), by the uid of their ReplicaSet."""
        selector = selector_of(d)
        uids = {rs.metadata.uid for rs in rss}
        found: dict[str, list[core_pb2.Pod]] = {uid: [] for uid in uids}
        for pod in self.pods.store.by_index("namespace", d.metadata.namespace):
            ref = controller_ref(pod)
            if ref is not None and ref.uid in uids and selector.matches(pod.metadata.labels):  # type: ignore[attr-defined]
                found[ref.uid].append(pod)  # type: ignore[arg-type]
        return found

    # ---------------------------------------------------- the new ReplicaSet

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
        rs = _copy(existing)
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
            status = _copy(d.status)
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
                status = _copy(d.status)
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
            status = _copy(d.status)
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
        status = _copy(d.status)
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
        updated = _copy(d)
        updated.metadata.annotations[REVISION_ANNOTATION] = revision
        result: Deployment = await self.client.deployments.update(updated)  # type: ignore[assignment]
        self.written_deployments.remember(result)
        return result

    # --------------------------------------------------------------- rollouts

    async def _rollout_rolling(self, d: Deployment, rss: list[ReplicaSet],
                               new_rs: ReplicaSet | None, old_rss: list[ReplicaSet]) -> None:
        if new_rs is None:
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=True)
            assert new_rs is not None  # created, or the create raised
        size = plan_new_replica_set_scale(d, [*old_rss, new_rs], new_rs)
        if size is not None:
            new_rs = await self._scale(d, new_rs, size)
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        sizes = plan_old_replica_sets_scale_down(d, [*old_rss, new_rs], active(old_rss), new_rs)
        if sizes:
            old_rss = await self._apply_sizes(d, old_rss, sizes)
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if deployment_complete(d, d.status):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)

    async def _rollout_recreate(self, d: Deployment, rss: list[ReplicaSet],
                                new_rs: ReplicaSet | None, old_rss: list[ReplicaSet]) -> None:
        sizes = plan_recreate_scale_down(old_rss)
        if sizes:
            old_rss = await self._apply_sizes(d, old_rss, sizes)
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if old_pods_running(new_rs, old_rss, self._pods_by_replica_set(d, rss)):
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if new_rs is None:
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=True)
            assert new_rs is not None
        if spec_replicas(new_rs) != desired_replicas(d):
            new_rs = await self._scale(d, new_rs, desired_replicas(d))
        if deployment_complete(d, d.status):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)

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

    # ---------------------------------------------------------------- writes

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
        updated = _copy(rs)
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

    async def _sync_rollout_status(self, d: Deployment, all_rss: list[ReplicaSet | None],
                                   new_rs: ReplicaSet | None) -> None:
        now = self.now()
        status = calculate_rollout_status(d, all_rss, new_rs, now)
        if status != d.status:
            await self._write_status(d, status)
        elif (after := requeue_after(d, status, now)) is not None:
            # Nothing moved: look again when the progress deadline is due.
            self.enqueue_after(key_of(d), after)

    async def _write_status(self, d: Deployment,
                            status: apps_pb2.DeploymentStatus) -> Deployment:
        updated = _copy(d)
        updated.status.CopyFrom(status)
        try:
            result: Deployment = await self.client.deployments.update_status(updated)  # type: ignore[assignment]
        except errors.NotFound:
            return d
        self.written_deployments.remember(result)
        return result


__all__ = [
    "ANNOTATIONS_NOT_COPIED", "AVAILABLE", "DESIRED_REPLICAS_ANNOTATION", "MAX_REPLICAS_ANNOTATION",
    "NEW_RS_AVAILABLE", "NEW_RS_CREATED", "PAUSED", "POD_TEMPLATE_HASH_LABEL", "PROGRESSING",
    "REPLICA_FAILURE", "REPLICA_SET_UPDATED", "RESUMED", "REVISION_ANNOTATION",
    "REVISION_HISTORY_ANNOTATION", "TIMED_OUT", "DeploymentController", "WrittenObjects",
    "active", "available_count", "calculate_rollout_status", "calculate_status",
    "compute_hash", "deployment_complete", "deployment_progressing", "deployment_timed_out",
    "equal_ignoring_hash", "find_active_or_latest", "find_new_replica_set", "is_saturated",
    "is_scaling_event", "max_revision", "max_surge", "max_unavailable", "new_replica_set",
    "new_rs_new_replicas", "old_pods_running", "paused_condition_status", "plan_cleanup",
    "plan_new_replica_set_scale", "plan_old_replica_sets_scale_down",
    "plan_recreate_scale_down", "plan_scale", "pod_count", "requeue_after",
    "resolve_fenceposts", "revision_of", "scaled_value", "set_condition",
    "set_new_replica_set_annotations", "template_without_hash"]
