"""SelectorSpread: fewer pods of the same Service / controller on a node (and in its
zone) scores higher; the selectors come from the daemon's ``selectors_for``."""

from __future__ import annotations

from collections.abc import Sequence

from test_scheduler_builders import make_node, make_pod, node_info, run_scores

from services.scheduler.framework import CycleState, NodeInfo, PodInfo
from services.scheduler.plugins.selector_spread import (
    SelectorSpread,
    combined_selector,
    spread_scores,
)
from skiff.api.labels import (
    Operator,
    Requirement,
    Selector,
    nothing,
    parse_selector,
    selector_from_map,
)
from skiff.api.v1 import core_pb2

WEB = selector_from_map({"app": "web"})


def spread(*selectors: Selector) -> SelectorSpread:
    return SelectorSpread(lambda pod: list(selectors))


def web(name: str, **kwargs: object) -> core_pb2.Pod:
    return make_pod(name, labels={"app": "web"}, **kwargs)  # type: ignore[arg-type]


def zoned(name: str, zone: str | None, pods: Sequence[core_pb2.Pod]) -> NodeInfo:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return node_info(make_node(name, labels=labels), pods)


def test_pod_selected_by_nothing_is_skipped() -> None:
    # It would score 100 everywhere, which ranks nothing: the pre-score skips the plugin.
    nodes = [node_info(make_node("a"), [web("w1")]), node_info(make_node("b"))]
    assert run_scores(SelectorSpread(), web("new"), nodes) is None


def test_fewer_matching_pods_score_higher() -> None:
    nodes = [node_info(make_node("a"), [web("w1"), web("w2")]),
             node_info(make_node("b"), [web("w3")]),
             node_info(make_node("c"), [make_pod("other", labels={"app": "db"})])]
    assert run_scores(spread(WEB), web("new"), nodes) == [0, 50, 100]


def test_other_namespaces_and_terminating_pods_do_not_count() -> None:
    terminating = web("w2")
    terminating.metadata.deletion_timestamp.seconds = 1
    nodes = [node_info(make_node("a"), [web("w1", namespace="elsewhere"), terminating]),
             node_info(make_node("b"), [web("w3")])]
    assert run_scores(spread(WEB), web("new"), nodes) == [100, 0]


def test_zones_weigh_two_thirds() -> None:
    nodes = [zoned("a1", "a", [web("w1"), web("w2")]),
             zoned("a2", "a", [web("w3")]),
             zoned("b1", "b", []),
             zoned("none", None, [web("w4")])]
    # Node scores 0, 50, 100, 50; zone a holds 3 (score 0), zone b 0 (score 100); the node
    # without a zone keeps its node score.
    assert run_scores(spread(WEB), web("new"), nodes) == [0, 16, 100, 50]


def test_spread_scores_without_any_match() -> None:
    assert spread_scores([0, 0], ["", ""]) == [100, 100]
    assert spread_scores([0, 0], ["z1", "z2"]) == [100, 100]
    assert spread_scores([], []) == []


def test_selectors_are_anded() -> None:
    service = selector_from_map({"app": "web"})
    controller = selector_from_map({"app": "web", "tier": "frontend"})
    nodes = [node_info(make_node("a"), [web("only-service")]),
             node_info(make_node("b"), [make_pod("both", labels={"app": "web",
                                                                 "tier": "frontend"})])]
    new = make_pod("new", labels={"app": "web", "tier": "frontend"})
    assert run_scores(spread(service, controller), new, nodes) == [100, 0]


def test_combined_selector_ignores_selectors_matching_nothing() -> None:
    assert combined_selector([nothing(), WEB]) == WEB
    assert combined_selector([]).empty


def test_set_based_selectors_count_too() -> None:
    selector = parse_selector("app in (web, api),tier!=db")
    nodes = [node_info(make_node("a"), [make_pod("x", labels={"app": "api"})]),
             node_info(make_node("b"), [make_pod("y", labels={"app": "api", "tier": "db"})])]
    assert run_scores(spread(selector), web("new"), nodes) == [0, 100]


def test_single_value_in_is_an_equality() -> None:
    selector = Selector((Requirement("app", Operator.IN, ("web",)),))
    nodes = [node_info(make_node("a"), [web("w")]), node_info(make_node("b"))]
    assert run_scores(spread(selector), web("new"), nodes) == [0, 100]


def test_counts_are_cached_until_the_node_changes() -> None:
    plugin = spread(WEB)
    a = node_info(make_node("a"), [web("w1")])
    b = node_info(make_node("b"))
    pod = PodInfo(web("new"))

    def raw() -> list[int]:
        state = CycleState()
        plugin.pre_score(state, pod, [a, b])
        return [plugin.score(state, pod, n) for n in (a, b)]

    assert raw() == [1, 0]
    b.add_pod(PodInfo(web("w2")))
    b.add_pod(PodInfo(web("w3")))
    assert raw() == [1, 2]  # b's generation moved: recounted
    a.pods.clear()  # a change behind the NodeInfo's back is not seen: the cache holds
    assert raw() == [1, 2]


def test_selectors_for_receives_the_pod() -> None:
    seen: list[str] = []

    def selectors_for(pod: core_pb2.Pod) -> list[Selector]:
        seen.append(pod.metadata.name)
        return [WEB]

    run_scores(SelectorSpread(selectors_for), web("new"), [node_info(make_node("a"))])
    assert seen == ["new"]
