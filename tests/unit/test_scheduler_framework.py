"""The scheduling framework: statuses, PodInfo / NodeInfo accounting, one cycle (filters,
weighted scores, percentageOfNodesToScore, the rotating offset, ties) and FitError's
message, which must read exactly like Kubernetes'."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_scheduler_builders import make_node, make_pod, node_info

from services.scheduler.framework import (
    DEFAULT_MEMORY_REQUEST,
    DEFAULT_MILLI_CPU_REQUEST,
    SKIP,
    SUCCESS,
    Code,
    CycleState,
    FitError,
    Framework,
    HostPort,
    HostPorts,
    NodeInfo,
    PodInfo,
    SchedulingError,
    Status,
    default_normalize_score,
    num_feasible_nodes_to_find,
    pod_key,
    zone_key,
)
from services.scheduler.plugins.node_resources_fit import NodeResourcesFit
from services.scheduler.plugins.taint_toleration import TaintToleration
from skiff.api.v1 import core_pb2

# ---- statuses and small values


def test_status_constructors_and_message() -> None:
    status = Status.unschedulable("Insufficient cpu", "Insufficient memory", plugin="Fit")
    assert status.code == Code.UNSCHEDULABLE and status.is_rejected and not status.is_success
    assert status.message == "Insufficient cpu, Insufficient memory"
    assert Status.unresolvable("x").code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert Status.error("boom").code == Code.ERROR and not Status.error("boom").is_rejected
    assert SUCCESS.is_success and SKIP.code == Code.SKIP


def test_pod_key_is_namespace_slash_name() -> None:
    assert pod_key(make_pod("web", namespace="prod")) == "prod/web"
    assert pod_key(make_pod("web", namespace="")) == "web"


def test_zone_key_combines_region_and_zone_with_beta_fallback() -> None:
    assert zone_key({}) == ""
    assert zone_key({"topology.kubernetes.io/zone": "a"}) == ":\x00:a"
    assert zone_key({"failure-domain.beta.kubernetes.io/zone": "a",
                     "topology.kubernetes.io/region": "r"}) == "r:\x00:a"


def test_default_normalize_score() -> None:
    scores = [0, 5, 10]
    default_normalize_score(scores)
    assert scores == [0, 50, 100]
    scores = [1, 3]
    default_normalize_score(scores)
    assert scores == [33, 100]  # integer division, as Kubernetes
    scores = [0, 5, 10]
    default_normalize_score(scores, reverse=True)
    assert scores == [100, 50, 0]
    zeros = [0, 0]
    default_normalize_score(zeros, reverse=True)
    assert zeros == [100, 100]


# ---- PodInfo


def test_pod_requests_add_up_containers_and_take_the_largest_init_container() -> None:
    pod = make_pod("p", cpu="250m", memory="64Mi", containers=2)
    init = pod.spec.init_containers.add(name="init")
    init.resources.requests.update({"cpu": "1", "memory": "16Mi"})
    info = PodInfo(pod)
    assert info.requests.milli_cpu == 1000  # the init container needs more cpu
    assert info.requests.memory == 128 * 2**20  # the app containers need more memory


def test_non_zero_requests_default_missing_requests_only() -> None:
    info = PodInfo(make_pod("p", memory="0"))  # cpu missing, memory explicitly zero
    assert info.requests.milli_cpu == 0 and info.requests.memory == 0
    assert info.non_zero_requests.milli_cpu == DEFAULT_MILLI_CPU_REQUEST
    assert info.non_zero_requests.memory == 0
    best_effort = PodInfo(make_pod("p", containers=2))
    assert best_effort.non_zero_requests.milli_cpu == 2 * DEFAULT_MILLI_CPU_REQUEST
    assert best_effort.non_zero_requests.memory == 2 * DEFAULT_MEMORY_REQUEST


def test_extended_resources_are_scalar_requests() -> None:
    info = PodInfo(make_pod("p", extra={"nvidia.com/gpu": "2", "ephemeral-storage": "1Gi"}))
    assert info.requests.scalar == {"nvidia.com/gpu": 2, "ephemeral-storage": 2**30}


def test_host_ports_are_sanitized_and_host_network_uses_container_ports() -> None:
    info = PodInfo(make_pod("p", host_ports=[(80, "", ""), (53, "UDP", "10.0.0.1")]))
    assert info.host_ports == (HostPort("TCP", "0.0.0.0", 80), HostPort("UDP", "10.0.0.1", 53))
    pod = make_pod("p")
    pod.spec.host_network = True
    pod.spec.containers[0].ports.add(container_port=8080, protocol="TCP")
    assert PodInfo(pod).host_ports == (HostPort("TCP", "0.0.0.0", 8080),)


def test_pod_info_fields() -> None:
    pod = make_pod("p", priority=7, labels={"app": "web"},
                   tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}])
    pod.metadata.deletion_timestamp.seconds = 1
    info = PodInfo(pod)
    assert (info.key, info.priority, info.labels, info.deleting) == (
        "default/p", 7, {"app": "web"}, True)
    assert info.tolerations[0].key == "k" and info.tolerations[0].operator == "Exists"
    assert PodInfo(make_pod("q")).priority == 0


# ---- NodeInfo


def test_node_info_parses_the_node_once() -> None:
    node = make_node("n1", cpu="2", memory="4Gi", pods="10", labels={"disk": "ssd"},
                     taints=[("k", "v", "NoSchedule")], unschedulable=True)
    info = NodeInfo(node)
    assert (info.allocatable.milli_cpu, info.allocatable.memory, info.allocatable.pods) == (
        2000, 4 * 2**30, 10)
    assert info.labels == {"disk": "ssd"} and info.unschedulable and info.ready
    assert [(t.key, t.value, t.effect) for t in info.taints] == [("k", "v", "NoSchedule")]


def test_node_info_falls_back_to_capacity_without_allocatable() -> None:
    node = make_node("n1", cpu="", memory="", pods="")
    node.status.capacity.update({"cpu": "3", "pods": "5"})
    info = NodeInfo(node)
    assert (info.allocatable.milli_cpu, info.allocatable.pods) == (3000, 5)


def test_node_info_ready_needs_a_true_ready_condition() -> None:
    assert not NodeInfo(make_node("n", ready=False)).ready
    assert not NodeInfo(make_node("n", ready=None)).ready


def test_node_info_accounts_pods_and_bumps_generation() -> None:
    info = NodeInfo(make_node("n1"))
    generation = info.generation
    web = PodInfo(make_pod("web", cpu="500m", memory="1Gi", host_ports=[(80, "TCP", "")]))
    info.add_pod(web)
    info.add_pod(PodInfo(make_pod("db")))  # best effort
    assert info.generation > generation
    assert (info.requested.milli_cpu, info.requested.memory) == (500, 2**30)
    assert info.non_zero_requested.milli_cpu == 500 + DEFAULT_MILLI_CPU_REQUEST
    assert HostPort("TCP", "0.0.0.0", 80) in info.used_ports
    assert info.remove_pod(web.key) is web
    assert (info.requested.milli_cpu, info.requested.memory) == (0, 0)
    assert len(info.used_ports) == 0
    assert info.remove_pod("default/absent") is None


def test_node_info_add_pod_replaces_the_same_key() -> None:
    info = NodeInfo(make_node("n1"))
    info.add_pod(PodInfo(make_pod("web", cpu="1")))
    info.add_pod(PodInfo(make_pod("web", cpu="2")))
    assert len(info.pods) == 1 and info.requested.milli_cpu == 2000


def test_node_info_clone_is_independent() -> None:
    info = node_info(make_node("n1"), [make_pod("a", cpu="1", host_ports=[(80, "", "")])])
    clone = info.clone()
    info.add_pod(PodInfo(make_pod("b", cpu="1", host_ports=[(81, "", "")])))
    assert clone.requested.milli_cpu == 1000 and len(clone.pods) == 1
    assert len(clone.used_ports) == 1 and clone.generation < info.generation


def test_host_ports_wildcard_rules() -> None:
    used = HostPorts()
    used.add(HostPort("TCP", "127.0.0.1", 8080))
    assert used.conflicts(HostPort("TCP", "127.0.0.1", 8080))
    assert used.conflicts(HostPort("TCP", "0.0.0.0", 8080))  # 0.0.0.0 wants every ip
    assert not used.conflicts(HostPort("TCP", "127.0.0.2", 8080))
    assert not used.conflicts(HostPort("UDP", "127.0.0.1", 8080))
    used.add(HostPort("UDP", "0.0.0.0", 53))
    assert used.conflicts(HostPort("UDP", "10.1.1.1", 53))  # taken on every ip
    assert not used.conflicts(HostPort("TCP", "0.0.0.0", 0))


def test_host_ports_count_holders() -> None:
    used = HostPorts()
    port = HostPort("TCP", "0.0.0.0", 80)
    used.add(port)
    used.add(port)
    used.remove(port)
    assert used.conflicts(port)  # one holder left
    used.remove(port)
    assert not used.conflicts(port) and len(used) == 0


# ---- percentageOfNodesToScore


@pytest.mark.parametrize(("nodes", "percentage", "expected"), [
    (0, 0, 0), (50, 0, 50), (99, 0, 99),  # under 100 nodes: all of them
    (100, 0, 100), (1000, 0, 420),  # 50 - 1000/125 = 42%
    (5000, 0, 500),  # 50 - 40 = 10%
    (6000, 0, 300),  # 50 - 48 = 2% -> at least 5%
    (20000, 0, 1000),  # 5%
    (150, 0, 100),  # 49% of 150 is 73: at least 100
    (1000, 30, 300), (1000, 5, 100), (1000, 100, 1000), (1000, 150, 1000),
])
def test_num_feasible_nodes_to_find(nodes: int, percentage: int, expected: int) -> None:
    assert num_feasible_nodes_to_find(nodes, percentage) == expected


# ---- the cycle, with small fake plugins


class RejectNames:
    """Filter: rejects the named nodes with a reason of its own."""

    def __init__(self, reasons: dict[str, Sequence[str]], name: str = "RejectNames",
                 code: Code = Code.UNSCHEDULABLE) -> None:
        self.name = name
        self.reasons = reasons
        self.code = code
        self.calls: list[str] = []

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        self.calls.append(node.name)
        if node.name in self.reasons:
            return Status(self.code, tuple(self.reasons[node.name]))
        return SUCCESS


class FixedScore:
    """Score: a fixed raw score per node name (0 for others)."""

    def __init__(self, name: str, scores: dict[str, int]) -> None:
        self.name = name
        self.scores = scores

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return self.scores.get(node.name, 0)


class NormalizedScore(FixedScore):
    def normalize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> None:
        default_normalize_score(scores)


def nodes(count: int, prefix: str = "n") -> list[NodeInfo]:
    return [NodeInfo(make_node(f"{prefix}{i}")) for i in range(count)]


POD = PodInfo(make_pod("p"))


def test_weights_decide_between_plugins() -> None:
    cluster = nodes(2)
    likes_n0 = FixedScore("A", {"n0": 60, "n1": 20})
    likes_n1 = FixedScore("B", {"n0": 10, "n1": 40})
    # Equal weights: n0 70 vs n1 60.
    assert Framework(scores=[(likes_n0, 1), (likes_n1, 1)]).schedule(
        POD, cluster).node_name == "n0"
    # B weighs 2: n0 80 vs n1 100.
    assert Framework(scores=[(likes_n0, 1), (likes_n1, 2)]).schedule(
        POD, cluster).node_name == "n1"


def test_prioritize_normalizes_then_weighs() -> None:
    cluster = nodes(3)
    raw = NormalizedScore("N", {"n0": 1, "n1": 2, "n2": 4})
    fw = Framework(scores=[(raw, 3)])
    assert fw.prioritize(CycleState(), POD, cluster) == [75, 150, 300]


def test_score_out_of_range_is_an_error() -> None:
    fw = Framework(scores=[(FixedScore("Bad", {"n0": 101}), 1)])
    with pytest.raises(SchedulingError, match="Bad"):
        fw.schedule(POD, nodes(2))


def test_filters_stop_at_the_first_rejection_per_node() -> None:
    first = RejectNames({"n0": ["first"]}, name="First")
    second = RejectNames({"n0": ["second"], "n1": ["second"]}, name="Second")
    with pytest.raises(FitError) as caught:
        Framework(filters=[first, second]).schedule(POD, nodes(2))
    assert caught.value.statuses["n0"].reasons == ("first",)
    assert caught.value.statuses["n0"].plugin == "First"
    assert caught.value.statuses["n1"].plugin == "Second"
    assert "n0" not in second.calls
    assert caught.value.unschedulable_plugins == {"First", "Second"}


def test_single_feasible_node_is_chosen_without_scoring() -> None:
    class Exploding:
        name = "Exploding"

        def score(self, *args: object) -> int:
            raise AssertionError("scored")

    reject = RejectNames({"n0": ["no"], "n2": ["no"]})
    result = Framework(filters=[reject], scores=[(Exploding(), 1)]).schedule(POD, nodes(3))
    assert (result.node_name, result.evaluated, result.feasible) == ("n1", 3, 1)


def test_filter_error_abandons_the_cycle() -> None:
    broken = RejectNames({"n1": ["disk on fire"]}, code=Code.ERROR, name="Broken")
    with pytest.raises(SchedulingError, match="Broken: disk on fire"):
        Framework(filters=[broken]).schedule(POD, nodes(3))


def test_ties_are_broken_by_the_seeded_rng() -> None:
    cluster = nodes(10)

    def picks(seed: int) -> list[str]:
        fw = Framework(scores=[(FixedScore("Flat", {}), 1)], seed=seed)
        return [fw.schedule(POD, cluster).node_name for _ in range(20)]

    assert picks(1) == picks(1)  # deterministic
    assert len(set(picks(1))) > 1  # but not always the same node
    assert picks(1) != picks(2)


def test_percentage_of_nodes_to_score_stops_filtering_early_and_rotates() -> None:
    cluster = nodes(1000)
    counter = RejectNames({})
    fw = Framework(filters=[counter], scores=[(FixedScore("Flat", {}), 1)])
    first = fw.schedule(POD, cluster)
    assert (first.evaluated, first.feasible) == (420, 420)
    assert counter.calls[0] == "n0" and counter.calls[-1] == "n419"
    counter.calls.clear()
    fw.schedule(POD, cluster)
    # The next cycle starts where the last stopped, wrapping around.
    assert counter.calls[0] == "n420" and counter.calls[-1] == "n839"
    counter.calls.clear()
    fw.schedule(POD, cluster)
    assert counter.calls[0] == "n840" and counter.calls[-1] == "n259"


def test_infeasible_nodes_count_as_evaluated_and_move_the_offset() -> None:
    cluster = nodes(200)
    reject = RejectNames({f"n{i}": ["no"] for i in range(50)})
    fw = Framework(filters=[reject], percentage_of_nodes_to_score=10)  # 20 -> 100 nodes
    result = fw.schedule(POD, cluster)
    assert (result.evaluated, result.feasible) == (150, 100)  # n0..n49 rejected
    reject.calls.clear()
    fw.schedule(POD, cluster)
    assert reject.calls[0] == "n150"


def test_explicit_percentage_is_used() -> None:
    fw = Framework(filters=[RejectNames({})], percentage_of_nodes_to_score=50)
    assert fw.schedule(POD, nodes(400)).feasible == 200


class SkippingPreFilter:
    name = "Skipper"

    def __init__(self) -> None:
        self.filtered = 0

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
        return SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        self.filtered += 1
        return Status.unschedulable("never")


def test_pre_filter_skip_takes_the_filter_out_of_the_cycle() -> None:
    skipper = SkippingPreFilter()
    assert Framework(filters=[skipper]).schedule(POD, nodes(3)).feasible == 3
    assert skipper.filtered == 0


def test_pre_filter_rejection_is_the_whole_message() -> None:
    class NoWay:
        name = "NoWay"

        def pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
            return Status.unresolvable("pod has unbound immediate PersistentVolumeClaims")

        def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
            raise AssertionError("filtered")

    with pytest.raises(FitError) as caught:
        Framework(filters=[NoWay()]).schedule(POD, nodes(3))
    assert str(caught.value) == (
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.")
    assert set(caught.value.statuses) == {"n0", "n1", "n2"}
    assert caught.value.unschedulable_plugins == {"NoWay"}


def test_pre_score_skip_leaves_the_plugin_out() -> None:
    class SkipsScoring(FixedScore):
        def pre_score(self, state: CycleState, pod: PodInfo,
                      nodes: Sequence[NodeInfo]) -> Status:
            return SKIP

    fw = Framework(scores=[(SkipsScoring("S", {"n0": 100}), 5), (FixedScore("F", {}), 1)])
    assert fw.prioritize(CycleState(), POD, nodes(2)) == [0, 0]


def test_no_nodes_at_all() -> None:
    with pytest.raises(FitError) as caught:
        Framework().schedule(POD, [])
    assert str(caught.value) == "no nodes available to schedule pods"


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="weight"):
        Framework(scores=[(FixedScore("Z", {}), 0)])


# ---- FitError's message


def test_fit_error_message_with_real_plugins_and_mixed_reasons() -> None:
    pod = PodInfo(make_pod("big", cpu="3"))
    cluster = [
        node_info(make_node("busy-0", cpu="2")),
        node_info(make_node("busy-1", cpu="2")),
        node_info(make_node("busy-2", cpu="2")),
        node_info(make_node("tainted-0", taints=[("key", "value", "NoSchedule")])),
        node_info(make_node("tainted-1", taints=[("key", "value", "NoExecute")])),
    ]
    fw = Framework(filters=[TaintToleration(), NodeResourcesFit()])
    with pytest.raises(FitError) as caught:
        fw.schedule(pod, cluster)
    # Kubernetes sorts the "<count> <reason>" strings as strings: "2 ..." before "3 ...".
    assert str(caught.value) == ("0/5 nodes are available: 2 node(s) had untolerated taint "
                                 "{key: value}, 3 Insufficient cpu.")
    assert caught.value.unschedulable_plugins == {"TaintToleration", "NodeResourcesFit"}


def test_fit_error_counts_every_reason_of_a_node_and_sorts_like_kubernetes() -> None:
    statuses = {
        "a": Status.unschedulable("Insufficient cpu", "Insufficient memory"),
        "b": Status.unschedulable("Insufficient cpu"),
        "c": Status.unresolvable("node(s) had untolerated taint {key: value}"),
        "d": Status.unresolvable("node(s) had untolerated taint {key: value}"),
        "e": Status.unresolvable("node(s) were unschedulable"),
    }
    error = FitError("default/p", 5, statuses)
    assert error.message == (
        "0/5 nodes are available: 1 Insufficient memory, 1 node(s) were unschedulable, "
        "2 Insufficient cpu, 2 node(s) had untolerated taint {key: value}.")
    assert error.reason_counts()["Insufficient cpu"] == 2


def test_fit_error_sorts_counts_as_text_like_go_sort_strings() -> None:
    statuses = {f"n{i}": Status.unschedulable("Insufficient cpu") for i in range(10)}
    statuses.update({f"m{i}": Status.unschedulable("Too many pods") for i in range(2)})
    error = FitError("default/p", 12, statuses)
    assert str(error) == "0/12 nodes are available: 10 Insufficient cpu, 2 Too many pods."


def test_fit_error_is_raised_with_pod_key() -> None:
    with pytest.raises(FitError) as caught:
        Framework(filters=[RejectNames({"n0": ["no"]})]).schedule(
            PodInfo(make_pod("web", namespace="prod")), nodes(1))
    assert caught.value.pod_key == "prod/web"
    assert str(caught.value) == "0/1 nodes are available: 1 no."


def test_run_filters_on_one_node() -> None:
    fw = Framework(filters=[RejectNames({"n1": ["no"]}, name="R")])
    cluster = nodes(2)
    assert fw.run_filters(CycleState(), POD, cluster[0]) is SUCCESS
    status = fw.run_filters(CycleState(), POD, cluster[1])
    assert status.reasons == ("no",) and status.plugin == "R"


def test_cycle_state_read_write() -> None:
    state = CycleState()
    state.write("k", 1)
    assert state.read("k") == 1 and state.get("missing") is None
    with pytest.raises(KeyError):
        state.read("missing")


def test_resource_equality_and_repr() -> None:
    a = NodeInfo(make_node("n", extra={"nvidia.com/gpu": "1"})).allocatable
    b = NodeInfo(make_node("n", extra={"nvidia.com/gpu": "1"})).allocatable
    assert a == b and "nvidia.com/gpu" in repr(a)
    assert a.get("nvidia.com/gpu") == 1 and a.get("cpu") == 4000


def test_unset_node_gives_placeholder_node_info() -> None:
    info = NodeInfo(name="ghost")
    assert info.node is None and info.name == "ghost"
    info.set_node(make_node("ghost"))
    assert isinstance(info.node, core_pb2.Node)
