"""The informer's local cache: objects by key, with indexes (client-go's ``cache.Indexer``).

An object's key is ``namespace/name`` (just ``name`` for cluster-scoped kinds), as
Kubernetes' ``MetaNamespaceKeyFunc`` makes it: :func:`key_of` and :func:`split_key`.

A :class:`Store` is a plain dict of key -> object plus, for each *indexer* (a function
from an object to the index values it files under: ``lambda pod: [pod.spec.node_name]``),
a reverse map value -> keys. Every store has the ``namespace`` index. It is thread-free
and await-free: every method runs to completion on the event loop, so a reader never
sees an index half updated.

Objects in the store are shared with every reader (handlers, listers, controllers):
treat them as read-only, and copy one before changing it.

Also here, because it is a question about two states of the cache and nothing else:
:func:`relist_diff`, the pure function that turns "what the cache held" and "what a
fresh list says" into the events handlers must see (an informer re-lists after its
watch fell too far behind, Kubernetes' 410 Gone). The informer (:mod:`skiff.client.informer`)
is the only writer of a store in practice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from google.protobuf.message import Message

#: An index function: the values an object is filed under in one index (none, one, many).
IndexFunc = Callable[[Message], list[str]]
Indexers = Mapping[str, IndexFunc]

#: The index every store has: objects by metadata.namespace.
NAMESPACE_INDEX = "namespace"


def key_of(obj: Message) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object (no namespace)."""
    md = obj.metadata  # type: ignore[attr-defined]
    namespace = md.namespace
    return f"{namespace}/{md.name}" if namespace else md.name


def split_key(key: str) -> tuple[str, str]:
    """``"ns/name"`` -> ``("ns", "name")``; ``"name"`` -> ``("", "name")``."""
    namespace, sep, name = key.partition("/")
    if not sep:
        return "", key
    if not namespace or not name or "/" in name:
        raise ValueError(f"unexpected key format: {key!r}")
    return namespace, name


def index_by_namespace(obj: Message) -> list[str]:
    """The built-in ``namespace`` index function."""
    return [obj.metadata.namespace]  # type: ignore[attr-defined]


def index_by_label(label: str) -> IndexFunc:
    """An index function filing objects under the value of one label (if they carry it)."""

    def by_label(obj: Message) -> list[str]:
        labels = obj.metadata.labels  # type: ignore[attr-defined]
        return [labels[label]] if label in labels else []

    by_label.__name__ = f"by_label_{label}"
    return by_label


class Store:
    """Objects by key, with indexes; no locks, no awaits (see the module docstring).

    Invariants: ``_items`` maps each key to the object last stored under it; for every
    index ``name`` and value ``v``, ``_indices[name][v]`` is exactly the set of keys
    whose object's index function yields ``v`` (empty sets are removed, so
    ``index_values`` lists only values that file something).
    """

    def __init__(self, indexers: Indexers | None = None) -> None:
        self._items: dict[str, Message] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: index_by_namespace}
        self._indices: dict[str, dict[str, set[str]]] = {NAMESPACE_INDEX: {}}
        if indexers:
            self.add_indexers(indexers)

    # ----------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def get(self, key: str) -> Message | None:
        """The object stored under ``key``, or None."""
        return self._items.get(key)

    def get_by(self, namespace: str, name: str) -> Message | None:
        """The object called ``name`` in ``namespace`` ("" for cluster-scoped), or None."""
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self) -> list[Message]:
        """Every object, in no particular order."""
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def items(self) -> Mapping[str, Message]:
        """A read-only view of key -> object (live: it changes with the store)."""
        return _ReadOnly(self._items)

    def by_index(self, name: str, value: str) -> list[Message]:
        """The objects the index ``name`` files under ``value``."""
        return [self._items[key] for key in self._index(name).get(value, ())]

    def index_keys(self, name: str, value: str) -> list[str]:
        """The keys the index ``name`` files under ``value``."""
        return list(self._index(name).get(value, ()))

    def index_values(self, name: str) -> list[str]:
        """The values under which the index ``name`` files at least one object."""
        return list(self._index(name))

    @property
    def indexers(self) -> Mapping[str, IndexFunc]:
        return dict(self._indexers)

    def _index(self, name: str) -> dict[str, set[str]]:
        try:
            return self._indices[name]
        except KeyError:
            raise KeyError(f"no index named {name!r} (have: {sorted(self._indices)})") from None

    # ----------------------------------------------------------------- writing

    def add_indexers(self, indexers: Indexers) -> None:
        """Add indexes; existing objects are filed in them at once.

        Replacing an index function with a different one under the same name is an
        error: two users of a shared store would disagree on what the index means.
        """
        for name, func in indexers.items():
            existing = self._indexers.get(name)
            if existing is not None:
                if existing is not func:
                    raise ValueError(f"index {name!r} is already defined differently")
                continue
            self._indexers[name] = func
            index: dict[str, set[str]] = {}
            self._indices[name] = index
            for key, obj in self._items.items():
                for value in func(obj):
                    index.setdefault(value, set()).add(key)

    def put(self, obj: Message, key: str | None = None) -> Message | None:
        """Store ``obj`` (adding or replacing); returns what was there before, if anything."""
        key = key_of(obj) if key is None else key
        old = self._items.get(key)
        self._items[key] = obj
        self._reindex(key, old, obj)
        return old

    def delete(self, key: str) -> Message | None:
        """Remove the object under ``key``; returns it (None if there was none)."""
        old = self._items.pop(key, None)
        if old is not None:
            self._reindex(key, old, None)
        return old

    def replace(self, objects: Mapping[str, Message]) -> None:
        """Make the store hold exactly ``objects`` (key -> object), indexes rebuilt."""
        self._items = dict(objects)
        for name, func in self._indexers.items():
            index: dict[str, set[str]] = {}
            for key, obj in self._items.items():
                for value in func(obj):
                    index.setdefault(value, set()).add(key)
            self._indices[name] = index

    def _reindex(self, key: str, old: Message | None, new: Message | None) -> None:
        for name, func in self._indexers.items():
            before = func(old) if old is not None else ()
            after = func(new) if new is not None else ()
            if before == after:
                continue  # the common update: nothing the index looks at changed
            index = self._indices[name]
            for value in before:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in after:
                index.setdefault(value, set()).add(key)


class _ReadOnly(Mapping[str, Message]):
    """A mapping view that cannot be written through."""

    def __init__(self, data: dict[str, Message]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Message:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# ------------------------------------------------------------------ relist diff

ADDED, UPDATED, DELETED = "ADDED", "UPDATED", "DELETED"
DeltaType = Literal["ADDED", "UPDATED", "DELETED"]


@dataclass(frozen=True)
class Delta:
    """One change handlers must see: on_add(new), on_update(old, new) or on_delete(old).

    For DELETED, ``old`` is the last state this cache knew, which may be older than the
    object's real final state (Kubernetes' ``DeletedFinalStateUnknown``); ``new`` is None.
    """

    type: DeltaType
    key: str
    old: Message | None
    new: Message | None


def relist_diff(cached: Mapping[str, Message], listed: Iterable[tuple[str, Message]]
                ) -> list[Delta]:
    """The events that take handlers from ``cached`` to ``listed`` (pure).

    - a key only in ``cached``: DELETED with the last known object;
    - a key only in ``listed``: ADDED;
    - a key in both with a different uid (deleted and created again while we were not
      watching): DELETED of the old, then ADDED of the new, so handlers never see an
      "update" between two different objects;
    - a key in both with a different resource_version: UPDATED (old, new);
    - the same resource_version: nothing (the handlers have seen this state already).

    Deletions come first, then the rest in ``listed``'s order.
    """
    listed = list(listed)
    present = {key for key, _ in listed}
    deltas = [Delta(DELETED, key, obj, None) for key, obj in cached.items()
              if key not in present]
    for key, new in listed:
        old = cached.get(key)
        if old is None:
            deltas.append(Delta(ADDED, key, None, new))
            continue
        old_md, new_md = old.metadata, new.metadata  # type: ignore[attr-defined]
        if old_md.uid != new_md.uid:
            deltas.append(Delta(DELETED, key, old, None))
            deltas.append(Delta(ADDED, key, None, new))
        elif old_md.resource_version != new_md.resource_version:
            deltas.append(Delta(UPDATED, key, old, new))
    return deltas


__all__ = ["ADDED", "DELETED", "NAMESPACE_INDEX", "UPDATED", "Delta", "DeltaType", "IndexFunc",
           "Indexers", "Store", "index_by_label", "index_by_namespace", "key_of",
           "relist_diff", "split_key"]
