"""The garbage collector: ownerReferences, and the three deletion propagation policies.

Watches every namespaced kind that owns or is owned (:data:`GC_KINDS`), indexing each
cache by uid and by owner uid: together they are the dependency graph (who owns whom)
without a second copy of it. Handlers enqueue an item (``Kind:namespace/name``) for the
object that changed, for its dependents when it was deleted or started deleting, and
for its owners that are deleting in the foreground (their wait may be over).

``sync(item)`` for one object:

- **orphan**: it is being deleted with the ``orphan`` finalizer -> remove its
  ownerReference from every dependent, then the finalizer (the apiserver then removes it);
- **foreground**: it is being deleted with ``foregroundDeletion`` -> delete its
  dependents (in the foreground too when they have dependents of their own, so the
  whole tree goes first; a dependent another owner still holds is released instead);
  once none that block owner deletion remain, remove the finalizer;
- **background**: it has ownerReferences and none of its owners exists -> delete it.
  An owner missing from the cache is confirmed missing with a live GET first (the
  cache may lag behind a just-created owner), as Kubernetes does. References to owners
  that are gone while others remain are removed instead.

Neighbours: the apiserver's registry adds the finalizers for the Orphan / Foreground
policies; :mod:`.replication` stops managing an owner that is being deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import UnknownKind, lookup
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import EventRecorder
from skiff.client.informer import Informer, SharedInformerFactory
from skiff.client.store import split_key

#: The kinds whose objects can own or be owned.
GC_KINDS = ("Pod", "ReplicaSet", "ReplicationController", "Deployment", "Endpoints", "Service",
            "ConfigMap", "Secret", "ServiceAccount")
ORPHAN_FINALIZER, FOREGROUND_FINALIZER = "orphan", "foregroundDeletion"
UID_INDEX, OWNER_UID_INDEX = "gc-uid", "gc-owner-uid"
#: How often a write racing with another writer (Conflict) is retried on a fresh read.
CONFLICT_RETRIES = 5


def _uids(obj: Message) -> list[str]:
    return [obj.metadata.uid]  # type: ignore[attr-defined]


def _owner_uids(obj: Message) -> list[str]:
    return [ref.uid for ref in obj.metadata.owner_references]  # type: ignore[attr-defined]


def item_key(obj: Message, kind: str) -> str:
    """``Kind:namespace/name``: a work-queue item of the collector."""
    md = obj.metadata  # type: ignore[attr-defined]
    return f"{kind}:{md.namespace}/{md.name}"


def parse_item(item: str) -> tuple[str, str, str]:
    """``"Pod:ns/name"`` -> ``("Pod", "ns", "name")``."""
    kind, _, key = item.partition(":")
    namespace, name = split_key(key)
    return kind, namespace, name


@dataclass(frozen=True)
class Deletion:
    """What an object being deleted waits for the collector to do (pure reading)."""

    orphan: bool
    foreground: bool


def pending_deletion(obj: Message) -> Deletion | None:
    """The finalizer work of an object being deleted, or None if it is not (pure)."""
    md = obj.metadata  # type: ignore[attr-defined]
    if not md.HasField("deletion_timestamp"):
        return None
    return Deletion(ORPHAN_FINALIZER in md.finalizers, FOREGROUND_FINALIZER in md.finalizers)


def without_owner(obj: Message, uids: Iterable[str]) -> Message:
    """A copy of ``obj`` without ownerReferences to ``uids`` (pure)."""
    drop = set(uids)
    copy = type(obj)()
    copy.CopyFrom(obj)
    refs = [r for r in copy.metadata.owner_references if r.uid not in drop]  # type: ignore[attr-defined]
    del copy.metadata.owner_references[:]  # type: ignore[attr-defined]
    copy.metadata.owner_references.extend(refs)  # type: ignore[attr-defined]
    return copy


def without_finalizer(obj: Message, finalizer: str) -> Message:
    """A copy of ``obj`` without ``finalizer`` (pure)."""
    copy = type(obj)()
    copy.CopyFrom(obj)
    kept = [f for f in copy.metadata.finalizers if f != finalizer]  # type: ignore[attr-defined]
    del copy.metadata.finalizers[:]  # type: ignore[attr-defined]
    copy.metadata.finalizers.extend(kept)  # type: ignore[attr-defined]
    return copy


class GarbageCollector(Controller):
    """Deletes objects whose owners are gone; carries out Orphan and Foreground deletion."""

    def __init__(self, client: Client, factory: SharedInformerFactory, recorder: EventRecorder,
                 config: Any = None) -> None:
        super().__init__("garbagecollector", workers=getattr(config, "concurrent_syncs", 5))
        self.client = client
        self.recorder = recorder
        self.informers: dict[str, Informer] = {}
        for kind in GC_KINDS:
            informer = factory.informer(kind, indexers={UID_INDEX: _uids,
                                                        OWNER_UID_INDEX: _owner_uids})
            self.informers[kind] = informer
            informer.add_handler(*self._handlers(kind), name="garbagecollector")
        self.wait_for(*self.informers.values())

    # -------------------------------------------------------------- handlers

    def _handlers(self, kind: str) -> tuple[Any, Any, Any]:
        def added(obj: Message) -> None:
            self._changed(obj, kind, gone=False)

        def updated(old: Message, new: Message) -> None:
            if old.metadata.resource_version != new.metadata.resource_version:  # type: ignore[attr-defined]
                self._changed(new, kind, gone=False)

        def deleted(obj: Message) -> None:
            self._changed(obj, kind, gone=True)

        return added, updated, deleted

    def _changed(self, obj: Message, kind: str, *, gone: bool) -> None:
        md = obj.metadata  # type: ignore[attr-defined]
        if not gone:
            self.enqueue(item_key(obj, kind))
        if gone or md.HasField("deletion_timestamp"):
            # Its dependents may have lost their last owner.
            for dep_kind, dependent in self.dependents(md.uid):
                self.enqueue(item_key(dependent, dep_kind))
        for ref in md.owner_references:
            # An owner deleting in the foreground waits for this one: look at it again.
            owner = self._cached(ref.kind, md.namespace, ref.name)
            if owner is not None and owner.metadata.HasField("deletion_timestamp"):  # type: ignore[attr-defined]
                self.enqueue(item_key(owner, ref.kind))

    # ------------------------------------------------------------- the graph

    def dependents(self, uid: str) -> list[tuple[str, Message]]:
        """Every cached object with an ownerReference to ``uid``, with its kind."""
        return [(kind, obj) for kind, informer in self.informers.items()
                for obj in informer.store.by_index(OWNER_UID_INDEX, uid)]

    def _cached(self, kind: str, namespace: str, name: str) -> Message | None:
        informer = self.informers.get(kind)
        return informer.store.get(f"{namespace}/{name}") if informer is not None else None

    async def owner_exists(self, namespace: str, ref: Any) -> bool:
        """Whether the object ``ref`` names (by uid) exists; a cache miss is confirmed
        with a live GET, an unknown kind counts as existing (never delete blindly)."""
        informer = self.informers.get(ref.kind)
        if informer is not None and informer.store.by_index(UID_INDEX, ref.uid):
            return True
        try:
            kind = lookup(ref.kind)
        except UnknownKind:
            return True
        try:
            live = await self.client.resource(kind).get(ref.name, namespace)
        except errors.NotFound:
            return False
        return live.metadata.uid == ref.uid  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        kind, namespace, name = parse_item(key)
        obj = self._cached(kind, namespace, name)
        if obj is None:
            return
        deletion = pending_deletion(obj)
        if deletion is not None and deletion.orphan:
            await self._orphan_dependents(kind, obj)
            return
        if deletion is not None and deletion.foreground:
            await self._delete_dependents(kind, obj)
            return
        if obj.metadata.owner_references:  # type: ignore[attr-defined]
            await self._collect_if_orphaned(kind, obj)

    async def _collect_if_orphaned(self, kind: str, obj: Message) -> None:
        """Background deletion: delete ``obj`` when all its owners are gone."""
        md = obj.metadata  # type: ignore[attr-defined]
        if md.HasField("deletion_timestamp"):
            return  # already on its way
        dangling = [ref.uid for ref in md.owner_references
                    if not await self.owner_exists(md.namespace, ref)]
        if not dangling:
            return
        if len(dangling) < len(md.owner_references):
            await self._update(kind, md.namespace, md.name,
                               lambda fresh: without_owner(fresh, dangling))
            return
        started = time.monotonic()
        try:
            await self.client.resource(kind).delete(md.name, md.namespace, uid=md.uid,
                                                    propagation_policy="Background")
        except (errors.NotFound, errors.Conflict):
            return  # gone already, or a different object of that name now
        self._log.info("deleted object whose owners are gone", kind=kind,
                       object=f"{md.namespace}/{md.name}",
                       seconds=round(time.monotonic() - started, 6))

    async def _orphan_dependents(self, kind: str, owner: Message) -> None:
        md = owner.metadata  # type: ignore[attr-defined]
        dependents = self.dependents(md.uid)
        for dep_kind, dependent in dependents:
            dmd = dependent.metadata  # type: ignore[attr-defined]
            await self._update(dep_kind, dmd.namespace, dmd.name,
                               lambda fresh: without_owner(fresh, [md.uid]))
        await self._update(kind, md.namespace, md.name,
                           lambda fresh: without_finalizer(fresh, ORPHAN_FINALIZER))
        self._log.info("orphaned dependents", kind=kind, object=f"{md.namespace}/{md.name}",
                       dependents=len(dependents))

    async def _delete_dependents(self, kind: str, owner: Message) -> None:
        """Foreground deletion, as Kubernetes' attemptToDeleteItem does it for each
        dependent: one that another, solid owner still holds is only released by this
        owner; any other is deleted, itself in the foreground when it has dependents of
        its own (so the owner waits for the whole tree: a Deployment for its pods)."""
        md = owner.metadata  # type: ignore[attr-defined]
        blocking = 0
        for dep_kind, dependent in self.dependents(md.uid):
            dmd = dependent.metadata  # type: ignore[attr-defined]
            ref = next(r for r in dmd.owner_references if r.uid == md.uid)
            if not dmd.HasField("deletion_timestamp") and await self._held_by_another(
                    dependent, md.uid):
                await self._update(dep_kind, dmd.namespace, dmd.name,
                                   lambda fresh: without_owner(fresh, [md.uid]))
                continue
            if ref.HasField("block_owner_deletion") and ref.block_owner_deletion:
                blocking += 1
            if dmd.HasField("deletion_timestamp"):
                continue
            policy = "Foreground" if self.dependents(dmd.uid) else "Background"
            try:
                await self.client.resource(dep_kind).delete(
                    dmd.name, dmd.namespace, uid=dmd.uid, propagation_policy=policy)
            except (errors.NotFound, errors.Conflict):
                continue
        if blocking:
            return  # their deletions enqueue this owner again (see _changed)
        await self._update(kind, md.namespace, md.name,
                           lambda fresh: without_finalizer(fresh, FOREGROUND_FINALIZER))
        self._log.info("dependents deleted; owner released", kind=kind,
                       object=f"{md.namespace}/{md.name}")

    async def _held_by_another(self, dependent: Message, owner_uid: str) -> bool:
        """Whether an owner of ``dependent`` other than ``owner_uid`` is solid: it exists
        and is not itself waiting for its dependents to go (foreground deletion)."""
        md = dependent.metadata  # type: ignore[attr-defined]
        for ref in md.owner_references:
            if ref.uid == owner_uid or not await self.owner_exists(md.namespace, ref):
                continue
            informer = self.informers.get(ref.kind)
            cached = informer.store.by_index(UID_INDEX, ref.uid) if informer else []
            deletion = pending_deletion(cached[0]) if cached else None
            if deletion is None or not deletion.foreground:
                return True
        return False

    async def _update(self, kind: str, namespace: str, name: str, change: Any) -> None:
        """Read live, apply ``change`` (a pure function of the object), write; again on
        Conflict. A missing object needs no change."""
        resource = self.client.resource(kind)
        for attempt in range(CONFLICT_RETRIES):
            try:
                fresh = await resource.get(name, namespace)
                updated = change(fresh)
                if updated == fresh:
                    return
                await resource.update(updated)
                return
            except errors.NotFound:
                return
            except errors.Conflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise


__all__ = ["GC_KINDS", "Deletion", "GarbageCollector", "item_key", "parse_item",
           "pending_deletion", "without_finalizer", "without_owner"]
