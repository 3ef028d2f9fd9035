"""Admission: small plugins that see every write after validation, before the store.

A plugin may refuse a request (raising an API error), change the object (defaults that
depend on the cluster, such as a pod's default tolerations), or add keys to the very
store transaction that writes the object (a service's cluster IP, reserved under its
own key so that two apiservers can never hand out the same one). Plugins run in the
order of :func:`chain`; each file holds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message

from skiff.api.errors import FieldError
from skiff.api.kinds import Kind

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"


@dataclass
class Attributes:
    """One write as admission sees it, and what it adds to the store transaction.

    ``obj`` is the object to store (for DELETE: the object being deleted); ``old`` the
    stored one on UPDATE. ``puts`` are written, ``absent`` must not exist yet (they
    are reservations) and ``deletes`` are removed, all in the object's transaction.
    ``taken`` says, for a reservation of a value the client chose itself, what to
    report when it turns out to be held already; a reservation of a value admission
    picked is simply picked again.

    ``unchanged`` maps keys admission decided on (read from a watch cache) to the
    mod_revision it saw: the transaction commits only if each is still there, so a
    decision made on a cached copy is as good as one made on the store's. When one
    moved, the write is admitted again with ``consistent`` set, and plugins then read
    the store itself.
    """

    operation: str
    kind: Kind
    obj: Message
    old: Message | None = None
    puts: list[tuple[str, bytes]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    taken: dict[str, FieldError] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    consistent: bool = False


class Plugin(Protocol):
    """An admission plugin: inspects and may change ``attrs``, or raises an APIError."""

    name: str

    async def admit(self, attrs: Attributes) -> None: ...


class Chain:
    """Plugins run in order; the first to raise stops the write."""

    def __init__(self, plugins: list[Plugin]) -> None:
        self.plugins = plugins

    async def admit(self, attrs: Attributes) -> None:
        for plugin in self.plugins:
            await plugin.admit(attrs)
