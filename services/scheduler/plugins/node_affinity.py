"""NodeAffinity: ``spec.nodeSelector`` and node affinity, required and preferred.

- Filter: the node's labels must match every ``nodeSelector`` pair, and, when the pod has
  ``requiredDuringSchedulingIgnoredDuringExecution``, at least one of its terms. Reason:
  ``node(s) didn't match Pod's node affinity/selector`` (unresolvable).
- Score: the sum of the weights of the ``preferredDuringScheduling...`` terms the node
  matches, normalized so the best node gets 100.

A term matches when all its ``matchExpressions`` (In, NotIn, Exists, DoesNotExist, Gt,
Lt on node labels) and all its ``matchFields`` (In / NotIn on ``metadata.name``, one
value) hold. A term with nothing in it, or with an invalid requirement, matches no node
(Kubernetes' ``nodeaffinity.NodeSelector``). The pod's terms are compiled once per
cycle by the pre-hooks; a pod with neither selector nor affinity skips this plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.scheduler.framework import (
    SKIP,
    SUCCESS,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    default_normalize_score,
)
from skiff.api.errors import BadRequest
from skiff.api.labels import Operator, Requirement
from skiff.api.v1 import core_pb2

NAME = "NodeAffinity"
REASON = "node(s) didn't match Pod's node affinity/selector"
#: The one field a matchFields requirement may name.
FIELD_NODE_NAME = "metadata.name"

_OPERATORS = {
    "In": Operator.IN, "NotIn": Operator.NOT_IN, "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST, "Gt": Operator.GREATER_THAN,
    "Lt": Operator.LESS_THAN,
}
_REJECTED = Status.unresolvable(REASON, plugin=NAME)
_PRE_SCORE_KEY = NAME + "/preferred"


@dataclass(frozen=True, slots=True)
class Term:
    """A compiled NodeSelectorTerm. ``valid`` False: it had an invalid requirement."""

    labels: tuple[Requirement, ...] = ()
    #: matchFields on metadata.name: (name, must_equal) — In is True, NotIn False.
    names: tuple[tuple[str, bool], ...] = ()
    valid: bool = True

    def matches(self, labels: Mapping[str, str], node_name: str) -> bool:
        if not self.valid or (not self.labels and not self.names):
            return False
        for name, must_equal in self.names:
            if (node_name == name) != must_equal:
                return False
        return all(r.matches(labels) for r in self.labels)


def compile_term(term: core_pb2.NodeSelectorTerm) -> Term:
    """The matcher for one NodeSelectorTerm (invalid parts make it match nothing)."""
    try:
        labels = tuple(Requirement(e.key, _OPERATORS[e.operator], tuple(e.values))
                       for e in term.match_expressions)
    except (KeyError, BadRequest):
        return Term(valid=False)
    names = []
    for e in term.match_fields:
        if e.key != FIELD_NODE_NAME or e.operator not in ("In", "NotIn") or len(e.values) != 1:
            return Term(valid=False)
        names.append((e.values[0], e.operator == "In"))
    return Term(labels, tuple(names))


@dataclass(frozen=True, slots=True)
class RequiredNodeAffinity:
    """What a node must satisfy: every nodeSelector pair, and one of ``terms`` unless
    ``terms`` is None (no required affinity)."""

    node_selector: tuple[tuple[str, str], ...] = ()
    terms: tuple[Term, ...] | None = None

    @property
    def empty(self) -> bool:
        return not self.node_selector and self.terms is None

    def matches(self, node_info: NodeInfo) -> bool:
        labels = node_info.labels
        for key, wanted in self.node_selector:
            if labels.get(key) != wanted:
                return False
        if self.terms is None:
            return True
        return any(t.matches(labels, node_info.name) for t in self.terms)


def required_node_affinity(pod: core_pb2.Pod) -> RequiredNodeAffinity:
    """The pod's nodeSelector and required node affinity, compiled."""
    spec = pod.spec
    terms = None
    # Reading an unset message gives its empty default, so one HasField says it all.
    affinity = spec.affinity.node_affinity
    if affinity.HasField("required_during_scheduling_ignored_during_execution"):
        required = affinity.required_during_scheduling_ignored_during_execution
        terms = tuple(compile_term(t) for t in required.node_selector_terms)
    return RequiredNodeAffinity(tuple(spec.node_selector.items()), terms)


def preferred_terms(pod: core_pb2.Pod) -> tuple[tuple[int, Term], ...]:
    """(weight, term) for each preferred term with a non-zero weight."""
    preferred = pod.spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution
    return tuple((p.weight, compile_term(p.preference)) for p in preferred if p.weight)


def preferred_score(terms: Sequence[tuple[int, Term]], node_info: NodeInfo) -> int:
    """The sum of the weights of the terms the node matches."""
    return sum(weight for weight, term in terms if term.matches(node_info.labels, node_info.name))


class NodeAffinity:
    """PreFilter / Filter on the required part, PreScore / Score on the preferred part."""

    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
        required = required_node_affinity(pod.pod)
        if required.empty:
            return SKIP
        state.write(NAME, required)
        return SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        required = state.get(NAME)
        if required is None:
            required = required_node_affinity(pod.pod)
        return SUCCESS if required.matches(node_info) else _REJECTED

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status:
        terms = preferred_terms(pod.pod)
        if not terms:
            return SKIP
        state.write(_PRE_SCORE_KEY, terms)
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> int:
        terms = state.get(_PRE_SCORE_KEY)
        if terms is None:
            terms = preferred_terms(pod.pod)
        return preferred_score(terms, node_info)

    def normalize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> None:
        default_normalize_score(scores)
