"""Namespaces: Active on create, with the ``kubernetes`` finalizer the namespace
controller removes once the namespace's content is gone.

As in Kubernetes, an update may change neither the status (the controller writes
it) nor ``spec.finalizers`` (only ``Namespaces.Finalize`` does, see
``services/apiserver/finalize.py``), and a namespace's name is a DNS-1123 label,
stricter than other kinds'.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.labels import validate_label_key
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path

KUBERNETES_FINALIZER = "kubernetes"
NAME_LABEL = "kubernetes.io/metadata.name"
PHASES = ("Active", "Terminating")


def default_namespace(namespace: core_pb2.Namespace) -> None:
    """Label the namespace with its own name (Kubernetes' ``kubernetes.io/metadata.name``)."""
    if namespace.metadata.name:
        namespace.metadata.labels[NAME_LABEL] = namespace.metadata.name


def validate_namespace(namespace: core_pb2.Namespace) -> list[FieldError]:
    """The name is a DNS-1123 label; finalizers are qualified names."""
    errors = validation.dns1123_label(Path("metadata", "name"), namespace.metadata.name)
    for i, finalizer in enumerate(namespace.spec.finalizers):
        field = Path("spec", "finalizers").index(i)
        problems = validate_label_key(finalizer)
        if problems:
            errors.append(FieldError(str(field), "; ".join(problems)))
        elif "/" not in finalizer and finalizer != KUBERNETES_FINALIZER:
            errors.append(FieldError(str(field), "name is neither a standard finalizer name "
                                                 "nor is it fully qualified"))
    return errors


def validate_namespace_status(namespace: core_pb2.Namespace) -> list[FieldError]:
    """Active while not being deleted, Terminating once it is."""
    field = Path("status", "phase")
    deleting = namespace.metadata.HasField("deletion_timestamp")
    phase = namespace.status.phase
    if deleting and phase != "Terminating":
        return [FieldError(str(field), "may only be in `Terminating` phase if "
                                       "`deletionTimestamp` is not empty")]
    if not deleting and phase != "Active":
        return [FieldError(str(field), "may only be 'Active' if `deletionTimestamp` is empty")]
    return []


class NamespaceStrategy(Strategy):
    """Namespaces: Active with the kubernetes finalizer on create; both kept on update."""

    def default(self, obj: Message) -> None:
        default_namespace(obj)  # type: ignore[arg-type]

    def prepare_for_create(self, obj: Message) -> None:
        super().prepare_for_create(obj)
        obj.status.phase = "Active"  # type: ignore[attr-defined]
        finalizers = obj.spec.finalizers  # type: ignore[attr-defined]
        if KUBERNETES_FINALIZER not in finalizers:
            finalizers.append(KUBERNETES_FINALIZER)

    def prepare_for_update(self, new: Message, old: Message) -> None:
        super().prepare_for_update(new, old)
        del new.spec.finalizers[:]  # type: ignore[attr-defined]
        new.spec.finalizers.extend(old.spec.finalizers)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_namespace(obj)  # type: ignore[arg-type]

    def validate_status_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_namespace_status(new)  # type: ignore[arg-type]
