"""The replication controller's pure decisions: deletion ranking, slow-start batches,
expectations, status calculation and claiming (adopt / keep / release)."""

from __future__ import annotations

from typing import Any

from services.controller_manager.replication import (
    Expectations,
    ReplicaStatus,
    calculate_status,
    controller_ref,
    desired_replicas,
    is_active,
    owner_reference,
    plan_claims,
    pod_from_template,
    rank_for_deletion,
    selector_of,
    slow_start_batches,
)
from skiff.api.kinds import lookup
from skiff.api.labels import selector_from_label_selector, selector_from_map
from skiff.api.manifest import from_dict
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.client.clock import FakeClock

OWNER_UID = "owner-uid"


def pod(name: str, *, labels: dict[str, str] | None = None, node: str = "",
        phase: str = "Pending", ready: bool | None = None, ready_at: int = 0,
        created: int = 100, owner: str | None = None, deleting: bool = False,
        restarts: int = 0) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, "default"
    p.metadata.labels.update(labels if labels is not None else {"app": "web"})
    p.metadata.creation_timestamp.FromSeconds(created)
    if owner is not None:
        p.metadata.owner_references.append(meta_pb2.OwnerReference(
            kind="ReplicaSet", name="web", uid=owner, controller=True))
    if deleting:
        p.metadata.deletion_timestamp.FromSeconds(1)
    p.spec.node_name = node
    p.status.phase = phase
    if ready is not None:
        condition = core_pb2.PodCondition(type="Ready", status="True" if ready else "False")
        condition.last_transition_time.FromSeconds(ready_at)
        p.status.conditions.append(condition)
    if restarts:
        p.status.container_statuses.add(name="app", restart_count=restarts)
    return p


def replica_set(replicas: int | None = 3, *, min_ready: int = 0, generation: int = 2) -> Any:
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "default", "uid": OWNER_UID,
                     "generation": generation},
        "spec": {"minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                              "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}
    if replicas is not None:
        manifest["spec"]["replicas"] = replicas
    return from_dict(manifest)


def names(pods: list[core_pb2.Pod]) -> list[str]:
    return [p.metadata.name for p in pods]


# ---------------------------------------------------------------- ranking


def test_unassigned_before_assigned() -> None:
    ranked = rank_for_deletion([pod("bound", node="n1"), pod("unbound")])
    assert names(ranked) == ["unbound", "bound"]


def test_pending_before_unknown_before_running() -> None:
    pods = [pod("run", node="n", phase="Running"), pod("unk", node="n", phase="Unknown"),
            pod("pend", node="n", phase="Pending")]
    assert names(rank_for_deletion(pods)) == ["pend", "unk", "run"]


def test_not_ready_before_ready() -> None:
    pods = [pod("ready", node="n", phase="Running", ready=True),
            pod("notready", node="n", phase="Running", ready=False)]
    assert names(rank_for_deletion(pods)) == ["notready", "ready"]


def test_crowded_node_first() -> None:
    pods = [pod("alone", node="n1", phase="Running"),
            pod("crowd1", node="n2", phase="Running", created=50),
            pod("crowd2", node="n2", phase="Running", created=60)]
    assert names(rank_for_deletion(pods))[2] == "alone"


def test_recently_ready_then_restarts_then_newer_first() -> None:
    early = pod("early", node="a", phase="Running", ready=True, ready_at=10)
    late = pod("late", node="b", phase="Running", ready=True, ready_at=20)
    assert names(rank_for_deletion([early, late])) == ["late", "early"]
    calm = pod("calm", node="a", phase="Running")
    crashy = pod("crashy", node="b", phase="Running", restarts=3)
    assert names(rank_for_deletion([calm, crashy])) == ["crashy", "calm"]
    old, new = pod("old", created=10), pod("new", created=20)
    assert names(rank_for_deletion([old, new])) == ["new", "old"]


# ------------------------------------------------------------ slow start


def test_slow_start_batches() -> None:
    assert slow_start_batches(0) == []
    assert slow_start_batches(1) == [1]
    assert slow_start_batches(5) == [1, 2, 2]
    assert slow_start_batches(7) == [1, 2, 4]
    assert slow_start_batches(500) == [1, 2, 4, 8, 16, 32, 64, 128, 245]
    assert sum(slow_start_batches(123)) == 123


# ---------------------------------------------------------- expectations


def test_expectations_wait_for_observations() -> None:
    clock = FakeClock()
    exp = Expectations(now=clock.now)
    assert exp.satisfied("ns/a")
    exp.expect("ns/a", adds=2)
    assert not exp.satisfied("ns/a")
    exp.creation_observed("ns/a")
    assert exp.pending("ns/a") == (1, 0)
    exp.creation_observed("ns/a")
    assert exp.satisfied("ns/a")
    exp.expect("ns/a", deleting=["uid-1"])
    assert not exp.satisfied("ns/a")
    exp.deletion_observed("ns/a", "uid-1")
    exp.deletion_observed("ns/a", "uid-1")  # extra observations never go negative
    assert exp.pending("ns/a") == (0, 0) and exp.satisfied("ns/a")


def test_expectations_track_deletions_by_pod() -> None:
    # A pod is seen going twice (deletionTimestamp set, then removed), and pods deleted
    # by others go too: counted, those stood in for deletions not yet seen, and a sync
    # on a cache still showing the victims alive deleted more pods.
    exp = Expectations(now=FakeClock().now)
    exp.expect("ns/a", deleting=["old-1"])
    exp.deletion_observed("ns/a", "old-1")  # graceful deletion began
    exp.expect("ns/a", deleting=["v-1", "v-2", "v-3"])  # a later scale-down
    exp.deletion_observed("ns/a", "old-1")  # the first pod finally went
    exp.deletion_observed("ns/a", "stranger")  # someone else's deletion
    exp.deletion_observed("ns/a", "v-1")
    assert exp.pending("ns/a") == (0, 2) and not exp.satisfied("ns/a")
    exp.deletion_observed("ns/a", "v-2")
    exp.deletion_observed("ns/a", "v-3")
    assert exp.satisfied("ns/a")


def test_expectations_expire_and_forget() -> None:
    clock = FakeClock()
    exp = Expectations(ttl=300.0, now=clock.now)
    exp.expect("ns/a", adds=3)
    clock.advance(299)
    assert not exp.satisfied("ns/a")
    clock.advance(2)
    assert exp.satisfied("ns/a")
    exp.expect("ns/b", adds=1)
    exp.forget("ns/b")
    assert exp.satisfied("ns/b")
    exp.creation_observed("ns/unknown")  # harmless


# ---------------------------------------------------------------- status


def test_status_counts_ready_available_and_labels() -> None:
    rs = replica_set(min_ready=10, generation=7)
    pods = [pod("a", labels={"app": "web", "tier": "fe"}, ready=True, ready_at=100),
            pod("b", labels={"app": "web", "tier": "fe"}, ready=True, ready_at=195),
            pod("c", labels={"app": "web"}, ready=False)]
    assert calculate_status(rs, pods, now=200.0) == ReplicaStatus(
        replicas=3, fully_labeled_replicas=2, ready_replicas=2, available_replicas=1,
        observed_generation=7)
    assert calculate_status(replica_set(min_ready=0), pods, now=200.0).available_replicas == 2
    assert ReplicaStatus.of(rs) == ReplicaStatus(0, 0, 0, 0, 0)


def test_inactive_pods_and_defaults() -> None:
    assert is_active(pod("a"))
    assert not is_active(pod("b", deleting=True))
    assert not is_active(pod("c", phase="Succeeded"))
    assert not is_active(pod("d", phase="Failed"))
    assert desired_replicas(replica_set(None)) == 1
    assert desired_replicas(replica_set(0)) == 0


# ---------------------------------------------------------------- claims


def test_claims_keep_adopt_release_and_ignore() -> None:
    selector = selector_from_map({"app": "web"})
    mine = pod("mine", owner=OWNER_UID)
    strayed = pod("strayed", labels={"app": "other"}, owner=OWNER_UID)
    orphan = pod("orphan")
    orphan_other = pod("orphan-other", labels={"app": "other"})
    theirs = pod("theirs", owner="someone-else")
    dying_orphan = pod("dying", deleting=True)
    plan = plan_claims(OWNER_UID, selector,
                       [mine, strayed, orphan, orphan_other, theirs, dying_orphan],
                       owner_deleting=False)
    assert names(list(plan.owned)) == ["mine"]
    assert names(list(plan.adopt)) == ["orphan"]
    assert names(list(plan.release)) == ["strayed"]


def test_deleting_owner_neither_adopts_nor_releases() -> None:
    selector = selector_from_map({"app": "web"})
    plan = plan_claims(OWNER_UID, selector,
                       [pod("mine", owner=OWNER_UID), pod("orphan"),
                        pod("strayed", labels={}, owner=OWNER_UID)], owner_deleting=True)
    assert names(list(plan.owned)) == ["mine"]
    assert plan.adopt == () and plan.release == ()


def test_selectors_of_both_kinds() -> None:
    rs = replica_set()
    assert selector_of(rs).matches({"app": "web"})
    exprs = meta_pb2.LabelSelector(match_expressions=[meta_pb2.LabelSelectorRequirement(
        key="tier", operator="In", values=["a", "b"])])
    assert selector_from_label_selector(exprs).matches({"tier": "b"})
    no_selector = apps_pb2.ReplicaSet()
    assert not selector_of(no_selector).matches({"app": "web"})
    rc = core_pb2.ReplicationController()
    rc.spec.template.metadata.labels["app"] = "web"
    assert selector_of(rc).matches({"app": "web"})  # defaults to the template's labels
    assert not selector_of(rc).matches({"app": "db"})


def test_pod_from_template_is_owned_and_named() -> None:
    rs = replica_set()
    new = pod_from_template(rs, lookup("ReplicaSet"))
    assert new.metadata.generate_name == "web-"
    assert dict(new.metadata.labels) == {"app": "web", "tier": "fe"}
    ref = controller_ref(new)
    assert ref == owner_reference(rs, lookup("ReplicaSet"))
    assert (ref.api_version, ref.kind, ref.name, ref.uid) == ("apps/v1", "ReplicaSet", "web",
                                                              OWNER_UID)
    assert ref.controller and ref.block_owner_deletion
    assert new.spec.containers[0].image == "busybox"
