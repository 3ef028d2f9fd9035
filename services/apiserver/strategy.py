"""How one kind is defaulted, validated and prepared for storage (Kubernetes' strategies).

The registry (``registry.py``) is the same for every kind; what differs per kind lives
in a :class:`Strategy` subclass in ``strategies/<kind>.py``. A strategy is pure: it
reads and changes the objects it is given and returns field errors; it never talks to
the store. The registry calls, in order:

- create: ``default`` -> ``prepare_for_create`` -> metadata checks -> ``validate``;
- update: ``default`` -> ``prepare_for_update`` (the old status wins) -> ``validate``
  and ``validate_update`` (immutable fields);
- status update: ``prepare_for_status_update`` (only the new status is kept) ->
  ``validate_status_update``.
"""

from __future__ import annotations

from google.protobuf.message import Message

from skiff.api.errors import FieldError
from skiff.api.kinds import Kind


class Strategy:
    """The defaults: no spec rules, status reset on create, status kept on update."""

    #: Whether create keeps the status a client sent (a kubelet registering its Node).
    keep_status_on_create = False

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    def default(self, obj: Message) -> None:
        """Fill in unset fields with Kubernetes' defaults (idempotent)."""

    def prepare_for_create(self, obj: Message) -> None:
        """Clear what a client may not set on create (status, unless the kind allows it)."""
        if self.kind.has_status and not self.keep_status_on_create:
            obj.ClearField("status")

    def prepare_for_update(self, new: Message, old: Message) -> None:
        """Keep what Update may not change: the status (written only by UpdateStatus)."""
        if not self.kind.has_status:
            return
        # Copying an unset status would mark it set, and a no-op update would write.
        if old.HasField("status"):
            new.status.CopyFrom(old.status)
        else:
            new.ClearField("status")

    def prepare_for_status_update(self, new: Message, old: Message) -> None:
        """Keep everything of ``old`` but the status of ``new``."""
        status = type(new.status)()
        status.CopyFrom(new.status)
        new.CopyFrom(old)
        new.status.CopyFrom(status)

    def validate(self, obj: Message) -> list[FieldError]:
        """Errors in the kind's own fields (metadata is checked by the registry)."""
        return []

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        """Errors specific to changing ``old`` into ``new``: immutable fields."""
        return []

    def validate_status_update(self, new: Message, old: Message) -> list[FieldError]:
        return []

    def spec_changed(self, new: Message, old: Message) -> bool:
        """Whether ``new`` changes the desired state, so metadata.generation is bumped."""
        fields = new.DESCRIPTOR.fields_by_name
        if "spec" in fields:
            return new.spec != old.spec  # type: ignore[attr-defined]
        return False
