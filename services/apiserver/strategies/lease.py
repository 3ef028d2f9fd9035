"""Leases (coordination.k8s.io/v1): node heartbeats and leader election.

A lease's holder renews it by Update; the fields are checked for sense only (a
positive duration, a non-negative transition count). Who may take a lease over is
the client's business (``skiff.client``'s LeaderElector), not the apiserver's.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.v1 import coordination_pb2
from skiff.api.validation import Path


def validate_lease_spec(spec: coordination_pb2.LeaseSpec) -> list[FieldError]:
    """leaseDurationSeconds > 0 and leaseTransitions >= 0, when set."""
    errors: list[FieldError] = []
    if spec.HasField("lease_duration_seconds") and spec.lease_duration_seconds <= 0:
        errors.append(FieldError(str(Path("spec", "leaseDurationSeconds")),
                                 "must be greater than 0"))
    if spec.HasField("lease_transitions"):
        errors += validation.non_negative(Path("spec", "leaseTransitions"),
                                          spec.lease_transitions)
    return errors


class LeaseStrategy(Strategy):
    """Leases: duration and transitions checked."""

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_lease_spec(obj.spec)  # type: ignore[attr-defined]
