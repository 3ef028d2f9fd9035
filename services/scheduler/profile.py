"""Scheduling profiles: which plugins run, in which order, with which score weights.

Kubernetes' defaults (``getDefaultPlugins``), with Skiff's NodeReady among the filters
and SelectorSpread standing in for PodTopologySpread's default spreading:

====================================  ========  =====
plugin                                 filter    score weight
====================================  ========  =====
NodeUnschedulable                      yes
NodeName                               yes
NodeReady                              yes
TaintToleration                        yes       3
NodeAffinity                           yes       2
NodePorts                              yes
NodeResourcesFit (LeastAllocated)      yes       1
NodeResourcesBalancedAllocation                  1
SelectorSpread                                   2
====================================  ========  =====

A config file is a ``KubeSchedulerConfiguration`` (YAML or JSON) restricted to what
Skiff implements::

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    percentageOfNodesToScore: 0          # 0: adaptive
    podInitialBackoffSeconds: 1
    podMaxBackoffSeconds: 10
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

Plugin sets merge into the defaults as Kubernetes does: ``disabled`` removes (``"*"``:
all defaults of that extension point), ``enabled`` adds at the end or, for a plugin
already there, changes its weight; ``multiPoint`` applies to filter and score both.
Unknown plugins and fields are errors (ValueError naming them), so a typo never
silently means "default".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.scheduler.framework import FilterPlugin, Framework, ScorePlugin
from services.scheduler.plugins import (
    balanced_allocation,
    node_affinity,
    node_name,
    node_ports,
    node_ready,
    node_resources_fit,
    node_unschedulable,
    selector_spread,
    taint_toleration,
)
from services.scheduler.plugins.resource_allocation import DEFAULT_RESOURCES, STRATEGIES

DEFAULT_SCHEDULER_NAME = "default-scheduler"

#: Every filter plugin, in the order they run by default.
DEFAULT_FILTERS: tuple[str, ...] = (
    node_unschedulable.NAME, node_name.NAME, node_ready.NAME, taint_toleration.NAME,
    node_affinity.NAME, node_ports.NAME, node_resources_fit.NAME)
#: Every score plugin with its default weight, in the order they run.
DEFAULT_SCORES: tuple[tuple[str, int], ...] = (
    (taint_toleration.NAME, 3), (node_affinity.NAME, 2), (node_resources_fit.NAME, 1),
    (balanced_allocation.NAME, 1), (selector_spread.NAME, 2))
FILTER_PLUGINS = frozenset(DEFAULT_FILTERS)
SCORE_PLUGINS = frozenset(name for name, _ in DEFAULT_SCORES)
_DEFAULT_WEIGHTS = dict(DEFAULT_SCORES)

# KubeSchedulerConfiguration fields that concern the daemon, not the plugins: accepted
# in a config file and left to whoever reads them.
_IGNORED_TOP_LEVEL = frozenset({
    "apiVersion", "kind", "leaderElection", "clientConnection", "parallelism",
    "healthzBindAddress", "metricsBindAddress", "enableProfiling",
    "enableContentionProfiling", "extenders", "delayCacheUntilActive"})


@dataclass(frozen=True)
class Profile:
    """One scheduler profile: a name pods ask for (``spec.schedulerName``) and its plugins.

    ``percentage_of_nodes_to_score`` None means the configuration's global value.
    ``scoring_strategy`` / ``scoring_resources`` are NodeResourcesFit's scoring;
    ``balanced_resources`` are BalancedAllocation's.
    """

    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    percentage_of_nodes_to_score: int | None = None
    filters: tuple[str, ...] = DEFAULT_FILTERS
    scores: tuple[tuple[str, int], ...] = DEFAULT_SCORES
    scoring_strategy: str = "LeastAllocated"
    scoring_resources: tuple[tuple[str, int], ...] = DEFAULT_RESOURCES
    balanced_resources: tuple[str, ...] = ("cpu", "memory")

    def __post_init__(self) -> None:
        problems = [f"unknown filter plugin {n!r}" for n in self.filters
                    if n not in FILTER_PLUGINS]
        problems += [f"unknown score plugin {n!r}" for n, _ in self.scores
                     if n not in SCORE_PLUGINS]
        problems += [f"score plugin {n!r}: weight must be positive, not {w}"
                     for n, w in self.scores if w <= 0]
        if self.scoring_strategy not in STRATEGIES:
            problems.append(f"unknown scoring strategy {self.scoring_strategy!r} "
                            f"(one of {', '.join(STRATEGIES)})")
        problems += [f"scoring resource {n!r}: weight must be positive"
                     for n, w in self.scoring_resources if w <= 0]
        pct = self.percentage_of_nodes_to_score
        if pct is not None and not 0 <= pct <= 100:
            problems.append(f"percentageOfNodesToScore must be 0..100, not {pct}")
        if problems:
            raise ValueError(f"profile {self.scheduler_name!r}: " + "; ".join(problems))

    def weight(self, plugin: str) -> int | None:
        """The score weight of ``plugin``; None if it does not score in this profile."""
        return dict(self.scores).get(plugin)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """A profile from one entry of a KubeSchedulerConfiguration's ``profiles``."""
        _reject_unknown(data, {"schedulerName", "percentageOfNodesToScore", "plugins",
                               "pluginConfig"}, "profile")
        plugins = data.get("plugins") or {}
        _reject_unknown(plugins, {"multiPoint", "filter", "score"}, "plugins")
        filters = list(DEFAULT_FILTERS)
        scores = dict(DEFAULT_SCORES)
        for point in ("multiPoint", "filter", "score"):
            _merge_plugin_set(point, plugins.get(point) or {}, filters, scores)
        kwargs: dict[str, Any] = {"filters": tuple(filters), "scores": tuple(scores.items())}
        if "schedulerName" in data:
            kwargs["scheduler_name"] = str(data["schedulerName"])
        if data.get("percentageOfNodesToScore") is not None:
            kwargs["percentage_of_nodes_to_score"] = int(data["percentageOfNodesToScore"])
        for entry in data.get("pluginConfig") or ():
            kwargs.update(_plugin_args(entry))
        return cls(**kwargs)

    def build(self, *, selectors_for: selector_spread.SelectorsFor | None = None,
              seed: int | None = 0, percentage_of_nodes_to_score: int = 0) -> Framework:
        """A Framework running this profile's plugins (one instance per plugin, shared
        between its filter and score). ``percentage_of_nodes_to_score`` is the global
        value, used when the profile sets none."""
        factories: dict[str, Callable[[], Any]] = {
            node_unschedulable.NAME: node_unschedulable.NodeUnschedulable,
            node_name.NAME: node_name.NodeName,
            node_ready.NAME: node_ready.NodeReady,
            taint_toleration.NAME: taint_toleration.TaintToleration,
            node_affinity.NAME: node_affinity.NodeAffinity,
            node_ports.NAME: node_ports.NodePorts,
            node_resources_fit.NAME: lambda: node_resources_fit.NodeResourcesFit(
                STRATEGIES[self.scoring_strategy](self.scoring_resources)),
            balanced_allocation.NAME: lambda: balanced_allocation.BalancedAllocation(
                self.balanced_resources),
            selector_spread.NAME: lambda: selector_spread.SelectorSpread(selectors_for),
        }
        instances: dict[str, Any] = {}

        def plugin(name: str) -> Any:
            if name not in instances:
                instances[name] = factories[name]()
            return instances[name]

        filters: list[FilterPlugin] = [plugin(n) for n in self.filters]
        scores: list[tuple[ScorePlugin, int]] = [(plugin(n), w) for n, w in self.scores]
        pct = self.percentage_of_nodes_to_score
        return Framework(filters=filters, scores=scores, seed=seed,
                         percentage_of_nodes_to_score=(
                             pct if pct is not None else percentage_of_nodes_to_score))


def _reject_unknown(data: Mapping[str, Any], known: set[str] | frozenset[str],
                    where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")


def _names(entries: Sequence[Mapping[str, Any]] | None, where: str) -> list[tuple[str, Any]]:
    """(name, weight or None) of each ``{name, weight}`` entry."""
    result = []
    for entry in entries or ():
        _reject_unknown(entry, {"name", "weight"}, where)
        result.append((str(entry["name"]), entry.get("weight")))
    return result


def _merge_plugin_set(point: str, plugin_set: Mapping[str, Any], filters: list[str],
                      scores: dict[str, int]) -> None:
    """Apply one extension point's ``disabled`` then ``enabled`` to the current lists."""
    _reject_unknown(plugin_set, {"enabled", "disabled"}, f"plugins.{point}")
    does_filter = point in ("multiPoint", "filter")
    does_score = point in ("multiPoint", "score")
    for name, _ in _names(plugin_set.get("disabled"), f"plugins.{point}.disabled"):
        if name == "*":
            if does_filter:
                filters.clear()
            if does_score:
                scores.clear()
            continue
        if name not in FILTER_PLUGINS | SCORE_PLUGINS:
            raise ValueError(f"plugins.{point}.disabled: unknown plugin {name!r}")
        if does_filter and name in filters:
            filters.remove(name)
        if does_score:
            scores.pop(name, None)
    for name, weight in _names(plugin_set.get("enabled"), f"plugins.{point}.enabled"):
        if name not in FILTER_PLUGINS | SCORE_PLUGINS:
            raise ValueError(f"plugins.{point}.enabled: unknown plugin {name!r}")
        if not ((does_filter and name in FILTER_PLUGINS)
                or (does_score and name in SCORE_PLUGINS)):
            raise ValueError(f"plugins.{point}.enabled: {name!r} is not a {point} plugin")
        if does_filter and name in FILTER_PLUGINS and name not in filters:
            filters.append(name)
        if does_score and name in SCORE_PLUGINS:
            # No weight given: keep the current one, else Kubernetes' default.
            scores[name] = (int(weight) if weight
                            else scores.get(name) or _DEFAULT_WEIGHTS.get(name, 1))


def _resources(entries: Sequence[Mapping[str, Any]], where: str) -> tuple[tuple[str, int], ...]:
    return tuple((name, int(weight) if weight is not None else 1)
                 for name, weight in _names(entries, where))


def _plugin_args(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Profile fields from one ``pluginConfig`` entry."""
    _reject_unknown(entry, {"name", "args"}, "pluginConfig")
    name, args = entry.get("name"), entry.get("args") or {}
    if name == node_resources_fit.NAME:
        _reject_unknown(args, {"scoringStrategy"}, f"pluginConfig[{name}].args")
        strategy = args.get("scoringStrategy") or {}
        _reject_unknown(strategy, {"type", "resources"}, f"pluginConfig[{name}].scoringStrategy")
        fields: dict[str, Any] = {}
        if "type" in strategy:
            fields["scoring_strategy"] = str(strategy["type"])
        if strategy.get("resources"):
            fields["scoring_resources"] = _resources(strategy["resources"],
                                                     f"pluginConfig[{name}].resources")
        return fields
    if name == balanced_allocation.NAME:
        _reject_unknown(args, {"resources"}, f"pluginConfig[{name}].args")
        resources = _resources(args.get("resources") or (), f"pluginConfig[{name}].resources")
        return {"balanced_resources": tuple(n for n, _ in resources)} if resources else {}
    raise ValueError(f"pluginConfig: no arguments for plugin {name!r}")


@dataclass(frozen=True)
class SchedulerConfiguration:
    """The whole configuration: profiles and the queue's timings (seconds)."""

    profiles: tuple[Profile, ...] = field(default_factory=lambda: (Profile(),))
    percentage_of_nodes_to_score: int = 0
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    #: How long a pod stays unschedulable before it is retried without any event.
    pod_max_in_unschedulable_pods_seconds: float = 60.0

    def __post_init__(self) -> None:
        names = [p.scheduler_name for p in self.profiles]
        problems = []
        if not names:
            problems.append("at least one profile is needed")
        if len(set(names)) != len(names):
            problems.append(f"duplicate schedulerName in {names}")
        if not 0 <= self.percentage_of_nodes_to_score <= 100:
            problems.append("percentageOfNodesToScore must be 0..100")
        if self.pod_initial_backoff_seconds <= 0:
            problems.append("podInitialBackoffSeconds must be positive")
        if self.pod_max_backoff_seconds < self.pod_initial_backoff_seconds:
            problems.append("podMaxBackoffSeconds must be at least podInitialBackoffSeconds")
        if problems:
            raise ValueError("; ".join(problems))

    def profile(self, scheduler_name: str) -> Profile | None:
        """The profile pods naming ``scheduler_name`` use; None: not this scheduler's."""
        return next((p for p in self.profiles if p.scheduler_name == scheduler_name), None)

    def build_frameworks(self, *, selectors_for: selector_spread.SelectorsFor | None = None,
                         seed: int | None = 0) -> dict[str, Framework]:
        """A Framework per profile, by scheduler name."""
        return {p.scheduler_name: p.build(
                    selectors_for=selectors_for, seed=seed,
                    percentage_of_nodes_to_score=self.percentage_of_nodes_to_score)
                for p in self.profiles}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SchedulerConfiguration:
        """From a KubeSchedulerConfiguration (see the module docstring); None or {}: the
        defaults."""
        data = data or {}
        _reject_unknown(data, _IGNORED_TOP_LEVEL | {
            "profiles", "percentageOfNodesToScore", "podInitialBackoffSeconds",
            "podMaxBackoffSeconds", "podMaxInUnschedulablePodsSeconds"}, "configuration")
        kwargs: dict[str, Any] = {}
        if data.get("profiles"):
            kwargs["profiles"] = tuple(Profile.from_dict(p) for p in data["profiles"])
        for key, attr, kind in (
                ("percentageOfNodesToScore", "percentage_of_nodes_to_score", int),
                ("podInitialBackoffSeconds", "pod_initial_backoff_seconds", float),
                ("podMaxBackoffSeconds", "pod_max_backoff_seconds", float),
                ("podMaxInUnschedulablePodsSeconds", "pod_max_in_unschedulable_pods_seconds",
                 float)):
            if data.get(key) is not None:
                kwargs[attr] = kind(data[key])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, text: str) -> SchedulerConfiguration:
        """From YAML (or JSON, which is YAML) text."""
        return cls.from_dict(yaml.safe_load(text))

    @classmethod
    def load(cls, path: str | Path) -> SchedulerConfiguration:
        """From a config file."""
        return cls.from_yaml(Path(path).read_text())
