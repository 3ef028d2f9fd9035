"""Hollow nodes: kubelets with no containers, for tests and benchmarks of the control plane.

Kubernetes' kubemark runs "hollow" kubelets that register a Node, heartbeat and report
pods as running without running anything; this is the same idea, in the test's own
process. A :class:`HollowNode` registers its Node (Ready, with capacity), renews its
Lease in ``kube-node-lease``, and for each pod bound to it posts what a kubelet would:
phase Running, a pod IP, the PodScheduled / Initialized / ContainersReady / Ready
conditions and a running container status. Whether a pod is Ready is the test's choice
(:meth:`HollowNode.set_ready`, or the ``ready`` callable); a pod marked for deletion is
deleted at once (grace 0), as a kubelet does once its containers are gone.

:meth:`HollowNode.die` stops the heartbeat and all work, as a machine that lost power;
:meth:`HollowNode.revive` brings it back. Nothing here sleeps in place of a condition:
pods are reconciled from an informer through a work queue (:class:`Controller`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.namespaces import NODE_LEASE_NAMESPACE
from skiff.api.v1 import coordination_pb2, core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.informer import SharedInformerFactory
from skiff.tasks import spawn

__all__ = ["HollowNode", "hollow_nodes"]

#: What a hollow node offers the scheduler (a generous machine, so tests fit).
DEFAULT_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110"}
_node_numbers = itertools.count(1)


def _condition(conditions: Message, type_: str, status: str) -> None:
    found = next((c for c in conditions if c.type == type_), None)
    if found is None:
        found = conditions.add(type=type_)
    if found.status != status:
        found.status = status
        found.last_transition_time.GetCurrentTime()


class HollowNode(Controller):
    """One node's kubelet, minus the containers (see the module)."""

    def __init__(self, client: Client, name: str, *, heartbeat: float = 1.0,
                 lease_duration: int = 40, capacity: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None,
                 ready: Callable[[core_pb2.Pod], bool] | None = None) -> None:
        super().__init__(f"hollow-{name}", workers=4, drain_timeout=5.0)
        self.client = client
        self.node_name = name
        self.heartbeat = heartbeat
        self.lease_duration = lease_duration
        self.capacity = dict(capacity or DEFAULT_CAPACITY)
        self.labels = {"kubernetes.io/hostname": name, **(labels or {})}
        self._ready_default = ready or (lambda pod: True)
        self._ready: dict[str, bool] = {}
        number = next(_node_numbers)
        self._subnet = f"10.{200 + number // 250}.{number % 250}"
        self._ips: dict[str, str] = {}
        self._next_ip = itertools.count(2)
        self._factory = SharedInformerFactory(client)
        self.pods = self._factory.informer("pods", field_selector=f"spec.nodeName={name}")
        self.pods.add_handler(self.enqueue, lambda old, new: self.enqueue(new), self.enqueue)
        self.wait_for(self.pods)
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- life

    async def start(self) -> None:
        """Register the node and its lease, then heartbeat and run pods."""
        await self._register()
        await self._factory.start_all()
        self._tasks = [spawn(self._heartbeat(), name=f"{self.name}-heartbeat"),
                       spawn(self.run(), name=self.name)]

    async def die(self) -> None:
        """Stop heartbeating and stop acting on pods (the machine is gone)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._factory.stop_all()

    async def revive(self) -> None:
        """Come back after :meth:`die`: post Ready again and resume (a fresh kubelet)."""
        super().__init__(self.name, workers=self.workers, drain_timeout=self.drain_timeout)
        self._factory = SharedInformerFactory(self.client)
        self.pods = self._factory.informer(
            "pods", field_selector=f"spec.nodeName={self.node_name}")
        self.pods.add_handler(self.enqueue, lambda old, new: self.enqueue(new), self.enqueue)
        self.wait_for(self.pods)
        await self.start()

    stop = die

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Make a pod's readiness (as its probes would) ``ready`` from now on."""
        key = f"{namespace}/{name}"
        self._ready[key] = ready
        self.enqueue(key)

    # ------------------------------------------------------------ the node

    async def _register(self) -> None:
        node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=self.node_name,
                                                          labels=self.labels))
        with contextlib.suppress(errors.AlreadyExists):
            await self.client.nodes.create(node)
        await self._post_node_status()
        lease = coordination_pb2.Lease(
            metadata=meta_pb2.ObjectMeta(name=self.node_name, namespace=NODE_LEASE_NAMESPACE),
            spec=coordination_pb2.LeaseSpec(holder_identity=self.node_name,
                                            lease_duration_seconds=self.lease_duration))
        lease.spec.renew_time.GetCurrentTime()
        with contextlib.suppress(errors.AlreadyExists):
            await self.client.leases.create(lease)

    async def _post_node_status(self) -> None:
        node = await self.client.nodes.get(self.node_name, "")
        status = node.status
        status.capacity.clear()
        status.capacity.update(self.capacity)
        status.allocatable.clear()
        status.allocatable.update(self.capacity)
        for type_, value in (("Ready", "True"), ("MemoryPressure", "False"),
                             ("DiskPressure", "False"), ("PIDPressure", "False")):
            _condition(status.conditions, type_, value)
        for condition in status.conditions:
            condition.reason, condition.message = "", ""
            condition.last_heartbeat_time.GetCurrentTime()
        del status.addresses[:]
        status.addresses.add(type="InternalIP", address="127.0.0.1")
        status.addresses.add(type="Hostname", address=self.node_name)
        await self.client.nodes.update_status(node)

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(errors.APIError):
                lease = await self.client.leases.get(self.node_name, NODE_LEASE_NAMESPACE)
                lease.spec.holder_identity = self.node_name
                lease.spec.renew_time.GetCurrentTime()
                await self.client.leases.update(lease)
            await asyncio.sleep(self.heartbeat)

    # ------------------------------------------------------------- the pods

    async def sync(self, key: str) -> None:
        pod = self.pods.store.get(key)
        if pod is None:
            self._ips.pop(key, None)
            return
        if pod.metadata.HasField("deletion_timestamp"):
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                await self.client.pods.delete(pod.metadata.name, pod.metadata.namespace,
                                              grace_period_seconds=0, uid=pod.metadata.uid)
            return
        wanted = self._status(key, pod)
        if wanted != pod.status:
            updated = core_pb2.Pod()
            updated.CopyFrom(pod)
            updated.status.CopyFrom(wanted)
            with contextlib.suppress(errors.NotFound):
                await self.client.pods.update_status(updated)

    def _status(self, key: str, pod: core_pb2.Pod) -> core_pb2.PodStatus:
        ready = self._ready.get(key)
        if ready is None:
            ready = self._ready_default(pod)
        status = core_pb2.PodStatus()
        status.CopyFrom(pod.status)
        status.phase = "Running"
        status.host_ip = "127.0.0.1"
        if key not in self._ips:
            self._ips[key] = f"{self._subnet}.{next(self._next_ip) % 250 + 2}"
        status.pod_ip = self._ips[key]
        if not status.HasField("start_time"):
            status.start_time.GetCurrentTime()
        flag = "True" if ready else "False"
        for type_, value in (("PodScheduled", "True"), ("Initialized", "True"),
                             ("ContainersReady", flag), ("Ready", flag)):
            _condition(status.conditions, type_, value)
        if not status.container_statuses:
            for container in pod.spec.containers:
                cs = status.container_statuses.add(name=container.name, image=container.image)
                cs.state.running.started_at.GetCurrentTime()
        for cs in status.container_statuses:
            cs.ready = ready
        return status


async def hollow_nodes(client: Client, count: int, *, prefix: str = "hollow",
                       **kwargs: object) -> list[HollowNode]:
    """Start ``count`` hollow nodes named ``prefix-0`` ... (keyword args as HollowNode's)."""
    nodes = [HollowNode(client, f"{prefix}-{i}", **kwargs) for i in range(count)]  # type: ignore[arg-type]
    await asyncio.gather(*(node.start() for node in nodes))
    return nodes
