"""The node lifecycle controller: notices silent nodes, taints them, evicts their pods.

Kubernetes' ``pkg/controller/nodelifecycle`` with its taint manager. Reconciles: every
Node's kubelet-owned conditions and its ``not-ready``/``unreachable`` NoExecute
taints, and the pods bound to nodes with NoExecute taints. Watches nodes, the node
Leases (namespace ``kube-node-lease``, named after their node) and pods.

- Health, as Kubernetes' ``nodeHealthMap``: every monitor period the node's heartbeat
  (its Lease's renewTime and its Ready condition's lastHeartbeatTime) is compared with
  what was seen before; when it changed, the *local* time of the observation is
  recorded. Remote timestamps are never compared with the local clock (clocks differ);
  only how long the heartbeat has stood still, here, counts.
- A node silent for longer than ``node_monitor_grace_period`` gets its kubelet-owned
  conditions set to Unknown (reason ``NodeStatusUnknown``) and the taint
  ``node.kubernetes.io/unreachable:NoExecute``; a node reporting Ready False gets
  ``node.kubernetes.io/not-ready:NoExecute``; a node Ready again loses both.
- Taint-based eviction: a pod on a node with a NoExecute taint it does not tolerate is
  deleted at once; one that tolerates it for tolerationSeconds is deleted once that
  long has passed since the taint's timeAdded; deletions are rate limited by a token
  bucket shared by all nodes.

The decisions are pure functions (:func:`node_health`, :func:`taints_for`,
:func:`eviction_time`, :func:`unknown_conditions`), the clock is injected.
Neighbours: the kubelet (heartbeats), ``services.apiserver.admission.default_tolerations``
(pods tolerate both taints for 300 s unless they say otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.api import errors
from skiff.api.namespaces import NODE_LEASE_NAMESPACE
from skiff.api.v1 import coordination_pb2, core_pb2
from skiff.client.client import Client
from skiff.client.clock import Clock, RealClock
from skiff.client.controller import Controller
from skiff.client.events import WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of
from skiff.tasks import spawn

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
NO_EXECUTE = "NoExecute"
#: The conditions the kubelet posts, set to Unknown when it falls silent.
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
NEVER_REASON = "NodeStatusNeverUpdated"
NEVER_MESSAGE = "Kubelet never posted node status."
#: How often every node's heartbeat is looked at (Kubernetes' nodeMonitorPeriod).
DEFAULT_MONITOR_PERIOD = 5.0
#: Evictions a second, all nodes together.
DEFAULT_EVICTION_QPS = 10.0
#: The pods informer's index of pods by node.
NODE_INDEX = "spec.nodeName"

HEALTHY, NOT_READY, UNKNOWN = "Healthy", "NotReady", "Unknown"

__all__ = ["NodeHealth", "NodeLifecycleController", "TokenBucket", "eviction_time",
           "heartbeat_of", "node_health", "pod_eviction_time", "taints_for",
           "unknown_conditions"]


# ----------------------------------------------------------------- pure decisions


@dataclass
class NodeHealth:
    """What was last seen of a node's heartbeat, and when (local monotonic time).

    Invariant: ``probe_time`` is the local time at which ``heartbeat`` was first seen
    with its current value.
    """

    heartbeat: tuple[float, float]
    probe_time: float


def heartbeat_of(node: core_pb2.Node, lease: coordination_pb2.Lease | None
                 ) -> tuple[float, float]:
    """(lease renewTime, Ready lastHeartbeatTime) as seconds: only compared for change."""
    renew = lease.spec.renew_time.ToNanoseconds() / 1e9 if lease is not None else 0.0
    ready = _condition(node, "Ready")
    beat = ready.last_heartbeat_time.ToNanoseconds() / 1e9 if ready is not None else 0.0
    return renew, beat


def observe(previous: NodeHealth | None, heartbeat: tuple[float, float],
            now: float) -> NodeHealth:
    """The node's health record after seeing ``heartbeat`` at local time ``now`` (pure):
    a new or changed heartbeat is stamped ``now``; an unchanged one keeps its stamp."""
    if previous is None or previous.heartbeat != heartbeat:
        return NodeHealth(heartbeat, now)
    return previous


def node_health(node: core_pb2.Node, health: NodeHealth, now: float, grace: float) -> str:
    """HEALTHY, NOT_READY (Ready False) or UNKNOWN (silent past ``grace``, or Ready
    Unknown) for a node (pure)."""
    if now - health.probe_time > grace:
        return UNKNOWN
    ready = _condition(node, "Ready")
    if ready is None:
        return HEALTHY  # not reported yet, not silent yet: give it the grace period
    return {"True": HEALTHY, "False": NOT_READY}.get(ready.status, UNKNOWN)


def unknown_conditions(node: core_pb2.Node, now: Timestamp) -> list[core_pb2.NodeCondition]:
    """The node's conditions with the kubelet's set to Unknown (pure). Heartbeat times
    are kept: they are the kubelet's, and the next heartbeat must look like a change."""
    conditions = [_copy(c) for c in node.status.conditions]
    by_type = {c.type: c for c in conditions}
    for type_ in KUBELET_CONDITIONS:
        condition = by_type.get(type_)
        if condition is None:
            conditions.append(core_pb2.NodeCondition(
                type=type_, status="Unknown", reason=NEVER_REASON, message=NEVER_MESSAGE,
                last_transition_time=now))
            continue
        if condition.status != "Unknown":
            condition.last_transition_time.CopyFrom(now)
        condition.status, condition.reason = "Unknown", UNKNOWN_REASON
        condition.message = UNKNOWN_MESSAGE
    return conditions


def needs_unknown(node: core_pb2.Node) -> bool:
    """Whether some kubelet condition is missing or not Unknown yet (pure)."""
    by_type = {c.type: c.status for c in node.status.conditions}
    return any(by_type.get(t) != "Unknown" for t in KUBELET_CONDITIONS)


def taints_for(node: core_pb2.Node, health: str, now: Timestamp) -> list[core_pb2.Taint]:
    """The node's taints as its health asks (pure): others' taints kept in order; ours
    kept with their timeAdded while they still apply, added with ``now`` when new."""
    wanted = {UNKNOWN: UNREACHABLE_TAINT, NOT_READY: NOT_READY_TAINT}.get(health)
    taints = [_copy(t) for t in node.spec.taints
              if not _ours(t) or t.key == wanted]
    if wanted and not any(t.key == wanted and t.effect == NO_EXECUTE for t in taints):
        taints.append(core_pb2.Taint(key=wanted, effect=NO_EXECUTE, time_added=now))
    return taints


def tolerates(toleration: core_pb2.Toleration, taint: core_pb2.Taint) -> bool:
    """Kubernetes' ``ToleratesTaint`` (pure)."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return toleration.operator == "Exists"


def eviction_time(pod: core_pb2.Pod, taint: core_pb2.Taint) -> float | None:
    """When (wall seconds) ``taint`` makes ``pod`` go, or None if it tolerates it for
    ever (pure). Not tolerated: the taint's timeAdded (due at once). Tolerated: timeAdded
    plus the shortest tolerationSeconds of the tolerations that match (a toleration
    without seconds counts only when none has seconds, as Kubernetes'
    ``getMinTolerationTime``; seconds <= 0 mean at once)."""
    if taint.effect != NO_EXECUTE:
        return None
    added = taint.time_added.ToNanoseconds() / 1e9
    matching = [t for t in pod.spec.tolerations if tolerates(t, taint)]
    if not matching:
        return added
    seconds = [t.toleration_seconds for t in matching if t.HasField("toleration_seconds")]
    if not seconds:
        return None
    return added + max(0, min(seconds))


def pod_eviction_time(pod: core_pb2.Pod, taints: Iterable[core_pb2.Taint]) -> float | None:
    """The earliest :func:`eviction_time` over the node's taints, or None (pure)."""
    times = [t for t in (eviction_time(pod, taint) for taint in taints) if t is not None]
    return min(times) if times else None


@dataclass
class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` saved, on monotonic time ``now``.

    Invariant: ``tokens`` is the balance at ``last``; never negative (a try that finds
    no token takes none).
    """

    qps: float
    burst: int
    tokens: float = field(default=-1.0)
    last: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def try_take(self, now: float) -> bool:
        """Take a token if one is there (pure but for the bucket itself)."""
        if self.last is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.qps)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until the next token (after a failed :meth:`try_take`)."""
        return max(0.0, (1 - self.tokens) / self.qps)


def _condition(node: core_pb2.Node, type_: str) -> core_pb2.NodeCondition | None:
    return next((c for c in node.status.conditions if c.type == type_), None)


def _ours(taint: core_pb2.Taint) -> bool:
    return taint.key in (NOT_READY_TAINT, UNREACHABLE_TAINT) and taint.effect == NO_EXECUTE


def _copy(message: Any) -> Any:
    copied = type(message)()
    copied.CopyFrom(message)
    return copied


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromSeconds(int(seconds))
    return stamp


def _pods_by_node(pod: Message) -> list[str]:
    node = pod.spec.node_name  # type: ignore[attr-defined]
    return [node] if node else []


# -------------------------------------------------------------------- controller


class NodeLifecycleController(Controller):
    """Monitors node heartbeats; keeps conditions and taints; evicts by taints.

    A monitor task observes every node each ``monitor_period`` and enqueues it; a
    sync of a node (its name is the key) writes its conditions and taints as
    :func:`node_health` says, then evicts its pods that :func:`pod_eviction_time` says
    are due, and enqueues the node again for the next one due.
    """

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 recorder: EventRecorder, config: Any, *, clock: Clock | None = None,
                 monitor_period: float | None = None,
                 eviction_qps: float = DEFAULT_EVICTION_QPS) -> None:
        super().__init__("node-lifecycle", workers=max(1, int(config.concurrent_syncs)),
                         clock=clock or RealClock())
        self.client = client
        self.recorder = recorder
        self.grace = float(config.node_monitor_grace_period)
        # --node-monitor-period, unless the caller says otherwise (tests do).
        self.monitor_period = float(monitor_period if monitor_period is not None else getattr(
            config, "node_monitor_period", DEFAULT_MONITOR_PERIOD))
        self.limiter = TokenBucket(eviction_qps, max(1, int(eviction_qps)))
        self.health: dict[str, NodeHealth] = {}
        self.nodes = factory.informer("nodes")
        self.leases = factory.informer("leases", namespace=NODE_LEASE_NAMESPACE)
        self.pods = factory.informer("pods", indexers={NODE_INDEX: _pods_by_node})
        self.nodes.add_handler(self.enqueue, lambda old, new: self.enqueue(new),
                               self.on_node_delete, name="node-lifecycle")
        self.pods.add_handler(self.on_pod, lambda old, new: self.on_pod(new), None,
                              name="node-lifecycle")
        self.wait_for(self.nodes, self.leases, self.pods)

    # ------------------------------------------------------------ handlers

    def on_pod(self, pod: Message) -> None:
        """A pod bound to a node may have to go: look at its node."""
        node = pod.spec.node_name  # type: ignore[attr-defined]
        if node:
            self.enqueue(node)

    def on_node_delete(self, node: Message) -> None:
        self.health.pop(node.metadata.name, None)  # type: ignore[attr-defined]

    # ------------------------------------------------------------- monitor

    async def run(self) -> None:
        """The workers, and the monitor beside them (stopped with them)."""
        monitor = spawn(self._monitor_loop(), name="node-lifecycle-monitor")
        try:
            await super().run()
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor

    async def _monitor_loop(self) -> None:
        for informer in (self.nodes, self.leases):
            while not await informer.wait_synced(30.0):
                pass
        while True:
            self.monitor()
            await self.clock.sleep(self.monitor_period)

    def monitor(self) -> None:
        """Observe every node's heartbeat now, and enqueue each for a sync."""
        for node in self.nodes.store.list():
            self.observe(node)  # type: ignore[arg-type]
            self.enqueue(node.metadata.name)  # type: ignore[attr-defined]

    def observe(self, node: core_pb2.Node) -> NodeHealth:
        """Record the node's heartbeat as seen now (from the caches); its health record."""
        name = node.metadata.name
        lease = self.leases.store.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        beat = heartbeat_of(node, lease)  # type: ignore[arg-type]
        record = self.health[name] = observe(self.health.get(name), beat, self.clock.now())
        return record

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        """Write node ``key``'s conditions and taints; evict the pods that are due."""
        node = self.nodes.store.get(key)
        if node is None:
            return  # deleted
        # Observed again here, not only by the monitor: a heartbeat the kubelet just
        # posted must count before this sync decides the node is silent.
        record = self.observe(node)  # type: ignore[arg-type]
        health = node_health(node, record, self.clock.now(), self.grace)  # type: ignore[arg-type]
        wall = _timestamp(self.clock.wall())
        if health == UNKNOWN and needs_unknown(node):  # type: ignore[arg-type]
            node = await self._mark_unknown(node, wall)  # type: ignore[arg-type]
        taints = taints_for(node, health, wall)  # type: ignore[arg-type]
        if taints != list(node.spec.taints):  # type: ignore[attr-defined]
            node = await self._set_taints(node, taints)  # type: ignore[arg-type]
        await self._evict(node, taints, unreachable=health == UNKNOWN)  # type: ignore[arg-type]

    async def _mark_unknown(self, node: core_pb2.Node, now: Timestamp) -> core_pb2.Node:
        updated = _copy(node)
        del updated.status.conditions[:]
        updated.status.conditions.extend(unknown_conditions(node, now))
        written = await self.client.nodes.update_status(updated)
        self._log.info("node stopped posting status", node=node.metadata.name,
                       grace=self.grace)
        self.recorder.event(node, WARNING, "NodeNotReady",
                            f"Node {node.metadata.name} status is now: NodeNotReady")
        return written  # type: ignore[return-value]

    async def _set_taints(self, node: core_pb2.Node,
                          taints: list[core_pb2.Taint]) -> core_pb2.Node:
        updated = _copy(node)
        del updated.spec.taints[:]
        updated.spec.taints.extend(taints)
        written = await self.client.nodes.update(updated)
        self._log.info("node taints set", node=node.metadata.name,
                       taints=[f"{t.key}:{t.effect}" for t in taints])
        return written  # type: ignore[return-value]

    async def _evict(self, node: core_pb2.Node, taints: Sequence[core_pb2.Taint], *,
                     unreachable: bool) -> None:
        """Delete the node's pods that are due; come back for the next one due."""
        no_execute = [t for t in taints if t.effect == NO_EXECUTE]
        if not no_execute:
            return
        now = self.clock.wall()
        next_due = math.inf
        for pod in self.pods.store.by_index(NODE_INDEX, node.metadata.name):
            due = pod_eviction_time(pod, no_execute)  # type: ignore[arg-type]
            if due is None:
                continue
            if due > now:
                next_due = min(next_due, due)
                continue
            if pod.metadata.HasField("deletion_timestamp") and not unreachable:  # type: ignore[attr-defined]
                continue  # its kubelet is stopping it already
            if not self.limiter.try_take(self.clock.now()):
                next_due = min(next_due, now + self.limiter.wait())
                break
            await self._delete_pod(pod, unreachable=unreachable)  # type: ignore[arg-type]
        if next_due < math.inf:
            self.enqueue_after(node.metadata.name, max(0.0, next_due - now))

    async def _delete_pod(self, pod: core_pb2.Pod, *, unreachable: bool) -> None:
        md = pod.metadata
        self.recorder.event(pod, "Normal", "TaintManagerEviction",
                            f"Marking for deletion Pod {md.namespace}/{md.name}")
        # A graceful delete waits for the node's kubelet to stop the pod; an unreachable
        # node's kubelet never will, so there the pod is removed at once (grace 0).
        # Kubernetes deletes gracefully and leaves the rest to its GC of orphaned pods,
        # which Skiff does not have.
        grace = 0 if unreachable else None
        try:
            await self.client.pods.delete(md.name, md.namespace, grace_period_seconds=grace,
                                          uid=md.uid)
        except (errors.NotFound, errors.Conflict):
            return  # gone already, or replaced by another pod of that name
        self._log.info("pod evicted", pod=key_of(pod), grace=grace)
