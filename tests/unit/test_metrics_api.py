"""metrics.k8s.io shapes and the node's own usage figures (pure)."""

from __future__ import annotations

from services.apiserver.rest import metrics_api
from services.kubelet import node_stats
from skiff.kubelet.v1 import kubelet_pb2


def test_quantities_in_canonical_form():
    assert metrics_api.cpu_quantity(0) == "0"
    assert metrics_api.cpu_quantity(123456) == "123456n"
    assert metrics_api.cpu_quantity(250_000_000) == "250m"
    assert metrics_api.cpu_quantity(2_000_000_000) == "2"
    assert metrics_api.cpu_quantity(5000) == "5u"
    assert metrics_api.memory_quantity(1234 * 1024) == "1234Ki"
    assert metrics_api.memory_quantity(3 * 2**20) == "3Mi"
    assert metrics_api.memory_quantity(1500) == "1500"


def _stats() -> kubelet_pb2.StatsResponse:
    stats = kubelet_pb2.StatsResponse(node=kubelet_pb2.NodeStats(
        name="n1", cpu_nanocores=1234567, memory_working_set_bytes=2**30,
        pods_cpu_nanocores=5, pods_memory_working_set_bytes=4096))
    stats.time.FromJsonString("2026-01-01T00:00:00Z")
    pod = stats.pods.add(namespace="ns", name="web", cpu_nanocores=5,
                         memory_working_set_bytes=4096)
    pod.containers.add(name="app", cpu_nanocores=5, memory_working_set_bytes=4096)
    return stats


def test_node_metrics_report_the_node_own_usage():
    metrics = metrics_api.node_metrics(_stats())
    assert metrics["kind"] == "NodeMetrics" and metrics["apiVersion"] == \
        "metrics.k8s.io/v1beta1"
    assert metrics["metadata"]["name"] == "n1"
    assert metrics["timestamp"] == "2026-01-01T00:00:00Z" and metrics["window"]
    assert metrics["usage"] == {"cpu": "1234567n", "memory": "1Gi"}


def test_pod_metrics_per_container():
    stats = _stats()
    metrics = metrics_api.pod_metrics(stats.pods[0], stats)
    assert metrics["metadata"]["namespace"] == "ns"
    assert metrics["containers"] == [{"name": "app", "usage": {"cpu": "5n",
                                                               "memory": "4Ki"}}]


def test_discovery_lists_both_resources():
    listed = metrics_api.api_resource_list()
    assert listed["groupVersion"] == "metrics.k8s.io/v1beta1"
    assert {(r["name"], r["namespaced"]) for r in listed["resources"]} == {
        ("nodes", False), ("pods", True)}
    assert metrics_api.api_group()["preferredVersion"]["version"] == "v1beta1"
    scopes = {r["resource"]: r["scope"]
              for r in metrics_api.aggregated_group()["versions"][0]["resources"]}
    assert scopes == {"nodes": "Cluster", "pods": "Namespaced"}


def test_node_usage_parsers():
    assert node_stats.parse_cpu_stat_v2("usage_usec 1500\nuser_usec 1000\n") == 1_500_000
    assert node_stats.parse_proc_stat("cpu  100 0 50 1000 20 0 0 0 0 0\ncpu0 1\n",
                                      100) == 1_500_000_000
    meminfo = "MemTotal: 1000 kB\nMemFree: 300 kB\nMemAvailable: 600 kB\n" \
              "Inactive(file): 200 kB\n"
    assert node_stats.parse_meminfo_working_set(meminfo) == 500 * 1024
    before, after = node_stats.CpuSample(0, 0), node_stats.CpuSample(500_000_000, 10**9)
    assert node_stats.cpu_rate(before, after) == 500_000_000
    assert node_stats.cpu_rate(after, before) == 0


async def test_node_usage_reads_this_machine():
    first = await node_stats.cpu_sample()
    assert first.used_ns > 0
    assert await node_stats.memory_working_set() > 0
