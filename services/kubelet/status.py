"""A pod's status from what runs (pure): phase, conditions, container statuses, IPs.

Kubernetes' ``generateAPIPodStatus`` / ``getPhase`` / ``GeneratePodReadyCondition``:

- each spec container's status comes from its newest instance: running (since when),
  terminated (exit code; reason ``Completed``, ``Error`` or ``OOMKilled``), or waiting
  (the reason this sync gave: ``CrashLoopBackOff``, ``ErrImagePull``,
  ``ImagePullBackOff``..., else ``ContainerCreating``); the instance before it is the
  last termination; ``restart_count`` is the newest instance's label;
- the phase follows Kubernetes' ``getPhase`` (a container waiting to restart counts as
  stopped, not pending);
- conditions keep their ``last_transition_time`` while their status stays, so a status
  computed twice from the same world is equal and is not written again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from services.kubelet.pod_actions import ALWAYS, NEVER
from services.kubelet.runtime import EXITED, PodContainers, RuntimeContainer
from skiff.api.v1 import core_pb2

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
CONTAINER_CREATING = "ContainerCreating"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
CONDITION_TYPES = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


@dataclass(frozen=True)
class Waiting:
    """Why a container is not running now (a waiting state's reason and message)."""

    reason: str
    message: str = ""


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def container_id(c: RuntimeContainer) -> str:
    return f"docker://{c.id}"


def terminated(c: RuntimeContainer) -> core_pb2.ContainerStateTerminated:
    """The terminated state of an exited instance (Kubernetes' reasons)."""
    if c.oom_killed:
        reason = "OOMKilled"
    elif c.exit_code == 0:
        reason = "Completed"
    else:
        reason = "Error"
    return core_pb2.ContainerStateTerminated(
        exit_code=c.exit_code, reason=reason, message=c.error,
        started_at=timestamp(c.started_at) if c.started_at else None,
        finished_at=timestamp(c.finished_at) if c.finished_at else None,
        container_id=container_id(c))


def container_status(container: core_pb2.Container, observed: PodContainers, *,
                     waiting: Waiting | None, ready: bool, started: bool
                     ) -> core_pb2.ContainerStatus:
    """One container's status (see the module)."""
    status = core_pb2.ContainerStatus(name=container.name, image=container.image)
    instances = observed.instances(container.name)
    latest = instances[0] if instances else None
    previous = instances[1] if len(instances) > 1 else None
    if latest is not None:
        status.restart_count = latest.restart_count
        status.container_id = container_id(latest)
        status.image_id = latest.image_id
    if latest is not None and latest.running:
        status.state.running.started_at.CopyFrom(timestamp(latest.started_at))
        if previous is not None and previous.state == EXITED:
            status.last_state.terminated.CopyFrom(terminated(previous))
        status.ready = ready
        status.started = started
        return status
    status.started = False
    if latest is not None and latest.state == EXITED:
        if waiting is not None:
            status.state.waiting.reason, status.state.waiting.message = (
                waiting.reason, waiting.message)
            status.last_state.terminated.CopyFrom(terminated(latest))
        else:
            status.state.terminated.CopyFrom(terminated(latest))
        return status
    waiting = waiting or Waiting(CONTAINER_CREATING)
    status.state.waiting.reason, status.state.waiting.message = waiting.reason, waiting.message
    if previous is not None and previous.state == EXITED:
        status.last_state.terminated.CopyFrom(terminated(previous))
    return status


def pod_phase(restart_policy: str, statuses: list[core_pb2.ContainerStatus]) -> str:
    """Kubernetes' ``getPhase`` over the containers' statuses (pure)."""
    waiting = running = stopped = succeeded = 0
    for s in statuses:
        if s.state.HasField("running"):
            running += 1
        elif s.state.HasField("terminated"):
            stopped += 1
            succeeded += s.state.terminated.exit_code == 0
        elif s.last_state.HasField("terminated"):
            stopped += 1  # waiting to restart: it ran
        else:
            waiting += 1
    if waiting:
        return PENDING
    if running:
        return RUNNING
    if stopped:
        if (restart_policy or ALWAYS) == ALWAYS:
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        if restart_policy == NEVER:
            return FAILED
        return RUNNING
    return PENDING


def _condition(old: Mapping[str, core_pb2.PodCondition], type_: str, status: str,
               now: Timestamp, reason: str = "", message: str = "") -> core_pb2.PodCondition:
    condition = core_pb2.PodCondition(type=type_, status=status, reason=reason,
                                      message=message)
    previous = old.get(type_)
    if previous is not None and previous.status == status:
        condition.last_transition_time.CopyFrom(previous.last_transition_time)
    else:
        condition.last_transition_time.CopyFrom(now)
    return condition


def compute_pod_status(pod: core_pb2.Pod, observed: PodContainers, *,
                       waiting: Mapping[str, Waiting], ready: Callable[[str], bool],
                       started: Callable[[str], bool], host_ip: str, now: Timestamp,
                       previous: core_pb2.PodStatus | None = None) -> core_pb2.PodStatus:
    """The pod's status as the kubelet reports it (pure; see the module).

    ``previous`` is the status last posted (the informer's copy may lag behind it);
    times and the pod IP carry over from it, else from ``pod.status``."""
    old = previous if previous is not None else pod.status
    statuses = [container_status(c, observed, waiting=waiting.get(c.name),
                                 ready=ready(c.name), started=started(c.name))
                for c in pod.spec.containers]
    phase = pod_phase(pod.spec.restart_policy, statuses)
    status = core_pb2.PodStatus(phase=phase, host_ip=host_ip, qos_class=old.qos_class,
                                nominated_node_name=old.nominated_node_name)
    status.container_statuses.extend(statuses)
    sandbox = observed.sandbox
    ip = sandbox.ip if sandbox is not None and sandbox.running and sandbox.ip else old.pod_ip
    if ip:
        status.pod_ip = ip
        status.pod_ips.add(ip=ip)
    status.start_time.CopyFrom(old.start_time if old.HasField("start_time") else now)

    before = {c.type: c for c in old.conditions}
    conditions = [c for c in old.conditions if c.type not in CONDITION_TYPES]
    conditions.append(_condition(before, "PodScheduled", "True", now))
    conditions.append(_condition(before, "Initialized", "True", now))
    unready = [s.name for s in statuses if not s.ready]
    if phase in (SUCCEEDED, FAILED):
        reason, message, flag = "PodCompleted", "", "False"
    elif unready:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
        flag = "False"
    else:
        reason, message, flag = "", "", "True"
    conditions.append(_condition(before, "ContainersReady", flag, now, reason, message))
    conditions.append(_condition(before, "Ready", flag, now, reason, message))
    status.conditions.extend(conditions)
    return status
