"""Container and image GC decisions (pure functions; Docker is exercised in
tests/e2e/test_kubelet_components.py)."""

from __future__ import annotations

import pytest

from services.kubelet import container_gc, image_gc
from services.kubelet.container_gc import ContainerGCPolicy, ContainerInfo
from services.kubelet.image_gc import DiskUsage, ImageGCPolicy, ImageRecord
from skiff.kubelet import labels
from skiff.kubelet.images import PAUSE_IMAGE

NOW = 10_000.0

# ---- containers ----


def dead(id_: str, uid: str = "p1", name: str = "app", *, age: float = 100,
         restarts: int = 0, joins: str = "") -> ContainerInfo:
    return ContainerInfo(id=id_, pod_uid=uid, name=name, sandbox=False,
                         created=NOW - age, running=False, restart_count=restarts,
                         joins=joins)


def running(id_: str, uid: str = "p1", name: str = "app", *, age: float = 100,
            joins: str = "") -> ContainerInfo:
    return ContainerInfo(id=id_, pod_uid=uid, name=name, sandbox=False, created=NOW - age,
                         running=True, joins=joins)


def sandbox(id_: str, uid: str = "p1", *, age: float = 200, alive: bool = False
            ) -> ContainerInfo:
    return ContainerInfo(id=id_, pod_uid=uid, name=labels.SANDBOX_NAME, sandbox=True,
                         created=NOW - age, running=alive)


DEFAULT_POLICY = ContainerGCPolicy()


def plan(containers, policy=DEFAULT_POLICY, active=("p1",)):
    return container_gc.plan(containers, policy, set(active), NOW)


def test_keeps_the_newest_dead_per_container_by_default():
    containers = [running("r", age=1), dead("d0", age=50, restarts=0),
                  dead("d1", age=40, restarts=1), dead("d2", age=30, restarts=2),
                  dead("x0", name="side", age=45)]
    assert plan(containers) == ["d1", "d0"]


def test_restart_count_breaks_creation_ties():
    containers = [dead("d3", age=10, restarts=3), dead("d4", age=10, restarts=4)]
    assert plan(containers) == ["d3"]


def test_never_a_running_one_even_of_a_gone_pod():
    containers = [running("r1", uid="gone"), dead("d1", uid="gone"), running("r2")]
    assert plan(containers, active=("p1",)) == ["d1"]


def test_gone_pods_lose_all_their_dead_containers():
    containers = [dead("g1", uid="gone", age=10), dead("g2", uid="gone", age=20),
                  dead("k1", age=10)]
    assert sorted(plan(containers)) == ["g1", "g2"]


def test_min_age_protects_young_containers():
    containers = [dead("old", age=100), dead("older", age=200), dead("young", age=5),
                  dead("g", uid="gone", age=5)]
    assert plan(containers, ContainerGCPolicy(min_age=60, max_per_pod_container=0)) == [
        "old", "older"]


def test_negative_per_container_limit_keeps_all():
    containers = [dead(f"d{i}", age=100 - i, restarts=i) for i in range(5)]
    assert plan(containers, ContainerGCPolicy(max_per_pod_container=-1)) == []


def test_total_limit_shares_between_units_then_evicts_oldest():
    a = [dead(f"a{i}", name="a", age=100 - i, restarts=i) for i in range(4)]
    b = [dead(f"b{i}", name="b", age=90 - i, restarts=i) for i in range(2)]
    c = [dead("c0", name="c", age=5)]
    policy = ContainerGCPolicy(max_per_pod_container=-1, max_containers=3)
    removed = plan(a + b + c, policy)
    # 3 // 3 units = 1 each: the newest of a, b and c stay.
    assert sorted(removed) == ["a0", "a1", "a2", "b0"]
    policy = ContainerGCPolicy(max_per_pod_container=-1, max_containers=2)
    removed = plan(a + b + c, policy)
    # Fewer slots than units: one each, then the oldest of those (a3) goes.
    assert sorted(removed) == ["a0", "a1", "a2", "a3", "b0"]


def test_sandboxes_of_gone_pods_go_once_no_container_joins_them():
    containers = [sandbox("s-gone", uid="gone"), dead("g1", uid="gone", joins="s-gone"),
                  sandbox("s-busy", uid="gone2"),
                  running("r", uid="gone2", joins="s-busy"),
                  sandbox("s-live", uid="gone3", alive=True)]
    removed = plan(containers)
    assert removed == ["g1", "s-gone"]  # containers before their sandboxes


def test_active_pods_keep_their_newest_sandbox():
    containers = [sandbox("s-old", age=300), sandbox("s-mid", age=200),
                  sandbox("s-new", age=100, alive=True), running("r", joins="s-new"),
                  dead("d", age=250, joins="s-mid"), dead("d2", age=150, joins="s-new")]
    # d is older than d2 (same unit): removed, which frees s-mid; among the dead
    # sandboxes s-mid is the newest, so only s-old goes.
    assert plan(containers) == ["d", "s-old"]


def test_container_info_from_docker_listing():
    entry = {"Id": "abc", "Created": 1700000000, "State": "exited",
             "HostConfig": {"NetworkMode": "container:sbx"},
             "Labels": labels.container_labels(node="n1", uid="u1", namespace="default",
                                               pod="web", container="app",
                                               restart_count=2)}
    info = ContainerInfo.from_docker(entry)
    assert info == ContainerInfo(id="abc", pod_uid="u1", name="app", sandbox=False,
                                 created=1700000000.0, running=False, restart_count=2,
                                 joins="sbx")
    entry["State"] = "restarting"
    assert ContainerInfo.from_docker(entry).running


# ---- images ----

MB = 1024 * 1024
GB = 1024 * MB


class FakeDisk:
    """Disk usage that drops as images are removed (a fake disk-usage function)."""

    def __init__(self, capacity: int, used: int, images: list[ImageRecord]) -> None:
        self.capacity, self.used = capacity, used
        self.sizes = {i.id: i.size for i in images}

    def remove(self, ids) -> None:
        for image_id in ids:
            self.used -= self.sizes.pop(image_id)

    def __call__(self) -> DiskUsage:
        return DiskUsage(capacity=self.capacity, available=self.capacity - self.used)


def image(id_: str, size: int, *, first: float = 0, used: float = 0, tags=()) -> ImageRecord:
    return ImageRecord(id=id_, size=size, tags=tuple(tags), first_detected=first,
                       last_used=used)


def test_disk_usage_percent_rounds_as_kubernetes():
    assert DiskUsage(capacity=100, available=15).percent == 85
    assert DiskUsage(capacity=1000, available=151).percent == 85  # 100 - floor(15.1)
    assert DiskUsage(capacity=0, available=0).percent == 0


def test_nothing_below_the_high_threshold():
    images = [image("a", GB)]
    disk = FakeDisk(100 * GB, 84 * GB, images)
    assert image_gc.plan(disk(), images, set(), ImageGCPolicy(), NOW).remove == ()


def test_frees_least_recently_used_unused_images_down_to_low_threshold():
    images = [image("used", 5 * GB, used=1), image("lru", 2 * GB, used=10),
              image("mru", 2 * GB, used=5000), image("mid", 2 * GB, used=100),
              image("pause", 1 * GB, tags=[PAUSE_IMAGE]),
              image("new", 10 * GB, first=NOW - 30, used=NOW - 30)]
    disk = FakeDisk(100 * GB, 86 * GB, images)
    result = image_gc.plan(disk(), images, {"used"}, ImageGCPolicy(), NOW)
    # 86% -> below 80% needs 6 GB: lru, mid, then mru (the used one, the pause image
    # and the one first seen 30 s ago are never candidates).
    assert result.remove == ("lru", "mid", "mru")
    assert result.bytes_to_free == 6 * GB and result.bytes_freed == 6 * GB
    disk.remove(result.remove)
    assert disk().percent == 80
    assert image_gc.plan(disk(), images, {"used"}, ImageGCPolicy(), NOW).remove == ()


def test_stops_as_soon_as_enough_is_freed_and_reports_shortfall():
    images = [image("a", 10 * GB, used=1), image("b", 1 * GB, used=2)]
    disk = FakeDisk(100 * GB, 90 * GB, images)
    assert image_gc.plan(disk(), images, set(), ImageGCPolicy(), NOW).remove == ("a",)
    short = image_gc.plan(disk(), [image("b", GB)], set(), ImageGCPolicy(), NOW)
    assert short.remove == ("b",) and short.bytes_freed < short.bytes_to_free


def test_observe_records_first_seen_and_last_used():
    listing = [{"Id": "a", "Size": 10, "RepoTags": ["x:1"]},
               {"Id": "b", "Size": 20, "RepoTags": ["<none>:<none>"]}]
    records = image_gc.observe({}, listing, {"a"}, 100.0)
    assert records["a"] == ImageRecord("a", 10, ("x:1",), 100.0, 100.0)
    assert records["b"] == ImageRecord("b", 20, (), 100.0, 100.0)
    records = image_gc.observe(records, listing[:1] + listing[1:], {"b"}, 200.0)
    assert records["a"].last_used == 100.0 and records["a"].first_detected == 100.0
    assert records["b"].last_used == 200.0
    assert set(image_gc.observe(records, listing[:1], set(), 300.0)) == {"a"}


def test_policy_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="low <= high"):
        ImageGCPolicy(high_threshold_percent=70, low_threshold_percent=80)
