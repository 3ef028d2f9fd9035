"""Protobuf objects <-> Kubernetes JSON, as the Kubernetes apiserver writes it.

Encoding walks the message's set fields directly (faster than ``MessageToDict`` on a
list of thousands of pods) and writes Kubernetes' spelling: the json names the .proto
files give (``podIP``), int64 as numbers, ``IntOrString`` bare, timestamps RFC 3339
with ``Z``, maps sorted. Unset fields are omitted, except the ones Kubernetes' Go types
declare without ``omitempty`` (:data:`ALWAYS`), which clients treat as required (the
Python client's models refuse an object without them).

Decoding goes through :func:`skiff.api.manifest.from_dict` (the checks naming the
offending field), with the kind and apiVersion of the URL filled in when the body
leaves them out, as Kubernetes defaults them from the request.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping
from copy import copy
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.apiserver.rest.common import dumps
from skiff.api import manifest
from skiff.api.kinds import Kind

_T = FieldDescriptor
_INT_OR_STRING = "skiff.api.v1.IntOrString"
_TIMESTAMP = "google.protobuf.Timestamp"
_INT64 = frozenset({_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64, _T.TYPE_UINT64,
                    _T.TYPE_FIXED64})

#: Fields Kubernetes always writes, by message: scalars without ``omitempty`` in its Go
#: types, and structs that are not pointers (Go's encoding/json writes those even when
#: empty, ``omitempty`` or not, so an empty ReplicaSet status is ``{"replicas": 0}``).
ALWAYS: dict[str, frozenset[str]] = {f"skiff.api.v1.{m}": frozenset(names) for m, names in {
    "Namespace": ("metadata", "spec", "status"),
    "Pod": ("metadata", "spec", "status"),
    "Node": ("metadata", "spec", "status"),
    "Service": ("metadata", "spec", "status"),
    "EndpointsObject": ("metadata",),
    "ReplicationController": ("metadata", "spec", "status"),
    "ReplicaSet": ("metadata", "spec", "status"),
    "Deployment": ("metadata", "spec", "status"),
    "Lease": ("metadata", "spec"),
    "PodTemplateSpec": ("metadata", "spec"),
    "ReplicaSetSpec": ("template",),
    "DeploymentSpec": ("template", "strategy"),
    "NodeStatus": ("daemon_endpoints", "node_info"),
    "NodeDaemonEndpoints": ("kubelet_endpoint",),
    "ServiceStatus": ("load_balancer",),
    "ContainerStatus": ("name", "state", "last_state", "ready", "restart_count", "image",
                        "image_id"),
    "ContainerStateTerminated": ("exit_code",),
    "ContainerPort": ("container_port",),
    "Container": ("name",),
    "EnvVar": ("name",),
    "ServicePort": ("port",),
    "EndpointPort": ("port",),
    "EndpointAddress": ("ip",),
    "PodCondition": ("type", "status"),
    "PodIP": ("ip",),
    "NodeCondition": ("type", "status"),
    "NamespaceCondition": ("type", "status"),
    "ReplicaSetCondition": ("type", "status"),
    "ReplicationControllerCondition": ("type", "status"),
    "DeploymentCondition": ("type", "status"),
    "ReplicaSetStatus": ("replicas",),
    "ReplicationControllerStatus": ("replicas",),
    "NodeAddress": ("type", "address"),
    "NodeSystemInfo": ("machine_id", "system_uuid", "boot_id", "kernel_version", "os_image",
                       "container_runtime_version", "kubelet_version",
                       "kube_proxy_version", "operating_system", "architecture"),
    "DaemonEndpoint": ("port",),
    "Taint": ("key", "effect"),
    "OwnerReference": ("api_version", "kind", "name", "uid"),
    "LabelSelectorRequirement": ("key", "operator"),
    "NodeSelectorRequirement": ("key", "operator"),
    "NodeSelector": ("node_selector_terms",),
    "PreferredSchedulingTerm": ("weight", "preference"),
    "HTTPGetAction": ("port",),
    "TCPSocketAction": ("port",),
    "HTTPHeader": ("name", "value"),
    "PodSpec": ("containers",),
    "Binding": ("target",),
    "Event": ("metadata", "involved_object", "source"),
}.items()}

#: Where Kubernetes' JSON name differs from the .proto's (``DaemonEndpoint.Port``).
RENAMED: dict[tuple[str, str], str] = {("skiff.api.v1.DaemonEndpoint", "port"): "Port"}


def json_name(field: FieldDescriptor) -> str:
    """The field's name in Kubernetes' JSON: the proto's ``json_name`` but where
    :data:`RENAMED` says otherwise (the OpenAPI schemas use this too)."""
    return RENAMED.get((field.containing_type.full_name, field.name), field.json_name)


def _zero(field: FieldDescriptor) -> Any:
    if field.is_repeated:
        return {} if _is_map(field) else []
    if field.type == _T.TYPE_MESSAGE:
        return 0 if field.message_type.full_name == _INT_OR_STRING else {}
    if field.type == _T.TYPE_BOOL:
        return False
    if field.type in (_T.TYPE_STRING, _T.TYPE_BYTES, _T.TYPE_ENUM):
        return "" if field.type != _T.TYPE_ENUM else field.enum_type.values[0].name
    return 0


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == _T.TYPE_MESSAGE and field.is_repeated
            and field.message_type.GetOptions().map_entry)


# What to do with each field of a message, worked out once per message type: its JSON
# name, how a value converts, and the always-written fields' zero values. Encoding a
# list of thousands of pods is this walk, so it avoids per-field lookups.
_PLAIN, _MESSAGE, _INTSTR, _TIME, _ENUM, _BYTES, _FLOAT = range(7)


def _mode(field: FieldDescriptor) -> int:
    if field.type == _T.TYPE_MESSAGE:
        name = field.message_type.full_name
        return _INTSTR if name == _INT_OR_STRING else _TIME if name == _TIMESTAMP else _MESSAGE
    if field.type == _T.TYPE_ENUM:
        return _ENUM
    if field.type == _T.TYPE_BYTES:
        return _BYTES
    if field.type in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return _FLOAT
    return _PLAIN


@dataclass(frozen=True)
class _FieldPlan:
    name: str
    mode: int
    repeated: bool
    is_map: bool
    field: FieldDescriptor


@dataclass(frozen=True)
class _Plan:
    fields: dict[str, _FieldPlan]
    #: (json name, proto field name, whether to encode the default sub-message, zero)
    always: tuple[tuple[str, str, bool, Any], ...]


_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    fields: dict[str, _FieldPlan] = {}
    for f in descriptor.fields:
        name = json_name(f)
        mapped = _is_map(f)
        mode = _mode(f.message_type.fields_by_name["value"]) if mapped else _mode(f)
        fields[f.name] = _FieldPlan(name, mode, f.is_repeated and not mapped, mapped, f)
    always = []
    for field_name in sorted(ALWAYS.get(descriptor.full_name, ())):
        f = descriptor.fields_by_name[field_name]
        sub = (f.type == _T.TYPE_MESSAGE and not f.is_repeated
               and _mode(f) == _MESSAGE)
        always.append((fields[field_name].name, field_name, sub, _zero(f)))
    plan = _PLANS[descriptor.full_name] = _Plan(fields, tuple(always))
    return plan


def _convert(mode: int, field: FieldDescriptor, value: Any) -> Any:
    if mode == _PLAIN:
        return value  # str, bool, ints (int64 stay numbers, unlike protobuf's JSON)
    if mode == _MESSAGE:
        return encode_message(value)
    if mode == _INTSTR:
        return value.str_val if value.type == 1 else value.int_val
    if mode == _TIME:
        return value.ToJsonString()
    if mode == _ENUM:
        return field.enum_type.values_by_number[value].name
    if mode == _BYTES:
        return base64.b64encode(value).decode()
    return int(value) if float(value).is_integer() else value


def encode_message(message: Message) -> dict[str, Any]:
    """``message`` as Kubernetes JSON (no apiVersion/kind added)."""
    plan = _plan(message.DESCRIPTOR)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        fp = plan.fields[field.name]
        mode = fp.mode
        if fp.is_map:
            if mode == _PLAIN:
                out[fp.name] = {k: value[k] for k in sorted(value)}
            else:
                entry = field.message_type.fields_by_name["value"]
                out[fp.name] = {k: _convert(mode, entry, value[k]) for k in sorted(value)}
        elif fp.repeated:
            if mode == _PLAIN:
                out[fp.name] = list(value)
            elif mode == _MESSAGE:
                out[fp.name] = [encode_message(v) for v in value]
            else:
                out[fp.name] = [_convert(mode, field, v) for v in value]
        elif mode == _PLAIN:
            out[fp.name] = value
        elif mode == _MESSAGE:
            out[fp.name] = encode_message(value)
        else:
            out[fp.name] = _convert(mode, field, value)
    for name, field_name, sub, zero in plan.always:
        if name not in out:
            out[name] = encode_message(getattr(message, field_name)) if sub else copy(zero)
    return out


def encode(obj: Message, kind: Kind) -> dict[str, Any]:
    """One object of ``kind`` as Kubernetes JSON, apiVersion and kind first."""
    body = encode_message(obj)
    body.pop("apiVersion", None)
    body.pop("kind", None)
    return {"apiVersion": kind.api_version, "kind": kind.kind, **body}


def encode_list(result: Message, kind: Kind) -> dict[str, Any]:
    """A list message (``PodList``) as Kubernetes JSON: ``metadata`` and ``items``
    always present (an empty list is ``[]``), every item with apiVersion and kind."""
    return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
            "metadata": encode_message(result.metadata),  # type: ignore[attr-defined]
            "items": [encode(item, kind) for item in result.items]}  # type: ignore[attr-defined]


# ---- JSON bytes, cached per object version ----

#: Encoded objects kept: a stored object at a resourceVersion never changes, so its
#: JSON is made once for every LIST and every watcher that sends it.
CACHE_SIZE = 50_000
_cache: dict[tuple[str, str, str, str], bytes] = {}
_cache_lock = threading.Lock()


def encode_json(obj: Message, kind: Kind) -> bytes:
    """:func:`encode` as JSON bytes, from the cache when this version was encoded."""
    md = obj.metadata  # type: ignore[attr-defined]
    rv = md.resource_version
    if not rv:
        return dumps(encode(obj, kind))
    key = (kind.kind, md.namespace, md.name, rv)
    data = _cache.get(key)
    if data is None:
        data = dumps(encode(obj, kind))
        with _cache_lock:
            _cache[key] = data
            while len(_cache) > CACHE_SIZE:
                del _cache[next(iter(_cache))]
    return data


def encode_cached(obj: Message, kind: Kind) -> dict[str, Any]:
    """:func:`encode`'s document, parsed back from :func:`encode_json`'s cache: a
    version listed or watched before costs a ``json.loads``, cheaper than encoding."""
    return json.loads(encode_json(obj, kind))


def encode_list_json(result: Message, kind: Kind) -> bytes:
    """:func:`encode_list` as JSON bytes, the items from :func:`encode_json`."""
    head = dumps({"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                  "metadata": encode_message(result.metadata)})  # type: ignore[attr-defined]
    items = b",".join(encode_json(item, kind) for item in result.items)  # type: ignore[attr-defined]
    return head[:-1] + b',"items":[' + items + b"]}"


class DecodeError(ValueError):
    """A body that is not an object of the kind: says which field and what is wrong."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(message)


def _rename_in(data: Any, descriptor: Descriptor) -> Any:
    """``data`` with Kubernetes-only spellings (:data:`RENAMED`) put back (pure)."""
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for (message, field), spelled in RENAMED.items():
        if message == descriptor.full_name and spelled in out:
            out[descriptor.fields_by_name[field].json_name] = out.pop(spelled)
    for key, value in out.items():
        field = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None)
        if field is None or field.type != _T.TYPE_MESSAGE or _is_map(field):
            continue
        if field.is_repeated and isinstance(value, list):
            out[key] = [_rename_in(v, field.message_type) for v in value]
        elif not field.is_repeated:
            out[key] = _rename_in(value, field.message_type)
    return out


def decode(data: Any, kind: Kind) -> Message:
    """The object of ``kind`` a request body describes; DecodeError naming the field."""
    if not isinstance(data, Mapping):
        raise DecodeError("the request body must be a JSON object")
    doc = dict(data)
    if not doc.get("kind"):
        doc["kind"] = kind.kind
    if not doc.get("apiVersion"):
        doc["apiVersion"] = kind.api_version
    if doc["kind"] != kind.kind:
        raise DecodeError(f'kind: the body is a {doc["kind"]!r}, not a {kind.kind!r}', "kind")
    if kind.kind == "Node":
        doc = _rename_in(doc, kind.message.DESCRIPTOR)
    try:
        return manifest.from_dict(doc)
    except manifest.ManifestError as e:
        if e.detail == "unknown field":
            raise DecodeError(f'strict decoding error: unknown field "{e.path}"',
                              e.path) from None
        raise DecodeError(f"{e.path}: {e.detail}" if e.path else e.detail, e.path) from None
