"""ReplicaSets (apps/v1): a LabelSelector, a pod template it must match, a replica count.

The label-selector checks (:func:`validate_label_selector`, :func:`template_selector`)
and the apps/v1 rule that a selector never changes (:func:`validate_selector_update`)
are shared with ``deployment.py``; the template itself is checked by
``pod.validate_pod_template``.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.apiserver.strategies.pod import (
    default_pod_spec,
    validate_pod_template,
    validate_selector_requirement,
)
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import BadRequest, FieldError
from skiff.api.labels import Selector, selector_from_label_selector
from skiff.api.v1 import apps_pb2, meta_pb2
from skiff.api.validation import Path

LABEL_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_SPEC = Path("spec")


def validate_label_selector(selector: meta_pb2.LabelSelector, path: Path) -> list[FieldError]:
    """Kubernetes' ``ValidateLabelSelector``: label pairs and set-based requirements."""
    errors = validation.labels(path.child("matchLabels"), selector.match_labels)
    for i, requirement in enumerate(selector.match_expressions):
        errors += validate_selector_requirement(requirement,
                                                path.child("matchExpressions").index(i),
                                                operators=LABEL_SELECTOR_OPERATORS)
    return errors


def validate_workload_selector(spec: Message, path: Path) -> list[FieldError]:
    """A controller's ``selector``: required, valid and not empty (it would match all)."""
    if not spec.HasField("selector"):
        return [FieldError(str(path), validation.REQUIRED)]
    selector = spec.selector  # type: ignore[attr-defined]
    errors = validate_label_selector(selector, path)
    if not selector.match_labels and not selector.match_expressions:
        errors.append(FieldError(str(path), "empty selector is invalid"))
    return errors


def template_selector(spec: Message) -> Selector | None:
    """The selector a template's labels are matched against; None if it does not parse."""
    if not spec.HasField("selector"):
        return None
    try:
        return selector_from_label_selector(spec.selector)  # type: ignore[attr-defined]
    except BadRequest:
        return None


def validate_workload_template(spec: Message, path: Path, *, owner: str) -> list[FieldError]:
    """``spec.template``: required, matched by the selector, a valid pod template."""
    if not spec.HasField("template"):
        return [FieldError(str(path), validation.REQUIRED)]
    return validate_pod_template(spec.template,  # type: ignore[attr-defined]
                                 path, selector=template_selector(spec), owner=owner)


def validate_selector_update(new: Message, old: Message) -> list[FieldError]:
    """apps/v1: ``spec.selector`` is immutable."""
    if new.selector != old.selector:  # type: ignore[attr-defined]
        return [FieldError(str(_SPEC.child("selector")), "field is immutable")]
    return []


def default_workload(spec: Message) -> None:
    """replicas 1 when unset; the template's pod spec gets the pod defaults."""
    if not spec.HasField("replicas"):
        spec.replicas = 1  # type: ignore[attr-defined]
    if spec.HasField("template"):
        default_pod_spec(spec.template.spec)  # type: ignore[attr-defined]


def validate_replica_set_spec(spec: apps_pb2.ReplicaSetSpec) -> list[FieldError]:
    """Kubernetes' ``ValidateReplicaSetSpec``."""
    errors = validation.non_negative(_SPEC.child("replicas"), spec.replicas)
    errors += validation.non_negative(_SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    errors += validate_workload_selector(spec, _SPEC.child("selector"))
    errors += validate_workload_template(spec, _SPEC.child("template"), owner="ReplicaSet")
    return errors


class ReplicaSetStrategy(Strategy):
    """ReplicaSets: replicas default to 1; the selector must match and never change."""

    def default(self, obj: Message) -> None:
        default_workload(obj.spec)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_replica_set_spec(obj.spec)  # type: ignore[attr-defined]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_selector_update(new.spec, old.spec)  # type: ignore[attr-defined]
