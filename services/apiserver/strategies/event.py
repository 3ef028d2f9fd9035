"""Events: what happened to which object. No spec, no status: every field is top level.

An event names the object it is about (``involvedObject``, kind and name required),
in the event's own namespace when that object is namespaced.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path

EVENT_TYPES = ("Normal", "Warning")


def validate_event(event: core_pb2.Event) -> list[FieldError]:
    """Kubernetes' ``ValidateEvent`` for the fields Skiff has."""
    involved = Path("involvedObject")
    errors = validation.required(involved.child("kind"), event.involved_object.kind)
    errors += validation.required(involved.child("name"), event.involved_object.name)
    namespace = event.involved_object.namespace
    if namespace and namespace != event.metadata.namespace:
        errors.append(FieldError(str(involved.child("namespace")),
                                 "does not match event.namespace"))
    if event.type:
        errors += validation.one_of(Path("type"), event.type, EVENT_TYPES)
    errors += validation.non_negative(Path("count"), event.count)
    return errors


class EventStrategy(Strategy):
    """Events: the involved object and the type are checked."""

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_event(obj)  # type: ignore[arg-type]
