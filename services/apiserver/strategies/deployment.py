"""Deployments (apps/v1): a ReplicaSet's selector and template, plus a rollout strategy.

Defaults are Kubernetes': RollingUpdate with maxUnavailable and maxSurge both "25%",
revisionHistoryLimit 10, progressDeadlineSeconds 600. The selector and template rules
are ReplicaSets' (``replica_set.py``); the selector is immutable.
"""

from __future__ import annotations

import re

from google.protobuf.message import Message

from services.apiserver.strategies.replica_set import (
    default_workload,
    validate_selector_update,
    validate_workload_selector,
    validate_workload_template,
)
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.v1 import apps_pb2, meta_pb2
from skiff.api.validation import Path

STRATEGY_TYPES = ("RollingUpdate", "Recreate")
DEFAULT_SURGE = "25%"
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
PERCENT_MESSAGE = ("a valid percent string must be a numeric string followed by an ending "
                   "'%' (e.g. '1%' or '93%')")

_PERCENT = re.compile(r"[0-9]+%")
_SPEC = Path("spec")


def _err(path: Path, detail: str) -> list[FieldError]:
    return [FieldError(str(path), detail)]


def default_deployment_spec(spec: apps_pb2.DeploymentSpec) -> None:
    """Kubernetes' ``SetDefaults_Deployment``; idempotent."""
    default_workload(spec)
    strategy = spec.strategy
    strategy.type = strategy.type or "RollingUpdate"
    if strategy.type == "RollingUpdate":
        for field in ("max_unavailable", "max_surge"):
            if not strategy.rolling_update.HasField(field):
                getattr(strategy.rolling_update, field).CopyFrom(
                    meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING, str_val=DEFAULT_SURGE))
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = DEFAULT_REVISION_HISTORY_LIMIT
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = DEFAULT_PROGRESS_DEADLINE_SECONDS


def validate_deployment_spec(spec: apps_pb2.DeploymentSpec) -> list[FieldError]:
    """Kubernetes' ``ValidateDeploymentSpec``."""
    errors = validation.non_negative(_SPEC.child("replicas"), spec.replicas)
    errors += validation.non_negative(_SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    errors += validate_workload_selector(spec, _SPEC.child("selector"))
    errors += validate_workload_template(spec, _SPEC.child("template"), owner="Deployment")
    errors += _validate_strategy(spec.strategy, _SPEC.child("strategy"))
    if spec.HasField("revision_history_limit"):
        errors += validation.non_negative(_SPEC.child("revisionHistoryLimit"),
                                          spec.revision_history_limit)
    if spec.HasField("progress_deadline_seconds"):
        errors += _validate_progress_deadline(spec)
    return errors


def _validate_progress_deadline(spec: apps_pb2.DeploymentSpec) -> list[FieldError]:
    field = _SPEC.child("progressDeadlineSeconds")
    errors = validation.non_negative(field, spec.progress_deadline_seconds)
    if spec.progress_deadline_seconds <= spec.min_ready_seconds:
        errors += _err(field, "must be greater than minReadySeconds")
    return errors


def _validate_strategy(strategy: apps_pb2.DeploymentStrategy, p: Path) -> list[FieldError]:
    if strategy.type == "Recreate":
        if strategy.HasField("rolling_update"):
            return _err(p.child("rollingUpdate"),
                        "may not be specified when strategy `type` is 'Recreate'")
        return []
    if strategy.type != "RollingUpdate":
        return validation.one_of(p.child("type"), strategy.type, STRATEGY_TYPES)
    return _validate_rolling_update(strategy.rolling_update, p.child("rollingUpdate"))


def _validate_rolling_update(rolling: apps_pb2.RollingUpdateDeployment,
                             p: Path) -> list[FieldError]:
    """Both counts valid, maxUnavailable at most 100%, and not both zero.

    maxSurge may exceed 100% (Kubernetes allows "200%": three pods for every one).
    """
    unavailable, surge = p.child("maxUnavailable"), p.child("maxSurge")
    errors = validate_int_or_percent(rolling.max_unavailable, unavailable)
    errors += validate_int_or_percent(rolling.max_surge, surge)
    if _amount(rolling.max_unavailable) == 0 and _amount(rolling.max_surge) == 0:
        errors += _err(unavailable, "may not be 0 when `maxSurge` is 0")
    if _is_percent(rolling.max_unavailable) and (_amount(rolling.max_unavailable) or 0) > 100:
        errors += _err(unavailable, "must not be greater than 100%")
    return errors


def validate_int_or_percent(value: meta_pb2.IntOrString, field: Path) -> list[FieldError]:
    """A count (an integer >= 0) or a percentage ("25%")."""
    if value.type == meta_pb2.IntOrString.STRING:
        return [] if _PERCENT.fullmatch(value.str_val) else _err(field, PERCENT_MESSAGE)
    return validation.non_negative(field, value.int_val)


def _is_percent(value: meta_pb2.IntOrString) -> bool:
    return value.type == meta_pb2.IntOrString.STRING and bool(_PERCENT.fullmatch(value.str_val))


def _amount(value: meta_pb2.IntOrString) -> int | None:
    """The number in a count or a percentage; None when it is neither."""
    if value.type == meta_pb2.IntOrString.INT:
        return value.int_val
    return int(value.str_val[:-1]) if _is_percent(value) else None


class DeploymentStrategy(Strategy):
    """Deployments: rollout defaults, ReplicaSet rules, an immutable selector."""

    def default(self, obj: Message) -> None:
        default_deployment_spec(obj.spec)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_deployment_spec(obj.spec)  # type: ignore[attr-defined]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_selector_update(new.spec, old.spec)  # type: ignore[attr-defined]
