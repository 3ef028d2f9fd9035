"""Namespaces' finalize subresource: the one way to change spec.finalizers.

Kubernetes' ``FinalizeREST``: Update keeps a namespace's spec.finalizers and
UpdateStatus keeps everything but its status, so the namespace controller, once it has
emptied a terminating namespace, removes the ``kubernetes`` finalizer through this
call. Only spec.finalizers is taken from the request; the write is conditional on the
stored version (retried on a concurrent change, or refused with ``Conflict`` when the
request names a resource_version that is no longer current). A namespace being deleted
that is left with no finalizers at all (spec or metadata) is removed instead, as
Kubernetes' namespace registry does.
"""

from __future__ import annotations

from services.apiserver import meta
from services.apiserver.admission import DELETE, UPDATE, Attributes
from services.apiserver.registry import MAX_ATTEMPTS, Registry
from services.apiserver.storage_types import decode, encode
from services.apiserver.strategies.namespace import validate_namespace
from skiff.api import errors
from skiff.api.v1 import core_pb2


def finalized(current: core_pb2.Namespace, finalizers: list[str]) -> core_pb2.Namespace:
    """``current`` with spec.finalizers replaced by ``finalizers`` (pure)."""
    new = core_pb2.Namespace()
    new.CopyFrom(current)
    del new.spec.finalizers[:]
    new.spec.finalizers.extend(finalizers)
    return new


def removable(namespace: core_pb2.Namespace) -> bool:
    """Whether a namespace has nothing left to wait for: deleting, no finalizers (pure)."""
    md = namespace.metadata
    return (md.HasField("deletion_timestamp") and not md.finalizers
            and not namespace.spec.finalizers)


async def finalize(registry: Registry, request: core_pb2.Namespace) -> core_pb2.Namespace:
    """Write the request's spec.finalizers; remove the namespace if that finishes it.

    Returns the namespace as stored (or as it was when removed).
    """
    name = request.metadata.name
    if not name:
        raise errors.Invalid("Namespace", "", [errors.FieldError("metadata.name", "required")])
    wanted = meta.parse_resource_version(request.metadata.resource_version,
                                         "metadata.resourceVersion")
    key = registry.key("", name)
    for _ in range(MAX_ATTEMPTS):
        stored = await registry.storage.get(key)
        if stored is None:
            raise errors.NotFound(f'namespaces "{name}" not found')
        if wanted and wanted != stored.mod_revision:
            raise _conflict(name, "the object has been modified; please apply your "
                                  "changes to the latest version and try again")
        current: core_pb2.Namespace = decode(registry.kind, stored.value,  # type: ignore[assignment]
                                             stored.mod_revision)
        if request.metadata.uid and request.metadata.uid != current.metadata.uid:
            raise _conflict(name, f"Precondition failed: UID in precondition: "
                                  f"{request.metadata.uid}, UID in object meta: "
                                  f"{current.metadata.uid}")
        new = finalized(current, list(request.spec.finalizers))
        problems = validate_namespace(new)
        if problems:
            raise errors.Invalid("Namespace", name, problems)
        if new == current:
            return current  # nothing to write, as an unchanged update
        gone = removable(new)
        attrs = Attributes(DELETE if gone else UPDATE, registry.kind, new, current)
        await registry.admission.admit(attrs)
        try:
            if gone:
                revision = await registry.storage.delete(key, mod_revision=stored.mod_revision,
                                                         deletes=attrs.deletes)
            else:
                revision = await registry.storage.update(
                    key, encode(new), mod_revision=stored.mod_revision, puts=attrs.puts,
                    deletes=attrs.deletes, absent=attrs.absent)
        except errors.Conflict:
            if wanted:
                raise _conflict(name, "the object has been modified") from None
            continue  # changed under us (its status, say): look again
        new.metadata.resource_version = str(revision)
        return new
    raise _conflict(name, "too many concurrent changes")


def _conflict(name: str, why: str) -> errors.Conflict:
    return errors.Conflict(f'Operation cannot be fulfilled on namespaces "{name}": {why}')
