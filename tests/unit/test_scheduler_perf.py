"""How long one scheduling cycle takes at 1,000 and 5,000 nodes — printed, not asserted
(``pytest -s`` shows it): the machine decides the numbers, the test only checks that the
cycles worked. A cycle is what the daemon will do per pod: refresh the snapshot, run
the default profile (SelectorSpread on), assume the pod."""

from __future__ import annotations

import statistics
import time

import pytest
from test_scheduler_builders import bound, make_node, make_pod

from services.scheduler.cache import SchedulerCache
from services.scheduler.framework import PodInfo
from services.scheduler.profile import Profile
from skiff.api.labels import selector_from_map

PODS_PER_NODE = 4
CYCLES = 100


def populated_cache(nodes: int) -> SchedulerCache:
    """``nodes`` nodes over three zones, each running a few bound pods of several apps."""
    cache = SchedulerCache()
    for i in range(nodes):
        cache.add_node(make_node(f"node-{i}", cpu="32", memory="64Gi", labels={
            "topology.kubernetes.io/zone": f"zone-{i % 3}", "kubernetes.io/hostname": f"n{i}"}))
    for i in range(nodes):
        for j in range(PODS_PER_NODE):
            cache.add_pod(bound(make_pod(f"app{j}-{i}", cpu="250m", memory="256Mi",
                                         labels={"app": f"app{j}"}), f"node-{i}"))
    return cache


@pytest.mark.parametrize("nodes", [1000, 5000])
def test_cycle_time(nodes: int) -> None:
    cache = populated_cache(nodes)
    service = selector_from_map({"app": "web"})
    framework = Profile().build(selectors_for=lambda pod: [service])
    cache.snapshot()
    pods = [PodInfo(make_pod(f"web-{c}", cpu="100m", memory="128Mi", labels={"app": "web"}))
            for c in range(CYCLES)]
    times, cpu_times = [], []
    for pod in pods:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = framework.schedule(pod, cache.snapshot().node_infos)
        cache.assume(pod, result.node_name)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    expected = max(min(nodes * (50 - nodes // 125) // 100, nodes), 100)
    assert result.feasible == expected and cache.pod_count == nodes * PODS_PER_NODE + CYCLES
    times.sort()
    # CPU time is what the cycle costs; wall time also counts waiting for a busy CPU.
    print(f"\nscheduling cycle at {nodes} nodes ({result.feasible} scored): wall median "
          f"{statistics.median(times) * 1e3:.2f} ms, p90 {times[int(len(times) * 0.9)] * 1e3:.2f}"
          f" ms, min {times[0] * 1e3:.2f} ms; cpu mean "
          f"{statistics.mean(cpu_times) * 1e3:.2f} ms")
