"""The probe workers' logic, on a fake clock with scripted probe outcomes (no Docker, no
sockets): thresholds, initial delay, period, the startup gate, fresh results per
container instance. The real actions (exec, HTTP, TCP) are exercised against Docker in
tests/e2e/test_kubelet_components.py."""

from __future__ import annotations

import pytest

from services.kubelet.probes import (
    ContainerRef,
    Outcome,
    ProbeKind,
    ProbeManager,
    ProbeSettings,
    Result,
    ThresholdState,
    observe,
    resolve_port,
    wall_time,
)
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.clock import FakeClock

OK, FAIL, UNKNOWN = Result.SUCCESS, Result.FAILURE, Result.UNKNOWN

# ---- pure parts ----


def test_settings_take_kubernetes_defaults():
    s = ProbeSettings.of(core_pb2.Probe(), ProbeKind.READINESS)
    assert (s.initial_delay, s.period, s.timeout, s.success_threshold,
            s.failure_threshold) == (0, 10, 1, 1, 3)
    s = ProbeSettings.of(core_pb2.Probe(initial_delay_seconds=4, period_seconds=2,
                                        timeout_seconds=3, success_threshold=5,
                                        failure_threshold=6), ProbeKind.READINESS)
    assert (s.initial_delay, s.period, s.timeout, s.success_threshold,
            s.failure_threshold) == (4, 2, 3, 5, 6)
    # Liveness and startup publish success after one (Kubernetes requires 1).
    assert ProbeSettings.of(core_pb2.Probe(success_threshold=5),
                            ProbeKind.LIVENESS).success_threshold == 1


def test_observe_publishes_after_threshold_in_a_row():
    settings = ProbeSettings(success_threshold=2, failure_threshold=3)
    state = ThresholdState()
    state = observe(state, OK, settings)
    assert state.published is None
    state = observe(state, OK, settings)
    assert state.published is OK
    state = observe(state, FAIL, settings)
    state = observe(state, FAIL, settings)
    assert state.published is OK
    state = observe(state, OK, settings)  # the run of failures is broken
    state = observe(state, FAIL, settings)
    state = observe(state, FAIL, settings)
    assert state.published is OK
    state = observe(state, FAIL, settings)
    assert state.published is FAIL


def test_observe_ignores_unknown():
    settings = ProbeSettings(failure_threshold=2)
    state = observe(ThresholdState(), FAIL, settings)
    assert observe(state, UNKNOWN, settings) == state
    assert observe(observe(state, UNKNOWN, settings), FAIL, settings).published is FAIL


def test_resolve_port_number_or_name():
    container = core_pb2.Container(name="web", ports=[
        core_pb2.ContainerPort(name="http", container_port=8080)])
    assert resolve_port(meta_pb2.IntOrString(int_val=81), container) == 81
    named = meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING, str_val="http")
    assert resolve_port(named, container) == 8080
    digits = meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING, str_val="9090")
    assert resolve_port(digits, container) == 9090
    missing = meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING, str_val="admin")
    with pytest.raises(ValueError, match="no port named 'admin'"):
        resolve_port(missing, container)
    with pytest.raises(ValueError, match="invalid port"):
        resolve_port(meta_pb2.IntOrString(int_val=0), container)


def test_wall_time_parses_docker_stamps():
    assert wall_time("2024-05-01T10:00:00Z") == 1714557600.0
    assert wall_time("2024-05-01T10:00:00.5Z") == 1714557600.5
    assert wall_time("0001-01-01T00:00:00Z") == 0.0


# ---- the workers, on a fake clock ----


class Script:
    """Probe outcomes by the probe's exec command word; counts the calls."""

    def __init__(self, **outcomes: Result) -> None:
        self.outcomes = dict(outcomes)
        self.calls: dict[str, int] = {}

    async def __call__(self, probe: core_pb2.Probe, spec: core_pb2.Container,
                       ref: ContainerRef) -> Outcome:
        word = probe.exec.command[0]
        self.calls[word] = self.calls.get(word, 0) + 1
        return Outcome(self.outcomes[word])


def probe(word: str, **fields: int) -> core_pb2.Probe:
    return core_pb2.Probe(exec=core_pb2.ExecAction(command=[word]), **fields)


def make_pod(**probes: core_pb2.Probe) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.uid = "uid-1"
    pod.spec.containers.add(name="app", image="busybox", **probes)
    return pod


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def harness(clock):
    changes: list[str] = []
    managers: list[ProbeManager] = []

    def make(script: Script) -> ProbeManager:
        manager = ProbeManager(None, changes.append, clock=clock, prober=script)  # type: ignore[arg-type]
        managers.append(manager)
        return manager

    yield make, changes
    for manager in managers:
        await manager.stop()


async def test_readiness_needs_initial_delay_and_success_threshold(clock, harness):
    make, changes = harness
    script = Script(ready=OK)
    manager = make(script)
    pod = make_pod(readiness_probe=probe("ready", initial_delay_seconds=5, period_seconds=1,
                                         success_threshold=2, failure_threshold=3))
    manager.update_pod(pod, {"app": ContainerRef("c1", clock.wall())})
    assert manager.started("uid-1", "app")
    assert not manager.ready("uid-1", "app")  # readiness starts as failure
    await clock.run_for(4.9)
    assert script.calls == {}  # the initial delay counts from the container's start
    await clock.run_for(0.2)
    assert script.calls == {"ready": 1} and not manager.ready("uid-1", "app")
    await clock.run_for(1.0)
    assert manager.ready("uid-1", "app")
    assert changes == ["uid-1"]
    script.outcomes["ready"] = FAIL
    await clock.run_for(2.0)
    assert manager.ready("uid-1", "app")  # two failures: below the threshold
    await clock.run_for(1.0)
    assert not manager.ready("uid-1", "app")
    assert changes == ["uid-1", "uid-1"]
    assert not manager.liveness_failed("uid-1", "app")  # readiness never kills


async def test_liveness_failure_holds_until_a_new_instance(clock, harness):
    make, changes = harness
    script = Script(live=FAIL)
    manager = make(script)
    pod = make_pod(liveness_probe=probe("live", period_seconds=2))
    manager.update_pod(pod, {"app": ContainerRef("c1", clock.wall())})
    assert not manager.liveness_failed("uid-1", "app")  # liveness starts as success
    assert manager.ready("uid-1", "app")  # no readiness probe
    await clock.run_for(4.5)  # probes at 0, 2, 4: the default threshold of 3
    assert manager.liveness_failed("uid-1", "app")
    assert changes == ["uid-1"]
    await clock.run_for(10)
    assert script.calls["live"] == 3  # on hold: the kubelet restarts the container
    # The same instance again changes nothing.
    manager.update_pod(pod, {"app": ContainerRef("c1", clock.wall() - 14)})
    assert manager.liveness_failed("uid-1", "app")
    # The restarted instance starts with fresh results and a fresh worker.
    script.outcomes["live"] = OK
    manager.update_pod(pod, {"app": ContainerRef("c2", clock.wall())})
    assert not manager.liveness_failed("uid-1", "app")
    await clock.run_for(4.5)
    assert script.calls["live"] == 6 and not manager.liveness_failed("uid-1", "app")


async def test_startup_gates_liveness_and_readiness(clock, harness):
    make, changes = harness
    script = Script(start=FAIL, live=FAIL, ready=OK)
    manager = make(script)
    pod = make_pod(startup_probe=probe("start", period_seconds=1, failure_threshold=30),
                   liveness_probe=probe("live", period_seconds=1, initial_delay_seconds=3),
                   readiness_probe=probe("ready", period_seconds=1))
    manager.update_pod(pod, {"app": ContainerRef("c1", clock.wall())})
    await clock.run_for(10.5)
    assert script.calls == {"start": 11}
    assert not manager.started("uid-1", "app")
    assert not manager.ready("uid-1", "app")
    assert not manager.liveness_failed("uid-1", "app")
    script.outcomes["start"] = OK
    script.outcomes["live"] = OK
    await clock.run_for(1.0)
    # Startup passed: readiness probes at once (its delay, counted from the container's
    # start, is long over); the startup worker is done.
    assert manager.started("uid-1", "app")
    assert manager.ready("uid-1", "app")
    await clock.run_for(5.0)
    assert script.calls["start"] == 12
    assert script.calls["live"] >= 5 and not manager.liveness_failed("uid-1", "app")
    assert set(changes) == {"uid-1"}


async def test_startup_failure_counts_as_liveness_failure(clock, harness):
    make, _ = harness
    script = Script(start=FAIL)
    manager = make(script)
    pod = make_pod(startup_probe=probe("start", period_seconds=1, failure_threshold=2))
    manager.update_pod(pod, {"app": ContainerRef("c1", clock.wall())})
    await clock.run_for(1.5)
    assert manager.liveness_failed("uid-1", "app")
    assert not manager.started("uid-1", "app")


async def test_unknown_outcomes_change_nothing(clock, harness):
    make, changes = harness
    script = Script(live=UNKNOWN)
    manager = make(script)
    pod = make_pod(liveness_probe=probe("live", period_seconds=1, failure_threshold=1))
    manager.update_pod(pod, {"app": ContainerRef("c1", clock.wall())})
    await clock.run_for(5.5)
    assert script.calls["live"] == 6
    assert not manager.liveness_failed("uid-1", "app") and changes == []


async def test_containers_without_probes_and_gone_containers(clock, harness):
    make, _ = harness
    script = Script(ready=OK)
    manager = make(script)
    pod = make_pod(readiness_probe=probe("ready", period_seconds=1))
    pod.spec.containers.add(name="sidecar", image="busybox")
    manager.update_pod(pod, {"sidecar": ContainerRef("s1", clock.wall())})
    assert manager.ready("uid-1", "sidecar") and manager.started("uid-1", "sidecar")
    # A container that is not running is neither ready nor started.
    assert not manager.ready("uid-1", "app") and not manager.started("uid-1", "app")
    assert not manager.ready("other", "app")
    manager.update_pod(pod, {"sidecar": ContainerRef("s1", clock.wall()),
                             "app": ContainerRef("a1", clock.wall())})
    await clock.run_for(0.5)
    assert manager.ready("uid-1", "app")
    manager.update_pod(pod, {"sidecar": ContainerRef("s1", clock.wall())})
    assert not manager.ready("uid-1", "app")
    await clock.run_for(5)
    assert script.calls["ready"] == 1  # its worker stopped with it


async def test_remove_pod_stops_its_workers(clock, harness):
    make, _ = harness
    script = Script(ready=OK)
    manager = make(script)
    manager.update_pod(make_pod(readiness_probe=probe("ready", period_seconds=1)),
                       {"app": ContainerRef("c1", clock.wall())})
    await clock.run_for(2.5)
    assert script.calls["ready"] == 3
    manager.remove_pod("uid-1")
    assert not manager.ready("uid-1", "app")
    await clock.run_for(5)
    assert script.calls["ready"] == 3
