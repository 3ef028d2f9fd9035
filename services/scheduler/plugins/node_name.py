"""NodeName: a pod that names its node (``spec.nodeName``) fits only that node.

Reason: ``node(s) didn't match the requested node name`` (unresolvable). Most pods name
no node, and then the pre-filter takes this plugin out of the cycle.
"""

from __future__ import annotations

from services.scheduler.framework import SKIP, SUCCESS, CycleState, NodeInfo, PodInfo, Status

NAME = "NodeName"
REASON = "node(s) didn't match the requested node name"

_REJECTED = Status.unresolvable(REASON, plugin=NAME)


def fits_node_name(pod: PodInfo, node_info: NodeInfo) -> bool:
    wanted = pod.pod.spec.node_name
    return not wanted or wanted == node_info.name


class NodeName:
    """PreFilter (skip pods that name no node) and Filter."""

    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
        return SUCCESS if pod.pod.spec.node_name else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        return SUCCESS if fits_node_name(pod, node_info) else _REJECTED
