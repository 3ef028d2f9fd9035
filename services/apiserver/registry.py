"""The generic registry: create, get, list, update, delete and watch for any kind.

Kubernetes' ``registry/generic`` in one class. What differs between kinds lives in
their :class:`~services.apiserver.strategy.Strategy`; what depends on the rest of the
cluster lives in admission; the store and the watch cache are reached through
``storage`` and ``cacher``. Invariants kept here:

- metadata.resource_version is the store's mod_revision; a write that carries one is
  conditional on it (a stale one is ``Conflict``), a write without one is retried on
  the latest version (Kubernetes' GuaranteedUpdate).
- status changes only through ``update_status``; spec and metadata only through
  ``update``; metadata.generation goes up when the spec changes.
- an object with finalizers is not removed by ``delete``: it gets a
  deletion_timestamp and goes when an update empties its finalizers. A pod bound to a
  node is deleted gracefully: its kubelet stops it, then deletes it with grace 0.
- reads at resource_version "0" (and watches) are served by the watch cache; other
  reads are consistent: the cache is used only once it has caught up with the
  store's current revision.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.apiserver import meta
from services.apiserver.admission import CREATE, DELETE, UPDATE, Attributes, Chain
from services.apiserver.cacher import Cacher
from services.apiserver.storage import Storage
from services.apiserver.storage_types import (
    GuardMoved,
    KeyConflict,
    StoredObject,
    decode,
    encode,
    kind_prefix,
    object_key,
)
from services.apiserver.strategy import Strategy
from skiff.api import errors, fields, labels
from skiff.api.kinds import Kind
from skiff.api.v1 import meta_pb2

#: How often a write is retried when the object changed under it (no resource_version
#: given) or a reservation was taken by someone else in the meantime.
MAX_ATTEMPTS = 16
#: How long a consistent read waits for the watch cache to catch up with the store.
FRESHNESS_TIMEOUT = 3.0
#: Characters of the suffix generateName appends (Kubernetes' alphabet, no vowels).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

ORPHAN, BACKGROUND, FOREGROUND = "Orphan", "Background", "Foreground"
ORPHAN_FINALIZER, FOREGROUND_FINALIZER = "orphan", "foregroundDeletion"
#: A pod's default terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30


class Registry:
    """Every verb of one kind, against the store and the kind's watch cache."""

    def __init__(self, kind: Kind, strategy: Strategy, storage: Storage, cacher: Cacher,
                 admission: Chain, *, clock: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.strategy = strategy
        self.storage = storage
        self.cacher = cacher
        self.admission = admission
        self.clock = clock

    # ------------------------------------------------------------------ helpers

    def key(self, namespace: str, name: str) -> str:
        return object_key(self.kind, namespace, name)

    def _scope(self, namespace: str) -> str:
        """The namespace an object lives in: "" for cluster-scoped kinds."""
        return namespace if self.kind.namespaced else ""

    def _now(self) -> Timestamp:
        stamp = Timestamp()
        stamp.FromSeconds(int(self.clock()))
        return stamp

    def _not_found(self, name: str) -> errors.NotFound:
        return errors.NotFound(f'{self.kind.plural} "{name}" not found')

    def _conflict(self, name: str, why: str) -> errors.Conflict:
        return errors.Conflict(f'Operation cannot be fulfilled on {self.kind.plural} '
                               f'"{name}": {why}')

    def _stale(self, name: str) -> errors.Conflict:
        return self._conflict(name, "the object has been modified; please apply your "
                                    "changes to the latest version and try again")

    def _cached(self, key: str) -> tuple[int, Message] | None:
        """The watch cache's copy of ``key`` and its mod_revision, if it has one.

        A guess at the stored state that a write's compare (on that mod_revision)
        verifies, saving the store read (Kubernetes' cached existing object). Shared
        with the cache: never changed.
        """
        found = self.cacher.get(key) if self.cacher.ready else None
        if found is None:
            return None
        return int(found.metadata.resource_version), found  # type: ignore[attr-defined]

    async def _current(self, key: str, name: str) -> tuple[int, Message]:
        """``key`` as stored now, and its mod_revision; NotFound if it is not."""
        stored = await self.storage.get(key)
        if stored is None:
            raise self._not_found(name)
        return _decoded(self.kind, stored)

    async def _read(self, namespace: str, name: str) -> Message:
        stored = await self.storage.get(self.key(namespace, name))
        if stored is None:
            raise self._not_found(name)
        return decode(self.kind, stored.value, stored.mod_revision)

    def _stamp(self, obj: Message, revision: int) -> Message:
        obj.metadata.resource_version = str(revision)
        return obj

    # ------------------------------------------------------------------- create

    async def create(self, obj: Message) -> Message:
        """Default, validate, admit and store a new object; returns it as stored."""
        obj = meta.copy(obj)
        meta.check_type(self.kind, obj)
        md = obj.metadata
        if self.kind.namespaced:
            md.namespace = md.namespace or "default"
        else:
            md.namespace = ""
        self.strategy.default(obj)
        self.strategy.prepare_for_create(obj)
        md.uid = str(uuid.uuid4())
        md.creation_timestamp.CopyFrom(self._now())
        md.generation = 1
        md.ClearField("resource_version")
        md.ClearField("deletion_timestamp")
        md.ClearField("deletion_grace_period_seconds")
        generated = not md.name and bool(md.generate_name)
        consistent = False
        for _ in range(MAX_ATTEMPTS):
            candidate = meta.copy(obj)
            if generated:
                candidate.metadata.name = candidate.metadata.generate_name + "".join(
                    secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
            problems = meta.validate(self.kind, candidate) + self.strategy.validate(candidate)
            if problems:
                raise errors.Invalid(self.kind.kind, candidate.metadata.name, problems)
            attrs = Attributes(CREATE, self.kind, candidate, consistent=consistent)
            await self.admission.admit(attrs)
            key = self.key(candidate.metadata.namespace, candidate.metadata.name)
            try:
                revision = await self.storage.create(key, encode(candidate), puts=attrs.puts,
                                                     absent=attrs.absent,
                                                     unchanged=attrs.unchanged)
            except GuardMoved:
                consistent = True  # admission decided on a stale cache: ask the store
                continue
            except errors.AlreadyExists as e:
                taken = getattr(e, "key", key)
                if taken == key:
                    if generated:
                        continue
                    raise errors.AlreadyExists(
                        f'{self.kind.plural} "{candidate.metadata.name}" already exists'
                    ) from None
                self._retry_or_report(attrs, taken)
                continue
            return self._stamp(candidate, revision)
        raise errors.Unavailable(f"could not create {self.kind.singular}: too many conflicts")

    def _retry_or_report(self, attrs: Attributes, key: str) -> None:
        """A reservation was taken: report it if the client chose that value."""
        if key in attrs.taken:
            raise errors.Invalid(self.kind.kind, attrs.obj.metadata.name, [attrs.taken[key]])

    # ---------------------------------------------------------------------- get

    async def get(self, namespace: str, name: str, resource_version: str = "") -> Message:
        namespace = self._scope(namespace or "default")  # as create, update and delete
        if resource_version == "0":
            found = self.cacher.get(self.key(namespace, name))
            if found is None:
                raise self._not_found(name)
            return found
        meta.parse_resource_version(resource_version, "resourceVersion")
        return await self._read(namespace, name)

    # --------------------------------------------------------------------- list

    async def list(self, options: meta_pb2.ListOptions) -> Message:
        """Objects that match the options' selectors; paginated when limit is set."""
        namespace = self._scope(options.namespace)
        predicate = self.predicate(options)
        revision = meta.parse_resource_version(options.resource_version, "resourceVersion")
        paged = options.limit > 0 or bool(options.continue_token)
        if not paged and options.resource_version == "":
            # Consistent read from the cache: it must have seen the store's now.
            revision = await self.storage.revision()
        if paged or (revision and not await self._cache_reaches(revision)):
            items, list_revision, token = await self._list_page(options, namespace, predicate)
            if not paged and list_revision < revision:  # "at least N", N from the future
                raise errors.Unavailable(f"too large resource version: {revision}, the "
                                         f"store is at {list_revision}")
        else:
            items, list_revision = self.cacher.list(predicate, namespace)
            token = ""
        result = self.kind.list_message(api_version=self.kind.api_version,
                                        kind=f"{self.kind.kind}List")
        result.metadata.resource_version = str(list_revision)
        result.metadata.continue_token = token
        result.items.extend(items)
        return result

    async def _cache_reaches(self, revision: int) -> bool:
        """Wait until the watch cache has seen ``revision``; False at once when it is
        behind and only events can move it (its store's progress notifications are not
        trusted, see StoreWatch): the caller reads the store instead, as Kubernetes
        does on such an etcd. Unavailable when the cache does not get there in time."""
        if self.cacher.ready and self.cacher.revision >= revision:
            return True
        if not self.cacher.progress_ordered:
            return False
        await self.cacher.wait_fresh(revision, FRESHNESS_TIMEOUT)
        return True

    async def _list_page(self, options: meta_pb2.ListOptions, namespace: str,
                         predicate: Callable[[Message], bool]
                         ) -> tuple[list[Message], int, str]:
        prefix = kind_prefix(self.kind, namespace)
        start, revision = prefix, 0
        if options.continue_token:
            start, revision = _decode_continue(options.continue_token, prefix)
        limit = options.limit if options.limit > 0 else 0
        items: list[Message] = []
        while True:
            page = await self.storage.list(prefix, revision=revision, start_key=start,
                                           limit=limit)
            revision = page.revision
            for i, stored in enumerate(page.items):
                obj = decode(self.kind, stored.value, stored.mod_revision)
                if not predicate(obj):
                    continue
                items.append(obj)
                if len(items) == limit:  # a full page: never more than limit items
                    if not page.more and i == len(page.items) - 1:
                        return items, revision, ""
                    return items, revision, _encode_continue(stored.key + "\0", revision)
            if not page.more or not page.items:
                return items, revision, ""
            start = page.items[-1].key + "\0"

    def predicate(self, options: meta_pb2.ListOptions) -> Callable[[Message], bool]:
        """The options' label and field selectors as one test of an object."""
        # Each selector's errors name the option they are in, as field errors do.
        try:
            label_selector = labels.parse_selector(options.label_selector)
        except (ValueError, errors.BadRequest) as e:
            raise errors.BadRequest(f"labelSelector: {e}") from None
        try:
            field_selector = fields.parse_field_selector(options.field_selector)
            fields.validate_field_selector(self.kind.kind, field_selector)
        except (ValueError, errors.BadRequest) as e:
            raise errors.BadRequest(f"fieldSelector: {e}") from None
        kind_name = self.kind.kind
        if label_selector.empty and not field_selector.requirements:
            return _everything

        def matches(obj: Message) -> bool:
            return (label_selector.matches(obj.metadata.labels)
                    and field_selector.matches(fields.object_fields(kind_name, obj)))

        return matches

    # ------------------------------------------------------------------- update

    async def update(self, obj: Message) -> Message:
        """Replace spec and metadata of a stored object (its status is kept)."""
        meta.check_type(self.kind, obj)
        return await self._guaranteed_update(obj, status=False)

    async def update_status(self, obj: Message) -> Message:
        """Replace the status of a stored object (its spec and metadata are kept)."""
        meta.check_type(self.kind, obj)
        return await self._guaranteed_update(obj, status=True)

    async def _guaranteed_update(self, obj: Message, *, status: bool) -> Message:
        md = obj.metadata
        if not md.name:
            raise errors.Invalid(self.kind.kind, "", [errors.FieldError("metadata.name",
                                                                        "required")])
        namespace = self._scope(md.namespace or "default")
        wanted = meta.parse_resource_version(md.resource_version, "metadata.resourceVersion")
        key = self.key(namespace, md.name)
        # Start from the watch cache's copy; the store is read only when the cache does
        # not have the object, is behind the client's version, or its copy leads to a
        # refusal or a no-op (which a lagging cache could cause). A stale copy is caught
        # by the write's compare, whose failure returns the current state.
        current = self._cached(key)
        verified = False  # whether ``current`` was read from the store
        for _ in range(MAX_ATTEMPTS):
            if current is None or (wanted and current[0] < wanted):
                current, verified = await self._current(key, md.name), True
            at, old = current
            if wanted and wanted != at:
                raise self._stale(md.name)
            try:
                new = self._prepare_update(obj, old, status=status)
                unchanged = meta.equal_ignoring_version(new, old)
                # An update that leaves a deleting object nothing to wait for removes it.
                finalized = _finalized(new)
                attrs = Attributes(DELETE if finalized else UPDATE, self.kind, new, old)
                if not unchanged:
                    await self.admission.admit(attrs)
            except errors.APIError:
                if verified:
                    raise
                current = None
                continue
            if unchanged:
                if not verified:
                    current = None
                    continue
                return old  # nothing changed: no write, no event (as Kubernetes)
            try:
                if finalized:
                    revision = await self.storage.delete(key, mod_revision=at,
                                                         deletes=attrs.deletes)
                else:
                    revision = await self.storage.update(
                        key, encode(new), mod_revision=at, puts=attrs.puts,
                        deletes=attrs.deletes, absent=attrs.absent)
            except KeyConflict as e:
                if wanted:
                    raise self._stale(md.name) from None
                current, verified = _decoded(self.kind, e.current), True
                continue
            except errors.Conflict:
                if wanted:
                    raise self._stale(md.name) from None
                current = None
                continue
            except errors.AlreadyExists as e:
                self._retry_or_report(attrs, getattr(e, "key", ""))
                continue
            return self._stamp(new, revision)
        raise self._stale(md.name)

    def _prepare_update(self, obj: Message, old: Message, *, status: bool) -> Message:
        new = meta.copy(obj)
        new.api_version, new.kind = self.kind.api_version, self.kind.kind
        if status:
            self.strategy.prepare_for_status_update(new, old)
            problems = self.strategy.validate_status_update(new, old)
        else:
            meta.keep_system_fields(new.metadata, old.metadata)
            self.strategy.default(new)
            self.strategy.prepare_for_update(new, old)
            if self.strategy.spec_changed(new, old):
                new.metadata.generation = old.metadata.generation + 1
            else:
                new.metadata.generation = old.metadata.generation
            problems = (meta.validate(self.kind, new) + self.strategy.validate(new)
                        + meta.validate_update(new.metadata, old.metadata)
                        + self.strategy.validate_update(new, old))
        if problems:
            raise errors.Invalid(self.kind.kind, new.metadata.name, problems)
        new.metadata.resource_version = old.metadata.resource_version
        return new

    # ------------------------------------------------------------------- delete

    async def delete(self, request: meta_pb2.DeleteRequest) -> Message:
        """Delete, or begin deleting (graceful pods, finalizers), a stored object."""
        if request.propagation_policy not in ("", ORPHAN, BACKGROUND, FOREGROUND):
            raise errors.BadRequest(
                f'propagationPolicy: Unsupported value: "{request.propagation_policy}": '
                f'supported values: "{FOREGROUND}", "{BACKGROUND}", "{ORPHAN}"')
        namespace = self._scope(request.namespace or "default")
        key = self.key(namespace, request.name)
        pre = request.preconditions
        # As update: from the watch cache's copy, verified by the write's compare; with
        # preconditions, from the store (a lagging copy would fail them wrongly).
        preconditions = pre.HasField("uid") or pre.HasField("resource_version")
        current = None if preconditions else self._cached(key)
        verified = False
        for _ in range(MAX_ATTEMPTS):
            if current is None:
                current, verified = await self._current(key, request.name), True
            at, obj = current
            if not verified:
                obj = meta.copy(obj)  # the cache's own: it gets stamped below
            try:
                self._check_preconditions(obj, request)
                attrs = Attributes(DELETE, self.kind, obj)
                await self.admission.admit(attrs)
                pending = self._begin_deletion(obj, request)
                unchanged = pending is not None and meta.equal_ignoring_version(pending, obj)
            except errors.APIError:
                if verified:
                    raise
                current = None
                continue
            if unchanged:
                if not verified:
                    current = None
                    continue
                return obj
            try:
                if pending is not None:
                    revision = await self.storage.update(key, encode(pending),
                                                         mod_revision=at)
                    return self._stamp(pending, revision)
                revision = await self.storage.delete(key, mod_revision=at,
                                                     deletes=attrs.deletes)
            except KeyConflict as e:
                if pre.HasField("resource_version"):
                    raise
                current, verified = _decoded(self.kind, e.current), True
                continue
            except errors.Conflict:
                if pre.HasField("resource_version"):
                    raise
                current = None
                continue
            return self._stamp(obj, revision)
        raise self._stale(request.name)

    def _check_preconditions(self, obj: Message, request: meta_pb2.DeleteRequest) -> None:
        pre, md = request.preconditions, obj.metadata
        if pre.HasField("uid") and pre.uid != md.uid:
            raise errors.Conflict(f"Precondition failed: UID in precondition: {pre.uid}, "
                                  f"UID in object meta: {md.uid}")
        if pre.HasField("resource_version") and pre.resource_version != md.resource_version:
            raise errors.Conflict(
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre.resource_version}, ResourceVersion in object meta: "
                f"{md.resource_version}")

    def _begin_deletion(self, obj: Message,
                        request: meta_pb2.DeleteRequest) -> Message | None:
        """The object as it must be stored while its deletion is pending, or None to
        remove it now (pure)."""
        pending = meta.copy(obj)
        md = pending.metadata
        grace = self._grace_seconds(obj, request)
        finalizers = list(md.finalizers)
        policy = request.propagation_policy
        if policy == ORPHAN and ORPHAN_FINALIZER not in finalizers:
            finalizers.append(ORPHAN_FINALIZER)
        elif policy == FOREGROUND and FOREGROUND_FINALIZER not in finalizers:
            finalizers.append(FOREGROUND_FINALIZER)
        namespace_finalizers = (self.kind.kind == "Namespace"
                                and len(pending.spec.finalizers) > 0)  # type: ignore[attr-defined]
        if grace == 0 and not finalizers and not namespace_finalizers:
            return None
        if finalizers != list(md.finalizers):
            del md.finalizers[:]
            md.finalizers.extend(finalizers)
        now = int(self.clock())
        if not md.HasField("deletion_timestamp"):
            md.deletion_timestamp.FromSeconds(now + grace)
            md.deletion_grace_period_seconds = grace
        elif grace < md.deletion_grace_period_seconds:
            # A shorter grace period may cut a pending one short, never lengthen it.
            md.deletion_timestamp.FromSeconds(now + grace)
            md.deletion_grace_period_seconds = grace
        if self.kind.kind == "Namespace":
            pending.status.phase = "Terminating"  # type: ignore[attr-defined]
        return pending

    def _grace_seconds(self, obj: Message, request: meta_pb2.DeleteRequest) -> int:
        """Seconds a pod's containers get to stop; 0 for everything else."""
        if self.kind.kind != "Pod":
            return 0
        if request.HasField("grace_period_seconds"):
            grace = max(0, request.grace_period_seconds)
        elif obj.spec.HasField("termination_grace_period_seconds"):  # type: ignore[attr-defined]
            grace = obj.spec.termination_grace_period_seconds  # type: ignore[attr-defined]
        else:
            grace = DEFAULT_GRACE_SECONDS
        # A pod no kubelet runs (unbound, or finished) has nothing to stop: it goes now.
        if not obj.spec.node_name or obj.status.phase in ("Succeeded", "Failed"):  # type: ignore[attr-defined]
            return 0
        return grace

    # -------------------------------------------------------------------- watch

    async def watch(self, options: meta_pb2.ListOptions) -> AsyncIterator[bytes]:
        """Watch events from the options' version on: the kind's WatchEvent messages,
        serialized (an event every watcher gets is serialized once for all)."""
        predicate = self.predicate(options)
        start = meta.parse_resource_version(options.resource_version, "resourceVersion")
        watcher = self.cacher.watch(start_revision=start or None, predicate=predicate,
                                    namespace=self._scope(options.namespace),
                                    allow_bookmarks=options.allow_bookmarks)
        watch_event = self.kind.watch_event
        try:
            async for event in watcher:
                encoded = event.encoded
                data = encoded.get(event.type) if encoded is not None else None
                if data is None:
                    data = watch_event(type=event.type, object=event.object).SerializeToString()
                    if encoded is not None:
                        encoded[event.type] = data
                yield data
        finally:
            watcher.close()


def _everything(obj: Message) -> bool:
    return True


def _decoded(kind: Kind, stored: StoredObject) -> tuple[int, Message]:
    return stored.mod_revision, decode(kind, stored.value, stored.mod_revision)


def _finalized(obj: Message) -> bool:
    """Whether an update leaves a deleting object nothing to wait for: then it goes."""
    md = obj.metadata
    if not md.HasField("deletion_timestamp") or md.finalizers:
        return False
    if obj.DESCRIPTOR.name == "Namespace" and obj.spec.finalizers:  # type: ignore[attr-defined]
        return False
    return md.deletion_grace_period_seconds == 0 or obj.DESCRIPTOR.name != "Pod"


def _encode_continue(start_key: str, revision: int) -> str:
    token = json.dumps({"v": 1, "rv": revision, "start": start_key}).encode()
    return base64.urlsafe_b64encode(token).decode()


def _decode_continue(token: str, prefix: str) -> tuple[str, int]:
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(token.encode()))
        start, revision = str(data["start"]), int(data["rv"])
    except (ValueError, KeyError, TypeError):
        raise errors.BadRequest("continue: invalid continue token") from None
    if not start.startswith(prefix) or not 0 < revision <= meta.MAX_RESOURCE_VERSION:
        raise errors.BadRequest("continue: the continue token does not belong to this list")
    return start, revision
