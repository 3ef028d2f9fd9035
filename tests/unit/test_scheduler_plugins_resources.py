"""NodeResourcesFit (filter and its LeastAllocated / MostAllocated scoring) and
NodeResourcesBalancedAllocation, with Kubernetes' formulas and test shapes: cpu
"4" is 4000 millicores; memory given in plain bytes keeps the arithmetic readable."""

from __future__ import annotations

import pytest
from test_scheduler_builders import make_node, make_pod, node_info, run_filter, run_scores

from services.scheduler.framework import Code, NodeInfo
from services.scheduler.plugins.balanced_allocation import BalancedAllocation
from services.scheduler.plugins.node_resources_fit import (
    NodeResourcesFit,
    insufficient_resources,
)
from services.scheduler.plugins.resource_allocation import (
    LeastAllocated,
    MostAllocated,
    balanced_resource_score,
    least_requested_score,
    most_requested_score,
)
from skiff.api.v1 import core_pb2


def small_node(name: str = "n", *, cpu: str = "4", memory: str = "10000", pods: str = "110",
               existing: list[core_pb2.Pod] | None = None,
               extra: dict[str, str] | None = None) -> NodeInfo:
    return node_info(make_node(name, cpu=cpu, memory=memory, pods=pods, extra=extra),
                     existing or [])


# ---- the filter


def test_pod_that_fits() -> None:
    status = run_filter(NodeResourcesFit(), make_pod("p", cpu="1", memory="1000"),
                        small_node(existing=[make_pod("e", cpu="2", memory="5000")]))
    assert status.is_success


@pytest.mark.parametrize(("cpu", "memory", "reasons"), [
    ("3", "1000", ("Insufficient cpu",)),
    ("1", "6000", ("Insufficient memory",)),
    ("3", "6000", ("Insufficient cpu", "Insufficient memory")),
    ("2", "5000", ()),  # exactly what is left fits
])
def test_insufficient_resources(cpu: str, memory: str, reasons: tuple[str, ...]) -> None:
    node = small_node(existing=[make_pod("e", cpu="2", memory="5000")])
    status = run_filter(NodeResourcesFit(), make_pod("p", cpu=cpu, memory=memory), node)
    assert status.reasons == reasons
    if reasons:
        assert status.code == Code.UNSCHEDULABLE and status.plugin == "NodeResourcesFit"


def test_too_many_pods_comes_first_and_adds_up_with_others() -> None:
    node = small_node(pods="1", existing=[make_pod("e", cpu="3")])
    status = run_filter(NodeResourcesFit(), make_pod("p", cpu="2"), node)
    assert status.reasons == ("Too many pods", "Insufficient cpu")


def test_pod_without_requests_needs_only_a_pod_slot() -> None:
    full = small_node(cpu="1", existing=[make_pod("e", cpu="1", memory="10000")])
    assert run_filter(NodeResourcesFit(), make_pod("p"), full).is_success
    no_slot = small_node(pods="1", existing=[make_pod("e")])
    assert run_filter(NodeResourcesFit(), make_pod("p"), no_slot).reasons == ("Too many pods",)


def test_node_without_allocatable_pods_takes_none() -> None:
    node = small_node(pods="")
    assert run_filter(NodeResourcesFit(), make_pod("p"), node).reasons == ("Too many pods",)


def test_zero_cpu_request_fits_an_overcommitted_node() -> None:
    # Bound pods can overcommit (they bypass the scheduler); a pod asking no cpu still fits.
    node = small_node(cpu="1", existing=[make_pod("e", cpu="2")])
    assert run_filter(NodeResourcesFit(), make_pod("p", memory="100"), node).is_success


def test_extended_resources() -> None:
    node = small_node(extra={"nvidia.com/gpu": "2"},
                      existing=[make_pod("e", extra={"nvidia.com/gpu": "1"})])
    assert run_filter(NodeResourcesFit(), make_pod("p", extra={"nvidia.com/gpu": "1"}),
                      node).is_success
    status = run_filter(NodeResourcesFit(), make_pod("p", extra={"nvidia.com/gpu": "2"}), node)
    assert status.reasons == ("Insufficient nvidia.com/gpu",)
    status = run_filter(NodeResourcesFit(), make_pod("p", extra={"example.com/fpga": "1"}),
                        small_node())
    assert status.reasons == ("Insufficient example.com/fpga",)


def test_insufficient_resources_is_a_plain_function() -> None:
    from services.scheduler.framework import PodInfo

    pod = PodInfo(make_pod("p", cpu="5", memory="20000"))
    assert insufficient_resources(pod, small_node()) == ["Insufficient cpu",
                                                         "Insufficient memory"]


def test_the_same_shortfall_reuses_one_status() -> None:
    plugin = NodeResourcesFit()
    pod = make_pod("p", cpu="5")
    assert run_filter(plugin, pod, small_node("a")) is run_filter(plugin, pod, small_node("b"))


# ---- LeastAllocated / MostAllocated


def test_least_and_most_requested_scores() -> None:
    assert least_requested_score(3000, 4000) == 25
    assert least_requested_score(5000, 4000) == 0
    assert least_requested_score(1, 0) == 0
    assert most_requested_score(3000, 4000) == 75
    assert most_requested_score(5000, 4000) == 100  # capped
    assert most_requested_score(1, 0) == 0


def test_least_allocated_differently_sized_nodes() -> None:
    # Kubernetes' "nothing scheduled, resources requested, differently sized nodes":
    # node1 cpu 25, memory 50 -> 37; node2 cpu 50, memory 50 -> 50.
    pod = make_pod("p", cpu="3", memory="5000")
    nodes = [small_node("node1", cpu="4"), small_node("node2", cpu="6")]
    assert run_scores(NodeResourcesFit(), pod, nodes) == [37, 50]


def test_least_allocated_counts_existing_pods_with_non_zero_defaults() -> None:
    pod = make_pod("p", cpu="1", memory="1000")
    busy = small_node(cpu="4", memory="1000000000",
                      existing=[make_pod("e1", cpu="2", memory="400000000"),
                                make_pod("best-effort")])  # counts 100m and 200Mi
    # cpu: 4000 - (2000 + 100 + 1000) = 900 -> 22; memory: 1e9 - (4e8 + 209715200 + 1000)
    # = 390283800 -> 39.
    assert run_scores(NodeResourcesFit(), pod, [busy]) == [30]


def test_least_allocated_request_over_capacity_scores_zero() -> None:
    pod = make_pod("p", cpu="8", memory="20000")
    assert run_scores(NodeResourcesFit(), pod, [small_node()]) == [0]


def test_least_allocated_with_weights_and_extended_resources() -> None:
    pod = make_pod("p", cpu="3", memory="5000")
    node = small_node("node1", cpu="4", extra={"nvidia.com/gpu": "4"})
    weighted = NodeResourcesFit(LeastAllocated([("cpu", 2), ("memory", 1)]))
    assert run_scores(weighted, pod, [node]) == [(25 * 2 + 50) // 3]
    with_gpu = NodeResourcesFit(LeastAllocated([("cpu", 1), ("memory", 1),
                                                ("nvidia.com/gpu", 1)]))
    # The pod asks no gpu: that resource is left out.
    assert run_scores(with_gpu, pod, [node]) == [37]
    gpu_pod = make_pod("p", cpu="3", memory="5000", extra={"nvidia.com/gpu": "1"})
    assert run_scores(with_gpu, gpu_pod, [node]) == [(25 + 50 + 75) // 3]


def test_least_allocated_node_without_memory_counts_cpu_only() -> None:
    pod = make_pod("p", cpu="1", memory="5000")
    assert run_scores(NodeResourcesFit(), pod, [small_node(memory="")]) == [75]


def test_most_allocated() -> None:
    pod = make_pod("p", cpu="3", memory="5000")
    nodes = [small_node("node1", cpu="4"), small_node("node2", cpu="6")]
    assert run_scores(NodeResourcesFit(MostAllocated()), pod, nodes) == [62, 50]


def test_strategies_need_resources() -> None:
    with pytest.raises(ValueError):
        LeastAllocated([])


# ---- BalancedAllocation


def test_balanced_resource_score() -> None:
    assert balanced_resource_score([3000, 5000], [4000, 10000]) == 87  # |.75 - .5| / 2
    assert balanced_resource_score([3000, 5000], [6000, 10000]) == 100
    assert balanced_resource_score([3, 5, 1], [4, 10, 4]) == 79  # std of .75, .5, .25
    assert balanced_resource_score([9, 1], [4, 10]) == 55  # fractions capped at 1
    assert balanced_resource_score([1], [0]) == 100  # nothing to compare


def test_balanced_allocation_scores() -> None:
    pod = make_pod("p", cpu="3", memory="5000")
    nodes = [small_node("node1", cpu="4"), small_node("node2", cpu="6")]
    assert run_scores(BalancedAllocation(), pod, nodes) == [87, 100]


def test_balanced_allocation_counts_actual_requests_only() -> None:
    pod = make_pod("p", cpu="2", memory="5000")
    # The best-effort pod adds nothing here (it would add 100m / 200Mi to LeastAllocated).
    node = small_node(cpu="4", existing=[make_pod("best-effort")])
    assert run_scores(BalancedAllocation(), pod, [node]) == [100]


def test_balanced_allocation_skips_best_effort_pods() -> None:
    assert run_scores(BalancedAllocation(), make_pod("p"), [small_node()]) is None


def test_balanced_allocation_with_three_resources() -> None:
    pod = make_pod("p", cpu="3", memory="5000", extra={"nvidia.com/gpu": "1"})
    node = small_node(cpu="4", extra={"nvidia.com/gpu": "4"})
    plugin = BalancedAllocation(("cpu", "memory", "nvidia.com/gpu"))
    assert run_scores(plugin, pod, [node]) == [79]


def test_balanced_allocation_node_missing_a_resource() -> None:
    pod = make_pod("p", cpu="3", memory="5000")
    assert run_scores(BalancedAllocation(), pod, [small_node(memory="")]) == [100]
