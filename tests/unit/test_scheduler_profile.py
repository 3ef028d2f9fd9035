"""Profiles: Kubernetes' default plugins and weights, the KubeSchedulerConfiguration
subset a config file may use, and the pure pieces working together (cache snapshot ->
framework -> assume)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_scheduler_builders import make_node, make_pod

from services.scheduler.cache import SchedulerCache
from services.scheduler.framework import FitError, PodInfo
from services.scheduler.plugins.node_resources_fit import NodeResourcesFit
from services.scheduler.plugins.resource_allocation import MostAllocated
from services.scheduler.profile import (
    DEFAULT_FILTERS,
    DEFAULT_SCORES,
    Profile,
    SchedulerConfiguration,
)
from skiff.api.labels import selector_from_map


def test_default_weights_are_kubernetes() -> None:
    profile = Profile()
    assert profile.scheduler_name == "default-scheduler"
    assert dict(profile.scores) == {
        "TaintToleration": 3, "NodeAffinity": 2, "NodeResourcesFit": 1,
        "NodeResourcesBalancedAllocation": 1, "SelectorSpread": 2}
    assert profile.filters == ("NodeUnschedulable", "NodeName", "NodeReady", "TaintToleration",
                               "NodeAffinity", "NodePorts", "NodeResourcesFit")
    assert profile.weight("NodePorts") is None and profile.weight("TaintToleration") == 3


def test_build_shares_one_instance_per_plugin() -> None:
    framework = Profile().build()
    fit = next(p for p in framework.filters if p.name == "NodeResourcesFit")
    assert any(p is fit for p, _ in framework.scores)
    assert [p.name for p in framework.filters] == list(DEFAULT_FILTERS)
    assert [(p.name, w) for p, w in framework.scores] == list(DEFAULT_SCORES)


def test_empty_configuration_is_the_default() -> None:
    assert SchedulerConfiguration.from_dict(None) == SchedulerConfiguration()
    assert SchedulerConfiguration.from_yaml("") == SchedulerConfiguration()


def test_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text("""
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection: {leaderElect: true}
percentageOfNodesToScore: 30
podInitialBackoffSeconds: 2
podMaxBackoffSeconds: 20
profiles:
- schedulerName: default-scheduler
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
      enabled: [{name: TaintToleration, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory, weight: 1}]
- schedulerName: bin-packer
  percentageOfNodesToScore: 100
  plugins:
    multiPoint:
      disabled: [{name: NodeReady}]
""")
    config = SchedulerConfiguration.load(path)
    assert (config.percentage_of_nodes_to_score, config.pod_initial_backoff_seconds,
            config.pod_max_backoff_seconds) == (30, 2.0, 20.0)
    default = config.profile("default-scheduler")
    assert default is not None
    assert dict(default.scores) == {"TaintToleration": 5, "NodeAffinity": 2,
                                    "NodeResourcesFit": 1, "SelectorSpread": 2}
    assert default.scoring_strategy == "MostAllocated"
    assert default.scoring_resources == (("cpu", 2), ("memory", 1))
    packer = config.profile("bin-packer")
    assert packer is not None and "NodeReady" not in packer.filters
    assert config.profile("someone-else") is None
    frameworks = config.build_frameworks()
    assert frameworks["default-scheduler"].percentage_of_nodes_to_score == 30
    assert frameworks["bin-packer"].percentage_of_nodes_to_score == 100
    fit = next(p for p in frameworks["default-scheduler"].filters
               if isinstance(p, NodeResourcesFit))
    assert isinstance(fit.strategy, MostAllocated)


def test_disable_all_then_enable_some() -> None:
    profile = Profile.from_dict({"plugins": {
        "score": {"disabled": [{"name": "*"}], "enabled": [{"name": "NodeAffinity"}]},
        "filter": {"disabled": [{"name": "*"}],
                   "enabled": [{"name": "NodeResourcesFit"}, {"name": "NodeName"}]}}})
    assert profile.scores == (("NodeAffinity", 2),)  # Kubernetes' default weight
    assert profile.filters == ("NodeResourcesFit", "NodeName")


def test_multi_point_enable_sets_a_weight_where_it_scores() -> None:
    profile = Profile.from_dict({"plugins": {"multiPoint": {
        "enabled": [{"name": "NodeAffinity", "weight": 7}, {"name": "NodePorts"}]}}})
    assert profile.weight("NodeAffinity") == 7
    assert profile.filters.count("NodePorts") == 1


def test_balanced_allocation_resources() -> None:
    profile = Profile.from_dict({"pluginConfig": [{
        "name": "NodeResourcesBalancedAllocation",
        "args": {"resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1},
                               {"name": "nvidia.com/gpu", "weight": 1}]}}]})
    assert profile.balanced_resources == ("cpu", "memory", "nvidia.com/gpu")


@pytest.mark.parametrize(("data", "message"), [
    ({"plugins": {"score": {"enabled": [{"name": "ImageLocality"}]}}}, "unknown plugin"),
    ({"plugins": {"filter": {"enabled": [{"name": "SelectorSpread"}]}}}, "not a filter"),
    ({"plugins": {"score": {"disabled": [{"name": "Nope"}]}}}, "unknown plugin"),
    ({"plugins": {"preFilter": {}}}, "unknown field"),
    ({"schedulerName": "x", "extra": 1}, "unknown field"),
    ({"percentageOfNodesToScore": 101}, "0..100"),
    ({"plugins": {"score": {"enabled": [{"name": "NodeAffinity", "weight": -1}]}}},
     "positive"),
    ({"pluginConfig": [{"name": "NodeResourcesFit",
                        "args": {"scoringStrategy": {"type": "RequestedToCapacityRatio"}}}]},
     "unknown scoring strategy"),
    ({"pluginConfig": [{"name": "NodePorts", "args": {}}]}, "no arguments"),
])
def test_invalid_profiles(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Profile.from_dict(data)


@pytest.mark.parametrize(("data", "message"), [
    ({"profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]}, "duplicate"),
    ({"podInitialBackoffSeconds": 5, "podMaxBackoffSeconds": 1}, "podMaxBackoffSeconds"),
    ({"parallelism": 16, "bogus": True}, "bogus"),
])
def test_invalid_configurations(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulerConfiguration.from_dict(data)


# ---- the pure pieces together


def test_cache_framework_and_assume_fill_nodes_evenly() -> None:
    cache = SchedulerCache()
    for name in ("n1", "n2", "n3"):
        cache.add_node(make_node(name, cpu="2", memory="4Gi"))
    web = selector_from_map({"app": "web"})
    framework = Profile().build(selectors_for=lambda pod: [web])
    placed = []
    for i in range(6):
        pod = PodInfo(make_pod(f"web-{i}", cpu="1", memory="1Gi", labels={"app": "web"}))
        result = framework.schedule(pod, cache.snapshot().node_infos)
        cache.assume(pod, result.node_name)
        placed.append(result.node_name)
    assert sorted(placed) == ["n1", "n1", "n2", "n2", "n3", "n3"]  # spread, then full
    with pytest.raises(FitError) as caught:
        framework.schedule(PodInfo(make_pod("web-6", cpu="1")), cache.snapshot().node_infos)
    assert str(caught.value) == "0/3 nodes are available: 3 Insufficient cpu."


def test_default_profile_mixed_failures() -> None:
    cache = SchedulerCache()
    cache.add_node(make_node("cordoned", unschedulable=True))
    cache.add_node(make_node("down", ready=False))
    cache.add_node(make_node("gpu", taints=[("dedicated", "gpu", "NoSchedule")]))
    cache.add_node(make_node("small", cpu="1", labels={"disk": "hdd"}))
    cache.add_node(make_node("elsewhere", labels={"disk": "ssd"}))
    pod = PodInfo(make_pod("p", cpu="2", node_selector={"disk": "hdd"}))
    with pytest.raises(FitError) as caught:
        Profile().build().schedule(pod, cache.snapshot().node_infos)
    # The first failing filter of each node is its reason.
    assert str(caught.value) == (
        "0/5 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node "
        "affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}, "
        "1 node(s) were not ready, 1 node(s) were unschedulable.")
