"""Lease deadlines with a fake clock."""

from __future__ import annotations

from services.store.lessor import Lessor
from skiff.store.v1 import raft_pb2, rpc_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch_of(*commands: raft_pb2.Command) -> raft_pb2.Batch:
    return raft_pb2.Batch(commands=commands)


def test_grants_and_keep_alives_set_deadlines_and_revocations_forget_them():
    clock = Clock()
    lessor = Lessor(clock)
    grant = raft_pb2.Command(lease_grant=rpc_pb2.LeaseGrantRequest(ID=1, TTL=10))
    lessor.observe(batch_of(grant), [raft_pb2.Result(
        lease_grant=rpc_pb2.LeaseGrantResponse(ID=1, TTL=10))])
    clock.now += 6
    assert lessor.remaining(1, 10) == 4
    keep = raft_pb2.Command(lease_keep_alive=rpc_pb2.LeaseKeepAliveRequest(ID=1))
    lessor.observe(batch_of(keep), [raft_pb2.Result(
        lease_keep_alive=rpc_pb2.LeaseKeepAliveResponse(ID=1, TTL=10))])
    clock.now += 9.5
    assert lessor.expired() == []
    clock.now += 0.5
    assert lessor.expired() == [1]
    revoke = raft_pb2.Command(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=1))
    lessor.observe(batch_of(revoke), [raft_pb2.Result(lease_revoke=rpc_pb2.LeaseRevokeResponse())])
    assert lessor.expired() == []


def test_a_failed_grant_sets_nothing():
    lessor = Lessor(Clock())
    grant = raft_pb2.Command(lease_grant=rpc_pb2.LeaseGrantRequest(ID=1, TTL=10))
    lessor.observe(batch_of(grant), [raft_pb2.Result(error=raft_pb2.Error(code=9))])
    assert lessor.expired() == [] and lessor._deadlines == {}


def test_promotion_gives_every_lease_at_least_its_ttl():
    clock = Clock()
    lessor = Lessor(clock)
    lessor.refresh(1, 5)
    lessor.refresh(2, 60)
    clock.now += 4
    lessor.promote({1: 5, 2: 60, 3: 7})
    assert lessor.remaining(1, 5) == 5  # extended: it had 1 s left
    assert lessor.remaining(2, 60) == 60
    assert lessor.remaining(3, 7) == 7  # unknown here until now
    clock.now += 5
    assert lessor.expired() == [1]
