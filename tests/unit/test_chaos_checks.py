"""The cluster chaos run's pure checks (skiff.chaos): writes against what a store or the
API holds, replicas agreeing, a Deployment converged, Docker's containers against pods,
and the report's arithmetic. No cluster, no sockets."""

from __future__ import annotations

from skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2
from skiff.chaos.checks import (
    ReplicaState,
    RunningContainer,
    check_containers,
    check_deployment,
    check_replicas_agree,
    check_writes,
    expectations,
    leases_in_keyspace,
    make_report,
    percentile,
    recovery_seconds,
)
from skiff.chaos.config import DEPLOYMENT
from skiff.chaos.history import FailedCall, History, Kill, Outcome, Write

A, M, R, F = Outcome.ACKNOWLEDGED, Outcome.AMBIGUOUS, Outcome.REJECTED, Outcome.FAILED


def w(verb: str, value: str, outcome: Outcome, revision: int = 0, *, name: str = "o",
      started: float = 0.0, finished: float = 0.0) -> Write:
    return Write(name, verb, value if verb != "delete" else "", outcome,
                 revision if outcome is A and verb != "delete" else 0, started, finished)


# ------------------------------------------------------------------ writes


def test_last_acknowledged_state_must_hold_exactly():
    writes = [w("create", "v1", A, 10), w("update", "v2", A, 12)]
    assert check_writes(writes, {"o": ("v2", 12)}, where="x") == []
    assert check_writes(writes, {"o": ("v1", 10)}, where="x")        # lost update
    assert check_writes(writes, {"o": ("v2", 13)}, where="x")        # rewritten
    assert check_writes(writes, {}, where="x")                       # lost object


def test_acknowledged_delete_must_leave_nothing():
    writes = [w("create", "v1", A, 10), w("delete", "", A)]
    assert check_writes(writes, {}, where="x") == []
    assert check_writes(writes, {"o": ("v1", 10)}, where="x")


def test_ambiguous_writes_after_the_last_acknowledged_may_or_may_not_land():
    writes = [w("create", "v1", A, 10), w("update", "v2", M), w("delete", "", M)]
    for observed in ({"o": ("v1", 10)}, {"o": ("v2", 99)}, {}):
        assert check_writes(writes, observed, where="x") == [], observed


def test_an_ambiguous_write_before_an_acknowledged_one_cannot_win():
    writes = [w("create", "v1", A, 10), w("update", "v2", M), w("update", "v3", A, 14)]
    assert check_writes(writes, {"o": ("v3", 14)}, where="x") == []
    assert check_writes(writes, {"o": ("v2", 16)}, where="x")


def test_refused_and_unsent_writes_must_not_land():
    writes = [w("create", "v1", A, 10), w("update", "v2", R), w("update", "v3", F)]
    assert check_writes(writes, {"o": ("v1", 10)}, where="x") == []
    assert "refused" in check_writes(writes, {"o": ("v2", 11)}, where="x")[0]
    assert check_writes(writes, {"o": ("v3", 11)}, where="x")


def test_never_acknowledged_object_may_be_absent_but_not_invented():
    writes = [w("create", "v1", M)]
    assert check_writes(writes, {}, where="x") == []
    assert check_writes(writes, {"o": ("v1", 5)}, where="x") == []
    assert check_writes(writes, {"o": ("zz", 5)}, where="x")
    assert "nobody wrote" in check_writes(writes, {"stranger": ("v", 1)}, where="x")[0]


def test_expectations_follow_each_object_apart():
    writes = [w("create", "a1", A, 3, name="a"), w("create", "b1", M, name="b")]
    found = expectations(writes)
    assert found["a"].acknowledged == ("a1", 3) and not found["a"].possible
    assert found["b"].acknowledged is None and found["b"].possible == {"b1"}


def test_leases_are_read_from_a_keyspace_by_namespace():
    value = coordination_pb2.Lease(
        metadata=meta_pb2.ObjectMeta(name="o", namespace="ns"),
        spec=coordination_pb2.LeaseSpec(holder_identity="v7")).SerializeToString()
    kvs = {b"/registry/leases/ns/o": (value, 42), b"/registry/leases/other/p": (value, 43),
           b"/registry/pods/ns/o": (b"", 44)}
    assert leases_in_keyspace(kvs, "ns") == {"o": ("v7", 42)}


def test_replicas_must_hash_and_read_alike():
    same = {b"k": (b"v", 1)}
    assert check_replicas_agree([ReplicaState("a", 1, 0, same),
                                 ReplicaState("b", 1, 0, dict(same))]) == []
    problems = check_replicas_agree([ReplicaState("a", 1, 0, same),
                                     ReplicaState("b", 2, 0, {b"k": (b"w", 1)})])
    assert len(problems) == 2 and "HashKV" in problems[0] and "1 keys" in problems[1]


# ------------------------------------------------------------------ convergence


def _deployment(replicas: int, *, ready: int | None = None) -> apps_pb2.Deployment:
    ready = replicas if ready is None else ready
    d = apps_pb2.Deployment(metadata=meta_pb2.ObjectMeta(name=DEPLOYMENT, namespace="ns",
                                                         uid="d", generation=3),
                            spec=apps_pb2.DeploymentSpec(replicas=replicas))
    d.status.observed_generation = 3
    d.status.replicas = d.status.updated_replicas = replicas
    d.status.ready_replicas = d.status.available_replicas = ready
    return d


def _rs(name: str, replicas: int) -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet(metadata=meta_pb2.ObjectMeta(name=name, namespace="ns", uid=name),
                             spec=apps_pb2.ReplicaSetSpec(replicas=replicas))
    rs.metadata.owner_references.add(uid="d", kind="Deployment", name=DEPLOYMENT)
    return rs


def _pod(name: str, owner: str = "rs1", *, node: str = "n1", phase: str = "Running",
         terminating: bool = False, containers: tuple[str, ...] = ("sleep",)) -> core_pb2.Pod:
    p = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="ns", uid=f"u-{name}",
                                                  labels={"app": DEPLOYMENT}))
    p.metadata.owner_references.add(uid=owner, kind="ReplicaSet", name=owner)
    p.spec.node_name = node
    for c in containers:
        p.spec.containers.add(name=c, image="skiff/busybox:latest")
    p.status.phase = phase
    p.status.conditions.add(type="Ready", status="True" if phase == "Running" else "False")
    if terminating:
        p.metadata.deletion_timestamp.seconds = 1
    return p


def test_a_converged_deployment_has_no_problems():
    assert check_deployment(_deployment(2), [_rs("rs1", 2)], [_pod("a"), _pod("b")]) == []


def test_too_many_pods_a_terminating_pod_or_a_second_active_set_are_problems():
    assert check_deployment(_deployment(2), [_rs("rs1", 2)],
                            [_pod("a"), _pod("b"), _pod("c")])
    assert check_deployment(_deployment(2), [_rs("rs1", 2)],
                            [_pod("a"), _pod("b"), _pod("c", terminating=True)])
    assert check_deployment(_deployment(2), [_rs("rs1", 2), _rs("rs2", 1)],
                            [_pod("a"), _pod("b"), _pod("c", owner="rs2")])


def test_status_behind_spec_or_unready_pods_are_problems():
    assert check_deployment(_deployment(2, ready=1), [_rs("rs1", 2)], [_pod("a"), _pod("b")])
    assert check_deployment(_deployment(2), [_rs("rs1", 2)],
                            [_pod("a"), _pod("b", phase="Pending")])
    stale = _deployment(2)
    stale.status.observed_generation = 2
    assert check_deployment(stale, [_rs("rs1", 2)], [_pod("a"), _pod("b")])


def test_a_pod_of_the_template_owned_by_nobody_is_a_problem():
    orphan = _pod("o", owner="gone")
    assert "owned by none" in check_deployment(_deployment(1), [_rs("rs1", 1)],
                                               [_pod("a"), orphan])[0]


def _running(pod: core_pb2.Pod, container: str = "sleep", *, sandbox: bool = False,
             node: str = "n1") -> RunningContainer:
    return RunningContainer(node, pod.metadata.uid, pod.metadata.name,
                            "POD" if sandbox else container, sandbox)


def test_containers_matching_pods_one_to_one_pass():
    pods = [_pod("a"), _pod("b")]
    running = [c for p in pods for c in (_running(p, sandbox=True), _running(p))]
    assert check_containers(pods, running, ["n1"]) == []


def test_leaked_duplicated_and_missing_containers_are_found():
    a, b = _pod("a"), _pod("b")
    gone = _pod("gone")
    running = [_running(a, sandbox=True), _running(a), _running(a, sandbox=True),
               _running(b, sandbox=True),
               _running(gone, sandbox=True), _running(gone)]
    problems = check_containers([a, b], running, ["n1"])
    assert any("leaked" in p and "gone" in p for p in problems)
    assert any("pod a" in p and "2 running sandboxes" in p for p in problems)
    assert any("pod b" in p and "running 0 times" in p for p in problems)


def test_terminating_pods_may_still_have_containers_and_other_nodes_do_not_count():
    stopping = _pod("s", terminating=True)
    elsewhere = _pod("e", node="other")
    assert check_containers([stopping, elsewhere],
                            [_running(stopping, sandbox=True), _running(stopping)],
                            ["n1"]) == []


# ------------------------------------------------------------------ the report


def test_percentile_is_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 90) == 4.0


def test_recovery_is_the_first_acknowledged_write_started_after_the_kill():
    writes = [w("create", "v", A, 3, started=9.0, finished=10.5),
              w("update", "v2", A, 4, started=10.2, finished=11.0),
              w("update", "v3", A, 5, started=10.4, finished=10.9)]
    kill = Kill("s0", "store", "leader", at=10.0, wall=0.0, healthy=12.0)
    assert recovery_seconds(kill, writes) == 0.9
    leader = Kill("scheduler-0", "scheduler", "leader", at=10.0, wall=0.0, healthy=11.0,
                  led=14.5)
    assert recovery_seconds(leader, writes) == 4.5


def test_report_counts_operations_kills_and_failed_calls():
    history = History(began=0.0)
    history.writes += [w("create", "v1", A, 3, started=1.0, finished=1.2),
                       w("update", "v2", M, started=2.0, finished=5.0),
                       w("update", "v3", A, 6, started=5.5, finished=6.0)]
    history.kills.append(Kill("s1", "store", "leader", at=2.0, wall=0.0, healthy=3.0))
    history.failed_calls += [FailedCall(2.5, "writer-0", "x"), FailedCall(9.0, "scaler", "y")]
    report = make_report(history, began=0.0, problems=[])
    assert report["operations"]["update"] == {"acknowledged": 1, "rejected": 0, "failed": 0,
                                              "ambiguous": 1}
    assert report["kills"] == {"total": 1, "by_component": {"store": {"leader": 1}}}
    assert report["failed_calls"]["total"] == 2
    assert report["failed_calls"]["during_failovers"] == 1
    assert report["recovery_s"]["store"]["max"] == 4.0
    assert report["problems"] == []


def test_supervised_programs_come_from_a_skiff_up_config():
    from skiff.chaos.targets import Component, supervised_programs

    config = """[supervisord]
logfile=/d/supervisord.log

[program:store-0]
command=/py -m services.store --name store-0 --listen-client-urls http://127.0.0.1:2379 --x y
autorestart=true

[program:apiserver]
command=/py -m services.apiserver --store-endpoints a:1,b:2 --listen 127.0.0.1:6443 --z
[program:scheduler]
command=/py -m services.scheduler --server 127.0.0.1:6443
[program:controller-manager]
command=/py -m services.controller_manager --server 127.0.0.1:6443
[program:kubelet-node-1]
command=/py -m services.kubelet --node-name node-1
[program:proxy-node-1]
command=/py -m services.proxy --node-name node-1
"""
    assert supervised_programs(config) == [
        Component("store-0", "store", "127.0.0.1:2379"),
        Component("apiserver", "apiserver", "127.0.0.1:6443"),
        Component("scheduler", "scheduler"),
        Component("controller-manager", "controller-manager"),
        Component("kubelet-node-1", "kubelet"),
    ]
