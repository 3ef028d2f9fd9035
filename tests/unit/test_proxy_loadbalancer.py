"""The proxy's pure logic: round-robin, ClientIP affinity and its expiry, failover order."""

from __future__ import annotations

from collections import Counter

from services.proxy.loadbalancer import LoadBalancer

A, B, C = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_spreads_evenly_in_order():
    lb = LoadBalancer([A, B, C], clock=FakeClock())
    picks = [lb.pick("1.1.1.1") for _ in range(9)]
    assert picks == [A, B, C] * 3
    assert Counter(picks) == {A: 3, B: 3, C: 3}


def test_no_backends_picks_nothing():
    lb = LoadBalancer([], clock=FakeClock())
    assert lb.pick("1.1.1.1") is None
    lb.update([A], affinity_timeout=None)
    assert lb.pick() == A


def test_exclude_moves_on_to_the_next_backend_and_gives_up_when_all_failed():
    lb = LoadBalancer([A, B, C], clock=FakeClock())
    assert lb.pick(exclude={A}) == B
    assert lb.pick(exclude={A, B}) == C
    assert lb.pick(exclude={A, B, C}) is None


def test_update_keeps_the_round_robin_position():
    lb = LoadBalancer([A, B, C], clock=FakeClock())
    assert [lb.pick(), lb.pick()] == [A, B]
    lb.update([A, B, C], affinity_timeout=None)
    assert lb.pick() == C  # not A again
    lb.update([A], affinity_timeout=None)
    assert [lb.pick(), lb.pick()] == [A, A]


def test_client_ip_affinity_sticks_per_client():
    lb = LoadBalancer([A, B, C], affinity_timeout=60, clock=FakeClock())
    first = lb.pick("192.0.2.1")
    second = lb.pick("192.0.2.2")
    assert first != second
    assert {lb.pick("192.0.2.1") for _ in range(10)} == {first}
    assert {lb.pick("192.0.2.2") for _ in range(10)} == {second}
    assert lb.affinities == 2


def test_affinity_expires_after_its_timeout_of_disuse():
    clock = FakeClock()
    lb = LoadBalancer([A, B], affinity_timeout=10, clock=clock)
    assert lb.pick("192.0.2.1") == A
    clock.now += 9
    assert lb.pick("192.0.2.1") == A  # used: the timeout starts again
    clock.now += 9
    assert lb.pick("192.0.2.1") == A
    clock.now += 11
    assert lb.pick("192.0.2.1") == B  # expired: round-robin goes on from where it was
    clock.now += 11
    assert lb.sweep() == 1 and lb.affinities == 0


def test_affinity_to_a_failed_backend_rebinds_the_client():
    lb = LoadBalancer([A, B], affinity_timeout=60, clock=FakeClock())
    assert lb.pick("192.0.2.1") == A
    assert lb.pick("192.0.2.1", exclude={A}) == B
    assert lb.pick("192.0.2.1") == B


def test_affinity_to_a_removed_backend_is_dropped():
    lb = LoadBalancer([A, B], affinity_timeout=60, clock=FakeClock())
    assert lb.pick("192.0.2.1") == A
    lb.update([B, C], affinity_timeout=60)
    assert lb.affinities == 0
    assert lb.pick("192.0.2.1") in (B, C)


def test_turning_affinity_off_forgets_every_client():
    lb = LoadBalancer([A, B], affinity_timeout=60, clock=FakeClock())
    lb.pick("192.0.2.1")
    lb.update([A, B], affinity_timeout=None)
    assert lb.affinities == 0
    assert lb.pick("192.0.2.1") != lb.pick("192.0.2.1")
