"""NodeResourcesBalancedAllocation: favour nodes whose resources would be used evenly
(cpu and memory at similar fractions) with the pod on them.

Score only: ``100 * (1 - std)`` of the used fractions, on actual requests (not the
non-zero defaults) — :func:`~.resource_allocation.balanced_resource_score`. A pod that
requests none of the resources (best effort) skips this plugin, as in Kubernetes since
1.32: every node would look equally balanced to it, and counting it would herd such pods
onto one node.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    SUCCESS,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
)
from services.scheduler.plugins.resource_allocation import (
    DEFAULT_RESOURCES,
    balanced_resource_score,
    node_vectors,
    pod_request_vector,
)

NAME = "NodeResourcesBalancedAllocation"


class BalancedAllocation:
    """PreScore (the pod's requests; SKIP for best effort) and Score."""

    name = NAME

    def __init__(self, resources: Sequence[str] = tuple(n for n, _ in DEFAULT_RESOURCES)) -> None:
        if not resources:
            raise ValueError(f"{NAME}: at least one resource is needed")
        self.resources = tuple(resources)
        self._default = self.resources == ("cpu", "memory")

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status:
        vector = pod_request_vector(pod, self.resources, use_requested=True)
        if not any(vector):
            return SKIP
        state.write(NAME, vector)
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> int:
        vector = state.get(NAME)
        if vector is None:
            vector = pod_request_vector(pod, self.resources, use_requested=True)
        if self._default:
            # cpu and memory: the two-fraction formula without building lists.
            used, allocatable = node_info.requested, node_info.allocatable
            cpu, memory = allocatable.milli_cpu, allocatable.memory
            if cpu and memory:
                cpu_fraction = (used.milli_cpu + vector[0]) / cpu
                memory_fraction = (used.memory + vector[1]) / memory
                # min() and abs() spelled out: this runs for every node of every cycle.
                if cpu_fraction > 1.0:
                    cpu_fraction = 1.0
                if memory_fraction > 1.0:
                    memory_fraction = 1.0
                std = (cpu_fraction - memory_fraction) / 2
                return int((1 - (std if std >= 0 else -std)) * MAX_NODE_SCORE)
        requested, allocatable_v = node_vectors(node_info, self.resources, vector,
                                                use_requested=True)
        return balanced_resource_score(requested, allocatable_v)
