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
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

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


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == _T.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == _INT_OR_STRING:
            return value.str_val if value.type == value.STRING else value.int_val
        if name == _TIMESTAMP:
            return value.ToJsonString()
        return encode_message(value)
    if field.type == _T.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == _T.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.type == _T.TYPE_DOUBLE or field.type == _T.TYPE_FLOAT:
        return int(value) if float(value).is_integer() else value
    return value  # str, bool, ints (int64 stay numbers, unlike protobuf's JSON)


def encode_message(message: Message) -> dict[str, Any]:
    """``message`` as Kubernetes JSON (no apiVersion/kind added)."""
    descriptor = message.DESCRIPTOR
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name = RENAMED.get((descriptor.full_name, field.name), field.json_name)
        if _is_map(field):
            entry = field.message_type.fields_by_name["value"]
            out[name] = {k: _scalar(entry, value[k]) for k in sorted(value)}
        elif field.is_repeated:
            out[name] = [_scalar(field, v) for v in value]
        else:
            out[name] = _scalar(field, value)
    always = ALWAYS.get(descriptor.full_name)
    if always:
        for field_name in always:
            field = descriptor.fields_by_name[field_name]
            name = RENAMED.get((descriptor.full_name, field.name), field.json_name)
            if name not in out:
                if field.type == _T.TYPE_MESSAGE and not field.is_repeated and (
                        field.message_type.full_name not in (_INT_OR_STRING, _TIMESTAMP)):
                    out[name] = encode_message(getattr(message, field_name))
                else:
                    out[name] = _zero(field)
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
