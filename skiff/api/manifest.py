"""Kubernetes-shaped YAML and JSON <-> protobuf messages.

A Kubernetes manifest is almost protobuf's JSON mapping of our messages (the .proto
files keep Kubernetes' field names in snake_case), but not quite, so the translation
walks each message's descriptor alongside the document:

- ``IntOrString`` fields (``targetPort``, ``maxSurge``) are written bare, ``8080`` or
  ``http`` or ``25%``, not as a message;
- quantity maps (container ``resources.limits/requests``, node ``capacity/allocatable``)
  accept numbers, ``cpu: 1``, and store them as the text ``"1"``;
- int64 fields are JSON numbers (protobuf writes them as strings).

Field names are protobuf's JSON names, which the .proto files make Kubernetes' own
(``json_name`` gives ``podIP``, ``clusterIP``, ``continue``); on input the .proto's
snake_case name (``pod_ip``) is accepted as well, as ``ParseDict`` would.

Everything else is checked on the way in with the path of the offending field, so a
mistake reads ``web.yaml (document 2): spec.containers[0].ports[0].containerPort:
expected an integer, got "http"``: wrong types, unknown fields (an error, as kubectl's
strict decoding), a ``kind`` Skiff does not serve or an ``apiVersion`` not the kind's.
The checked document then goes through ``json_format.ParseDict``; the way out is
``json_format.MessageToDict`` plus the same walk in reverse. Defaults and unset fields
are omitted as MessageToDict omits them.

YAML is read as Kubernetes reads it: several documents separated by ``---``, empty
ones skipped, timestamps left as strings (PyYAML would make them datetimes), and a
``List`` (``kind: List`` or ``kind: PodList``) expands to its items. No file I/O here:
callers pass text and a ``source`` name for messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.api.kinds import KINDS, Kind, UnknownKind, for_message
from skiff.api.validation import Path


class ManifestError(ValueError):
    """A document that is not a valid object; says where (source, field) and what."""

    def __init__(self, detail: str, *, source: str = "", path: str = "") -> None:
        self.detail, self.source, self.path = detail, source, path
        super().__init__(": ".join(p for p in (source, path, detail) if p))


_INT_OR_STRING = "skiff.api.v1.IntOrString"
_TIMESTAMP = "google.protobuf.Timestamp"
# (message, field) pairs holding resource quantities, where numbers are accepted.
_QUANTITY_MAPS = frozenset({
    ("skiff.api.v1.ResourceRequirements", "limits"),
    ("skiff.api.v1.ResourceRequirements", "requests"),
    ("skiff.api.v1.NodeStatus", "capacity"),
    ("skiff.api.v1.NodeStatus", "allocatable"),
})

_T = FieldDescriptor
_INT_RANGES = {
    **dict.fromkeys((_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_T.TYPE_UINT32, _T.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_T.TYPE_UINT64, _T.TYPE_FIXED64), (0, 2**64 - 1)),
}
_INT64_TYPES = frozenset({_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64, _T.TYPE_UINT64,
                          _T.TYPE_FIXED64})
_INT_NAMES = {(-(2**31), 2**31 - 1): "int32", (0, 2**32 - 1): "uint32",
              (-(2**63), 2**63 - 1): "int64", (0, 2**64 - 1): "uint64"}

_BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
_BY_LIST_MESSAGE: dict[type[Message], Kind] = {k.list_message: k for k in KINDS}


# ---- field names ----


_FIELDS_BY_INPUT_NAME: dict[str, dict[str, FieldDescriptor]] = {}


def _input_names(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """Every accepted spelling of every field of ``descriptor`` -> the field."""
    table = _FIELDS_BY_INPUT_NAME.get(descriptor.full_name)
    if table is None:
        table = {}
        for f in descriptor.fields:
            table[f.name] = table[f.json_name] = f
        _FIELDS_BY_INPUT_NAME[descriptor.full_name] = table
    return table


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == _T.TYPE_MESSAGE and field.is_repeated
            and field.message_type.GetOptions().map_entry)


# ---- manifest -> protobuf JSON (with checks) ----


def _describe(value: Any) -> str:
    """A value as an error message shows it: JSON's spelling for scalars."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _map_key(key: Any) -> str:
    """A YAML map key as Kubernetes' YAML-to-JSON conversion spells it."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return key if isinstance(key, str) else str(key)


class _Reader:
    """Checks a document against a message type, producing ParseDict's input.

    Output keys are the .proto names, which ParseDict accepts, so every spelling the
    input may use ends up as one.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: Path, detail: str) -> ManifestError:
        return ManifestError(detail, source=self.source, path=str(path))

    def message(self, descriptor: Descriptor, data: Any, path: Path) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise self.fail(path, f"expected an object, got {_describe(data)}")
        fields = _input_names(descriptor)
        out: dict[str, Any] = {}
        spelled: dict[str, str] = {}  # field name -> the key that gave it
        for key, value in data.items():
            here = path.child(_map_key(key))
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                raise self.fail(here, "unknown field")
            if field.name in spelled:
                raise self.fail(here, f'duplicate field: also given as "{spelled[field.name]}"')
            spelled[field.name] = key
            if value is None:
                continue  # null means unset, as in Kubernetes
            out[field.name] = self.field(descriptor, field, value, here)
        return out

    def field(self, parent: Descriptor, field: FieldDescriptor, value: Any, path: Path) -> Any:
        if _is_map(field):
            if not isinstance(value, Mapping):
                raise self.fail(path, f"expected an object, got {_describe(value)}")
            entry = field.message_type.fields_by_name["value"]
            quantities = (parent.full_name, field.name) in _QUANTITY_MAPS
            return {_map_key(k): self.single(entry, v, path.key(_map_key(k)),
                                             quantity=quantities)
                    for k, v in value.items()}
        if field.is_repeated:
            if not isinstance(value, list | tuple):
                raise self.fail(path, f"expected a list, got {_describe(value)}")
            return [self.single(field, v, path.index(i)) for i, v in enumerate(value)]
        return self.single(field, value, path)

    def single(self, field: FieldDescriptor, value: Any, path: Path, *,
               quantity: bool = False) -> Any:
        ftype = field.type
        if ftype == _T.TYPE_MESSAGE:
            name = field.message_type.full_name
            if name == _INT_OR_STRING:
                return self.int_or_string(value, path)
            if name == _TIMESTAMP:
                return self.timestamp(value, path)
            return self.message(field.message_type, value, path)
        if ftype == _T.TYPE_STRING:
            if quantity and isinstance(value, int | float) and not isinstance(value, bool):
                if isinstance(value, float) and not math.isfinite(value):
                    raise self.fail(path, f"expected a quantity, got {_describe(value)}")
                return str(value)  # cpu: 1 -> "1", cpu: 0.5 -> "0.5"
            if not isinstance(value, str):
                what = "a string or a number" if quantity else "a string"
                raise self.fail(path, f"expected {what}, got {_describe(value)}")
            return value
        if ftype == _T.TYPE_BOOL:
            if not isinstance(value, bool):
                raise self.fail(path, f"expected a boolean, got {_describe(value)}")
            return value
        if ftype in _INT_RANGES:
            return self.integer(value, path, _INT_RANGES[ftype])
        if ftype in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise self.fail(path, f"expected a number, got {_describe(value)}")
            return value
        if ftype == _T.TYPE_ENUM:
            if not isinstance(value, str) or field.enum_type.values_by_name.get(value) is None:
                names = ", ".join(f'"{v.name}"' for v in field.enum_type.values)
                raise self.fail(path, f"expected one of {names}, got {_describe(value)}")
            return value
        return value  # bytes: base64 text, left to ParseDict

    def integer(self, value: Any, path: Path, bounds: tuple[int, int]) -> int:
        # YAML's 3.0 is JSON's 3 once Kubernetes converts it, so integral floats pass.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(path, f"expected an integer, got {_describe(value)}")
        low, high = bounds
        if not low <= value <= high:
            raise self.fail(path, f"{value} is out of range for {_INT_NAMES[bounds]}")
        return value

    def int_or_string(self, value: Any, path: Path) -> dict[str, Any]:
        if isinstance(value, str):
            return {"type": "STRING", "str_val": value}
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = self.integer(value, path, _INT_RANGES[_T.TYPE_INT32])
            return {"type": "INT", "int_val": number}
        raise self.fail(path, f"expected an integer or a string, got {_describe(value)}")

    def timestamp(self, value: Any, path: Path) -> str:
        if isinstance(value, str):
            try:
                Timestamp().FromJsonString(value)
                return value
            except ValueError:
                pass
        raise self.fail(path, "expected an RFC 3339 time (2006-01-02T15:04:05Z), "
                              f"got {_describe(value)}")


def _kind_of_document(doc: Any, source: str) -> Kind:
    if not isinstance(doc, Mapping):
        raise ManifestError(f"expected an object, got {_describe(doc)}", source=source)
    name, api_version = doc.get("kind"), doc.get("apiVersion")
    if not name:
        raise ManifestError("kind not set", source=source)
    kind = _BY_KIND.get(name) if isinstance(name, str) else None
    if kind is None:
        served = ", ".join(k.kind for k in KINDS)
        raise ManifestError(f"unknown kind {_describe(name)} (Skiff serves {served})",
                            source=source)
    if not api_version:
        raise ManifestError(f'apiVersion not set (kind {kind.kind} is "{kind.api_version}")',
                            source=source)
    if api_version != kind.api_version:
        raise ManifestError(f"kind {kind.kind} is in apiVersion \"{kind.api_version}\", "
                            f"not {_describe(api_version)}", source=source)
    return kind


def from_dict(doc: Mapping[str, Any], *, source: str = "") -> Message:
    """The object a Kubernetes-shaped document describes (``kind`` picks the message).

    ManifestError (naming ``source`` and the field) for an unknown kind, a wrong
    apiVersion, an unknown field or a value of the wrong type.
    """
    kind = _kind_of_document(doc, source)
    checked = _Reader(source).message(kind.message.DESCRIPTOR, doc, Path())
    message = kind.message()
    try:
        json_format.ParseDict(checked, message)
    except json_format.ParseError as e:  # what the walk does not check (bytes, say)
        raise ManifestError(str(e), source=source) from None
    return message


# ---- protobuf -> manifest ----


def _export_message(descriptor: Descriptor, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        field = descriptor.fields_by_name[name]
        out[field.json_name] = _export_field(field, value)
    return out


def _export_field(field: FieldDescriptor, value: Any) -> Any:
    if _is_map(field):
        entry = field.message_type.fields_by_name["value"]
        # Sorted, as Go's encoding/json writes maps: the same object, the same text.
        return {k: _export_single(entry, v) for k, v in sorted(value.items())}
    if field.is_repeated:
        return [_export_single(field, v) for v in value]
    return _export_single(field, value)


def _export_single(field: FieldDescriptor, value: Any) -> Any:
    if field.type == _T.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == _INT_OR_STRING:
            if value.get("type") == "STRING":
                return value.get("str_val", "")
            return int(value.get("int_val", 0))
        if name == _TIMESTAMP:
            return value
        return _export_message(field.message_type, value)
    if field.type in _INT64_TYPES:
        return int(value)  # protobuf's JSON writes 64-bit integers as strings
    return value


def _kind_header(message: Message) -> tuple[str, str] | None:
    """(apiVersion, kind) for a kind's object or list message; None for anything else."""
    try:
        kind = for_message(message)
        return kind.api_version, kind.kind
    except UnknownKind:
        pass
    listed = _BY_LIST_MESSAGE.get(type(message))
    return (listed.api_version, f"{listed.kind}List") if listed else None


def _with_header(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    header = _kind_header(message)
    if header is None:
        return data
    api_version = data.pop("apiVersion", "") or header[0]
    kind = data.pop("kind", "") or header[1]
    return {"apiVersion": api_version, "kind": kind, **data}


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` in Kubernetes' JSON shape (camelCase, bare IntOrStrings, numeric
    int64s, defaults omitted), with ``apiVersion`` and ``kind`` filled in (first) if empty.

    A list message (``PodList``) gets them too, and so does each of its items, so the
    result loads back with :func:`load_documents`.
    """
    data = _export_message(message.DESCRIPTOR, json_format.MessageToDict(
        message, preserving_proto_field_name=True))
    result = _with_header(message, data)
    if type(message) in _BY_LIST_MESSAGE:
        result["items"] = [_with_header(item, d) for item, d in
                           zip(message.items, result.get("items", []), strict=True)]
        if not result["items"]:
            del result["items"]
    return result


# ---- documents ----


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as Kubernetes reads it: timestamps stay strings (go-yaml via sigs.k8s.io/yaml
    hands them to the JSON decoder as text; PyYAML would make them datetimes)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_json_stream(text: str, source: str) -> list[Any]:
    """One JSON value, or several one after another (as ``kubectl apply -f`` takes)."""
    decoder = json.JSONDecoder()
    docs, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return docs
        try:
            doc, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as e:
            raise ManifestError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                                source=source) from None
        docs.append(doc)


def _parse_yaml_stream(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ManifestError(f"invalid YAML{where}: {problem}", source=source) from None
    except yaml.YAMLError as e:
        raise ManifestError(f"invalid YAML: {e}", source=source) from None


def _join(source: str, more: str) -> str:
    return f"{source}: {more}" if source else more


def _expand(doc: Any, source: str) -> list[Message]:
    """A document's objects: itself, or the items of a ``List`` / ``PodList``."""
    name = doc.get("kind") if isinstance(doc, Mapping) else None
    is_list = isinstance(name, str) and (
        name == "List" or (name.endswith("List") and name[:-4] in _BY_KIND))
    if not is_list:
        return [from_dict(doc, source=source)]
    items = doc.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ManifestError(f"expected a list, got {_describe(items)}", source=source,
                            path="items")
    # A typed list's items may leave out the kind they all share (the API omits it).
    item_kind = _BY_KIND.get(name[:-4]) if name != "List" else None
    objects = []
    for i, item in enumerate(items):
        if item_kind is not None and isinstance(item, Mapping):
            item = {"apiVersion": item_kind.api_version, "kind": item_kind.kind, **item}
        objects.append(from_dict(item, source=_join(source, f"items[{i}]")))
    return objects


def load_documents(text: str, *, source: str) -> list[Message]:
    """Every object in ``text``: YAML documents separated by ``---``, or JSON (one object,
    several, or a ``List``); empty documents are skipped.

    ``source`` (a file name, ``-`` for stdin) starts every error message; when ``text``
    holds several documents the message also says which: ``web.yaml (document 2)``.
    """
    if text.lstrip().startswith(("{", "[")):
        docs = _parse_json_stream(text, source)
    else:
        docs = _parse_yaml_stream(text, source)
    objects: list[Message] = []
    for number, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{source} (document {number})" if len(docs) > 1 else source
        objects.extend(_expand(doc, where))
    return objects


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, with two kinds of strings quoted that it would write bare:

    - those holding a character YAML reads as a line break (NEL, U+2028, U+2029): written
      raw (``allow_unicode``) they would come back as spaces, so they are double-quoted,
      where they are escaped;
    - those go-yaml (kubectl) reads as numbers though PyYAML does not (``1e3``), so a
      label value we write stays a string for Kubernetes' tools too.
    """


_GO_YAML_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = None
    if any(c in text for c in "\x85\u2028\u2029"):
        style = '"'
    elif _GO_YAML_FLOAT_RE.fullmatch(text):
        style = "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def _as_dicts(objects: Message | Mapping[str, Any] | Iterable[Message | Mapping[str, Any]],
              ) -> tuple[list[dict[str, Any]], bool]:
    """The documents to write and whether a single one was given."""
    if isinstance(objects, Message | Mapping):
        objects, single = [objects], True
    else:
        single = False
    return [to_dict(o) if isinstance(o, Message) else dict(o) for o in objects], single


def dump_yaml(objects: Message | Mapping[str, Any] | Iterable[Message | Mapping[str, Any]],
              ) -> str:
    """YAML for one object, or for several as documents separated by ``---``."""
    docs, _ = _as_dicts(objects)
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True)


def dump_json(objects: Message | Mapping[str, Any] | Iterable[Message | Mapping[str, Any]],
              ) -> str:
    """JSON for one object, or for several a ``v1`` ``List`` of them (as kubectl)."""
    docs, single = _as_dicts(objects)
    doc = docs[0] if single else {"apiVersion": "v1", "kind": "List", "items": docs}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
