"""Planning a pod's sync (compute_pod_actions) and its status (compute_pod_status)."""

from google.protobuf.timestamp_pb2 import Timestamp

from services.kubelet.pod_actions import compute_pod_actions
from services.kubelet.runtime import PodContainers, RuntimeContainer
from services.kubelet.status import Waiting, compute_pod_status, pod_phase
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.kubelet import labels as L


def _pod(*names: str, policy: str = "Always") -> core_pb2.Pod:
    return core_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name="p", namespace="ns", uid="u"),
        spec=core_pb2.PodSpec(restart_policy=policy, containers=[
            core_pb2.Container(name=n, image="img") for n in names]))


def _c(name: str, state: str = "running", *, count: int = 0, exit_code: int = 0,
       cid: str = "", ip: str = "") -> RuntimeContainer:
    kind = L.SANDBOX if name == L.SANDBOX_NAME else L.CONTAINER
    return RuntimeContainer(id=cid or f"{name}-{count}", name=name, pod_uid="u", kind=kind,
                            restart_count=count, state=state, image="img",
                            exit_code=exit_code, started_at=100.0 + count,
                            finished_at=0.0 if state == "running" else 110.0 + count, ip=ip)


def _observed(*containers: RuntimeContainer) -> PodContainers:
    sandboxes = tuple(c for c in containers if c.kind == L.SANDBOX)
    apps = tuple(sorted((c for c in containers if c.kind != L.SANDBOX),
                        key=lambda c: c.restart_count, reverse=True))
    return PodContainers("u", sandboxes, apps)


SANDBOX = _c(L.SANDBOX_NAME, ip="10.0.0.2")


def test_new_pod_makes_a_sandbox_and_starts_everything():
    actions = compute_pod_actions(_pod("a", "b"), _observed())
    assert actions.create_sandbox and actions.sandbox_attempt == 0 and not actions.kill_pod
    assert dict(actions.start) == {"a": 0, "b": 0}


def test_running_pod_needs_nothing_and_adoption_is_a_no_op():
    assert compute_pod_actions(_pod("a"), _observed(SANDBOX, _c("a"))).empty


def test_restart_policies_of_an_exited_container():
    failed = _observed(SANDBOX, _c("a", "exited", exit_code=1))
    done = _observed(SANDBOX, _c("a", "exited", exit_code=0))
    assert dict(compute_pod_actions(_pod("a"), failed).start) == {"a": 1}
    assert dict(compute_pod_actions(_pod("a", policy="OnFailure"), failed).start) == {"a": 1}
    assert compute_pod_actions(_pod("a", policy="OnFailure"), done).empty
    assert compute_pod_actions(_pod("a", policy="Never"), failed).empty
    assert dict(compute_pod_actions(_pod("a"), done).start) == {"a": 1}


def test_dead_sandbox_restarts_the_pod_unless_never():
    dead = _c(L.SANDBOX_NAME, "exited")
    actions = compute_pod_actions(_pod("a"), _observed(dead, _c("a")))
    assert actions.create_sandbox and actions.sandbox_attempt == 1 and actions.kill_pod
    assert dict(actions.start) == {"a": 1}
    never = compute_pod_actions(_pod("a", policy="Never"), _observed(dead, _c("a", "exited")))
    assert not never.create_sandbox and not never.start


def test_liveness_failure_kills_and_restarts():
    actions = compute_pod_actions(_pod("a"), _observed(SANDBOX, _c("a", cid="x")),
                                  liveness_failed=lambda name: name == "a")
    assert actions.kill["x"][0] == "a" and dict(actions.start) == {"a": 1}


def test_stray_running_instances_are_killed():
    old = _c("a", count=0, cid="old")
    new = _c("a", count=1, cid="new")
    actions = compute_pod_actions(_pod("a"), _observed(SANDBOX, old, new))
    assert list(actions.kill) == ["old"] and not actions.start


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(1000)
    return ts


def _status(pod, observed, waiting=None, ready=True):
    return compute_pod_status(pod, observed, waiting=waiting or {},
                              ready=lambda n: ready, started=lambda n: True,
                              host_ip="127.0.0.1", now=_now())


def test_status_of_a_running_ready_pod_is_stable():
    pod = _pod("a")
    status = _status(pod, _observed(SANDBOX, _c("a")))
    assert status.phase == "Running" and status.pod_ip == "10.0.0.2"
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"
    cs = status.container_statuses[0]
    assert cs.state.HasField("running") and cs.ready and cs.container_id == "docker://a-0"
    pod.status.CopyFrom(status)
    later = compute_pod_status(pod, _observed(SANDBOX, _c("a")), waiting={},
                               ready=lambda n: True, started=lambda n: True,
                               host_ip="127.0.0.1", now=Timestamp(seconds=2000))
    assert later == status  # nothing changed: times kept, no write needed


def test_status_in_crash_loop_back_off():
    observed = _observed(SANDBOX, _c("a", "exited", count=1, exit_code=3),
                         _c("a", "exited", count=0, exit_code=3))
    status = _status(_pod("a"), observed, {"a": Waiting("CrashLoopBackOff", "back-off 10s")})
    cs = status.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff" and cs.restart_count == 1
    assert (cs.last_state.terminated.exit_code, cs.last_state.terminated.reason) == (3, "Error")
    assert status.phase == "Running" and not cs.ready
    ready = {c.type: c for c in status.conditions}["Ready"]
    assert ready.status == "False" and ready.reason == "ContainersNotReady"


def test_status_waiting_for_an_image_is_pending():
    status = _status(_pod("a"), _observed(SANDBOX), {"a": Waiting("ErrImagePull", "no")})
    assert status.phase == "Pending"
    assert status.container_statuses[0].state.waiting.reason == "ErrImagePull"
    plain = _status(_pod("a"), _observed())
    assert plain.container_statuses[0].state.waiting.reason == "ContainerCreating"


def test_phase_rules():
    def cs(state: str, code: int = 0) -> core_pb2.ContainerStatus:
        s = core_pb2.ContainerStatus()
        if state == "running":
            s.state.running.SetInParent()
        elif state == "terminated":
            s.state.terminated.exit_code = code
        else:
            s.state.waiting.reason = "ContainerCreating"
        return s

    assert pod_phase("Never", [cs("terminated", 0)]) == "Succeeded"
    assert pod_phase("Never", [cs("terminated", 1)]) == "Failed"
    assert pod_phase("OnFailure", [cs("terminated", 0), cs("terminated", 0)]) == "Succeeded"
    assert pod_phase("Always", [cs("terminated", 0)]) == "Running"
    assert pod_phase("Always", [cs("running"), cs("waiting")]) == "Pending"
    assert pod_phase("Always", [cs("running"), cs("terminated", 0)]) == "Running"
