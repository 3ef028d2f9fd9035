"""The three PATCH bodies Kubernetes accepts, applied to an object's Kubernetes JSON.

- JSON merge patch (RFC 7386, ``application/merge-patch+json``): objects merge, ``null``
  deletes a key, anything else (lists included) replaces.
- JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations, applied
  by the ``jsonpatch`` library.
- Strategic merge patch (``application/strategic-merge-patch+json``): a merge patch whose
  lists are merged as Kubernetes' types say, the server-side half of apimachinery's
  ``strategicpatch`` (``StrategicMergeMapPatch``). The patch metadata (which lists merge,
  by which key; which structs drop keys the patch does not retain) comes from the
  OpenAPI schemas (``openapi.py``) through :class:`PatchMeta`, which walks them as
  apimachinery's ``PatchMetaFromOpenAPIV3`` does. Directives:

  - ``$patch: replace`` (a map or list replaced whole), ``$patch: delete`` (a map
    emptied; a list element, by merge key, removed); ``$patch: merge`` is refused, as
    Kubernetes refuses it;
  - ``$setElementOrder/<list>``: the order of a merged list, patch items first by it,
    items only the server has kept where they were;
  - ``$retainKeys``: the keys a ``retainKeys`` struct keeps (others are cleared);
  - ``$deleteFromPrimitiveList/<list>``: values removed from a merged list of scalars;
  - ``null`` deletes a map key; a list of scalars without strategy is replaced, with
    ``merge`` strategy the union.

  Computing a patch (kubectl's three-way merge) is the client's job; only applying is
  here. Key order and list order follow Kubernetes' algorithm step by step.

Errors are :class:`PatchError` with the HTTP code Kubernetes answers: 400 for a body that
is not a patch of its type, 422 for a patch that does not apply. Nothing here changes
its arguments: the original is copied first.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from services.apiserver.rest import openapi
from skiff.api.kinds import Kind

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER = "$setElementOrder"


class PatchError(ValueError):
    """A patch that is malformed (code 400), does not apply (422) or is of a type not
    served (415); ``reason`` is the Status reason Kubernetes gives with that code."""

    _REASONS = {400: "BadRequest", 415: "UnsupportedMediaType", 422: "Invalid"}

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.message, self.code = message, code

    @property
    def reason(self) -> str:
        return self._REASONS.get(self.code, "BadRequest")


def _bad_request(message: str) -> PatchError:
    return PatchError(message, code=400)


# ---- entry point ----


def apply_patch(content_type: str, original: Mapping[str, Any], body: bytes | str,
                kind: Kind | None = None) -> dict[str, Any]:
    """Apply a PATCH request's ``body`` of ``content_type`` to ``original``.

    ``kind`` gives the strategic merge patch its metadata; without it every list is
    replaced, as for a type Kubernetes knows nothing of. ``application/apply-patch+yaml``
    (server-side apply) is not done here: the caller answers 415.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in PATCH_TYPES:
        raise PatchError(f"unsupported patch type {content_type!r}", code=415)
    patch = parse_patch(body)
    if media == JSON_PATCH:
        return apply_json_patch(original, patch)
    if media == MERGE_PATCH:
        return apply_merge_patch(original, patch)
    meta = PatchMeta.for_kind(kind) if kind is not None else PatchMeta(None)
    return apply_strategic_merge_patch(original, patch, meta)


def parse_patch(body: bytes | str) -> Any:
    """A patch body's JSON; a body that is no JSON is a 400."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad_request(f"invalid JSON in the patch: {e}") from None


# ---- RFC 7386 and RFC 6902 ----


def apply_merge_patch(original: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """RFC 7386 JSON merge patch; the patch of an object must be an object."""
    if not isinstance(patch, dict):
        raise _bad_request("a merge patch must be a JSON object")
    return _merge_patch(copy.deepcopy(dict(original)), patch)


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def apply_json_patch(original: Mapping[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch: a malformed list is a 400, an operation that fails a 422."""
    if not isinstance(operations, list):
        raise _bad_request("a JSON patch must be a list of operations")
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, TypeError, AttributeError) as e:
        raise _bad_request(f"invalid JSON patch: {e}") from None
    try:
        result = patch.apply(copy.deepcopy(dict(original)))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise PatchError(f"the JSON patch does not apply: {e}") from None
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise _bad_request(f"invalid JSON patch: {e}") from None
    if not isinstance(result, dict):
        raise PatchError("the JSON patch does not leave an object")
    return result


# ---- patch metadata from the OpenAPI schemas ----


@dataclass(frozen=True)
class FieldMeta:
    """How one field patches: its strategies (``merge``, ``retainKeys``) and merge key."""

    strategies: tuple[str, ...] = ()
    merge_key: str = ""

    @property
    def retain_keys(self) -> bool:
        return "retainKeys" in self.strategies

    @property
    def strategy(self) -> str:
        """The strategy besides retainKeys: ``merge``, ``replace`` or ``""``."""
        others = [s for s in self.strategies if s != "retainKeys"]
        if len(others) > 1:
            raise PatchError(f"unexpected patch strategy: {list(self.strategies)}")
        return others[0] if others else ""


@dataclass(frozen=True)
class PatchMeta:
    """A position in a schema: looks up the patch metadata of its fields.

    ``schema`` None means nothing is known (every list replaced, every map merged), so
    a field the schemas lack patches like a merge patch and field validation reports it.
    """

    schema: Mapping[str, Any] | None

    @classmethod
    def for_kind(cls, kind: Kind) -> PatchMeta:
        return cls(openapi.schema_for_kind(kind))

    def _property(self, key: str) -> tuple[Mapping[str, Any] | None, FieldMeta]:
        props = (self.schema or {}).get("properties") or {}
        prop = props.get(key)
        if prop is None:
            return None, FieldMeta()
        strategy = prop.get("x-kubernetes-patch-strategy", "")
        meta = FieldMeta(strategies=tuple(s for s in strategy.split(",") if s),
                         merge_key=prop.get("x-kubernetes-patch-merge-key", ""))
        return prop, meta

    def for_struct(self, key: str) -> tuple[PatchMeta, FieldMeta]:
        """The schema of the map field ``key`` and its metadata."""
        prop, meta = self._property(key)
        return PatchMeta(openapi.resolve(prop)), meta

    def for_slice(self, key: str) -> tuple[PatchMeta, FieldMeta]:
        """The schema of the elements of the list field ``key`` and its metadata."""
        prop, meta = self._property(key)
        items = prop.get("items") if prop is not None else None
        return PatchMeta(openapi.resolve(items)), meta


# ---- strategic merge patch ----


def apply_strategic_merge_patch(original: Mapping[str, Any], patch: Any,
                                meta: PatchMeta) -> dict[str, Any]:
    """Apply a strategic merge patch to ``original`` with the metadata of ``meta``."""
    if not isinstance(patch, dict):
        raise _bad_request("a strategic merge patch must be a JSON object")
    merged = _merge_map(copy.deepcopy(dict(original)), copy.deepcopy(patch), meta)
    if not isinstance(merged, dict):
        raise PatchError("the patch does not leave an object")
    return merged


def _json_type(value: Any) -> str:
    """A value's JSON type, as Go's decoder would see it (numbers are one type)."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def _same(a: Any, b: Any) -> bool:
    """Go's interface equality of two JSON scalars (1 is no true, "1" no 1)."""
    return _json_type(a) == _json_type(b) and a == b


def _merge_map(original: dict[str, Any], patch: dict[str, Any],
               meta: PatchMeta) -> dict[str, Any]:
    if _DIRECTIVE in patch:
        return _map_directive(patch[_DIRECTIVE], patch)
    _apply_retain_keys(original, patch)
    _merge_ordered_lists(original, patch, meta)
    for key, patch_value in list(patch.items()):
        _merge_key(original, key, patch_value, meta)
    return original


def _map_directive(directive: Any, patch: dict[str, Any]) -> dict[str, Any]:
    if directive == "replace":
        patch.pop(_DIRECTIVE)
        return patch
    if directive == "delete":
        return {}
    raise PatchError(f"unknown patch type: {directive} in map: {_show(patch)}")


def _merge_key(original: dict[str, Any], key: str, patch_value: Any,
               meta: PatchMeta) -> None:
    """Merge one key of a patch into ``original`` (Kubernetes' mergeMap loop body)."""
    delete_list = key.startswith(_DELETE_FROM_PRIMITIVE)
    if delete_list:
        key = _directive_target(key, _DELETE_FROM_PRIMITIVE)
    if patch_value is None:
        original.pop(key, None)
        return
    if key not in original:
        if not delete_list:
            _discard_nulls(patch_value)
            _set_without_directives(original, key, patch_value)
        return
    current = original[key]
    if _json_type(current) != _json_type(patch_value):
        if not delete_list:
            _discard_nulls(patch_value)
            _set_without_directives(original, key, patch_value)
        return
    if isinstance(current, dict):
        child, field = meta.for_struct(key)
        original[key] = (patch_value if field.strategy == "replace"
                         else _merge_map(current, patch_value, child))
    elif isinstance(current, list):
        child, field = meta.for_slice(key)
        original[key] = _merge_slice_handler(current, patch_value, child, field, delete_list)
    else:
        _set_without_directives(original, key, patch_value)


def _set_without_directives(original: dict[str, Any], key: str, value: Any) -> None:
    cleaned, keep = _remove_directives(value)
    if keep:
        original[key] = cleaned
    else:
        original.pop(key, None)


def _directive_target(key: str, prefix: str) -> str:
    """``$deleteFromPrimitiveList/finalizers`` -> ``finalizers``."""
    head, sep, rest = key.partition("/")
    if not sep or head != prefix:
        if prefix == _DELETE_FROM_PRIMITIVE:
            raise _bad_request("invalid patch format of primitive list")
        raise _bad_request("invalid patch format of setElementOrder list")
    return rest


def _discard_nulls(value: Any) -> None:
    """Drop null map values everywhere in a value the original does not have."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for v in value.values():
            _discard_nulls(v)
    elif isinstance(value, list):
        for v in value:
            _discard_nulls(v)


def _remove_directives(value: Any) -> tuple[Any, bool]:
    """A value without directive maps, and whether to keep it at all."""
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        for key in list(value):
            value[key], keep = _remove_directives(value[key])
            if not keep:
                del value[key]
        return value, True
    if isinstance(value, list):
        kept = [_remove_directives(v) for v in value]
        return [v for v, keep in kept if keep], True
    return value, True


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """``$retainKeys``: clear the original's keys not listed; the patch's must be."""
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise _bad_request("invalid patch format of retainKeys")
    keep = {k for k in retain if isinstance(k, str)}
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE, _SET_ELEMENT_ORDER)):
            continue
        if key not in keep:
            raise _bad_request("invalid patch format of retainKeys")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _merge_slice_handler(original: list[Any], patch: Any, meta: PatchMeta, field: FieldMeta,
                         delete_list: bool) -> list[Any]:
    if not isinstance(patch, list):
        raise PatchError(f"expected a list, but received {_json_type(patch)}")
    if field.strategy == "merge" or delete_list:
        return _merge_slice(original, patch, meta, field.merge_key, delete_list)
    return patch


def _element_type(*lists: list[Any]) -> str:
    """The one JSON type of every element of ``lists`` (maps, or one kind of scalar)."""
    seen = ""
    for values in lists:
        for v in values:
            t = _json_type(v)
            if t == "array":
                raise PatchError("lists of lists are not supported")
            if seen and t != seen:
                raise PatchError(f"list element types are not identical: {_show(list(lists))}")
            seen = t
    if not seen:
        raise PatchError("no elements in any of the given slices")
    return seen


def _merge_slice(original: list[Any], patch: list[Any], meta: PatchMeta, merge_key: str,
                 delete_list: bool) -> list[Any]:
    if not original and not patch:
        return original
    kind = _element_type(original, patch)
    if kind != "object":
        if delete_list:
            return [v for v in original if not any(_same(v, d) for d in patch)]
        merged = _dedupe_scalars(original + patch)
    else:
        if not merge_key:
            raise PatchError("cannot merge lists without merge key")
        original, patch = _merge_special_elements(original, patch, merge_key)
        merged = _merge_plain_elements(original, patch, merge_key, meta)
    patch_items, server_only = _partition(merged, patch, merge_key)
    return _normalize_element_order(patch_items, server_only, patch, original, merge_key)


def _merge_special_elements(original: list[Any], patch: list[Any],
                            merge_key: str) -> tuple[list[Any], list[Any]]:
    """Apply the elements carrying ``$patch`` (delete by key, replace the list)."""
    if not any(_DIRECTIVE in e for e in patch):
        return original, patch
    plain: list[Any] = []
    replace = False
    for element in patch:
        directive = element.get(_DIRECTIVE)
        if _DIRECTIVE not in element:
            plain.append(element)
        elif directive == "delete":
            if merge_key not in element:
                raise PatchError(f"map: {_show(element)} does not contain declared merge key: "
                                 f"{merge_key}")
            original = [e for e in original if not _matches(e, merge_key, element[merge_key])]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"unknown patch type: {directive} in map: {_show(element)}")
    return (plain, []) if replace else (original, plain)


def _matches(element: Any, merge_key: str, value: Any) -> bool:
    if not isinstance(element, dict):
        raise PatchError(f"expected a map in the merging list, got {_show(element)}")
    return merge_key in element and _same(element[merge_key], value)


def _merge_plain_elements(original: list[Any], patch: list[Any], merge_key: str,
                          meta: PatchMeta) -> list[Any]:
    """Merge each patch element into the original's element with its key, or append it.

    Works on a copy: the caller still orders by the original list as it was.
    """
    original = list(original)
    for element in patch:
        if merge_key not in element:
            raise PatchError(f"map: {_show(element)} does not contain declared merge key: "
                             f"{merge_key}")
        for i, existing in enumerate(original):
            if _matches(existing, merge_key, element[merge_key]):
                original[i] = _merge_map(existing, element, meta)
                break
        else:
            original.append(element)
    return original


def _dedupe_scalars(values: list[Any]) -> list[Any]:
    """apimachinery's deduplicateScalars: a duplicate is replaced by the last element."""
    values = list(values)
    last = len(values) - 1
    i = 0
    while i < last:
        j = i + 1
        while j <= last:
            if _same(values[i], values[j]):
                values[j] = values[last]
                values.pop()
                last -= 1
            else:
                j += 1
        i += 1
    return values


def _key_of(value: Any, merge_key: str) -> Any:
    return value.get(merge_key) if merge_key and isinstance(value, dict) else value


def _index(order: list[Any], value: Any, merge_key: str) -> int:
    """Position of ``value`` in ``order`` (by merge key for maps), -1 if absent."""
    target = _key_of(value, merge_key)
    for i, v in enumerate(order):
        if _same(_key_of(v, merge_key), target):
            return i
    return -1


def _partition(merged: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """Split ``merged`` into the items present in ``by`` and the others."""
    if merge_key:
        for v in merged:
            if not isinstance(v, dict) or merge_key not in v:
                raise PatchError(f"map: {_show(v)} does not contain declared merge key: "
                                 f"{merge_key}")
    inside = [v for v in merged if _index(by, v, merge_key) >= 0]
    outside = [v for v in merged if _index(by, v, merge_key) < 0]
    return inside, outside


def _sort_by(values: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    """Stable sort of ``values`` by their place in ``order`` (unknown ones last), with
    elements marked ``$patch: delete`` kept at the end."""
    deleted = [v for v in values if isinstance(v, dict) and v.get(_DIRECTIVE) == "delete"]
    rest = [v for v in values if not (isinstance(v, dict) and v.get(_DIRECTIVE) == "delete")]
    rest.sort(key=lambda v: (i if (i := _index(order, v, merge_key)) >= 0 else len(order)))
    return rest + deleted


def _normalize_element_order(patch_items: list[Any], server_only: list[Any],
                             patch_order: list[Any], server_order: list[Any],
                             merge_key: str) -> list[Any]:
    """Patch items in the patch's order, server-only items in the server's, interleaved
    keeping both relative orders (apimachinery's normalizeElementOrder)."""
    if merge_key:
        for v in patch_order:
            if not isinstance(v, dict) or merge_key not in v:
                raise PatchError(f"map: {_show(v)} does not contain declared merge key: "
                                 f"{merge_key}")
    left = _sort_by(server_only, server_order, merge_key)
    right = _sort_by(patch_items, patch_order, merge_key)
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li, ri = _index(server_order, left[i], merge_key), _index(server_order, right[j],
                                                                      merge_key)
            if 0 <= li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _merge_ordered_lists(original: dict[str, Any], patch: dict[str, Any],
                         meta: PatchMeta) -> None:
    """``$setElementOrder/<list>``: merge that list now and put it in the given order."""
    for key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(key)
        if not isinstance(order, list):
            raise _bad_request("invalid patch format of setElementOrder list")
        target = _directive_target(key, _SET_ELEMENT_ORDER)
        child, field = meta.for_slice(target)
        found_original, found_patch = target in original, target in patch
        current, patch_list = original.get(target), patch.get(target)
        for value in (v for v, found in ((current, found_original), (patch_list, found_patch))
                      if found):
            if not isinstance(value, list):
                raise PatchError(f"expected a list for {target!r}, got {_json_type(value)}")
        _check_order(patch_list if found_patch else [], order, field.merge_key)
        if found_original and not found_patch:
            merged = current
        elif found_patch and not found_original:
            merged, _ = _remove_directives(patch_list)
        elif found_patch:
            merged = _merge_slice_handler(current, patch_list, child, field, False)
        else:
            continue
        patch_items, server_only = _partition(merged, order, field.merge_key)
        original[target] = _normalize_element_order(patch_items, server_only, order,
                                                    current or [], field.merge_key)
        patch.pop(target, None)


def _check_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """Every patch item must appear in the order list, in the same relative order."""
    if not order or not patch_list:
        return
    items = [e for e in patch_list
             if not (isinstance(e, dict) and e.get(_DIRECTIVE) == "delete")]
    i = j = 0
    while i < len(items) and j < len(order):
        if isinstance(items[i], dict) and _DIRECTIVE in items[i]:
            i += 1
            continue
        if _same(_key_of(items[i], merge_key), _key_of(order[j], merge_key)):
            i += 1
        j += 1
    if i < len(items):
        raise PatchError(f"The order in patch list: {_show(patch_list)} doesn't match "
                         f"$setElementOrder list: {_show(order)}")


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
