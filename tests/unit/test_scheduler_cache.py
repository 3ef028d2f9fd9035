"""The scheduler cache: nodes and bound pods from events, assumed pods (confirm, forget,
expire on a fake clock) and the incremental snapshot."""

from __future__ import annotations

import pytest
from test_scheduler_builders import bound, make_node, make_pod

from services.scheduler.cache import SchedulerCache
from services.scheduler.framework import NodeInfo, PodInfo


class FakeTime:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def cache(clock: FakeTime) -> SchedulerCache:
    cache = SchedulerCache(ttl=30.0, clock=clock)
    for name in ("n1", "n2"):
        cache.add_node(make_node(name, cpu="4"))
    return cache


def cpu_on(cache: SchedulerCache, node: str) -> int:
    snapshot = cache.snapshot()
    info = snapshot.get(node)
    assert info is not None
    return info.requested.milli_cpu


# ---- nodes and bound pods


def test_bound_pods_are_charged_to_their_node(cache: SchedulerCache) -> None:
    cache.add_pod(bound(make_pod("a", cpu="1"), "n1"))
    cache.add_pod(bound(make_pod("b", cpu="500m"), "n1"))
    assert cpu_on(cache, "n1") == 1500 and cpu_on(cache, "n2") == 0
    assert cache.pod_node("default/a") == "n1" and cache.pod_count == 2


def test_update_moves_and_recharges_a_pod(cache: SchedulerCache) -> None:
    cache.add_pod(bound(make_pod("a", cpu="1"), "n1"))
    cache.update_pod(bound(make_pod("a", cpu="2"), "n2"))
    assert cpu_on(cache, "n1") == 0 and cpu_on(cache, "n2") == 2000


def test_events_are_level_triggered(cache: SchedulerCache) -> None:
    cache.update_pod(bound(make_pod("a", cpu="1"), "n1"))  # update of the unknown: add
    cache.add_pod(bound(make_pod("a", cpu="1"), "n1"))  # add of the known: update
    assert cpu_on(cache, "n1") == 1000
    cache.remove_pod("default/a")
    cache.remove_pod("default/a")  # removing the absent: nothing
    assert cpu_on(cache, "n1") == 0 and cache.pod_count == 0


def test_finished_pods_free_their_node(cache: SchedulerCache) -> None:
    pod = bound(make_pod("job", cpu="1"), "n1")
    cache.add_pod(pod)
    pod.status.phase = "Succeeded"
    cache.update_pod(pod)
    assert cpu_on(cache, "n1") == 0 and cache.get_pod(pod) is None


def test_unbound_pods_are_refused(cache: SchedulerCache) -> None:
    with pytest.raises(ValueError, match="not bound"):
        cache.add_pod(make_pod("a"))


def test_pod_on_unknown_node_is_accounted_but_not_schedulable(cache: SchedulerCache) -> None:
    cache.add_pod(bound(make_pod("early", cpu="1"), "n3"))
    snapshot = cache.snapshot()
    assert "n3" not in snapshot and len(snapshot) == 2
    cache.add_node(make_node("n3"))
    assert cpu_on(cache, "n3") == 1000 and len(cache.snapshot()) == 3


def test_removed_node_keeps_pod_accounting_until_pods_go(cache: SchedulerCache) -> None:
    cache.add_pod(bound(make_pod("a", cpu="1"), "n1"))
    cache.remove_node("n1")
    assert "n1" not in cache.snapshot() and cache.node_count == 1
    live = cache.node_info("n1")
    assert live is not None and live.node is None and live.requested.milli_cpu == 1000
    cache.remove_pod("default/a")
    assert cache.node_info("n1") is None
    cache.add_node(make_node("n1"))  # back, empty
    assert cpu_on(cache, "n1") == 0


def test_update_node_reparses_it(cache: SchedulerCache) -> None:
    cache.update_node(make_node("n1", cpu="8", unschedulable=True))
    info = cache.snapshot().get("n1")
    assert info is not None and info.allocatable.milli_cpu == 8000 and info.unschedulable


# ---- assume, confirm, forget, expire


def test_assumed_pod_is_charged_at_once(cache: SchedulerCache) -> None:
    pod = PodInfo(make_pod("a", cpu="1"))
    cache.assume(pod, "n1")
    assert cache.is_assumed(pod) and cpu_on(cache, "n1") == 1000


def test_assuming_a_cached_pod_is_a_bug(cache: SchedulerCache) -> None:
    cache.assume(make_pod("a"), "n1")
    with pytest.raises(ValueError, match="already in the cache"):
        cache.assume(make_pod("a"), "n2")
    cache.add_pod(bound(make_pod("b"), "n1"))
    with pytest.raises(ValueError, match="bound"):
        cache.assume(make_pod("b"), "n1")


def test_add_event_confirms_an_assumed_pod(cache: SchedulerCache, clock: FakeTime) -> None:
    cache.assume(make_pod("a", cpu="1"), "n1")
    cache.finish_binding("default/a")
    cache.add_pod(bound(make_pod("a", cpu="1"), "n1"))
    assert not cache.is_assumed("default/a")
    clock.now += 3600  # confirmed pods never expire
    assert cache.cleanup_expired() == [] and cpu_on(cache, "n1") == 1000


def test_confirmation_on_another_node_moves_the_pod(cache: SchedulerCache) -> None:
    cache.assume(make_pod("a", cpu="1"), "n1")
    cache.add_pod(bound(make_pod("a", cpu="1"), "n2"))
    assert cpu_on(cache, "n1") == 0 and cpu_on(cache, "n2") == 1000


def test_forget_undoes_an_assumption(cache: SchedulerCache) -> None:
    cache.assume(make_pod("a", cpu="1"), "n1")
    assert cache.forget("default/a")
    assert cpu_on(cache, "n1") == 0 and cache.get_pod("default/a") is None
    assert not cache.forget("default/a")  # nothing left to forget


def test_forget_leaves_a_confirmed_pod_alone(cache: SchedulerCache) -> None:
    cache.assume(make_pod("a", cpu="1"), "n1")
    cache.add_pod(bound(make_pod("a", cpu="1"), "n1"))
    assert not cache.forget("default/a") and cpu_on(cache, "n1") == 1000


def test_assumed_pod_expires_ttl_after_binding_finished(cache: SchedulerCache,
                                                        clock: FakeTime) -> None:
    cache.assume(make_pod("a", cpu="1"), "n1")
    clock.now += 3600
    assert cache.cleanup_expired() == []  # binding not finished: never expires
    cache.finish_binding("default/a")
    clock.now += 29.9
    assert cache.cleanup_expired() == [] and cpu_on(cache, "n1") == 1000
    clock.now += 0.1
    assert cpu_on(cache, "n1") == 0  # snapshot() expires it on its way
    assert not cache.is_assumed("default/a") and cache.pod_count == 0


def test_cleanup_expired_lists_keys(cache: SchedulerCache, clock: FakeTime) -> None:
    for name in ("b", "a"):
        cache.assume(make_pod(name), "n1")
        cache.finish_binding(f"default/{name}")
    clock.now += 31
    assert cache.cleanup_expired() == ["default/a", "default/b"]


def test_deleting_an_assumed_pod(cache: SchedulerCache) -> None:
    cache.assume(make_pod("a", cpu="1"), "n1")
    cache.remove_pod(make_pod("a"))
    assert cpu_on(cache, "n1") == 0 and not cache.is_assumed("default/a")


# ---- the snapshot


def test_snapshot_copies_only_what_changed(cache: SchedulerCache) -> None:
    first = cache.snapshot()
    n1, n2 = first.get("n1"), first.get("n2")
    generation = first.generation
    cache.assume(make_pod("a", cpu="1"), "n1")
    second = cache.snapshot()
    assert second is first  # one snapshot, refreshed in place
    assert second.get("n1") is n1 and second.get("n2") is n2  # same objects ...
    assert n1 is not None and n1.requested.milli_cpu == 1000  # ... n1 copied into
    assert second.generation > generation
    # The cache's own NodeInfo is not the snapshot's: later changes do not leak in.
    cache.assume(make_pod("b", cpu="1"), "n1")
    assert n1.requested.milli_cpu == 1000


def test_snapshot_refresh_copies_only_changed_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SchedulerCache()
    for i in range(50):
        cache.add_node(make_node(f"n{i}"))
    cache.snapshot()
    copied: list[str] = []
    original = NodeInfo.copy_into

    def recording(self: NodeInfo, other: NodeInfo) -> None:
        copied.append(self.name)
        original(self, other)

    monkeypatch.setattr(NodeInfo, "copy_into", recording)
    cache.assume(make_pod("a"), "n7")
    cache.add_pod(bound(make_pod("b"), "n3"))
    cache.snapshot()
    assert sorted(copied) == ["n3", "n7"]
    copied.clear()
    cache.snapshot()
    assert copied == []  # nothing changed, nothing copied


def test_snapshot_follows_nodes_coming_and_going(cache: SchedulerCache) -> None:
    cache.snapshot()
    cache.add_node(make_node("n3"))
    cache.remove_node("n1")
    snapshot = cache.snapshot()
    assert [n.name for n in snapshot.node_infos] == ["n2", "n3"]
    assert "n1" not in snapshot and snapshot.get("n3") is not None


def test_snapshot_interleaves_zones(clock: FakeTime) -> None:
    cache = SchedulerCache(clock=clock)
    for name, zone in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"),
                       ("c2", "c")]:
        cache.add_node(make_node(name, labels={"topology.kubernetes.io/zone": zone}))
    assert [n.name for n in cache.snapshot()] == ["a1", "b1", "c1", "a2", "c2", "a3"]
    cache.update_node(make_node("a1", labels={"topology.kubernetes.io/zone": "b"}))
    assert [n.name for n in cache.snapshot()] == ["a2", "b1", "c1", "a3", "a1", "c2"]


def test_snapshot_of_an_empty_cache() -> None:
    snapshot = SchedulerCache().snapshot()
    assert len(snapshot) == 0 and list(snapshot) == []
