"""The kubelet's crash / pull back-off (pure, times given explicitly)."""

from services.kubelet.backoff import Backoff


def test_first_failure_is_not_delayed_then_delays_double_to_the_cap():
    b = Backoff(10, 40, reset_after=600)
    assert not b.in_backoff("c", now=0, since=0)      # no failure recorded yet
    assert b.next("c", 0) == 10
    assert b.in_backoff("c", now=5, since=0) and b.remaining("c", now=5, since=0) == 5
    assert not b.in_backoff("c", now=10.5, since=0)
    assert [b.next("c", t) for t in (20, 40, 80, 160)] == [20, 40, 40, 40]


def test_delay_resets_after_a_calm_period_and_forget_clears():
    b = Backoff(1, 8, reset_after=30)
    for t in (0, 1, 2, 3):
        b.next("c", t)
    assert b.delay("c") == 8
    assert b.next("c", 100) == 1                      # 97 s without failure: afresh
    b.forget_prefix("c")
    assert b.delay("c") == 0
    b.next("uid/a", 0)
    b.next("uid/b", 0)
    b.next("other/a", 0)
    b.forget_prefix("uid/")
    assert (b.delay("uid/a"), b.delay("uid/b"), b.delay("other/a")) == (0, 0, 1)
    b.garbage_collect(now=1000)
    assert b.delay("other/a") == 0
