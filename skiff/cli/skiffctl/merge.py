"""``apply``'s three-way merge: a manifest, the last one applied, and the live object.

Pure functions on documents in Kubernetes' JSON shape (``manifest.to_dict``), after
kubectl's client-side apply:

- ``modified`` is the manifest now; ``original`` the manifest applied last time (kept
  in the ``kubectl.kubernetes.io/last-applied-configuration`` annotation), or None;
  ``current`` the live object;
- a field the manifest sets is set (objects merged recursively);
- a field the last manifest set and this one does not was removed by its author: it
  is removed;
- every other field of the live object stays: what the server filled in (a
  clusterIP, a nodePort, defaults), what other writers set (a ``scale``), the status.

Lists whose items carry a merge key (containers and env by ``name``, ports by
``containerPort`` or ``port``, conditions and addresses by ``type``) are merged item by
item, in the manifest's order, so a live item keeps what the server added to it; an
item the manifest no longer lists is dropped. Other lists are the manifest's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: List fields merged item by item, and the keys that identify an item, in order.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "addresses": ("type",),
    "ownerReferences": ("uid",),
}


def three_way_merge(original: Mapping[str, Any] | None, modified: Mapping[str, Any],
                    current: Mapping[str, Any]) -> dict[str, Any]:
    """The object to write: ``current`` with ``modified``'s fields set and the fields
    ``original`` had and ``modified`` dropped removed. Inputs are not changed."""
    return _merge_objects(original or {}, modified, current)


def _merge_objects(original: Mapping[str, Any], modified: Mapping[str, Any],
                   current: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(current))
    for key in original:
        if key not in modified:
            result.pop(key, None)
    for key, value in modified.items():
        result[key] = _merge_field(key, original.get(key), value, current.get(key))
    return result


def _merge_field(name: str, original: Any, modified: Any, current: Any) -> Any:
    if isinstance(modified, Mapping) and isinstance(current, Mapping):
        return _merge_objects(original if isinstance(original, Mapping) else {},
                              modified, current)
    if isinstance(modified, list) and isinstance(current, list):
        return _merge_lists(name, original if isinstance(original, list) else [],
                            modified, current)
    return copy.deepcopy(modified)


def merge_key(name: str, items: list[Any]) -> str | None:
    """The key identifying the items of list field ``name``; None to replace the list."""
    for key in MERGE_KEYS.get(name, ()):
        if items and all(isinstance(i, Mapping) and isinstance(i.get(key), str | int)
                         for i in items):
            return key
    return None


def _merge_lists(name: str, original: list[Any], modified: list[Any],
                 current: list[Any]) -> list[Any]:
    key = merge_key(name, modified)
    if key is None:
        return copy.deepcopy(modified)
    live = _by_key(current, key)
    before = _by_key(original, key)
    return [_merge_objects(before.get(item[key], {}), item, live[item[key]])
            if item[key] in live else copy.deepcopy(item) for item in modified]


def _by_key(items: list[Any], key: str) -> dict[Any, Mapping[str, Any]]:
    return {i[key]: i for i in items
            if isinstance(i, Mapping) and isinstance(i.get(key), str | int)}
