"""NamespaceLifecycle: nothing is created in a namespace that is missing or terminating.

As Kubernetes' plugin: a create of a namespaced object needs its namespace to exist
(NOT_FOUND otherwise) and not be terminating (PERMISSION_DENIED: "unable to create new
content in namespace x because it is being terminated"). The namespace is read from
the store, not the watch cache, which may lag a namespace just created or deleted
(through any apiserver). The system namespaces may not be deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.apiserver.admission import CREATE, DELETE, Attributes
from skiff.api import errors
from skiff.api.namespaces import SYSTEM_NAMESPACES
from skiff.api.v1 import core_pb2

NamespaceLookup = Callable[[str], Awaitable[core_pb2.Namespace | None]]


class NamespaceLifecycle:
    name = "NamespaceLifecycle"

    def __init__(self, lookup: NamespaceLookup) -> None:
        self._lookup = lookup

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation == DELETE and attrs.kind.kind == "Namespace":
            name = attrs.obj.metadata.name
            if name in SYSTEM_NAMESPACES:
                raise errors.Forbidden(f'namespaces "{name}" is forbidden: this namespace '
                                       f"may not be deleted")
            return
        if attrs.operation != CREATE or not attrs.kind.namespaced:
            return
        name = attrs.obj.metadata.namespace
        namespace = await self._lookup(name)
        if namespace is None:
            raise errors.NotFound(f'namespaces "{name}" not found')
        if namespace.metadata.HasField("deletion_timestamp") or (
                namespace.status.phase == "Terminating"):
            raise errors.Forbidden(
                f"{attrs.kind.plural} \"{attrs.obj.metadata.name}\" is forbidden: unable to "
                f"create new content in namespace {name} because it is being terminated")
