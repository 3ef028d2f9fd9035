"""How full a node would be with the pod on it, scored: the scoring strategies of
NodeResourcesFit (LeastAllocated, MostAllocated) and the scorer of
NodeResourcesBalancedAllocation, as Kubernetes computes them
(``noderesources/resource_allocation.go``, ``least_allocated.go``, ``most_allocated.go``,
``balanced_allocation.go``).

For each configured resource (by default cpu and memory, weight 1 each) a node has an
allocatable amount and a requested amount: what its pods request plus what this pod
does. LeastAllocated and MostAllocated count pods' *non-zero* requests (a container
without a cpu request counts 100m, without a memory request 200Mi), so best-effort pods
still spread; BalancedAllocation counts actual requests. A resource the node has none of
is left out; an extended resource the pod does not request is left out too.

Pure functions over integers, then two small strategy classes; the plugins live in
:mod:`.node_resources_fit` and :mod:`.balanced_allocation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.scheduler.framework import MAX_NODE_SCORE, NodeInfo, PodInfo

#: (resource name, weight) scored by default.
DEFAULT_RESOURCES: tuple[tuple[str, int], ...] = (("cpu", 1), ("memory", 1))
#: Resources that are neither native nor counted with non-zero defaults.
_NATIVE = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})


def least_requested_score(requested: int, capacity: int) -> int:
    """0..100, higher the more of ``capacity`` stays free."""
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_requested_score(requested: int, capacity: int) -> int:
    """0..100, higher the more of ``capacity`` is used (capped: non-zero defaults can
    push requests past capacity)."""
    if capacity == 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


def balanced_resource_score(requested: Sequence[int], allocatable: Sequence[int]) -> int:
    """100 * (1 - standard deviation of the used fractions): 100 when every resource is
    equally used. Two resources: half their difference (Kubernetes' shortcut)."""
    fractions = [min(req / alloc, 1.0)
                 for req, alloc in zip(requested, allocatable, strict=True) if alloc]
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) * (f - mean) for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)


def pod_request_vector(pod: PodInfo, names: Sequence[str], *, use_requested: bool,
                       ) -> tuple[int, ...]:
    """The pod's request of each resource in ``names``: actual requests, or (when not
    ``use_requested``) non-zero ones for cpu and memory."""
    requests = pod.requests
    non_zero = pod.non_zero_requests
    vector = []
    for name in names:
        if not use_requested and name in ("cpu", "memory"):
            vector.append(non_zero.get(name))
        else:
            vector.append(requests.get(name))
    return tuple(vector)


def node_vectors(node_info: NodeInfo, names: Sequence[str], pod_vector: Sequence[int], *,
                 use_requested: bool) -> tuple[list[int], list[int]]:
    """(requested with the pod, allocatable) on the node for each resource in ``names``;
    (0, 0) for an extended resource the pod does not request (which leaves it out)."""
    node_requested = node_info.requested if use_requested else node_info.non_zero_requested
    allocatable = node_info.allocatable
    requested_out, allocatable_out = [], []
    for name, pod_request in zip(names, pod_vector, strict=True):
        if name not in _NATIVE and pod_request == 0:
            requested_out.append(0)
            allocatable_out.append(0)
            continue
        # cpu and memory follow use_requested; other resources are always actual.
        source = node_requested if name in ("cpu", "memory") else node_info.requested
        requested_out.append(source.get(name) + pod_request)
        allocatable_out.append(allocatable.get(name))
    return requested_out, allocatable_out


def weighted_score(requested: Sequence[int], allocatable: Sequence[int],
                   weights: Sequence[int], per_resource) -> int:  # type: ignore[no-untyped-def]
    """The weighted mean of ``per_resource(requested, allocatable)`` over the resources
    the node has (integer division, as Kubernetes)."""
    total = weight_sum = 0
    for req, alloc, weight in zip(requested, allocatable, weights, strict=True):
        if alloc == 0:
            continue
        total += per_resource(req, alloc) * weight
        weight_sum += weight
    return total // weight_sum if weight_sum else 0


class _AllocatedStrategy:
    """A NodeResourcesFit scoring strategy: ``score(pod_vector, node_info)``."""

    type = ""
    _per_resource = staticmethod(least_requested_score)

    def __init__(self, resources: Sequence[tuple[str, int]] = DEFAULT_RESOURCES) -> None:
        if not resources:
            raise ValueError(f"{self.type}: at least one resource is needed")
        self.resources = tuple(resources)
        self.names = tuple(name for name, _ in self.resources)
        self.weights = tuple(weight for _, weight in self.resources)
        # cpu and memory weighing 1 each is nearly every configuration: one fast path.
        self._default = self.resources == DEFAULT_RESOURCES

    def pod_vector(self, pod: PodInfo) -> tuple[int, ...]:
        """The pod's side of the computation, once per cycle."""
        return pod_request_vector(pod, self.names, use_requested=False)

    def score(self, pod_vector: Sequence[int], node_info: NodeInfo) -> int:
        if self._default:
            used, allocatable = node_info.non_zero_requested, node_info.allocatable
            cpu, memory = allocatable.milli_cpu, allocatable.memory
            if cpu and memory:  # both weigh 1: the mean of the two, without lists
                return (self._per_resource(used.milli_cpu + pod_vector[0], cpu)
                        + self._per_resource(used.memory + pod_vector[1], memory)) // 2
        requested, allocatable_v = node_vectors(node_info, self.names, pod_vector,
                                                use_requested=False)
        return weighted_score(requested, allocatable_v, self.weights, self._per_resource)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.resources)})"


class LeastAllocated(_AllocatedStrategy):
    """Favour nodes with more free resources (spreads load): Kubernetes' default."""

    type = "LeastAllocated"
    _per_resource = staticmethod(least_requested_score)

    def score(self, pod_vector: Sequence[int], node_info: NodeInfo) -> int:
        allocatable = node_info.allocatable
        cpu, memory = allocatable.milli_cpu, allocatable.memory
        if not (self._default and cpu and memory):
            return super().score(pod_vector, node_info)
        # The default on every node of every cycle: least_requested_score twice, inlined.
        used = node_info.non_zero_requested
        cpu_used = used.milli_cpu + pod_vector[0]
        memory_used = used.memory + pod_vector[1]
        cpu_score = (cpu - cpu_used) * MAX_NODE_SCORE // cpu if cpu_used <= cpu else 0
        memory_score = ((memory - memory_used) * MAX_NODE_SCORE // memory
                        if memory_used <= memory else 0)
        return (cpu_score + memory_score) // 2


class MostAllocated(_AllocatedStrategy):
    """Favour nodes already more used (bin packing)."""

    type = "MostAllocated"
    _per_resource = staticmethod(most_requested_score)


STRATEGIES: dict[str, type[_AllocatedStrategy]] = {
    LeastAllocated.type: LeastAllocated, MostAllocated.type: MostAllocated}
