"""ObjectMeta rules shared by every kind: validation, system fields, versions.

Pure functions the registry applies to whatever kind it serves (Kubernetes'
``ValidateObjectMeta`` and ``rest.FillObjectMetaSystemFields`` and friends).
"""

from __future__ import annotations

from google.protobuf.message import Message

from skiff.api import errors, validation
from skiff.api.errors import FieldError
from skiff.api.kinds import Kind
from skiff.api.labels import validate_label_key
from skiff.api.v1 import meta_pb2

#: Kubernetes' limit on the total size of an object's annotations.
MAX_ANNOTATIONS_BYTES = 256 * 1024
#: The largest resource version: store revisions are int64.
MAX_RESOURCE_VERSION = 2**63 - 1


def copy(obj: Message) -> Message:
    """A deep copy, so a request's message is never changed in place."""
    result = type(obj)()
    result.CopyFrom(obj)
    return result


def check_type(kind: Kind, obj: Message) -> None:
    """apiVersion and kind may be empty (they are implied) or must be the kind's own."""
    problems = []
    if obj.api_version and obj.api_version != kind.api_version:  # type: ignore[attr-defined]
        problems.append(FieldError(
            "apiVersion", f'Invalid value: "{obj.api_version}": must be "{kind.api_version}"'))  # type: ignore[attr-defined]
    if obj.kind and obj.kind != kind.kind:  # type: ignore[attr-defined]
        problems.append(FieldError("kind", f'Invalid value: "{obj.kind}": must be "{kind.kind}"'))  # type: ignore[attr-defined]
    if problems:
        raise errors.Invalid(kind.kind, obj.metadata.name, problems)  # type: ignore[attr-defined]
    obj.api_version, obj.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]


def validate(kind: Kind, obj: Message) -> list[FieldError]:
    """Errors in ``obj.metadata`` (name, namespace, labels, annotations, owners)."""
    md: meta_pb2.ObjectMeta = obj.metadata  # type: ignore[attr-defined]
    problems: list[FieldError] = []
    if not md.name:
        problems.append(FieldError("metadata.name", "required"))
    else:  # the kind's rule: a DNS-1035 label for Services, a DNS-1123 label for Namespaces
        problems += validation.object_name("metadata.name", md.name, kind=kind.kind)
    if md.generate_name:
        # Checked even once a name was generated from it: the client wrote this field.
        problems += validation.object_name("metadata.generateName", md.generate_name,
                                           kind=kind.kind, prefix=True)
    if kind.namespaced:
        problems += validation.dns1123_label("metadata.namespace", md.namespace)
    problems += validation.labels("metadata.labels", dict(md.labels))
    problems += _annotations(md)
    for i, owner in enumerate(md.owner_references):
        path = f"metadata.ownerReferences[{i}]"
        for field, value in (("apiVersion", owner.api_version), ("kind", owner.kind),
                             ("name", owner.name), ("uid", owner.uid)):
            if not value:
                problems.append(FieldError(f"{path}.{field}", "required"))
    controllers = sum(1 for o in md.owner_references if o.controller)
    if controllers > 1:
        problems.append(FieldError("metadata.ownerReferences",
                                   "Only one reference can have Controller set to true"))
    for i, finalizer in enumerate(md.finalizers):
        if not finalizer:
            problems.append(FieldError(f"metadata.finalizers[{i}]", "required"))
    return problems


def _annotations(md: meta_pb2.ObjectMeta) -> list[FieldError]:
    problems: list[FieldError] = []
    for key in md.annotations:
        for detail in validate_label_key(key):
            problems.append(FieldError(f"metadata.annotations[{key}]", detail))
    size = sum(len(k) + len(v) for k, v in md.annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        problems.append(FieldError("metadata.annotations",
                                   f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"))
    return problems


def keep_system_fields(new: meta_pb2.ObjectMeta, old: meta_pb2.ObjectMeta) -> None:
    """What an update may not change in metadata: identity, creation and deletion."""
    new.name, new.namespace, new.uid = old.name, old.namespace, old.uid
    new.generate_name = old.generate_name
    new.creation_timestamp.CopyFrom(old.creation_timestamp)
    if old.HasField("deletion_timestamp"):
        new.deletion_timestamp.CopyFrom(old.deletion_timestamp)
    else:
        new.ClearField("deletion_timestamp")
    if old.HasField("deletion_grace_period_seconds"):
        new.deletion_grace_period_seconds = old.deletion_grace_period_seconds
    else:
        new.ClearField("deletion_grace_period_seconds")


def validate_update(new: meta_pb2.ObjectMeta, old: meta_pb2.ObjectMeta) -> list[FieldError]:
    """What an update may not do to metadata: add finalizers to an object being deleted
    (it would never go; Kubernetes' ``ValidateNoNewFinalizers``)."""
    if not old.HasField("deletion_timestamp"):
        return []
    added = sorted(set(new.finalizers) - set(old.finalizers))
    if not added:
        return []
    return [FieldError("metadata.finalizers", f"Forbidden: no new finalizers can be added if "
                                              f"the object is being deleted, found new "
                                              f"finalizers {added}")]


def equal_ignoring_version(a: Message, b: Message) -> bool:
    """Whether two versions of an object differ in anything but resource_version."""
    a, b = copy(a), copy(b)
    a.metadata.resource_version = b.metadata.resource_version = ""  # type: ignore[attr-defined]
    return a == b


def parse_resource_version(text: str, field: str) -> int:
    """A resource version as the store revision it stands for ("" and "0": 0)."""
    if not text:
        return 0
    # Decimal digits only (int() would take " 1", "+1" and "1_0"), within the store's
    # int64 revisions.
    value = int(text) if text.isascii() and text.isdigit() else -1
    if value > MAX_RESOURCE_VERSION:
        value = -1
    if value < 0:
        raise errors.BadRequest(f'{field}: Invalid value: "{text}": must be a non-negative '
                                f"integer (a resource version from this server)")
    return value
