"""Builders of Pods, Nodes and NodeInfos, and plugin runners, for the scheduler's unit
tests (no tests here).

Imported by the other ``test_scheduler_*`` modules as ``test_scheduler_builders``
(pytest puts this directory on ``sys.path``). Defaults: a node is Ready with 4 cpu,
8Gi memory and room for 110 pods; a pod is in namespace ``default`` with one container.
``run_filter`` / ``run_scores`` drive one plugin the way the framework would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.scheduler.framework import SUCCESS, Code, CycleState, NodeInfo, PodInfo, Status
from skiff.api.v1 import core_pb2

Taints = Iterable[tuple[str, str, str]]


def make_node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
              labels: Mapping[str, str] | None = None, taints: Taints = (),
              unschedulable: bool = False, ready: bool | None = True,
              extra: Mapping[str, str] | None = None) -> core_pb2.Node:
    """A Node; ``taints`` as (key, value, effect); ``ready`` None: no Ready condition."""
    node = core_pb2.Node()
    node.metadata.name = name
    node.metadata.labels.update(labels or {})
    node.spec.unschedulable = unschedulable
    for key, value, effect in taints:
        node.spec.taints.add(key=key, value=value, effect=effect)
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}
    node.status.allocatable.update({k: v for k, v in allocatable.items() if v})
    if ready is not None:
        node.status.conditions.add(type="Ready", status="True" if ready else "False")
    return node


def make_pod(name: str, *, namespace: str = "default", cpu: str | None = None,
             memory: str | None = None, labels: Mapping[str, str] | None = None,
             node_name: str = "", priority: int | None = None,
             tolerations: Iterable[Mapping[str, str]] = (),
             node_selector: Mapping[str, str] | None = None,
             host_ports: Iterable[tuple[int, str, str]] = (),
             extra: Mapping[str, str] | None = None,
             containers: int = 1) -> core_pb2.Pod:
    """A Pod with ``containers`` identical containers, each requesting ``cpu`` /
    ``memory`` / ``extra`` when given; host ports as (port, protocol, host_ip) on the
    first container."""
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    pod.metadata.labels.update(labels or {})
    pod.spec.node_name = node_name
    if priority is not None:
        pod.spec.priority = priority
    for toleration in tolerations:
        pod.spec.tolerations.add(**toleration)
    pod.spec.node_selector.update(node_selector or {})
    for i in range(containers):
        container = pod.spec.containers.add(name=f"c{i}", image="busybox")
        requests = {"cpu": cpu, "memory": memory, **(extra or {})}
        container.resources.requests.update({k: v for k, v in requests.items() if v})
    for port, protocol, host_ip in host_ports:
        pod.spec.containers[0].ports.add(container_port=port, host_port=port,
                                         protocol=protocol, host_ip=host_ip)
    return pod


def bound(pod: core_pb2.Pod, node_name: str) -> core_pb2.Pod:
    """A copy of ``pod`` bound to ``node_name``."""
    copy = core_pb2.Pod()
    copy.CopyFrom(pod)
    copy.spec.node_name = node_name
    return copy


def node_info(node: core_pb2.Node, pods: Sequence[core_pb2.Pod] = ()) -> NodeInfo:
    """A NodeInfo for ``node`` with ``pods`` charged to it."""
    info = NodeInfo(node)
    for pod in pods:
        info.add_pod(PodInfo(pod))
    return info


def run_filter(plugin: Any, pod: core_pb2.Pod, info: NodeInfo) -> Status:
    """The plugin's pre-filter (if any; a SKIP means success) then its filter."""
    state, pod_info = CycleState(), PodInfo(pod)
    if hasattr(plugin, "pre_filter"):
        status = plugin.pre_filter(state, pod_info)
        if status.code == Code.SKIP:
            return SUCCESS
        assert status.is_success
    return plugin.filter(state, pod_info, info)


def run_scores(plugin: Any, pod: core_pb2.Pod, infos: Sequence[NodeInfo]) -> list[int] | None:
    """Pre-score (None if it skips), score each node, normalize."""
    state, pod_info = CycleState(), PodInfo(pod)
    if hasattr(plugin, "pre_score"):
        status = plugin.pre_score(state, pod_info, infos)
        if status.code == Code.SKIP:
            return None
    scores = [plugin.score(state, pod_info, info) for info in infos]
    if hasattr(plugin, "normalize"):
        plugin.normalize(state, pod_info, infos, scores)
    return scores
