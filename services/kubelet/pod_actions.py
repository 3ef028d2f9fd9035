"""Planning one pod's sync: what should run compared with what runs (pure).

Kubernetes' ``computePodActions`` (kuberuntime_manager.go), for Skiff's Docker pods:

- No running sandbox with an IP (first sync, or it died): every running container is
  stopped and a new sandbox made (attempt = the old one's + 1), then the containers
  start again as the restart policy allows. A ``Never`` pod whose sandbox died after
  its containers ran is not recreated (it has finished, in Kubernetes' terms).
- Sandbox fine: a container that never ran starts; one that exited starts again when
  the restart policy says so (``Always``; ``OnFailure`` and a non-zero exit); one that
  runs but failed liveness, or runs another image than the spec now names, is killed
  (and started again if the policy allows restarts).
- Anything else running (older sandboxes, older instances, containers no longer in the
  spec) is killed.

Whether a start waits for its crash back-off is the caller's decision (it holds the
clock and the back-off); a start's restart count is the latest instance's + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from services.kubelet.runtime import EXITED, PodContainers, RuntimeContainer
from skiff.api.v1 import core_pb2

ALWAYS, ON_FAILURE, NEVER = "Always", "OnFailure", "Never"


@dataclass(frozen=True)
class PodActions:
    """One sync's plan. ``start`` maps container name -> restart count of the new
    instance, in spec order; ``kill`` maps container id -> (container name, why)."""

    create_sandbox: bool = False
    sandbox_attempt: int = 0
    kill_pod: bool = False
    start: Mapping[str, int] = field(default_factory=dict)
    kill: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.create_sandbox or self.kill_pod or self.start or self.kill)


def should_restart(policy: str, container: RuntimeContainer) -> bool:
    """Whether an exited (or never started) container is started again under ``policy``."""
    if container.state != EXITED:
        return True  # created but never started (a crash between create and start)
    if policy == NEVER:
        return False
    if policy == ON_FAILURE:
        return container.exit_code != 0
    return True


def _next_count(latest: RuntimeContainer | None) -> int:
    return latest.restart_count + 1 if latest is not None else 0


def compute_pod_actions(pod: core_pb2.Pod, observed: PodContainers, *,
                        liveness_failed: Callable[[str], bool] = lambda name: False
                        ) -> PodActions:
    """The plan for ``pod`` given what the runtime has of it (see the module)."""
    policy = pod.spec.restart_policy or ALWAYS
    spec_names = [c.name for c in pod.spec.containers]
    sandbox = observed.sandbox
    if sandbox is None or not sandbox.running or not sandbox.ip:
        attempt = sandbox.restart_count + 1 if sandbox is not None else 0
        ran = any(c.started_at for c in observed.containers)
        kill_pod = bool(observed.running)
        if policy == NEVER and sandbox is not None and ran:
            return PodActions(kill_pod=kill_pod)
        start = {}
        for name in spec_names:
            latest = observed.latest(name)
            if latest is None or latest.running or should_restart(policy, latest):
                start[name] = _next_count(latest)
        return PodActions(create_sandbox=True, sandbox_attempt=attempt, kill_pod=kill_pod,
                          start=start)

    start: dict[str, int] = {}
    kill: dict[str, tuple[str, str]] = {}
    images = {c.name: c.image for c in pod.spec.containers}
    for name in spec_names:
        latest = observed.latest(name)
        if latest is None:
            start[name] = 0
        elif latest.running:
            why = ""
            if liveness_failed(name):
                why = "failed liveness probe, will be restarted"
            elif latest.image and latest.image != images[name]:
                why = "definition changed, will be restarted"
            if why:
                kill[latest.id] = (name, why)
                if policy != NEVER:
                    start[name] = _next_count(latest)
        elif should_restart(policy, latest):
            start[name] = _next_count(latest)
    latest_ids = {sandbox.id} | {c.id for n in spec_names
                                 if (c := observed.latest(n)) is not None}
    for c in observed.running:
        if c.id not in latest_ids and c.id not in kill:
            kill[c.id] = (c.name, "not wanted any more")
    return PodActions(start=start, kill=kill)
