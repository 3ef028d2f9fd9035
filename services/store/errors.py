"""etcd's errors, with the gRPC code and message etcd itself answers with.

One table: the state machine and the servicers raise :class:`EtcdError` with one of
these, and the gRPC edge turns it into a status. The messages are etcd's, so
clients that match on them (etcdctl, client libraries) behave as they do with etcd.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class EtcdError(Exception):
    """An error etcd would answer with; ``code`` is the gRPC status code."""

    code: grpc.StatusCode
    message: str

    def __str__(self) -> str:
        return self.message


INVALID = grpc.StatusCode.INVALID_ARGUMENT

EMPTY_KEY = EtcdError(INVALID, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(INVALID, "etcdserver: key not found")
VALUE_PROVIDED = EtcdError(INVALID, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(INVALID, "etcdserver: lease is provided")
TOO_MANY_OPS = EtcdError(INVALID, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = EtcdError(INVALID, "etcdserver: duplicate key given in txn request")
INVALID_SORT_OPTION = EtcdError(INVALID, "etcdserver: invalid sort option")
REQUEST_TOO_LARGE = EtcdError(INVALID, "etcdserver: request is too large")
COMPACTED = EtcdError(grpc.StatusCode.OUT_OF_RANGE,
                      "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = EtcdError(grpc.StatusCode.OUT_OF_RANGE,
                       "etcdserver: mvcc: required revision is a future revision")
LEASE_NOT_FOUND = EtcdError(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = EtcdError(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = EtcdError(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
NO_LEADER = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
TIMEOUT = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")
TIMEOUT_LEADER_FAIL = EtcdError(
    grpc.StatusCode.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to previous leader failure")
STOPPED = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")
