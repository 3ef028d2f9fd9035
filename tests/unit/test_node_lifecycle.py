"""The node lifecycle controller's decisions: health from locally observed heartbeats,
taints from health, eviction times from tolerations, and the eviction rate limit."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.controller_manager.config import parse_args
from services.controller_manager.node_lifecycle import (
    HEALTHY,
    NOT_READY,
    NOT_READY_TAINT,
    UNKNOWN,
    UNKNOWN_MESSAGE,
    UNKNOWN_REASON,
    UNREACHABLE_TAINT,
    NodeLifecycleController,
    TokenBucket,
    eviction_time,
    heartbeat_of,
    needs_unknown,
    node_health,
    observe,
    pod_eviction_time,
    taints_for,
    unknown_conditions,
)
from skiff.api.v1 import coordination_pb2, core_pb2, meta_pb2
from skiff.client.clock import FakeClock
from skiff.client.informer import SharedInformerFactory

GRACE = 40.0


def node(ready: str | None = "True", *, beat: int = 100,
         taints: list[core_pb2.Taint] | None = None) -> core_pb2.Node:
    n = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"))
    if ready is not None:
        n.status.conditions.add(type="Ready", status=ready,
                                last_heartbeat_time=Timestamp(seconds=beat))
    n.status.conditions.add(type="MemoryPressure", status="False")
    n.spec.taints.extend(taints or [])
    return n


def lease(renew: int) -> coordination_pb2.Lease:
    found = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(name="n1"))
    found.spec.renew_time.FromSeconds(renew)
    return found


def taint(key: str, added: int = 1000, effect: str = "NoExecute") -> core_pb2.Taint:
    return core_pb2.Taint(key=key, effect=effect, time_added=Timestamp(seconds=added))


def pod(*tolerations: core_pb2.Toleration) -> core_pb2.Pod:
    p = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="p", namespace="ns"))
    p.spec.tolerations.extend(tolerations)
    return p


def test_health_goes_unknown_only_after_the_heartbeat_stood_still_locally():
    clock = FakeClock()
    n = node()
    health = observe(None, heartbeat_of(n, lease(5)), clock.now())
    assert node_health(n, health, clock.now(), GRACE) == HEALTHY
    clock.advance(30)
    # The lease renewed: a new value, stamped with the local time (its own time is
    # never compared with ours: here it is far in the past).
    health = observe(health, heartbeat_of(n, lease(6)), clock.now())
    clock.advance(30)
    health = observe(health, heartbeat_of(n, lease(6)), clock.now())
    assert node_health(n, health, clock.now(), GRACE) == HEALTHY
    clock.advance(11)
    health = observe(health, heartbeat_of(n, lease(6)), clock.now())
    assert node_health(n, health, clock.now(), GRACE) == UNKNOWN
    # A Ready heartbeat counts as much as a lease renewal.
    n2 = node(beat=200)
    health = observe(health, heartbeat_of(n2, lease(6)), clock.now())
    assert node_health(n2, health, clock.now(), GRACE) == HEALTHY


def test_health_follows_the_ready_condition_while_fresh():
    health = observe(None, (0.0, 0.0), 0.0)
    assert node_health(node("False"), health, 1.0, GRACE) == NOT_READY
    assert node_health(node("Unknown"), health, 1.0, GRACE) == UNKNOWN
    assert node_health(node(None), health, 1.0, GRACE) == HEALTHY


def test_unknown_conditions_keep_heartbeats_and_add_missing_ones():
    n = node(beat=100)
    now = Timestamp(seconds=5000)
    conditions = {c.type: c for c in unknown_conditions(n, now)}
    assert set(conditions) == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    ready = conditions["Ready"]
    assert (ready.status, ready.reason, ready.message) == ("Unknown", UNKNOWN_REASON,
                                                           UNKNOWN_MESSAGE)
    assert ready.last_heartbeat_time.seconds == 100
    assert ready.last_transition_time.seconds == 5000
    assert conditions["DiskPressure"].status == "Unknown"
    assert needs_unknown(n)
    n.status.ClearField("conditions")
    n.status.conditions.extend(conditions.values())
    assert not needs_unknown(n)


def test_taints_follow_health_and_keep_others_and_time_added():
    now = Timestamp(seconds=2000)
    other = taint("dedicated", effect="NoSchedule")
    n = node(taints=[other])
    unreachable = taints_for(n, UNKNOWN, now)
    assert [(t.key, t.effect) for t in unreachable] == [
        ("dedicated", "NoSchedule"), (UNREACHABLE_TAINT, "NoExecute")]
    assert unreachable[1].time_added.seconds == 2000
    n.spec.ClearField("taints")
    n.spec.taints.extend(unreachable)
    # Still unreachable later: the taint keeps its timeAdded.
    assert taints_for(n, UNKNOWN, Timestamp(seconds=3000)) == unreachable
    # Ready False: not-ready replaces unreachable.
    assert [t.key for t in taints_for(n, NOT_READY, now)] == ["dedicated", NOT_READY_TAINT]
    # Ready again: ours go, the other stays.
    assert [t.key for t in taints_for(n, HEALTHY, now)] == ["dedicated"]


def test_eviction_time_from_tolerations():
    unreachable = taint(UNREACHABLE_TAINT, added=1000)
    assert eviction_time(pod(), unreachable) == 1000.0  # not tolerated: at once
    # Equal with another value does not tolerate the taint.
    wrong = core_pb2.Toleration(key=UNREACHABLE_TAINT, operator="Equal", value="x",
                                effect="NoExecute")
    assert eviction_time(pod(wrong), unreachable) == 1000.0
    for_two = core_pb2.Toleration(key=UNREACHABLE_TAINT, operator="Exists",
                                  effect="NoExecute", toleration_seconds=2)
    assert eviction_time(pod(for_two), unreachable) == 1002.0
    forever = core_pb2.Toleration(operator="Exists")
    assert eviction_time(pod(forever), unreachable) is None
    # With seconds and without: the seconds count (Kubernetes' getMinTolerationTime).
    assert eviction_time(pod(forever, for_two), unreachable) == 1002.0
    negative = core_pb2.Toleration(key=UNREACHABLE_TAINT, operator="Exists",
                                   toleration_seconds=-5)
    assert eviction_time(pod(negative), unreachable) == 1000.0
    # Only NoExecute taints evict.
    assert eviction_time(pod(), taint("x", effect="NoSchedule")) is None


def test_pod_eviction_time_is_the_earliest_over_taints():
    for_ten = core_pb2.Toleration(operator="Exists", toleration_seconds=10)
    taints = [taint(UNREACHABLE_TAINT, added=1000), taint(NOT_READY_TAINT, added=995)]
    assert pod_eviction_time(pod(for_ten), taints) == 1005.0
    assert pod_eviction_time(pod(core_pb2.Toleration(operator="Exists")), taints) is None


def test_token_bucket_limits_the_rate():
    bucket = TokenBucket(qps=10, burst=2)
    assert bucket.try_take(0.0) and bucket.try_take(0.0)
    assert not bucket.try_take(0.0)
    assert abs(bucket.wait() - 0.1) < 1e-9
    assert not bucket.try_take(0.05)
    assert bucket.try_take(0.1)
    assert bucket.try_take(10.0) and bucket.try_take(10.0) and not bucket.try_take(10.0)


class _Unused:
    """A client the controller is built with but never calls (no sockets here)."""

    def resource(self, kind: object) -> object:
        return object()


def test_the_monitor_period_is_the_flags():
    # --node-monitor-period was parsed into the config but the controller kept its
    # 5 s default: a node went silent up to 5 s longer than the flags said.
    config = parse_args(["--node-monitor-period", "0.25", "--node-monitor-grace-period", "2"])
    factory = SharedInformerFactory(_Unused())
    built = NodeLifecycleController(_Unused(), factory, None, config,  # type: ignore[arg-type]
                                    clock=FakeClock())
    assert (built.monitor_period, built.grace) == (0.25, 2.0)
    chosen = NodeLifecycleController(_Unused(), factory, None, config,  # type: ignore[arg-type]
                                     clock=FakeClock(), monitor_period=1.0)
    assert chosen.monitor_period == 1.0
