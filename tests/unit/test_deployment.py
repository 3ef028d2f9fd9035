"""The deployment controller's pure decisions: surge and unavailability amounts, the
pod-template hash, new/old ReplicaSets and their annotations, rolling and Recreate
steps (with a simulated cluster checking the rollout bounds at every step), proportional
scaling, history cleanup, status and conditions, and the own-writes overlay."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.apiserver.strategies.deployment import default_deployment_spec
from services.controller_manager.deployment.progress import (
    calculate_rollout_status,
    requeue_after,
)
from services.controller_manager.deployment.recreate import (
    old_pods_running,
)
from services.controller_manager.deployment.rolling import (
    plan_new_replica_set_scale,
    plan_old_replica_sets_scale_down,
)
from services.controller_manager.deployment.sync import (
    calculate_status,
    is_scaling_event,
    paused_condition_status,
    plan_cleanup,
    plan_scale,
)
from services.controller_manager.deployment.util import (
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    WrittenObjects,
    compute_hash,
    deployment_complete,
    equal_ignoring_hash,
    find_active_or_latest,
    find_new_replica_set,
    get_condition,
    max_revision,
    max_surge,
    max_unavailable,
    new_condition,
    new_replica_set,
    new_rs_new_replicas,
    plan_recreate_scale_down,
    resolve_fenceposts,
    scaled_value,
    set_condition,
    set_new_replica_set_annotations,
)
from skiff.api.manifest import from_dict
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.client.clock import FakeClock

UID = "deploy-uid"
NOW = 1_700_000_000.0


def num(value: int | str) -> meta_pb2.IntOrString:
    if isinstance(value, int):
        return meta_pb2.IntOrString(type=meta_pb2.IntOrString.INT, int_val=value)
    return meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING, str_val=value)


def deployment(replicas: int = 3, *, surge: int | str | None = None,
               unavailable: int | str | None = None, recreate: bool = False,
               image: str = "busybox:2", generation: int = 1, limit: int | None = None,
               deadline: int | None = None, paused: bool = False,
               annotations: dict[str, str] | None = None) -> apps_pb2.Deployment:
    """A Deployment as the apiserver stores it (Kubernetes' defaults applied)."""
    strategy: dict[str, Any] = {"type": "Recreate" if recreate else "RollingUpdate"}
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": UID,
                     "generation": generation, "annotations": annotations or {}},
        "spec": {"replicas": replicas, "strategy": strategy, "paused": paused,
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}}
    if limit is not None:
        manifest["spec"]["revisionHistoryLimit"] = limit
    if deadline is not None:
        manifest["spec"]["progressDeadlineSeconds"] = deadline
    d = from_dict(manifest)
    if surge is not None:
        d.spec.strategy.rolling_update.max_surge.CopyFrom(num(surge))
    if unavailable is not None:
        d.spec.strategy.rolling_update.max_unavailable.CopyFrom(num(unavailable))
    default_deployment_spec(d.spec)
    return d


def replica_set(name: str, replicas: int, *, image: str = "busybox:1", available: int | None = None,
                status_replicas: int | None = None, ready: int | None = None,
                revision: int | None = None, created: int = 100, generation: int = 1,
                observed: int = 1, d: apps_pb2.Deployment | None = None,
                max_replicas: int | None = None, desired: int | None = None,
                deleting: bool = False) -> apps_pb2.ReplicaSet:
    """An owned ReplicaSet whose status shows ``available`` (default: all) pods."""
    owner = d or deployment(image=image)
    if d is None:
        owner.spec.template.spec.containers[0].image = image
    rs = new_replica_set(owner, compute_hash(owner.spec.template))
    rs.metadata.name = name
    rs.metadata.uid = f"uid-{name}"
    rs.metadata.generation = generation
    rs.metadata.creation_timestamp.FromSeconds(created)
    rs.spec.replicas = replicas
    rs.status.observed_generation = observed
    rs.status.replicas = replicas if status_replicas is None else status_replicas
    rs.status.available_replicas = rs.status.replicas if available is None else available
    rs.status.ready_replicas = rs.status.available_replicas if ready is None else ready
    if revision is not None:
        rs.metadata.annotations[REVISION_ANNOTATION] = str(revision)
    if max_replicas is not None:
        rs.metadata.annotations[MAX_REPLICAS_ANNOTATION] = str(max_replicas)
    if desired is not None:
        rs.metadata.annotations[DESIRED_REPLICAS_ANNOTATION] = str(desired)
    if deleting:
        rs.metadata.deletion_timestamp.FromSeconds(1)
    return rs


# ---------------------------------------------------------------- amounts


@pytest.mark.parametrize(("value", "total", "up", "down"), [
    (num(2), 10, 2, 2), (num("25%"), 10, 3, 2), (num("25%"), 4, 1, 1), (num("25%"), 1, 1, 0),
    (num("10%"), 30, 3, 3), (num("0%"), 7, 0, 0), (num("100%"), 5, 5, 5),
    (num("150%"), 4, 6, 6), (num("33%"), 3, 1, 0),
])
def test_scaled_value_rounds_surge_up_and_unavailable_down(value, total, up, down) -> None:
    assert scaled_value(value, total, round_up=True) == up
    assert scaled_value(value, total, round_up=False) == down


def test_fenceposts_are_never_both_zero() -> None:
    assert resolve_fenceposts(num("25%"), num("25%"), 10) == (3, 2)
    assert resolve_fenceposts(num(0), num("10%"), 5) == (0, 1)  # 10% of 5 rounds to 0
    assert resolve_fenceposts(None, None, 3) == (0, 1)
    assert resolve_fenceposts(num(1), num(0), 3) == (1, 0)


def test_defaults_are_25_percent_and_recreate_has_no_fenceposts() -> None:
    assert (max_surge(deployment(10)), max_unavailable(deployment(10))) == (3, 2)
    assert (max_surge(deployment(4)), max_unavailable(deployment(4))) == (1, 1)
    assert (max_surge(deployment(1)), max_unavailable(deployment(1))) == (1, 0)
    assert (max_surge(deployment(3, recreate=True)),
            max_unavailable(deployment(3, recreate=True))) == (0, 0)
    assert max_unavailable(deployment(0)) == 0
    assert max_unavailable(deployment(3, unavailable=10)) == 3  # at most the replicas


# --------------------------------------------------------- hash and templates


def test_hash_is_stable_and_follows_the_template_and_collisions() -> None:
    a, b = deployment(), deployment()
    h = compute_hash(a.spec.template)
    assert h == compute_hash(b.spec.template) == compute_hash(a.spec.template)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10
    assert compute_hash(deployment(image="busybox:3").spec.template) != h
    assert compute_hash(a.spec.template, 1) != h
    assert compute_hash(a.spec.template, 1) == compute_hash(b.spec.template, 1)
    assert compute_hash(a.spec.template, 1) != compute_hash(a.spec.template, 2)


def test_new_replica_set_carries_the_hash_and_an_owner() -> None:
    d = deployment(4)
    h = compute_hash(d.spec.template)
    rs = new_replica_set(d, h)
    assert rs.metadata.name == f"web-{h}"
    assert dict(rs.spec.selector.match_labels) == {"app": "web", POD_TEMPLATE_HASH_LABEL: h}
    assert dict(rs.spec.template.metadata.labels) == {"app": "web", POD_TEMPLATE_HASH_LABEL: h}
    assert dict(rs.metadata.labels) == dict(rs.spec.template.metadata.labels)
    ref = rs.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
        "Deployment", "web", UID, True, True)
    assert rs.spec.replicas == 0
    assert equal_ignoring_hash(rs.spec.template, d.spec.template)
    assert "pod-template-hash" not in d.spec.template.metadata.labels  # not changed


def test_find_new_replica_set_ignores_the_hash_and_takes_the_oldest() -> None:
    d = deployment(image="busybox:2")
    old = replica_set("web-old", 3, image="busybox:1")
    twin_new = replica_set("web-b", 0, image="busybox:2", created=200)
    twin_old = replica_set("web-a", 0, image="busybox:2", created=150)
    assert find_new_replica_set(d, [old]) is None
    assert find_new_replica_set(d, [old, twin_new, twin_old]).metadata.name == "web-a"


# ------------------------------------------------------------- annotations


def test_annotations_of_a_new_replica_set() -> None:
    d = deployment(10, annotations={"team": "a", REVISION_ANNOTATION: "7",
                                    "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    rs = new_replica_set(d, "abc")
    assert set_new_replica_set_annotations(d, rs, 3, exists=False)
    assert dict(rs.metadata.annotations) == {
        "team": "a", REVISION_ANNOTATION: "3", DESIRED_REPLICAS_ANNOTATION: "10",
        MAX_REPLICAS_ANNOTATION: "13"}
    assert not set_new_replica_set_annotations(d, rs, 3, exists=True)  # nothing new


def test_a_reused_replica_set_gets_the_next_revision_and_remembers_its_old_one() -> None:
    d = deployment()
    rs = replica_set("web-a", 0, revision=1)
    assert set_new_replica_set_annotations(d, rs, 3, exists=True)
    assert rs.metadata.annotations[REVISION_ANNOTATION] == "3"
    assert rs.metadata.annotations[REVISION_HISTORY_ANNOTATION] == "1"
    assert set_new_replica_set_annotations(d, rs, 5, exists=True)
    assert rs.metadata.annotations[REVISION_HISTORY_ANNOTATION] == "1,3"
    assert DESIRED_REPLICAS_ANNOTATION not in rs.metadata.annotations  # only on create
    assert max_revision([rs, replica_set("web-b", 0, revision=4), replica_set("c", 0)]) == 5


# ----------------------------------------------------------------- rolling


def test_new_replica_set_grows_within_max_surge() -> None:
    d = deployment(10, surge=3, unavailable=2)
    old = replica_set("old", 10)
    new = replica_set("new", 0, image="busybox:2")
    assert new_rs_new_replicas(d, [old, new], new) == 3
    assert plan_new_replica_set_scale(d, [old, new], new) == 3
    new.spec.replicas = 3
    assert plan_new_replica_set_scale(d, [old, new], new) is None  # 13 pods: full
    old.spec.replicas = 8  # scaled down, but its pods are not deleted yet
    assert plan_new_replica_set_scale(d, [old, new], new) is None
    old.status.replicas = 8
    assert plan_new_replica_set_scale(d, [old, new], new) == 5
    new.spec.replicas = 12
    assert plan_new_replica_set_scale(d, [old, new], new) == 10  # never above replicas
    assert new_rs_new_replicas(deployment(4, recreate=True), [old, new], new) == 4


def test_old_replica_sets_shrink_within_max_unavailable() -> None:
    d = deployment(10, surge=3, unavailable=2)
    old = replica_set("old", 10)
    new = replica_set("new", 3, available=0, image="busybox:2")
    # 13 pods, 3 new ones not available: only the 2 allowed unavailable may go.
    assert plan_old_replica_sets_scale_down(d, [old, new], [old], new) == {"old": 8}
    new.status.available_replicas = 3
    assert plan_old_replica_sets_scale_down(d, [old, new], [old], new) == {"old": 5}
    # Stale status (still 10 available while only 8 wanted) does not count extra pods.
    old.spec.replicas = 8
    new.status.available_replicas = 1
    assert plan_old_replica_sets_scale_down(d, [old, new], [old], new) == {"old": 7}


def test_unhealthy_old_replicas_go_first_and_oldest_first() -> None:
    d = deployment(6, surge=0, unavailable=1)
    older = replica_set("older", 3, available=1, created=10)
    old = replica_set("old", 3, available=3, created=20)
    new = replica_set("new", 0, image="busybox:2", created=30)
    # 6 pods, minAvailable 5: 1 may go; the unhealthy older ones are cheapest.
    assert plan_old_replica_sets_scale_down(d, [older, old, new], [older, old], new) == {
        "older": 2}
    older.status.available_replicas = 3
    assert plan_old_replica_sets_scale_down(d, [older, old, new], [older, old], new) == {
        "older": 2}
    assert plan_old_replica_sets_scale_down(d, [new], [], new) == {}


@dataclass
class SimRS:
    """A ReplicaSet in a simulated cluster: its pods (True = ready); its status is what
    its controller last wrote, so it lags behind the pods."""

    rs: apps_pb2.ReplicaSet
    pods: list[bool] = field(default_factory=list)

    def sync(self) -> None:
        """The ReplicaSet controller: status from the pods it saw, then create or delete
        (not-ready pods first)."""
        self.rs.status.replicas = len(self.pods)
        self.rs.status.available_replicas = self.rs.status.ready_replicas = sum(self.pods)
        want = self.rs.spec.replicas
        while len(self.pods) < want:
            self.pods.append(False)
        while len(self.pods) > want:
            self.pods.remove(False if False in self.pods else True)


def _deployment_step(d: apps_pb2.Deployment, sims: list[SimRS]) -> None:
    """One rolling-update sync, as the controller makes it."""
    rss = [s.rs for s in sims]
    new = find_new_replica_set(d, rss)
    olds = [rs for rs in rss if rs is not new]
    if new is None:
        new = new_replica_set(d, compute_hash(d.spec.template))
        new.metadata.creation_timestamp.FromSeconds(200)
        new.spec.replicas = new_rs_new_replicas(d, [*olds, new], new)
        sims.append(SimRS(new))
    elif (size := plan_new_replica_set_scale(d, rss, new)) is not None:
        new.spec.replicas = size
    else:
        active_olds = [rs for rs in olds if rs.spec.replicas]
        for name, size in plan_old_replica_sets_scale_down(d, rss, active_olds, new).items():
            next(rs for rs in olds if rs.metadata.name == name).spec.replicas = size


@pytest.mark.parametrize(("replicas", "surge", "unavailable"), [
    (10, "25%", "25%"), (4, "25%", "25%"), (3, 1, 0), (3, 0, 1), (5, "0%", "10%"),
    (4, 2, 2), (1, 0, 1), (1, 1, 0), (10, "50%", 0), (6, "100%", "100%"), (7, 3, "30%"),
])
def test_a_simulated_rolling_update_stays_within_its_bounds(replicas, surge, unavailable) -> None:
    """Deployment syncs, ReplicaSet syncs and pods turning ready, interleaved at random
    (seeded): after every step the pods stay within replicas + maxSurge and the ready
    ones at or above replicas - maxUnavailable; the rollout finishes."""
    d = deployment(replicas, surge=surge, unavailable=unavailable)
    high, low = replicas + max_surge(d), replicas - max_unavailable(d)
    for seed in range(40):
        rng = random.Random(seed)
        old = replica_set("old", replicas, image="busybox:1")
        sims = [SimRS(old, [True] * replicas)]
        for _ in range(5000):
            choice = rng.random()
            if choice < 0.3:
                _deployment_step(d, sims)
            elif choice < 0.7:
                rng.choice(sims).sync()
            else:
                sim = rng.choice(sims)
                if False in sim.pods:
                    sim.pods[sim.pods.index(False)] = True
            total = sum(len(s.pods) for s in sims)
            ready = sum(sum(s.pods) for s in sims)
            assert total <= high, f"seed {seed}: {total} pods, more than {high}"
            assert ready >= low, f"seed {seed}: {ready} ready, fewer than {low}"
            if len(sims) == 2 and sims[1].pods == [True] * replicas and not sims[0].pods:
                break
        else:
            pytest.fail(f"seed {seed}: the rollout did not finish")


# ------------------------------------------------------------------ recreate


def test_recreate_stops_old_replica_sets_and_waits_for_their_pods() -> None:
    old = replica_set("old", 3)
    older = replica_set("older", 0)
    new = replica_set("new", 0, image="busybox:2")
    assert plan_recreate_scale_down([old, older]) == {"old": 0}
    old.spec.replicas = 0
    assert old_pods_running(new, [old], {}) is True  # status still counts 3
    old.status.replicas = 0
    terminating = core_pb2.Pod(status=core_pb2.PodStatus(phase="Running"))
    done = core_pb2.Pod(status=core_pb2.PodStatus(phase="Succeeded"))
    assert old_pods_running(new, [old], {"uid-old": [terminating]}) is True
    assert old_pods_running(new, [old], {"uid-old": [done], "uid-new": [terminating]}) is False


# ------------------------------------------------------------------ scaling


def test_proportional_scaling_spreads_by_size() -> None:
    # Kubernetes' documented example: 10 replicas, maxSurge 3, a rollout stuck at old 8
    # / new 5, then scaled to 15: 3 more for the old ReplicaSet, 2 for the new one.
    d = deployment(15, surge=3, unavailable=2)
    old = replica_set("old", 8, created=10, max_replicas=13, desired=10)
    new = replica_set("new", 5, available=0, image="busybox:2", created=20, max_replicas=13,
                      desired=10)
    assert is_scaling_event(d, new, [old])
    assert plan_scale(d, new, [old]) == {"old": 11, "new": 7}
    down = deployment(5, surge=3, unavailable=2)
    sizes = plan_scale(down, new, [old])
    assert sum(sizes.values()) == 8 and sizes["old"] >= sizes["new"]
    assert plan_scale(deployment(0), new, [old]) == {"old": 0, "new": 0}


def test_scaling_a_single_or_saturated_replica_set() -> None:
    d = deployment(6)
    only = replica_set("only", 3, desired=3)
    empty = replica_set("empty", 0, created=5)
    assert find_active_or_latest(None, [empty, only]) is only
    assert plan_scale(d, None, [empty, only]) == {"only": 6}
    assert find_active_or_latest(None, [empty]) is empty
    new = replica_set("new", 6, image="busybox:2", desired=6)
    old = replica_set("old", 2, desired=6)
    assert plan_scale(d, new, [old]) == {"old": 0}
    assert not is_scaling_event(d, new, [old])


# ------------------------------------------------------------------ cleanup


def test_cleanup_removes_the_oldest_revisions_beyond_the_limit() -> None:
    d = deployment(limit=2)
    olds = [replica_set(f"r{i}", 0, revision=i, created=i) for i in range(1, 6)]
    assert [rs.metadata.name for rs in plan_cleanup(d, olds)] == ["r1", "r2", "r3"]
    olds[0].spec.replicas = 1  # still wanted: kept (and counts toward the limit)
    olds[1].status.replicas = 1  # still has pods: kept
    olds[2].metadata.generation = 2  # its controller has not seen the scale-down yet
    assert plan_cleanup(d, olds) == []
    assert plan_cleanup(deployment(limit=10), olds) == []
    going = [replica_set("gone", 0, revision=1, deleting=True), *olds[3:]]
    assert plan_cleanup(d, going) == []  # a deleting one does not count
    assert [rs.metadata.name for rs in plan_cleanup(deployment(limit=0), olds[3:])] == [
        "r4", "r5"]


# ------------------------------------------------------------- status


def test_status_counts_and_available_condition() -> None:
    d = deployment(4, surge=1, unavailable=1, generation=3)
    old = replica_set("old", 1, available=1, ready=1, status_replicas=2)
    new = replica_set("new", 4, available=2, ready=3, status_replicas=3, image="busybox:2")
    status = calculate_status(d, [old, new, None], new, NOW)
    assert (status.observed_generation, status.replicas, status.updated_replicas,
            status.ready_replicas, status.available_replicas, status.unavailable_replicas) == (
        3, 5, 3, 4, 3, 2)
    available = get_condition(status, "Available")
    assert (available.status, available.reason) == ("True", "MinimumReplicasAvailable")
    new.status.available_replicas = 1
    available = get_condition(calculate_status(d, [old, new], new, NOW), "Available")
    assert (available.status, available.reason) == ("False", "MinimumReplicasUnavailable")
    # Recreate tolerates no unavailability.
    recreate = deployment(2, recreate=True)
    one = replica_set("one", 2, available=1)
    assert get_condition(calculate_status(recreate, [one], one, NOW), "Available").status == "False"


def test_progressing_condition_through_a_rollout() -> None:
    d = deployment(2, deadline=60)
    old = replica_set("old", 2)
    new = replica_set("new", 1, available=0, image="busybox:2")
    moving = calculate_rollout_status(d, [old, new], new, NOW)
    progressing = get_condition(moving, "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "ReplicaSetUpdated")
    assert progressing.message == 'ReplicaSet "new" is progressing.'
    d.status.CopyFrom(moving)
    # No progress: same status; after the deadline: timed out.
    assert calculate_rollout_status(d, [old, new], new, NOW + 30) == moving
    assert requeue_after(d, moving, NOW + 30) == pytest.approx(31.0)
    stuck = calculate_rollout_status(d, [old, new], new, NOW + 61)
    progressing = get_condition(stuck, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert progressing.message == 'ReplicaSet "new" has timed out progressing.'
    d.status.CopyFrom(stuck)
    assert requeue_after(d, stuck, NOW + 62) is None
    # It completes after all: progress reported again, then NewReplicaSetAvailable.
    old.spec.replicas = old.status.replicas = old.status.available_replicas = 0
    new.spec.replicas = new.status.replicas = new.status.available_replicas = 2
    done = calculate_rollout_status(d, [old, new], new, NOW + 70)
    assert deployment_complete(d, done)
    progressing = get_condition(done, "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable")
    d.status.CopyFrom(done)
    assert calculate_rollout_status(d, [old, new], new, NOW + 80) == done
    assert requeue_after(d, done, NOW + 80) is None


def test_no_progressing_condition_without_a_deadline() -> None:
    d = deployment(2, deadline=2**31 - 1)
    rs = replica_set("rs", 2, image="busybox:2")
    d.status.conditions.append(new_condition("Progressing", "True", "X", "", NOW))
    status = calculate_rollout_status(d, [rs], rs, NOW)
    assert get_condition(status, "Progressing") is None
    assert get_condition(status, "Available").status == "True"


def test_replica_failure_is_copied_from_the_replica_sets() -> None:
    d = deployment(2)
    rs = replica_set("rs", 2, available=0, image="busybox:2")
    rs.status.conditions.add(type="ReplicaFailure", status="True", reason="FailedCreate",
                             message="quota")
    failure = get_condition(calculate_rollout_status(d, [rs], rs, NOW), "ReplicaFailure")
    assert (failure.status, failure.reason, failure.message) == ("True", "FailedCreate", "quota")
    del rs.status.conditions[:]
    d.status.conditions.append(failure)
    assert get_condition(calculate_rollout_status(d, [rs], rs, NOW), "ReplicaFailure") is None


def test_set_condition_keeps_the_transition_time_when_only_the_reason_changes() -> None:
    status = apps_pb2.DeploymentStatus()
    set_condition(status, new_condition("Progressing", "True", "A", "", NOW))
    set_condition(status, new_condition("Progressing", "True", "A", "other", NOW + 5))
    assert status.conditions[0].last_update_time.seconds == int(NOW)  # unchanged
    set_condition(status, new_condition("Progressing", "True", "B", "", NOW + 10))
    assert len(status.conditions) == 1
    assert status.conditions[0].last_transition_time.seconds == int(NOW)
    assert status.conditions[0].last_update_time.seconds == int(NOW + 10)
    set_condition(status, new_condition("Progressing", "False", "C", "", NOW + 20))
    assert status.conditions[0].last_transition_time.seconds == int(NOW + 20)


def test_paused_and_resumed_conditions() -> None:
    d = deployment(paused=True)
    status = paused_condition_status(d, NOW)
    progressing = get_condition(status, "Progressing")
    assert (progressing.status, progressing.reason) == ("Unknown", "DeploymentPaused")
    d.status.CopyFrom(status)
    assert paused_condition_status(d, NOW) is None
    d.spec.paused = False
    resumed = get_condition(paused_condition_status(d, NOW), "Progressing")
    assert (resumed.status, resumed.reason) == ("Unknown", "DeploymentResumed")
    timed_out = deployment(paused=True)
    timed_out.status.conditions.append(
        new_condition("Progressing", "False", "ProgressDeadlineExceeded", "", NOW))
    assert paused_condition_status(timed_out, NOW) is None


# ------------------------------------------------------------- own writes


def test_written_objects_until_the_cache_catches_up() -> None:
    clock = FakeClock()
    written = WrittenObjects(ttl=10.0, now=clock.now)
    cached = replica_set("a", 1)
    cached.metadata.resource_version = "5"
    newer = replica_set("a", 2)
    newer.metadata.resource_version = "7"
    written.remember(newer)
    assert written.fresher(cached) is newer
    caught_up = replica_set("a", 2)
    caught_up.metadata.resource_version = "7"
    assert written.fresher(caught_up) is caught_up and len(written) == 0
    replaced = replica_set("a", 1)
    replaced.metadata.uid, replaced.metadata.resource_version = "other", "3"
    written.remember(newer)
    assert written.fresher(replaced) is replaced  # another object of that name

    created = replica_set("b", 1)
    created.metadata.resource_version = "9"
    written.remember(created)
    assert written.unseen("default", {"default/a"}) == [created]
    assert written.unseen("default", {"default/b"}) == []
    assert written.unseen("other", set()) == []
    clock.advance(11.0)
    assert written.unseen("default", set()) == [] and len(written) == 0
