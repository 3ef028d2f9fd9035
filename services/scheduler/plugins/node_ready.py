"""NodeReady: pods go only to nodes that are Ready (Skiff's; see below).

A node fits when its ``Ready`` condition is ``True`` (no condition at all means the
kubelet never reported: not ready) and it has no ``node.kubernetes.io/not-ready`` or
``node.kubernetes.io/unreachable`` taint with effect NoSchedule or NoExecute that the pod
does not tolerate. A pod that tolerates ``node.kubernetes.io/not-ready:NoSchedule`` (as a
DaemonSet's pods do) may go to a node that is not Ready. Reason: ``node(s) were not
ready`` (unresolvable), the old CheckNodeCondition predicate's words.

Kubernetes itself has no such filter since 1.17: its node lifecycle controller taints
unready nodes and TaintToleration rejects them. Checking the condition too keeps a pod
off a node between its going unready and its being tainted. This filter runs before
TaintToleration, so such a node reads "not ready" rather than "untolerated taint".
"""

from __future__ import annotations

from services.scheduler.framework import SUCCESS, CycleState, NodeInfo, PodInfo, Status, Taint
from services.scheduler.plugins.taint_toleration import (
    DO_NOT_SCHEDULE,
    NO_SCHEDULE,
    tolerations_tolerate_taint,
)

NAME = "NodeReady"
REASON = "node(s) were not ready"
NOT_READY_TAINT_KEY = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT_KEY = "node.kubernetes.io/unreachable"
_NOT_READY_KEYS = frozenset({NOT_READY_TAINT_KEY, UNREACHABLE_TAINT_KEY})
#: Tolerating this taint means tolerating a Ready condition that is not True.
NOT_READY_TAINT = Taint(NOT_READY_TAINT_KEY, "", NO_SCHEDULE)

_REJECTED = Status.unresolvable(REASON, plugin=NAME)


def fits_ready(pod: PodInfo, node_info: NodeInfo) -> bool:
    """Whether the node is ready enough for the pod (see the module docstring)."""
    if not node_info.ready and not tolerations_tolerate_taint(pod.tolerations, NOT_READY_TAINT):
        return False
    return not any(taint.key in _NOT_READY_KEYS and taint.effect in DO_NOT_SCHEDULE
                   and not tolerations_tolerate_taint(pod.tolerations, taint)
                   for taint in node_info.taints)


class NodeReady:
    """Filter: nodes not Ready (or tainted so) are out unless tolerated."""

    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        if node_info.ready and not node_info.taints:
            return SUCCESS  # the common case, without a generator
        return SUCCESS if fits_ready(pod, node_info) else _REJECTED
