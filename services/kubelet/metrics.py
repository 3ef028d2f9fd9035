"""The kubelet's Prometheus metrics (served when ``--listen-metrics-urls`` is given)."""

from __future__ import annotations

import time

from prometheus_client import Gauge, Histogram

from skiff.api.v1 import core_pb2

RUNNING_PODS = Gauge("kubelet_running_pods", "Pods bound to this node, as last listed")
SYNC_SECONDS = Histogram("kubelet_pod_worker_duration_seconds",
                         "Duration of pod syncs that started containers")
POD_START_SECONDS = Histogram(
    "kubelet_pod_start_duration_seconds",
    "From the pod's creation to the kubelet seeing it Running",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300))


def observe_startup(pod: core_pb2.Pod) -> None:
    """Record how long ``pod`` took from creation to Running (wall clock)."""
    created = pod.metadata.creation_timestamp.ToNanoseconds() / 1e9
    if created:
        POD_START_SECONDS.observe(max(0.0, time.time() - created))
