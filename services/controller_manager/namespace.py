"""The namespace controller: empties a terminating namespace, then lets it go.

Kubernetes' ``pkg/controller/namespace``. Reconciles: every Namespace with a
deletionTimestamp. Watches namespaces (one shared informer); the content is listed
through the API, not from caches, because it must be seen as it is now.

A sync of a terminating namespace deletes every object of every namespaced kind in it
(the ordinary delete: pods are deleted gracefully, so their kubelets stop them; the
apiserver removes unbound pods at once), then, while anything is left (pods still
stopping, objects held by finalizers), looks again after :data:`RECHECK_SECONDS`.
Once nothing is left it removes the ``kubernetes`` finalizer from spec.finalizers
through the namespaces' finalize subresource; with no finalizer left the apiserver
removes the namespace. Invariant: the finalizer is removed only after a list of every
kind found the namespace empty.

:func:`finalizers_without` and :func:`remaining_summary` are the pure parts.
Neighbours: ``services.apiserver.finalize`` (the subresource),
``services.apiserver.admission.namespace_lifecycle`` (no new content once terminating).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import KINDS, Kind
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory

#: The finalizer this controller owns (Kubernetes' ``FinalizerKubernetes``).
KUBERNETES_FINALIZER = "kubernetes"
#: How long to wait before looking again at a namespace whose content is still going.
RECHECK_SECONDS = 1.0

__all__ = ["NamespaceController", "finalizers_without", "namespaced_kinds",
           "remaining_summary"]


# ----------------------------------------------------------------- pure helpers


def namespaced_kinds(kinds: Sequence[Kind] | Mapping[str, Kind] = KINDS) -> list[Kind]:
    """Every namespaced kind, in the kinds table's order (pure)."""
    values = list(kinds.values()) if isinstance(kinds, Mapping) else list(kinds)
    return [k for k in values if k.namespaced]


def finalizers_without(namespace: core_pb2.Namespace, finalizer: str) -> list[str]:
    """spec.finalizers less ``finalizer``, order kept (pure)."""
    return [f for f in namespace.spec.finalizers if f != finalizer]


def remaining_summary(counts: Mapping[str, int]) -> str:
    """``"pods: 2, services: 1"`` for the kinds with objects left (pure)."""
    return ", ".join(f"{plural}: {n}" for plural, n in sorted(counts.items()) if n)


# -------------------------------------------------------------------- controller


class NamespaceController(Controller):
    """Deletes a terminating namespace's content, then finalizes the namespace."""

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 recorder: EventRecorder, config: Any) -> None:
        super().__init__("namespace", workers=max(1, int(config.concurrent_syncs)))
        self.client = client
        self.recorder = recorder
        self.kinds = namespaced_kinds()
        self.namespaces = factory.informer("namespaces")
        self.namespaces.add_handler(self.on_namespace, lambda old, new: self.on_namespace(new),
                                    None, name="namespace-controller")
        self.wait_for(self.namespaces)

    def on_namespace(self, namespace: Message) -> None:
        """Only terminating namespaces are this controller's business."""
        if namespace.metadata.HasField("deletion_timestamp"):  # type: ignore[attr-defined]
            self.enqueue(namespace)

    async def sync(self, key: str) -> None:
        """Delete what is in namespace ``key``; finalize it once nothing is left."""
        namespace = self.namespaces.store.get(key)
        if namespace is None or not namespace.metadata.HasField("deletion_timestamp"):  # type: ignore[attr-defined]
            return
        if KUBERNETES_FINALIZER not in namespace.spec.finalizers:  # type: ignore[attr-defined]
            return  # ours is done; others' finalizers are theirs to remove
        remaining = await self.delete_content(key)
        if remaining:
            self._log.info("namespace content still going", namespace=key,
                           remaining=remaining_summary(remaining))
            self.enqueue_after(key, RECHECK_SECONDS)
            return
        await self._finalize(namespace)  # type: ignore[arg-type]

    async def delete_content(self, namespace: str) -> dict[str, int]:
        """Delete every object in ``namespace``; the count left per kind (plural)."""
        remaining: dict[str, int] = {}
        for kind in self.kinds:
            resource = self.client.resource(kind)
            listed = await resource.list(namespace)
            for obj in listed.items:
                if obj.metadata.HasField("deletion_timestamp"):
                    continue  # going already: a pod stopping, or finalizers pending
                try:
                    # The ordinary delete: a bound pod gets its grace period, so its
                    # kubelet stops its containers before it goes.
                    await resource.delete(obj.metadata.name, namespace, uid=obj.metadata.uid)
                except (errors.NotFound, errors.Conflict):
                    pass  # gone, or replaced by a newer object: the next list sees
            left = await resource.list(namespace)
            if left.items:
                remaining[kind.plural] = len(left.items)
        return remaining

    async def _finalize(self, namespace: core_pb2.Namespace) -> None:
        """Remove our finalizer (the apiserver removes the namespace if none is left)."""
        request = core_pb2.Namespace()
        request.CopyFrom(namespace)
        del request.spec.finalizers[:]
        request.spec.finalizers.extend(finalizers_without(namespace, KUBERNETES_FINALIZER))
        request.metadata.resource_version = ""  # only the finalizers matter: no precondition
        try:
            await self.client.namespaces.finalize(request)
        except errors.NotFound:
            return
        self._log.info("namespace finalized", namespace=namespace.metadata.name)
