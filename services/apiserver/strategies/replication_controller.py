"""ReplicationControllers: ReplicaSets' elder, with an equality-only ``selector`` map.

Kubernetes' v1 defaults: an empty selector (and empty object labels) take the
template's labels, replicas default to 1. Unlike apps/v1 kinds, the selector may
change on update. The template is checked by ``pod.validate_pod_template``.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.apiserver.strategies.pod import default_pod_spec, validate_pod_template
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import BadRequest, FieldError
from skiff.api.labels import Selector, selector_from_map
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path

_SPEC = Path("spec")


def default_replication_controller(rc: core_pb2.ReplicationController) -> None:
    """Selector and labels from the template when empty; replicas 1; pod defaults."""
    spec = rc.spec
    if spec.HasField("template"):
        template_labels = spec.template.metadata.labels
        if not spec.selector:
            spec.selector.update(template_labels)
        if not rc.metadata.labels:
            rc.metadata.labels.update(template_labels)
        default_pod_spec(spec.template.spec)
    if not spec.HasField("replicas"):
        spec.replicas = 1


def validate_replication_controller_spec(
        spec: core_pb2.ReplicationControllerSpec) -> list[FieldError]:
    """Kubernetes' ``ValidateReplicationControllerSpec``."""
    errors = validation.non_negative(_SPEC.child("replicas"), spec.replicas)
    errors += validation.non_negative(_SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    errors += validation.required(_SPEC.child("selector"), spec.selector)
    errors += validation.labels(_SPEC.child("selector"), spec.selector)
    if not spec.HasField("template"):
        return [*errors, FieldError(str(_SPEC.child("template")), validation.REQUIRED)]
    errors += validate_pod_template(spec.template, _SPEC.child("template"),
                                    selector=_selector(spec), owner="ReplicationController")
    return errors


def _selector(spec: core_pb2.ReplicationControllerSpec) -> Selector | None:
    """The selector to match the template against; None when empty or invalid."""
    if not spec.selector:
        return None
    try:
        return selector_from_map(spec.selector)
    except BadRequest:
        return None


class ReplicationControllerStrategy(Strategy):
    """ReplicationControllers: v1 defaults and Kubernetes' spec rules."""

    def default(self, obj: Message) -> None:
        default_replication_controller(obj)  # type: ignore[arg-type]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_replication_controller_spec(obj.spec)  # type: ignore[attr-defined]
