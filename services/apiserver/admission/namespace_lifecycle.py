"""NamespaceLifecycle: nothing is created in a namespace that is missing or terminating.

As Kubernetes' plugin: a create of a namespaced object needs its namespace to exist
(NOT_FOUND otherwise) and not be terminating (PERMISSION_DENIED: "unable to create new
content in namespace x because it is being terminated"). The system namespaces may
not be deleted.

The namespace is read from the watch cache, as Kubernetes reads it from an informer,
but the decision stays exact where Kubernetes' is not: the write's transaction
requires the namespace to still be at the revision the cache showed (see
``Attributes.unchanged``), so a namespace deleted a moment ago through any apiserver
fails the transaction and the write is admitted again from the store. A namespace the
cache does not hold yet (just created) is looked up in the store. Either way no
namespaced create costs a store read of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.apiserver.admission import CREATE, DELETE, Attributes
from skiff.api import errors
from skiff.api.namespaces import SYSTEM_NAMESPACES
from skiff.api.v1 import core_pb2

NamespaceLookup = Callable[[str], Awaitable[core_pb2.Namespace | None]]
CachedNamespaceLookup = Callable[[str], core_pb2.Namespace | None]


class NamespaceLifecycle:
    name = "NamespaceLifecycle"

    def __init__(self, lookup: NamespaceLookup, *, cached: CachedNamespaceLookup,
                 key: Callable[[str], str]) -> None:
        """``lookup`` reads a namespace from the store, ``cached`` from the watch cache
        (None when it is not there or the cache is not ready); ``key`` is a
        namespace's store key."""
        self._lookup = lookup
        self._cached = cached
        self._key = key

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
        namespace = None if attrs.consistent else self._cached(name)
        if namespace is None:
            namespace = await self._lookup(name)
        if namespace is not None:
            # Also after a store read: the namespace cannot start terminating between
            # this check and the write.
            attrs.unchanged[self._key(name)] = int(namespace.metadata.resource_version)
        if namespace is None:
            raise errors.NotFound(f'namespaces "{name}" not found')
        if namespace.metadata.HasField("deletion_timestamp") or (
                namespace.status.phase == "Terminating"):
            raise errors.Forbidden(
                f"{attrs.kind.plural} \"{attrs.obj.metadata.name}\" is forbidden: unable to "
                f"create new content in namespace {name} because it is being terminated")
