"""The plugins that judge a node by its own fields: NodeUnschedulable, NodeName,
NodeReady, TaintToleration, NodeAffinity, NodePorts — each filter's verdict with its
exact reason, and the scores. Cases follow Kubernetes' plugin tests."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from test_scheduler_builders import make_node, make_pod, node_info, run_filter, run_scores

from services.scheduler.framework import (
    Code,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    Taint,
    Toleration,
)
from services.scheduler.plugins.node_affinity import NodeAffinity
from services.scheduler.plugins.node_name import NodeName
from services.scheduler.plugins.node_ports import NodePorts
from services.scheduler.plugins.node_ready import NodeReady
from services.scheduler.plugins.node_unschedulable import NodeUnschedulable
from services.scheduler.plugins.taint_toleration import (
    TaintToleration,
    find_untolerated_taint,
    tolerates,
)
from skiff.api.v1 import core_pb2


def rejected(status: Status, reason: str, code: Code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
             ) -> bool:
    return status.code == code and status.reasons == (reason,)


# ---- NodeUnschedulable

UNSCHEDULABLE = "node(s) were unschedulable"


def test_unschedulable_node_rejects() -> None:
    status = run_filter(NodeUnschedulable(), make_pod("p"), node_info(make_node(
        "n", unschedulable=True)))
    assert rejected(status, UNSCHEDULABLE) and status.plugin == "NodeUnschedulable"


def test_schedulable_node_fits() -> None:
    assert run_filter(NodeUnschedulable(), make_pod("p"), node_info(make_node("n"))).is_success


@pytest.mark.parametrize("toleration", [
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"},
    {"operator": "Exists"},
])
def test_tolerating_the_unschedulable_taint_fits(toleration: Mapping[str, str]) -> None:
    pod = make_pod("p", tolerations=[toleration])
    assert run_filter(NodeUnschedulable(), pod, node_info(make_node(
        "n", unschedulable=True))).is_success


def test_tolerating_another_effect_does_not_fit() -> None:
    pod = make_pod("p", tolerations=[{"key": "node.kubernetes.io/unschedulable",
                                      "operator": "Exists", "effect": "NoExecute"}])
    assert rejected(run_filter(NodeUnschedulable(), pod, node_info(make_node(
        "n", unschedulable=True))), UNSCHEDULABLE)


# ---- NodeName

NODE_NAME = "node(s) didn't match the requested node name"


def test_node_name() -> None:
    plugin = NodeName()
    assert run_filter(plugin, make_pod("p"), node_info(make_node("n1"))).is_success
    assert run_filter(plugin, make_pod("p", node_name="n1"), node_info(make_node("n1"))).is_success
    assert rejected(run_filter(plugin, make_pod("p", node_name="n2"),
                               node_info(make_node("n1"))), NODE_NAME)


def test_node_name_pre_filter_skips_pods_without_one() -> None:
    assert NodeName().pre_filter(CycleState(), PodInfo(make_pod("p"))).code == Code.SKIP


# ---- NodeReady

NOT_READY = "node(s) were not ready"


def test_ready_node_fits() -> None:
    assert run_filter(NodeReady(), make_pod("p"), node_info(make_node("n"))).is_success


@pytest.mark.parametrize("ready", [False, None])
def test_not_ready_or_unreported_node_rejects(ready: bool | None) -> None:
    status = run_filter(NodeReady(), make_pod("p"), node_info(make_node("n", ready=ready)))
    assert rejected(status, NOT_READY) and status.plugin == "NodeReady"


@pytest.mark.parametrize("key", ["node.kubernetes.io/not-ready",
                                 "node.kubernetes.io/unreachable"])
@pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute"])
def test_not_ready_taints_reject_a_ready_node(key: str, effect: str) -> None:
    info = node_info(make_node("n", taints=[(key, "", effect)]))
    assert rejected(run_filter(NodeReady(), make_pod("p"), info), NOT_READY)


def test_prefer_no_schedule_not_ready_taint_is_not_a_rejection() -> None:
    info = node_info(make_node("n", taints=[("node.kubernetes.io/not-ready", "",
                                             "PreferNoSchedule")]))
    assert run_filter(NodeReady(), make_pod("p"), info).is_success


def test_tolerating_not_ready_fits_a_not_ready_node() -> None:
    pod = make_pod("daemon", tolerations=[
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}])
    info = node_info(make_node("n", ready=False, taints=[
        ("node.kubernetes.io/not-ready", "", "NoExecute")]))
    assert run_filter(NodeReady(), pod, info).is_success
    # Not tolerating the unreachable taint still rejects.
    unreachable = node_info(make_node("n", ready=False, taints=[
        ("node.kubernetes.io/unreachable", "", "NoSchedule")]))
    assert rejected(run_filter(NodeReady(), pod, unreachable), NOT_READY)


# ---- TaintToleration

@pytest.mark.parametrize(("toleration", "taint", "expected"), [
    (Toleration("k", "Equal", "v", "NoSchedule"), Taint("k", "v", "NoSchedule"), True),
    (Toleration("k", "", "v", "NoSchedule"), Taint("k", "v", "NoSchedule"), True),  # "" = Equal
    (Toleration("k", "Equal", "w", "NoSchedule"), Taint("k", "v", "NoSchedule"), False),
    (Toleration("k", "Exists", "", "NoSchedule"), Taint("k", "v", "NoSchedule"), True),
    (Toleration("k", "Exists", "", ""), Taint("k", "v", "NoExecute"), True),  # any effect
    (Toleration("k", "Exists", "", "NoExecute"), Taint("k", "v", "NoSchedule"), False),
    (Toleration("", "Exists", "", ""), Taint("any", "v", "NoSchedule"), True),  # everything
    (Toleration("other", "Exists", "", ""), Taint("k", "v", "NoSchedule"), False),
    (Toleration("k", "Bogus", "v", ""), Taint("k", "v", "NoSchedule"), False),
])
def test_tolerates(toleration: Toleration, taint: Taint, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def test_untolerated_taint_rejects_with_key_and_value() -> None:
    info = node_info(make_node("n", taints=[("dedicated", "gpu", "NoSchedule")]))
    status = run_filter(TaintToleration(), make_pod("p"), info)
    assert rejected(status, "node(s) had untolerated taint {dedicated: gpu}")


def test_empty_taint_value_reads_like_kubernetes() -> None:
    info = node_info(make_node("n", taints=[("node-role.kubernetes.io/control-plane", "",
                                             "NoSchedule")]))
    status = run_filter(TaintToleration(), make_pod("p"), info)
    assert status.reasons == (
        "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",)


def test_the_first_untolerated_taint_is_reported() -> None:
    pod = make_pod("p", tolerations=[{"key": "a", "operator": "Exists"}])
    info = node_info(make_node("n", taints=[("a", "1", "NoSchedule"), ("b", "2", "NoExecute"),
                                            ("c", "3", "NoSchedule")]))
    assert run_filter(TaintToleration(), pod, info).reasons == (
        "node(s) had untolerated taint {b: 2}",)


def test_prefer_no_schedule_taints_do_not_filter() -> None:
    info = node_info(make_node("n", taints=[("a", "1", "PreferNoSchedule")]))
    assert run_filter(TaintToleration(), make_pod("p"), info).is_success


def test_tolerated_taints_fit() -> None:
    pod = make_pod("p", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                      "effect": "NoSchedule"}])
    info = node_info(make_node("n", taints=[("dedicated", "gpu", "NoSchedule")]))
    assert run_filter(TaintToleration(), pod, info).is_success


def test_find_untolerated_taint_with_effects() -> None:
    taints = [Taint("a", "", "PreferNoSchedule")]
    assert find_untolerated_taint(taints, ()) is None
    assert find_untolerated_taint(taints, (), frozenset({"PreferNoSchedule"})) == taints[0]


def test_taint_score_prefers_fewer_untolerated_prefer_no_schedule_taints() -> None:
    # Kubernetes' "the more intolerable taints a node has, the lower score it gets".
    pod = make_pod("p", tolerations=[{"key": "foo", "operator": "Equal", "value": "bar",
                                      "effect": "PreferNoSchedule"}])
    infos = [
        node_info(make_node("none")),
        node_info(make_node("tolerated", taints=[("foo", "bar", "PreferNoSchedule")])),
        node_info(make_node("one", taints=[("cpu-type", "arm64", "PreferNoSchedule")])),
        node_info(make_node("two", taints=[("cpu-type", "arm64", "PreferNoSchedule"),
                                           ("disk-type", "ssd", "PreferNoSchedule")])),
        node_info(make_node("hard", taints=[("x", "y", "NoSchedule")])),  # not counted
    ]
    assert run_scores(TaintToleration(), pod, infos) == [100, 100, 50, 0, 100]


def test_taint_score_with_no_taints_anywhere_is_skipped() -> None:
    # Every node would score 100, which ranks nothing: the pre-score skips the plugin.
    infos = [node_info(make_node("a")),
             node_info(make_node("b", taints=[("x", "y", "NoSchedule")]))]
    assert run_scores(TaintToleration(), make_pod("p"), infos) is None
    # Scored without its pre-score, the answer is still the same everywhere.
    plugin, pod = TaintToleration(), PodInfo(make_pod("p"))
    scores = [plugin.score(CycleState(), pod, info) for info in infos]
    plugin.normalize(CycleState(), pod, infos, scores)
    assert scores == [100, 100]


def test_toleration_without_effect_counts_for_score() -> None:
    pod = make_pod("p", tolerations=[{"key": "a", "operator": "Exists"}])
    infos = [node_info(make_node("x", taints=[("a", "1", "PreferNoSchedule")])),
             node_info(make_node("y", taints=[("b", "1", "PreferNoSchedule")]))]
    assert run_scores(TaintToleration(), pod, infos) == [100, 0]


# ---- NodeAffinity

AFFINITY = "node(s) didn't match Pod's node affinity/selector"


def with_required(pod: core_pb2.Pod, *terms: dict[str, list[tuple[str, str, list[str]]]],
                  ) -> core_pb2.Pod:
    """Add required node affinity terms: {"expressions": [...], "fields": [...]}, each
    requirement (key, operator, values)."""
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    for term in terms:
        t = required.node_selector_terms.add()
        for key, op, values in term.get("expressions", []):
            t.match_expressions.add(key=key, operator=op, values=values)
        for key, op, values in term.get("fields", []):
            t.match_fields.add(key=key, operator=op, values=values)
    return pod


def with_preferred(pod: core_pb2.Pod, *terms: tuple[int, list[tuple[str, str, list[str]]]],
                   ) -> core_pb2.Pod:
    preferred = (pod.spec.affinity.node_affinity
                 .preferred_during_scheduling_ignored_during_execution)
    for weight, expressions in terms:
        entry = preferred.add(weight=weight)
        for key, op, values in expressions:
            entry.preference.match_expressions.add(key=key, operator=op, values=values)
    return pod


def test_node_selector_must_match_every_pair() -> None:
    pod = make_pod("p", node_selector={"disk": "ssd", "zone": "a"})
    fits = node_info(make_node("n", labels={"disk": "ssd", "zone": "a", "extra": "x"}))
    misses = node_info(make_node("n", labels={"disk": "ssd", "zone": "b"}))
    assert run_filter(NodeAffinity(), pod, fits).is_success
    assert rejected(run_filter(NodeAffinity(), pod, misses), AFFINITY)


def test_pod_without_selector_or_affinity_skips() -> None:
    assert NodeAffinity().pre_filter(CycleState(), PodInfo(make_pod("p"))).code == Code.SKIP


@pytest.mark.parametrize(("requirement", "labels", "expected"), [
    (("zone", "In", ["a", "b"]), {"zone": "b"}, True),
    (("zone", "In", ["a", "b"]), {"zone": "c"}, False),
    (("zone", "In", ["a"]), {}, False),
    (("zone", "NotIn", ["a"]), {"zone": "b"}, True),
    (("zone", "NotIn", ["a"]), {}, True),  # a missing label is "not in"
    (("zone", "NotIn", ["a"]), {"zone": "a"}, False),
    (("gpu", "Exists", []), {"gpu": ""}, True),
    (("gpu", "Exists", []), {}, False),
    (("gpu", "DoesNotExist", []), {}, True),
    (("gpu", "DoesNotExist", []), {"gpu": "1"}, False),
    (("cores", "Gt", ["4"]), {"cores": "8"}, True),
    (("cores", "Gt", ["4"]), {"cores": "4"}, False),
    (("cores", "Gt", ["4"]), {"cores": "many"}, False),
    (("cores", "Lt", ["4"]), {"cores": "2"}, True),
    (("cores", "Lt", ["4"]), {}, False),
    (("cores", "Gt", ["four"]), {"cores": "8"}, False),  # invalid term matches nothing
    (("zone", "In", []), {"zone": "a"}, False),  # invalid: In needs values
    (("zone", "Near", ["a"]), {"zone": "a"}, False),  # unknown operator
])
def test_required_match_expressions(requirement: tuple[str, str, list[str]],
                                    labels: dict[str, str], expected: bool) -> None:
    pod = with_required(make_pod("p"), {"expressions": [requirement]})
    status = run_filter(NodeAffinity(), pod, node_info(make_node("n", labels=labels)))
    assert status.is_success is expected
    if not expected:
        assert rejected(status, AFFINITY)


def test_required_terms_are_ored_and_expressions_anded() -> None:
    pod = with_required(make_pod("p"),
                        {"expressions": [("zone", "In", ["a"]), ("disk", "In", ["ssd"])]},
                        {"expressions": [("gpu", "Exists", [])]})
    assert run_filter(NodeAffinity(), pod, node_info(make_node(
        "n", labels={"zone": "a", "disk": "ssd"}))).is_success
    assert not run_filter(NodeAffinity(), pod, node_info(make_node(
        "n", labels={"zone": "a", "disk": "hdd"}))).is_success
    assert run_filter(NodeAffinity(), pod, node_info(make_node(
        "n", labels={"gpu": "1"}))).is_success


def test_node_selector_and_affinity_must_both_match() -> None:
    pod = with_required(make_pod("p", node_selector={"disk": "ssd"}),
                        {"expressions": [("zone", "In", ["a"])]})
    assert not run_filter(NodeAffinity(), pod, node_info(make_node(
        "n", labels={"zone": "a"}))).is_success
    assert run_filter(NodeAffinity(), pod, node_info(make_node(
        "n", labels={"zone": "a", "disk": "ssd"}))).is_success


def test_empty_term_matches_nothing() -> None:
    pod = with_required(make_pod("p"), {})
    assert rejected(run_filter(NodeAffinity(), pod, node_info(make_node("n"))), AFFINITY)


def test_required_affinity_without_terms_matches_nothing() -> None:
    pod = make_pod("p")
    pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.SetInParent()
    assert rejected(run_filter(NodeAffinity(), pod, node_info(make_node("n"))), AFFINITY)


def test_match_fields_on_node_name() -> None:
    pod = with_required(make_pod("p"), {"fields": [("metadata.name", "In", ["n1"])]})
    assert run_filter(NodeAffinity(), pod, node_info(make_node("n1"))).is_success
    assert rejected(run_filter(NodeAffinity(), pod, node_info(make_node("n2"))), AFFINITY)
    not_in = with_required(make_pod("p"), {"fields": [("metadata.name", "NotIn", ["n1"])]})
    assert run_filter(NodeAffinity(), not_in, node_info(make_node("n2"))).is_success
    assert not run_filter(NodeAffinity(), not_in, node_info(make_node("n1"))).is_success


@pytest.mark.parametrize("field", [("metadata.name", "In", ["n1", "n2"]),
                                   ("metadata.uid", "In", ["n1"]),
                                   ("metadata.name", "Exists", [])])
def test_invalid_match_fields_match_nothing(field: tuple[str, str, list[str]]) -> None:
    pod = with_required(make_pod("p"), {"fields": [field]})
    assert not run_filter(NodeAffinity(), pod, node_info(make_node("n1"))).is_success


def test_match_fields_and_expressions_both_apply() -> None:
    pod = with_required(make_pod("p"), {"fields": [("metadata.name", "In", ["n1"])],
                                        "expressions": [("zone", "In", ["a"])]})
    assert not run_filter(NodeAffinity(), pod, node_info(make_node("n1"))).is_success
    assert run_filter(NodeAffinity(), pod, node_info(make_node(
        "n1", labels={"zone": "a"}))).is_success


def test_affinity_score_sums_matching_weights_normalized() -> None:
    # Kubernetes' "all nodes matches the preferred scheduling requirements of pod but with
    # different priorities" shape: weights 2, 4, 5.
    pod = with_preferred(make_pod("p"),
                         (2, [("foo", "In", ["bar"])]),
                         (4, [("key", "In", ["value"])]),
                         (5, [("foo", "In", ["bar"]), ("key", "In", ["value"]),
                              ("az", "In", ["az1"])]))
    infos = [node_info(make_node("m1", labels={"foo": "bar"})),
             node_info(make_node("m2", labels={"foo": "bar", "key": "value", "az": "az1"})),
             node_info(make_node("m3", labels={"key": "value"})),
             node_info(make_node("m4"))]
    # Raw 2, 11, 4, 0 -> 100 * s // 11.
    assert run_scores(NodeAffinity(), pod, infos) == [18, 100, 36, 0]


def test_affinity_score_skips_without_preferred_terms() -> None:
    assert run_scores(NodeAffinity(), make_pod("p"), [node_info(make_node("n"))]) is None


def test_zero_weight_preferred_terms_are_ignored() -> None:
    pod = with_preferred(make_pod("p"), (0, [("foo", "In", ["bar"])]))
    assert run_scores(NodeAffinity(), pod, [node_info(make_node("n"))]) is None


# ---- NodePorts

PORTS = "node(s) didn't have free ports for the requested pod ports"


def node_with_ports(*ports: tuple[int, str, str]) -> NodeInfo:
    return node_info(make_node("n"), [make_pod("holder", host_ports=ports)])


@pytest.mark.parametrize(("used", "wanted", "fits"), [
    ([], [(8080, "TCP", "")], True),
    ([(8080, "TCP", "")], [(8080, "TCP", "")], False),
    ([(8080, "TCP", "")], [(8080, "UDP", "")], True),
    ([(8080, "TCP", "")], [(8081, "TCP", "")], True),
    ([(8080, "TCP", "127.0.0.1")], [(8080, "TCP", "127.0.0.2")], True),
    ([(8080, "TCP", "127.0.0.1")], [(8080, "TCP", "0.0.0.0")], False),
    ([(8080, "TCP", "0.0.0.0")], [(8080, "TCP", "127.0.0.1")], False),
    ([(8080, "TCP", "")], [(8080, "TCP", "10.0.0.1")], False),  # "" is 0.0.0.0
    ([(8080, "UDP", "127.0.0.1")], [(8080, "TCP", "0.0.0.0")], True),
    ([(8080, "TCP", "127.0.0.1"), (9090, "TCP", "")], [(9090, "TCP", "127.0.0.1")], False),
])
def test_node_ports(used: list[tuple[int, str, str]], wanted: list[tuple[int, str, str]],
                    fits: bool) -> None:
    status = run_filter(NodePorts(), make_pod("p", host_ports=wanted), node_with_ports(*used))
    assert status.is_success is fits
    if not fits:
        assert rejected(status, PORTS, Code.UNSCHEDULABLE)


def test_node_ports_pre_filter_skips_pods_without_host_ports() -> None:
    assert NodePorts().pre_filter(CycleState(), PodInfo(make_pod("p"))).code == Code.SKIP
