"""NodePorts: a pod's host ports must be free on the node.

A host port is (protocol, host ip, port), an empty ip meaning 0.0.0.0: a port on 0.0.0.0
conflicts with the same protocol and port on any ip, a port on a specific ip with that
ip or 0.0.0.0 (the bookkeeping is :class:`~services.scheduler.framework.HostPorts` on
each NodeInfo). Reason: ``node(s) didn't have free ports for the requested pod ports``
(unschedulable: preempting the holder would free the port). Pods without host ports
skip this plugin.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.scheduler.framework import (
    SKIP,
    SUCCESS,
    CycleState,
    HostPort,
    HostPorts,
    NodeInfo,
    PodInfo,
    Status,
)

NAME = "NodePorts"
REASON = "node(s) didn't have free ports for the requested pod ports"

_REJECTED = Status.unschedulable(REASON, plugin=NAME)


def fits_ports(wanted: Iterable[HostPort], used: HostPorts) -> bool:
    """Whether none of ``wanted`` conflicts with the ports in ``used``."""
    return not any(used.conflicts(port) for port in wanted)


class NodePorts:
    """PreFilter (skip pods without host ports) and Filter."""

    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status:
        return SUCCESS if pod.host_ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        if not node_info.used_ports or fits_ports(pod.host_ports, node_info.used_ports):
            return SUCCESS
        return _REJECTED
