"""Node conditions from host figures, and allocatable (pure)."""

from google.protobuf.timestamp_pb2 import Timestamp

from services.kubelet.config import EvictionThresholds, parse_args
from services.kubelet.node_status import (
    HostFigures,
    allocatable,
    conditions_for,
    merge_conditions,
)

GI = 1024 ** 3


def _by_type(conditions):
    return {c.type: c.status for c in conditions}


def test_pressure_conditions_follow_the_thresholds():
    thresholds = EvictionThresholds.parse("memory.available<1Gi,nodefs.available<10%")
    fine = conditions_for(HostFigures(4 * GI, 50 * GI, 100 * GI, True), thresholds)
    assert _by_type(fine) == {"MemoryPressure": "False", "DiskPressure": "False",
                              "PIDPressure": "False", "Ready": "True"}
    tight = conditions_for(HostFigures(GI // 2, 5 * GI, 100 * GI, False, "down"), thresholds)
    assert _by_type(tight) == {"MemoryPressure": "True", "DiskPressure": "True",
                               "PIDPressure": "False", "Ready": "False"}


def test_merge_keeps_transition_times_and_reports_changes():
    thresholds = EvictionThresholds()
    first, changed = merge_conditions([], conditions_for(
        HostFigures(4 * GI, 50 * GI, 100 * GI, True), thresholds), Timestamp(seconds=10))
    assert changed
    again, changed = merge_conditions(first, conditions_for(
        HostFigures(4 * GI, 50 * GI, 100 * GI, True), thresholds), Timestamp(seconds=20))
    assert not changed
    ready = next(c for c in again if c.type == "Ready")
    assert (ready.last_transition_time.seconds, ready.last_heartbeat_time.seconds) == (10, 20)


def test_allocatable_is_capacity_minus_reserved():
    got = allocatable({"cpu": "2", "memory": "4Gi", "pods": "110"},
                      {"cpu": "100m", "memory": "512Mi"})
    assert got == {"cpu": "1900m", "memory": "3584Mi", "pods": "110"}


def test_flags():
    config = parse_args(["--node-name", "n1", "--crash-backoff-initial", "1",
                         "--system-reserved", "cpu=100m"])
    assert config.network == "skiff-n1" and config.port == 10250
    assert config.pod_cidr == "10.244.0.0/24" and config.address == "127.0.0.1"
    assert config.crash_backoff_initial == 1 and config.system_reserved == {"cpu": "100m"}
