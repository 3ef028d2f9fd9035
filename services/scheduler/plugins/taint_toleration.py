"""TaintToleration: a pod goes only where it tolerates the taints, and prefers nodes
with fewer PreferNoSchedule taints it does not tolerate.

- Filter: every NoSchedule and NoExecute taint must be tolerated; the first one that is
  not is the reason, ``node(s) had untolerated taint {key: value}`` (unresolvable:
  preemption does not remove taints).
- Score: the number of untolerated PreferNoSchedule taints, normalized reversed (none:
  100, the most: 0). When no node scored has a PreferNoSchedule taint every node would
  get 100, so the pre-score says SKIP and the nodes are not scored one by one.

The toleration rules (:func:`tolerates`, :func:`tolerations_tolerate_taint`) are shared
with NodeUnschedulable and NodeReady, which ask "does the pod tolerate this taint?" too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.scheduler.framework import (
    SKIP,
    SUCCESS,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    Taint,
    Toleration,
    default_normalize_score,
)

NAME = "TaintToleration"

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"
#: The effects a filter enforces: scheduling onto them is refused.
DO_NOT_SCHEDULE = frozenset({NO_SCHEDULE, NO_EXECUTE})


def untolerated_taint_reason(taint: Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: effects match (empty tolerates all),
    keys match (empty key, with Exists, tolerates every key), and the value is equal
    (operator Equal or empty) or anything (Exists)."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return toleration.operator == "Exists"


def tolerations_tolerate_taint(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def find_untolerated_taint(taints: Iterable[Taint], tolerations: Sequence[Toleration],
                           effects: frozenset[str] = DO_NOT_SCHEDULE) -> Taint | None:
    """The first taint with one of ``effects`` that no toleration tolerates, or None."""
    for taint in taints:
        if taint.effect in effects and not tolerations_tolerate_taint(tolerations, taint):
            return taint
    return None


def count_intolerable_prefer_no_schedule(taints: Iterable[Taint],
                                         tolerations: Sequence[Toleration]) -> int:
    """How many PreferNoSchedule taints ``tolerations`` leave untolerated."""
    return sum(1 for taint in taints if taint.effect == PREFER_NO_SCHEDULE
               and not tolerations_tolerate_taint(tolerations, taint))


class TaintToleration:
    """Filter and Score on taints; see the module docstring."""

    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        if not node_info.taints:
            return SUCCESS
        taint = find_untolerated_taint(node_info.taints, pod.tolerations)
        if taint is None:
            return SUCCESS
        return Status.unresolvable(untolerated_taint_reason(taint), plugin=NAME)

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status:
        if not any(taint.effect == PREFER_NO_SCHEDULE
                   for node_info in nodes if node_info.taints for taint in node_info.taints):
            # No PreferNoSchedule taint on any node: all would score 100, which ranks
            # nothing; skip scoring them one by one (most clusters, most cycles).
            return SKIP
        # Only tolerations that can match a PreferNoSchedule taint matter for the score.
        state.write(NAME, tuple(t for t in pod.tolerations
                                if t.effect in ("", PREFER_NO_SCHEDULE)))
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> int:
        if not node_info.taints:
            return 0
        tolerations = state.get(NAME)
        if tolerations is None:
            tolerations = pod.tolerations
        return count_intolerable_prefer_no_schedule(node_info.taints, tolerations)

    def normalize(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> None:
        default_normalize_score(scores, reverse=True)
