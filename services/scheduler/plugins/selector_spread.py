"""SelectorSpread: spread the pods of one Service or controller across nodes and zones.

Score only (Kubernetes' SelectorSpread, its default spreading until PodTopologySpread's
system defaults replaced it). The pod's selector is the conjunction of the selectors of
the Services that select it and of its controller (ReplicationController, ReplicaSet,
...), which the daemon supplies through ``selectors_for(pod)`` since finding them needs
informers. A node's raw score is the number of pods on it in the pod's namespace that
the selector matches, terminating pods left out. Normalized: 100 for the node with the
fewest, 0 for the most (``100 * (max - count) / max``); when nodes carry zone labels,
the zone's total counts for 2/3 of the score, so replicas spread across zones first.
A pod no Service or controller selects would get 100 everywhere: its pre-score says
SKIP instead, which ranks the nodes the same for less work.

Counting is the cost: a pod's replicas are usually scheduled one after another with the
same selector, so counts are cached per (namespace, selector) and node, and recounted
only on nodes whose NodeInfo generation moved since.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    SUCCESS,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
)
from skiff.api.labels import Operator, Selector
from skiff.api.v1 import core_pb2

NAME = "SelectorSpread"
#: How much the zone's count weighs against the node's, when nodes have zones.
ZONE_WEIGHTING = 2.0 / 3.0
#: How many (namespace, selector) count caches to keep (least recently used dropped).
CACHED_SELECTORS = 16

SelectorsFor = Callable[[core_pb2.Pod], Iterable[Selector]]


def combined_selector(selectors: Iterable[Selector]) -> Selector:
    """All the requirements of ``selectors`` in one selector (they all match the pod, so
    they cannot conflict). A selector matching nothing (a controller without one) adds
    nothing, as in Kubernetes' ``DefaultSelector``."""
    requirements = [r for s in selectors if not s.matches_nothing for r in s.requirements]
    return Selector(tuple(requirements))


@dataclass(frozen=True, slots=True)
class _Matcher:
    """A selector made fast for counting: pure equality selectors (Services' and
    ReplicationControllers') become a subset test on the label items."""

    namespace: str
    selector: Selector
    pairs: frozenset[tuple[str, str]] | None

    @classmethod
    def of(cls, namespace: str, selector: Selector) -> _Matcher:
        equalities = all(r.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS)
                         or (r.operator is Operator.IN and len(r.values) == 1)
                         for r in selector.requirements)
        pairs = (frozenset((r.key, r.values[0]) for r in selector.requirements)
                 if equalities else None)
        return cls(namespace, selector, pairs)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.pairs is not None:
            return self.pairs <= labels.items()
        return self.selector.matches(labels)


def count_matching_pods(matcher: _Matcher, node_info: NodeInfo) -> int:
    """Pods on the node in the matcher's namespace that it matches, not terminating."""
    namespace = matcher.namespace
    return sum(1 for p in node_info.pods.values()
               if p.namespace == namespace and not p.deleting and matcher.matches(p.labels))


def spread_scores(counts: Sequence[int], zones: Sequence[str]) -> list[int]:
    """Normalize raw counts per node (with each node's zone key, "" for none) into
    0..100 scores: Kubernetes' ``SelectorSpread.NormalizeScore``, the same float
    expressions in the same order (so the same truncations)."""
    top = float(MAX_NODE_SCORE)
    max_node = max(counts, default=0)
    if max_node > 0:
        node_scores = [top * ((max_node - count) / max_node) for count in counts]
    else:
        node_scores = [top] * len(counts)
    by_zone: dict[str, int] = {}
    for count, zone in zip(counts, zones, strict=True):
        if zone:
            by_zone[zone] = by_zone.get(zone, 0) + count
    if not by_zone:
        return [int(score) for score in node_scores]
    max_zone = max(by_zone.values())
    zone_scores = {zone: top * ((max_zone - count) / max_zone) if max_zone > 0 else top
                   for zone, count in by_zone.items()}
    keep = 1.0 - ZONE_WEIGHTING
    return [int(score * keep + ZONE_WEIGHTING * zone_scores[zone]) if zone else int(score)
            for score, zone in zip(node_scores, zones, strict=True)]


class SelectorSpread:
    """PreScore (the pod's combined selector) / Score (matching pods) / Normalize."""

    name = NAME

    def __init__(self, selectors_for: SelectorsFor | None = None) -> None:
        self.selectors_for: SelectorsFor = selectors_for or (lambda pod: ())
        # (namespace, selector) -> node name -> (generation counted at, count)
        self._counts: OrderedDict[tuple[str, Selector], dict[str, tuple[int, int]]] = (
            OrderedDict())

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status:
        selector = combined_selector(self.selectors_for(pod.pod))
        if selector.empty:
            # Nothing to spread from: every node would score 100, which ranks nothing,
            # so the plugin sits the cycle out (PodTopologySpread's Skip without
            # constraints) instead of scoring each node for the same answer.
            state.write(NAME, None)
            return SKIP
        state.write(NAME, (_Matcher.of(pod.namespace, selector),
                           self._count_cache(pod.namespace, selector)))
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> int:
        if NAME not in state:  # scored without pre_score: prepare now
            self.pre_score(state, pod, ())
        prepared = state[NAME]
        if prepared is None:
            return 0  # nothing selects the pod: nothing to spread from
        matcher, cache = prepared
        cached = cache.get(node_info.name)
        if cached is not None and cached[0] == node_info.generation:
            return cached[1]
        count = count_matching_pods(matcher, node_info)
        cache[node_info.name] = (node_info.generation, count)
        return count

    def normalize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> None:
        scores[:] = spread_scores(scores, [n.zone for n in nodes])

    def _count_cache(self, namespace: str, selector: Selector) -> dict[str, tuple[int, int]]:
        key = (namespace, selector)
        cache = self._counts.get(key)
        if cache is None:
            cache = self._counts[key] = {}
            while len(self._counts) > CACHED_SELECTORS:
                self._counts.popitem(last=False)
        else:
            self._counts.move_to_end(key)
        return cache
