"""The scheduling loop: pending pods -> filter -> score -> assume -> bind.

Informers on pods, nodes, services, replication controllers and replica sets feed
the scheduler cache (what each node has committed) and the scheduling queue (pods
with no node whose ``schedulerName`` is one of this scheduler's profiles). One cycle
at a time pops the most urgent pod, runs its profile's framework over a snapshot of
the cache, charges the chosen node at once (*assume*), and hands the Bind to a
background task, so the next cycle starts without waiting for the apiserver and still
sees the node as charged. A Bind that fails releases the charge and puts the pod back
with backoff; a pod that fits nowhere waits in the queue's unschedulable pool until a
cluster event (a node added or changed, a pod deleted) may have made room.

Outcomes become Events (``Scheduled``, ``FailedScheduling`` with Kubernetes' message,
"0/5 nodes are available: 3 Insufficient cpu, ...") and, for failures, the pod's
PodScheduled condition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge, Histogram

from services.scheduler.cache import SchedulerCache
from services.scheduler.framework import FitError, Framework, SchedulingError, pod_key
from services.scheduler.profile import SchedulerConfiguration
from services.scheduler.queue import (
    ASSIGNED_POD_DELETE,
    ASSIGNED_POD_UPDATE,
    NODE_ADD,
    NODE_UPDATE,
    SERVICE_CHANGE,
    QueuedPodInfo,
    SchedulingQueue,
)
from skiff.api import errors
from skiff.api.labels import Selector, selector_from_label_selector, selector_from_map
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.events import NORMAL, WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("scheduler")

ATTEMPTS = Counter("skiff_scheduler_schedule_attempts_total", "Scheduling attempts",
                   ["result", "profile"])
E2E_SECONDS = Histogram("skiff_scheduler_pod_scheduling_seconds",
                        "From a pod's first attempt to its successful bind",
                        buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
PENDING = Gauge("skiff_scheduler_pending_pods", "Pods in the scheduling queue", ["queue"])


# Metric children by label values, looked up once: ``labels()`` takes a lock and builds
# a key on every call, and these are updated on every cycle.
@lru_cache(maxsize=256)
def _attempts(result: str, profile: str) -> Any:
    return ATTEMPTS.labels(result, profile)


@lru_cache(maxsize=16)
def _pending(queue: str) -> Any:
    return PENDING.labels(queue)

#: Binds in flight at once: enough to keep the apiserver busy, bounded for memory.
MAX_BINDS_IN_FLIGHT = 256
#: The kinds the scheduler watches (the daemon starts these informers before it leads).
INFORMED_KINDS = ("pods", "nodes", "services", "replicationcontrollers", "replicasets")


def profile_name(pod: core_pb2.Pod) -> str:
    """The scheduler name the pod asks for (``spec.schedulerName``, default
    ``default-scheduler``): which profile schedules it."""
    return pod.spec.scheduler_name or "default-scheduler"


def is_pending(pod: core_pb2.Pod) -> bool:
    """Whether a pod waits for a node: unbound, not deleting, not finished."""
    return (not pod.spec.node_name and not pod.metadata.HasField("deletion_timestamp")
            and pod.status.phase not in ("Succeeded", "Failed"))


class Scheduler:
    """Schedules the pods of its profiles' scheduler names; see the module docstring.

    ``recorders`` has one EventRecorder per profile, by scheduler name: events are
    signed with the name of the profile that scheduled the pod, as Kubernetes does.
    """

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 configuration: SchedulerConfiguration, *,
                 recorders: Mapping[str, EventRecorder]) -> None:
        self.client = client
        self.recorders = dict(recorders)
        self.cache = SchedulerCache()
        self.queue = SchedulingQueue(
            initial_backoff=configuration.pod_initial_backoff_seconds,
            max_backoff=configuration.pod_max_backoff_seconds,
            max_in_unschedulable=configuration.pod_max_in_unschedulable_pods_seconds)
        self.frameworks: dict[str, Framework] = configuration.build_frameworks(
            selectors_for=self.selectors_for, seed=None)
        self.pods = factory.informer("pods")
        self.nodes = factory.informer("nodes")
        self.services = factory.informer("services")
        self.replication_controllers = factory.informer("replicationcontrollers")
        self.replica_sets = factory.informer("replicasets")
        # Nodes first, so pods already bound find their node in the cache.
        self._registrations = [
            (self.nodes, self.nodes.add_handler(
                self._node_added, self._node_updated, self._node_deleted, name="scheduler")),
            (self.pods, self.pods.add_handler(
                self._pod_added, self._pod_updated, self._pod_deleted, name="scheduler")),
        ]
        for informer in (self.services, self.replication_controllers, self.replica_sets):
            self._registrations.append((informer, informer.add_handler(
                self._selector_changed, self._selector_updated, self._selector_changed,
                name="scheduler")))
        missing = set(self.frameworks) - set(self.recorders)
        if missing:
            raise ValueError(f"no event recorder for profile(s) {sorted(missing)}")
        self._binds = asyncio.Semaphore(MAX_BINDS_IN_FLIGHT)
        self._bind_tasks: set[asyncio.Task[None]] = set()

    async def wait_for_handlers_sync(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds in all) until the handlers have been given
        everything the informers had when they synced, so that the cache holds every
        node and bound pod before the first cycle; whether they have (Kubernetes'
        ``WaitForHandlersSync``)."""
        deadline = time.monotonic() + timeout
        for _, registration in self._registrations:
            if not await registration.wait_synced(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # ----------------------------------------------------------------- handlers

    def _responsible(self, pod: core_pb2.Pod) -> bool:
        return profile_name(pod) in self.frameworks

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name:
            self.cache.add_pod(pod)
        elif is_pending(pod) and self._responsible(pod):
            self.queue.add(pod)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if new.spec.node_name:
            self.queue.delete(new)  # bound by us or someone else: no longer pending
            self.cache.update_pod(new)
            if new.status.phase in ("Succeeded", "Failed"):
                self.queue.move_all_to_active(ASSIGNED_POD_UPDATE)
        elif is_pending(new) and self._responsible(new):
            self.queue.update(new)
        else:
            self.queue.delete(new)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        self.queue.delete(pod)
        if pod.spec.node_name or self.cache.is_assumed(pod_key(pod)):
            self.cache.remove_pod(pod_key(pod))
            self.queue.move_all_to_active(ASSIGNED_POD_DELETE)

    def _node_added(self, node: core_pb2.Node) -> None:
        self.cache.add_node(node)
        self.queue.move_all_to_active(NODE_ADD)

    def _node_updated(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        self.cache.update_node(new)
        if old.spec != new.spec or old.status.allocatable != new.status.allocatable or (
                old.status.conditions != new.status.conditions) or (
                old.metadata.labels != new.metadata.labels):
            self.queue.move_all_to_active(NODE_UPDATE)

    def _node_deleted(self, node: core_pb2.Node) -> None:
        self.cache.remove_node(node.metadata.name)

    def _selector_changed(self, obj: Message) -> None:
        self.queue.move_all_to_active(SERVICE_CHANGE)

    def _selector_updated(self, old: Message, new: Message) -> None:
        self.queue.move_all_to_active(SERVICE_CHANGE)

    # ------------------------------------------------------------- spreading

    def selectors_for(self, pod: core_pb2.Pod) -> Iterable[Selector]:
        """Selectors of the Services, RCs and ReplicaSets that select ``pod`` (Kubernetes'
        DefaultSelector): the pods to spread it away from."""
        namespace, labels = pod.metadata.namespace, pod.metadata.labels
        found: list[Selector] = []
        for svc in self.services.store.by_index("namespace", namespace):
            if svc.spec.selector and _subset(svc.spec.selector, labels):
                found.append(selector_from_map(svc.spec.selector))
        for rc in self.replication_controllers.store.by_index("namespace", namespace):
            if rc.spec.selector and _subset(rc.spec.selector, labels):
                found.append(selector_from_map(rc.spec.selector))
        for rs in self.replica_sets.store.by_index("namespace", namespace):
            try:
                selector = selector_from_label_selector(rs.spec.selector)
            except errors.BadRequest:
                continue
            if not selector.empty and selector.matches(labels):
                found.append(selector)
        return found

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Schedule until cancelled (the informers must have been started)."""
        flusher = spawn(self.queue.run_flusher(), name="scheduling queue flusher")
        try:
            while True:
                queued = await self.queue.pop()
                if queued is None:
                    return
                self._report_queue()
                try:
                    await self.schedule_one(queued)
                except Exception:
                    # One pod's surprise must not stop scheduling for every other pod.
                    log.exception("scheduling cycle failed", pod=queued.key)
                    queued.unschedulable_plugins = frozenset()
                    self.queue.add_unschedulable(queued, self.queue.scheduling_cycle)
        finally:
            flusher.cancel()
            self.queue.close()
            for task in list(self._bind_tasks):
                task.cancel()
            # The informers are shared and outlive this scheduler (leadership terms).
            for informer, registration in self._registrations:
                await informer.remove_handler(registration)

    def _report_queue(self) -> None:
        for name, count in self.queue.counts().items():
            _pending(name).set(count)

    async def schedule_one(self, queued: QueuedPodInfo) -> None:
        """One scheduling cycle for one pod (the bind goes on in the background)."""
        pod = queued.pod
        current = self.pods.store.get(pod_key(pod))
        if current is None or not is_pending(current):
            self.queue.done(queued)
            return
        profile = profile_name(pod)
        framework = self.frameworks[profile]
        cycle = self.queue.scheduling_cycle
        snapshot = self.cache.snapshot()
        try:
            result = framework.schedule(queued.pod_info, snapshot.node_infos)
        except FitError as e:
            _attempts("unschedulable", profile).inc()
            queued.unschedulable_plugins = frozenset(e.unschedulable_plugins)
            self.queue.add_unschedulable(queued, cycle)
            self._failed(pod, "Unschedulable", e.message)
            return
        except SchedulingError as e:
            _attempts("error", profile).inc()
            queued.unschedulable_plugins = frozenset()
            self.queue.add_unschedulable(queued, cycle)
            self._failed(pod, "SchedulerError", str(e))
            return
        self.cache.assume(queued.pod_info, result.node_name)  # parsed already: no new PodInfo
        self.queue.done(queued)
        await self._binds.acquire()
        task = spawn(self._bind(queued, result.node_name, profile, cycle),
                     name=f"bind {pod_key(pod)}")
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)

    async def _bind(self, queued: QueuedPodInfo, node: str, profile: str, cycle: int) -> None:
        pod = queued.pod
        key = pod_key(pod)
        binding = core_pb2.Binding(
            metadata=meta_pb2.ObjectMeta(name=pod.metadata.name,
                                         namespace=pod.metadata.namespace,
                                         uid=pod.metadata.uid),
            target=meta_pb2.ObjectReference(kind="Node", name=node))
        try:
            await self.client.pods.bind(binding)
        except (errors.Conflict, errors.NotFound) as e:
            # Bound elsewhere, being deleted, or gone: nothing more to do for it.
            self.cache.forget(key)
            _attempts("error", profile).inc()
            log.info("bind refused", pod=key, node=node, error=str(e))
        except errors.APIError as e:
            self.cache.forget(key)
            _attempts("error", profile).inc()
            log.warning("bind failed", pod=key, node=node, error=str(e))
            if self.pods.store.get(key) is not None:
                queued.unschedulable_plugins = frozenset()  # an error: retry after backoff
                self.queue.add_unschedulable(queued, cycle)
        else:
            self.cache.finish_binding(key)
            _attempts("scheduled", profile).inc()
            if queued.initial_attempt_timestamp is not None:
                E2E_SECONDS.observe(max(0.0, time.monotonic() - queued.initial_attempt_timestamp))
            self.recorders[profile].event(pod, NORMAL, "Scheduled",
                                          f"Successfully assigned {key} to {node}")
        finally:
            self._binds.release()

    def _failed(self, pod: core_pb2.Pod, reason: str, message: str) -> None:
        """Tell the user: a FailedScheduling event and the pod's PodScheduled condition."""
        self.recorders[profile_name(pod)].event(pod, WARNING, "FailedScheduling", message)
        spawn(self._mark_unschedulable(pod, reason, message),
              name=f"pod condition {pod_key(pod)}")

    async def _mark_unschedulable(self, pod: core_pb2.Pod, reason: str, message: str) -> None:
        updated = core_pb2.Pod()
        updated.CopyFrom(pod)
        if not set_condition(updated, "PodScheduled", "False", reason, message):
            return
        try:
            await self.client.pods.update_status(updated)
        except (errors.Conflict, errors.NotFound):
            pass  # it changed meanwhile; the next failed attempt will say so again


def set_condition(pod: core_pb2.Pod, type_: str, status: str, reason: str,
                  message: str) -> bool:
    """Set a pod condition; whether anything changed (pure)."""
    for condition in pod.status.conditions:
        if condition.type == type_:
            if (condition.status, condition.reason, condition.message) == (
                    status, reason, message):
                return False
            break
    else:
        condition = pod.status.conditions.add(type=type_)
    if condition.status != status:
        now = Timestamp()
        now.GetCurrentTime()
        condition.last_transition_time.CopyFrom(now)
    condition.status, condition.reason, condition.message = status, reason, message
    return True


def _subset(selector: object, labels: object) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())  # type: ignore[attr-defined]
