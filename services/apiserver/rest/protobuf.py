"""Kubernetes' protobuf request bodies (``application/vnd.kubernetes.protobuf``), for the
kinds kubectl's typed commands create that way: ``kubectl create namespace``,
``create deployment``, ``create service ...``.

The wire format is Kubernetes' own (``k8s\\0``, then a ``runtime.Unknown`` whose raw
bytes are the object in k8s.io/api's generated.proto), not Skiff's protos, so this
reads it with a table of field numbers per message (:data:`SCHEMAS`) into Kubernetes
JSON, which then goes through the codec like any JSON body. Go's generated code writes
every non-pointer field, empty or not, so empty values are dropped except for pointer
fields (``replicas: 0`` means 0); a field that is not in the table and not empty is
refused naming its number, never dropped. Responses stay JSON (the clients accept it).
Pure.
"""

from __future__ import annotations

import datetime
from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A field: (JSON name, type, repeated); types: "string", "int", "bool", "map" (string to
# string), "quantities" (string to Quantity), "intstr", "time", a message's name in
# SCHEMAS, "int?" (a pointer: kept when zero), or None (ignored: read-only or status).
Field = tuple[str, str | None, bool]
SCHEMAS: dict[str, dict[int, Field]] = {
    "ObjectMeta": {1: ("name", "string", False), 2: ("generateName", "string", False),
                   3: ("namespace", "string", False), 4: ("selfLink", None, False),
                   5: ("uid", None, False), 6: ("resourceVersion", "string", False),
                   7: ("generation", None, False), 8: ("creationTimestamp", None, False),
                   11: ("labels", "map", False), 12: ("annotations", "map", False),
                   14: ("finalizers", "string", True)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False),
                  3: ("status", None, False)},
    "NamespaceSpec": {1: ("finalizers", "string", True)},
    "Deployment": {1: ("metadata", "ObjectMeta", False),
                   2: ("spec", "DeploymentSpec", False), 3: ("status", None, False)},
    "DeploymentSpec": {1: ("replicas", "int?", False), 2: ("selector", "LabelSelector", False),
                       3: ("template", "PodTemplateSpec", False),
                       4: ("strategy", "DeploymentStrategy", False),
                       5: ("minReadySeconds", "int", False),
                       6: ("revisionHistoryLimit", "int?", False),
                       7: ("paused", "bool", False),
                       9: ("progressDeadlineSeconds", "int?", False)},
    "DeploymentStrategy": {1: ("type", "string", False)},
    "LabelSelector": {1: ("matchLabels", "map", False)},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {2: ("containers", "Container", True), 3: ("restartPolicy", "string", False),
                4: ("terminationGracePeriodSeconds", "int?", False),
                6: ("dnsPolicy", "string", False), 7: ("nodeSelector", "map", False),
                10: ("nodeName", "string", False), 11: ("hostNetwork", "bool", False),
                16: ("hostname", "string", False), 17: ("subdomain", "string", False),
                19: ("schedulerName", "string", False),
                24: ("priorityClassName", "string", False)},
    "Container": {1: ("name", "string", False), 2: ("image", "string", False),
                  3: ("command", "string", True), 4: ("args", "string", True),
                  5: ("workingDir", "string", False), 6: ("ports", "ContainerPort", True),
                  7: ("env", "EnvVar", True), 8: ("resources", "ResourceRequirements", False),
                  13: ("terminationMessagePath", "string", False),
                  14: ("imagePullPolicy", "string", False)},
    "ContainerPort": {1: ("name", "string", False), 2: ("hostPort", "int", False),
                      3: ("containerPort", "int", False), 4: ("protocol", "string", False),
                      5: ("hostIP", "string", False)},
    "EnvVar": {1: ("name", "string", False), 2: ("value", "string", False)},
    "ResourceRequirements": {1: ("limits", "quantities", False),
                             2: ("requests", "quantities", False)},
    "Service": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "ServiceSpec", False),
                3: ("status", None, False)},
    "ServiceSpec": {1: ("ports", "ServicePort", True), 2: ("selector", "map", False),
                    3: ("clusterIP", "string", False), 4: ("type", "string", False),
                    7: ("sessionAffinity", "string", False),
                    10: ("externalName", "string", False),
                    11: ("externalTrafficPolicy", "string", False),
                    13: ("publishNotReadyAddresses", "bool", False),
                    18: ("clusterIPs", "string", True)},
    "ServicePort": {1: ("name", "string", False), 2: ("protocol", "string", False),
                    3: ("port", "int", False), 4: ("targetPort", "intstr", False),
                    5: ("nodePort", "int", False)},
}
#: The kinds whose bodies this reads, by (apiVersion, kind).
KINDS = {("v1", "Namespace"), ("apps/v1", "Deployment"), ("v1", "Service")}


class ProtobufError(ValueError):
    """A body this cannot read: not Kubernetes protobuf, a kind or field not known."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, at
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of each field on the wire: varints and length-delimited
    bytes (the only wire types Kubernetes' messages use for these kinds)."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, at = _varint(data, at)
        elif wire_type == 2:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise ProtobufError("truncated field")
            value, at = data[at:at + size], at + size
        else:
            raise ProtobufError(f"unsupported wire type {wire_type} (field {number})")
        out.append((number, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _string(value: int | bytes, path: str) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError(f"{path}: expected a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ProtobufError(f"{path}: not UTF-8") from None


def _entries(values: list[int | bytes], path: str, quantities: bool) -> dict[str, str]:
    out = {}
    for entry in values:
        if not isinstance(entry, bytes):
            raise ProtobufError(f"{path}: expected a map entry")
        pair = dict(fields(entry))
        value = pair.get(2, b"")
        if quantities:  # Quantity{string = 1}
            value = dict(fields(value)).get(1, b"") if isinstance(value, bytes) else b""
        out[_string(pair.get(1, b""), path)] = _string(value, path)
    return out


def _single(kind: str, value: int | bytes, path: str) -> Any:
    if kind == "string":
        return _string(value, path)
    if kind in ("int", "int?"):
        if not isinstance(value, int):
            raise ProtobufError(f"{path}: expected an integer")
        return _signed(value)
    if kind == "bool":
        return bool(value)
    if not isinstance(value, bytes):
        raise ProtobufError(f"{path}: expected a message")
    if kind == "intstr":
        parts = dict(fields(value))
        if parts.get(1, 0) == 1:
            return _string(parts.get(3, b""), path)
        return _signed(int(parts.get(2, 0)))  # type: ignore[arg-type]
    if kind == "time":
        parts = dict(fields(value))
        seconds = int(parts.get(1, 0))  # type: ignore[arg-type]
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    return message(kind, value, path)


def _empty(value: Any) -> bool:
    return value in ("", 0, False, None) or value == {} or value == []


def message(name: str, data: bytes, path: str = "") -> dict[str, Any]:
    """The message ``name`` of :data:`SCHEMAS` on the wire, as Kubernetes JSON."""
    schema = SCHEMAS[name]
    grouped: dict[int, list[int | bytes]] = {}
    for number, value in fields(data):
        grouped.setdefault(number, []).append(value)
    out: dict[str, Any] = {}
    for number, values in grouped.items():
        spec = schema.get(number)
        if spec is None:
            if all(v in (b"", 0) for v in values):
                continue  # an empty field Go writes anyway
            raise ProtobufError(f"{path or name}: field {number} of {name} is not "
                                "supported in protobuf bodies (send JSON)")
        json_name, kind, repeated = spec
        here = f"{path}.{json_name}" if path else json_name
        if kind is None:
            continue
        if kind in ("map", "quantities"):
            value: Any = _entries(values, here, kind == "quantities")
        elif repeated:
            value = [_single(kind, v, f"{here}[{i}]") for i, v in enumerate(values)]
        else:
            value = _single(kind, values[-1], here)
        if kind != "int?" and _empty(value):
            continue
        out[json_name] = value
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf body as the Kubernetes JSON object it stands for."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (no k8s\\0 prefix)")
    unknown = dict(fields(body[len(MAGIC):]))
    type_meta = unknown.get(1, b"")
    raw = unknown.get(2, b"")
    if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
        raise ProtobufError("malformed runtime.Unknown envelope")
    meta = dict(fields(type_meta))
    api_version = _string(meta.get(1, b""), "apiVersion")
    kind = _string(meta.get(2, b""), "kind")
    if (api_version, kind) not in KINDS:
        served = ", ".join(sorted(k for _, k in KINDS))
        raise ProtobufError(f"protobuf bodies are read for {served} only, not "
                            f"{api_version} {kind} (send JSON)")
    return {"apiVersion": api_version, "kind": kind, **message(kind, raw)}
