"""NodeResourcesFit: the pod's requests must fit in what the node has left, and nodes are
scored by how full they would be (a scoring strategy, LeastAllocated by default).

- Filter: against the node's allocatable minus what its pods request — one more pod than
  allocatable ``pods`` is ``Too many pods``; a cpu, memory or other request larger than
  what is left is ``Insufficient <resource>`` (``Insufficient cpu``). Every shortfall is
  a reason of its own, so ``0/5 nodes are available`` counts them all (unschedulable:
  preemption could free the room). A pod requesting nothing only needs a pod slot.
- Score: the strategy from :mod:`.resource_allocation` (LeastAllocated or
  MostAllocated) on the pod's non-zero requests, computed once per cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.scheduler.framework import SUCCESS, CycleState, NodeInfo, PodInfo, Status
from services.scheduler.plugins.resource_allocation import LeastAllocated, MostAllocated

NAME = "NodeResourcesFit"
REASON_PODS = "Too many pods"
REASON_CPU = "Insufficient cpu"
REASON_MEMORY = "Insufficient memory"


def insufficient_reason(resource: str) -> str:
    return f"Insufficient {resource}"


def insufficient_resources(pod: PodInfo, node_info: NodeInfo) -> list[str]:
    """Why the pod does not fit the node's free resources; [] if it does
    (Kubernetes' ``fitsRequest``, in its order: pods, cpu, memory, the rest by name)."""
    reasons = []
    allocatable, used, wanted = node_info.allocatable, node_info.requested, pod.requests
    if len(node_info.pods) + 1 > allocatable.pods:
        reasons.append(REASON_PODS)
    if wanted.milli_cpu == 0 and wanted.memory == 0 and not wanted.scalar:
        return reasons
    if wanted.milli_cpu > 0 and wanted.milli_cpu > allocatable.milli_cpu - used.milli_cpu:
        reasons.append(REASON_CPU)
    if wanted.memory > 0 and wanted.memory > allocatable.memory - used.memory:
        reasons.append(REASON_MEMORY)
    for name in sorted(wanted.scalar):
        if wanted.scalar[name] > allocatable.scalar.get(name, 0) - used.scalar.get(name, 0):
            reasons.append(insufficient_reason(name))
    return reasons


class NodeResourcesFit:
    """Filter on free resources; PreScore / Score with ``strategy``."""

    name = NAME

    def __init__(self, strategy: LeastAllocated | MostAllocated | None = None) -> None:
        self.strategy = strategy if strategy is not None else LeastAllocated()
        self._strategy_score = self.strategy.score  # one lookup, not one per node
        # Few distinct shortfalls exist: build each rejection once.
        self._rejections: dict[tuple[str, ...], Status] = {}

    def filter(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> Status:
        allocatable, used, wanted = node_info.allocatable, node_info.requested, pod.requests
        # Fast path, conservative: anything it does not clear gets the exact check.
        if (len(node_info.pods) < allocatable.pods
                and wanted.milli_cpu <= allocatable.milli_cpu - used.milli_cpu
                and wanted.memory <= allocatable.memory - used.memory and not wanted.scalar):
            return SUCCESS
        reasons = tuple(insufficient_resources(pod, node_info))
        if not reasons:
            return SUCCESS
        status = self._rejections.get(reasons)
        if status is None:
            status = self._rejections[reasons] = Status.unschedulable(*reasons, plugin=NAME)
        return status

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status:
        state.write(NAME, self.strategy.pod_vector(pod))
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, node_info: NodeInfo) -> int:
        vector = state.get(NAME)
        if vector is None:
            vector = self.strategy.pod_vector(pod)
        return self._strategy_score(vector, node_info)
