"""NodeUnschedulable: no new pods on a cordoned node (``spec.unschedulable``).

A pod that tolerates the taint ``node.kubernetes.io/unschedulable:NoSchedule`` (a
DaemonSet's, say) goes there anyway, as in Kubernetes. Reason: ``node(s) were
unschedulable`` (unresolvable: preemption does not uncordon a node).
"""

from __future__ import annotations

from services.scheduler.framework import SUCCESS, CycleState, NodeInfo, PodInfo, Status, Taint
from services.scheduler.plugins.taint_toleration import NO_SCHEDULE, tolerations_tolerate_taint

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
TAINT_KEY = "node.kubernetes.io/unschedulable"
#: Tolerating this taint means tolerating ``spec.unschedulable``.
UNSCHEDULABLE_TAINT = Taint(TAINT_KEY, "", NO_SCHEDULE)

_REJECTED = Status.unresolvable(REASON, plugin=NAME)


def fits_unschedulable(pod: PodInfo, node_info: NodeInfo) -> bool:
    """Whether the pod may go to the node as far as cordoning is concerned."""
    return (not node_info.unschedulable
            or tolerations_tolerate_taint(pod.tolerations, UNSCHEDULABLE_TAINT))


class NodeUnschedulable:
    """Filter: cordoned nodes are out unless tolerated."""

    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        if not node_info.unschedulable:
            return SUCCESS  # the common case, without a call
        return SUCCESS if fits_unschedulable(pod, node_info) else _REJECTED
