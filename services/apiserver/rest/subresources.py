"""Subresources beyond ``status``: ``scale`` (autoscaling/v1 Scale) of Deployments,
ReplicaSets and ReplicationControllers, and ``pods/binding``'s body. ``pods/log`` and
the other streaming ones are :mod:`services.apiserver.rest.streaming`'s."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from services.apiserver.registry import Registry
from services.apiserver.rest import translate
from services.apiserver.rest.common import Target, respond
from services.apiserver.rest.request import bad, read_body, read_document
from skiff.api import errors, labels
from skiff.api.v1 import core_pb2

SCALABLE = frozenset({"Deployment", "ReplicaSet", "ReplicationController"})
#: Attempts of a scale's read-modify-write when the object changes in between.
RETRIES = 8


# ---- scale ----


def _selector(obj: Message) -> str:
    spec = obj.spec  # type: ignore[attr-defined]
    if obj.DESCRIPTOR.name == "ReplicationController":
        return str(labels.selector_from_map(spec.selector))
    return str(labels.selector_from_label_selector(
        spec.selector if spec.HasField("selector") else None))


def scale_of(obj: Message) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a scalable object (pure)."""
    md = obj.metadata  # type: ignore[attr-defined]
    meta: dict[str, Any] = {"name": md.name, "namespace": md.namespace, "uid": md.uid,
                            "resourceVersion": md.resource_version}
    if md.HasField("creation_timestamp"):
        meta["creationTimestamp"] = md.creation_timestamp.ToJsonString()
    replicas = obj.spec.replicas  # type: ignore[attr-defined]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
            "spec": {"replicas": replicas},
            "status": {"replicas": obj.status.replicas,  # type: ignore[attr-defined]
                       "selector": _selector(obj)}}


async def get_scale(registry: Registry, target: Target) -> web.Response:
    obj = await registry.get(target.namespace, target.name)
    return respond(scale_of(obj))


def _wanted_replicas(doc: Any) -> tuple[int, str]:
    """(spec.replicas, metadata.resourceVersion) of a Scale body."""
    if not isinstance(doc, dict):
        raise bad("the request body must be a Scale object")
    if doc.get("kind", "Scale") != "Scale":
        raise bad(f'kind: the body is a {doc.get("kind")!r}, not a "Scale"')
    spec = doc.get("spec") or {}
    replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise bad("spec.replicas: expected an integer")
    if replicas < 0:
        raise errors.Invalid("Scale", "", [errors.FieldError(
            "spec.replicas", "must be greater than or equal to 0")])
    meta = doc.get("metadata") or {}
    return replicas, str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


async def _scale_to(registry: Registry, target: Target, replicas: int,
                    resource_version: str) -> web.Response:
    """Set spec.replicas, conditional on ``resource_version`` if given (Conflict when
    stale), else on the version read (retried when it moved)."""
    for _ in range(RETRIES):
        obj = await registry.get(target.namespace, target.name)
        if resource_version and obj.metadata.resource_version != resource_version:  # type: ignore[attr-defined]
            obj.metadata.resource_version = resource_version  # type: ignore[attr-defined]
        obj.spec.replicas = replicas  # type: ignore[attr-defined]
        try:
            return respond(scale_of(await registry.update(obj)))
        except errors.Conflict:
            if resource_version:
                raise
    raise errors.Conflict(f'Operation cannot be fulfilled on {target.kind.plural} '
                          f'"{target.name}": too many concurrent changes')


async def put_scale(request: web.Request, registry: Registry, target: Target) -> web.Response:
    replicas, resource_version = _wanted_replicas(await read_document(request))
    return await _scale_to(registry, target, replicas, resource_version)


async def patch_scale(request: web.Request, registry: Registry,
                      target: Target) -> web.Response:
    """PATCH of a Scale (kubectl scale sends a merge patch), applied to the current
    Scale; conditional on a resourceVersion only if the patch sets one."""
    content_type = request.headers.get("Content-Type", "")
    translate.patch_media_type(content_type)  # 415 before reading the body
    patch = await read_body(request)
    current = scale_of(await registry.get(target.namespace, target.name))
    patched, _ = translate.apply_patch(content_type, current, patch, None, "Strict")
    replicas, resource_version = _wanted_replicas(patched)
    explicit = resource_version if resource_version != current["metadata"][
        "resourceVersion"] else ""
    return await _scale_to(registry, target, replicas, explicit)


# ---- binding ----


def decode_binding(doc: Any) -> core_pb2.Binding:
    """A v1 Binding body; 400 naming what is wrong."""
    if not isinstance(doc, dict):
        raise bad("the request body must be a Binding object")
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    if doc.get("kind", "Binding") != "Binding":
        raise bad(f'kind: the body is a {doc.get("kind")!r}, not a "Binding"')
    try:
        return json_format.ParseDict(body, core_pb2.Binding())
    except json_format.ParseError as e:
        raise bad(f"invalid Binding: {e}") from None
