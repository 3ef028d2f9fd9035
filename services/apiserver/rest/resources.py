"""The verbs of every kind over HTTP: get, list, watch, create, update, delete, delete
collection, and the subresources (status, scale, binding, eviction, finalize), each a thin
translation to the kind's :class:`~services.apiserver.registry.Registry` call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from services.apiserver.binding import bind
from services.apiserver.finalize import finalize
from services.apiserver.registry import Registry
from services.apiserver.rest import codec, subresources, translate
from services.apiserver.rest.common import Target, dumps, respond
from services.apiserver.rest.request import (
    RequestError,
    bad,
    delete_request,
    flag,
    list_options,
    parse_document,
    read_body,
    read_document,
    wants_table,
)
from services.apiserver.rest.status import success
from services.apiserver.rest.watch import serve_watch
from skiff.api import errors
from skiff.api.kinds import Kind

#: Lists longer than this are encoded on a thread.
THREADED_ENCODING = 500
#: Kinds whose delete answers with the object rather than a Status.
RETURNS_DELETED_OBJECT = frozenset({"Pod", "Service"})
#: Attempts of a read-modify-write (scale) when the object changes in between.
RETRIES = 8


class ResourceHandler:
    """Serves the REST verbs of every kind from their registries."""

    def __init__(self, registries: dict[str, Registry]) -> None:
        self.registries = registries

    # ------------------------------------------------------------- dispatch

    async def handle(self, request: web.Request, target: Target) -> web.StreamResponse:
        registry = self.registries[target.kind.kind]
        method = request.method
        if target.subresource:
            return await self._subresource(request, registry, target)
        if method == "GET":
            if target.name:
                return await self.get(request, registry, target)
            if flag(request.query, "watch"):
                return await serve_watch(request, registry, target.namespace)
            return await self.list(request, registry, target)
        if method == "POST" and not target.name:
            return await self.create(request, registry, target)
        if method == "PUT" and target.name:
            return await self.update(request, registry, target, status=False)
        if method == "DELETE":
            if target.name:
                return await self.delete(request, registry, target)
            return await self.delete_collection(request, registry, target)
        if method == "PATCH" and target.name:
            return await self.patch(request, registry, target)
        raise RequestError(405, "MethodNotAllowed",
                           f"the server does not allow this method on the requested "
                           f"resource ({method} {request.path})")

    @staticmethod
    def _check_table(request: web.Request) -> bool:
        return wants_table(request.headers.get("Accept", ""))

    @staticmethod
    def _table(request: web.Request, kind: Kind, objects: list[dict[str, Any]],
               list_meta: dict[str, Any]) -> dict[str, Any]:
        return translate.to_table(kind, objects, list_meta,
                                  request.query.get("includeObject"))

    # ---------------------------------------------------------------- reads

    async def get(self, request: web.Request, registry: Registry,
                  target: Target) -> web.Response:
        table = self._check_table(request)
        obj = await registry.get(target.namespace, target.name,
                                 request.query.get("resourceVersion", ""))
        if table:
            body = codec.encode(obj, target.kind)
            return respond(self._table(request, target.kind, [body], {}))
        return respond(codec.encode_json(obj, target.kind))

    async def list(self, request: web.Request, registry: Registry,
                   target: Target) -> web.Response:
        table = self._check_table(request)
        options = list_options(request.query, target.namespace)
        result = await registry.list(options)
        if table:
            include = request.query.get("includeObject")
            if len(result.items) > THREADED_ENCODING:  # type: ignore[attr-defined]
                return respond(await asyncio.to_thread(_list_table, result, target.kind,
                                                       include))
            return respond(_list_table(result, target.kind, include))
        if len(result.items) > THREADED_ENCODING:  # type: ignore[attr-defined]
            # Off the loop: the first encoding of thousands of objects takes a while
            # (later ones come from the cache of encoded versions).
            data = await asyncio.to_thread(codec.encode_list_json, result, target.kind)
        else:
            data = codec.encode_list_json(result, target.kind)
        return respond(data)

    # --------------------------------------------------------------- writes

    async def _decode_body(self, request: web.Request, target: Target,
                           document: Any | None = None) -> tuple[Message, list[str]]:
        """The request body (or ``document``, a patched object) as an object of the
        target's kind, checked against the path (namespace, name), and the warnings
        field validation has for it."""
        warnings: list[str] = []
        if document is None:
            directive = translate.directive(request.query.get("fieldValidation"))
            raw = await read_body(request)
            doc = parse_document(raw, request.headers.get("Content-Type", ""))
            if not isinstance(doc, dict):
                raise bad("the request body must be a JSON object")
            json_body = doc is not None and raw.lstrip()[:1] == b"{"
            doc, warnings = translate.check_body(doc, raw if json_body else None,
                                                 target.kind, directive)
        else:
            doc = document
        if not isinstance(doc, dict):
            raise bad("the request body must be a JSON object")
        try:
            obj = codec.decode(doc, target.kind)
        except codec.DecodeError as e:
            raise bad(str(e)) from None
        md = obj.metadata  # type: ignore[attr-defined]
        if target.kind.namespaced:
            if md.namespace and md.namespace != target.namespace:
                raise bad("the namespace of the provided object does not match the "
                          "namespace sent on the request")
            md.namespace = target.namespace
        if target.name and md.name != target.name:
            raise bad(f"the name of the object ({md.name}) does not match the name on "
                      f"the URL ({target.name})")
        return obj, warnings

    async def create(self, request: web.Request, registry: Registry,
                     target: Target) -> web.Response:
        if target.kind.namespaced and not target.namespace:
            raise RequestError(405, "MethodNotAllowed",
                               f"create {target.kind.plural}: a namespace is required in "
                               "the path (/namespaces/<namespace>/...)")
        self._refuse_dry_run(request)
        obj, warnings = await self._decode_body(request, target)
        created = await registry.create(obj)
        return respond(codec.encode(created, target.kind), 201,
                       translate.warning_headers(warnings))

    async def update(self, request: web.Request, registry: Registry, target: Target, *,
                     status: bool, document: Any | None = None) -> web.Response:
        self._refuse_dry_run(request)
        obj, warnings = await self._decode_body(request, target, document)
        if status:
            updated = await registry.update_status(obj)
        else:
            updated = await registry.update(obj)
        return respond(codec.encode(updated, target.kind), 200,
                       translate.warning_headers(warnings))

    async def patch(self, request: web.Request, registry: Registry,
                    target: Target, *, status: bool = False) -> web.Response:
        """PATCH: the patch applied to the current object (and checked for unknown
        fields), then an update conditional on the version it was applied to, retried
        when that moved (unless the patch names a resourceVersion itself)."""
        self._refuse_dry_run(request)
        content_type = request.headers.get("Content-Type", "")
        directive = translate.directive(request.query.get("fieldValidation"))
        translate.patch_media_type(content_type)  # 415 before reading the body
        body = await read_body(request)
        for _ in range(RETRIES):
            current = await registry.get(target.namespace, target.name)
            original = codec.encode(current, target.kind)
            patched, warnings = translate.apply_patch(content_type, original, body,
                                                      target.kind, directive)
            if not isinstance(patched, dict):
                raise bad("the patched object is not a JSON object")
            meta = patched.get("metadata")
            if not isinstance(meta, dict):
                meta = patched["metadata"] = {}
            pinned = bool(meta.get("resourceVersion")) and (
                meta["resourceVersion"] != original["metadata"].get("resourceVersion"))
            stored = current.metadata.resource_version  # type: ignore[attr-defined]
            meta["resourceVersion"] = meta.get("resourceVersion") or stored
            obj, _ = await self._decode_body(request, target, patched)
            try:
                if status:
                    updated = await registry.update_status(obj)
                else:
                    updated = await registry.update(obj)
            except errors.Conflict:
                if pinned:
                    raise
                continue
            return respond(codec.encode_json(updated, target.kind), 200,
                           translate.warning_headers(warnings))
        raise errors.Conflict(f'Operation cannot be fulfilled on {target.kind.plural} '
                              f'"{target.name}": too many concurrent changes')

    @staticmethod
    def _refuse_dry_run(request: web.Request) -> None:
        if request.query.getall("dryRun", []):
            raise bad("dryRun: this server does not support dry-run requests yet")

    async def _delete_body(self, request: web.Request) -> Any:
        data = await read_body(request)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad(f"the DeleteOptions body is not valid JSON: {e}") from None

    async def delete(self, request: web.Request, registry: Registry,
                     target: Target) -> web.Response:
        body = await self._delete_body(request)
        deletion = delete_request(request.query, body, target.namespace, target.name)
        obj = await registry.delete(deletion)
        return self._deleted(target.kind, obj)

    def _deleted(self, kind: Kind, obj: Message) -> web.Response:
        """Kubernetes' answer to a delete: the object while its deletion is pending (202
        unless a graceful pod), else a Success Status; pods and services answer with the
        object always (Kubernetes' ReturnDeletedObject, and the clients' types)."""
        md = obj.metadata  # type: ignore[attr-defined]
        pending = md.HasField("deletion_timestamp") and (
            bool(md.finalizers) or md.deletion_grace_period_seconds > 0
            or (kind.kind == "Namespace" and bool(obj.spec.finalizers)))  # type: ignore[attr-defined]
        if pending:
            graceful = kind.kind == "Pod" and not md.finalizers
            return respond(codec.encode(obj, kind), 200 if graceful else 202)
        if kind.kind in RETURNS_DELETED_OBJECT:
            return respond(codec.encode(obj, kind))
        return respond(success(kind, md.name, md.uid))

    async def delete_collection(self, request: web.Request, registry: Registry,
                                target: Target) -> web.Response:
        body = await self._delete_body(request)
        options = list_options(request.query, target.namespace)
        listed = await registry.list(options)
        result = target.kind.list_message(api_version=target.kind.api_version,
                                          kind=f"{target.kind.kind}List")
        result.metadata.resource_version = listed.metadata.resource_version  # type: ignore[attr-defined]
        for item in listed.items:  # type: ignore[attr-defined]
            deletion = delete_request(request.query, body, item.metadata.namespace,
                                      item.metadata.name)
            try:
                result.items.append(await registry.delete(deletion))  # type: ignore[attr-defined]
            except errors.NotFound:
                continue  # deleted by someone else meanwhile
        return respond(codec.encode_list(result, target.kind))

    # ----------------------------------------------------------- subresources

    async def _subresource(self, request: web.Request, registry: Registry,
                           target: Target) -> web.StreamResponse:
        sub, method, kind = target.subresource, request.method, target.kind.kind
        if sub == "status" and target.kind.has_status:
            if method == "GET":
                return await self.get(request, registry, target)
            if method == "PUT":
                return await self.update(request, registry, target, status=True)
            if method == "PATCH":
                return await self.patch(request, registry, target, status=True)
        elif sub == "scale" and kind in subresources.SCALABLE:
            if method == "GET":
                return await subresources.get_scale(registry, target)
            if method == "PUT":
                return await subresources.put_scale(request, registry, target)
            if method == "PATCH":
                return await subresources.patch_scale(request, registry, target)
        elif sub == "binding" and kind == "Pod" and method == "POST":
            return await self._bind(request, registry, target)
        elif sub == "eviction" and kind == "Pod" and method == "POST":
            return await self._evict(request, registry, target)
        elif sub == "finalize" and kind == "Namespace" and method == "PUT":
            obj, _ = await self._decode_body(request, target)
            return respond(codec.encode(await finalize(registry, obj), target.kind))  # type: ignore[arg-type]
        else:
            raise RequestError(404, "NotFound", f"the server could not find the requested "
                               f"resource ({target.kind.plural}/{sub})")
        raise RequestError(405, "MethodNotAllowed", f"{method} is not allowed on "
                           f"{target.kind.plural}/{sub}")

    async def _evict(self, request: web.Request, registry: Registry,
                     target: Target) -> web.Response:
        """policy/v1 Eviction: the pod's deletion with the eviction's DeleteOptions
        (there are no PodDisruptionBudgets to consult yet)."""
        doc = await read_document(request)
        if not isinstance(doc, dict) or doc.get("kind", "Eviction") != "Eviction":
            raise bad("the request body must be a policy/v1 Eviction")
        meta = doc.get("metadata") or {}
        if isinstance(meta, dict) and meta.get("name") not in (None, target.name):
            raise bad(f"name in URL does not match name in Eviction object "
                      f"({meta.get('name')} != {target.name})")
        deletion = delete_request(request.query, doc.get("deleteOptions"), target.namespace,
                                  target.name)
        await registry.delete(deletion)
        body = success()
        body["code"] = 201
        return respond(body, 201)

    async def _bind(self, request: web.Request, registry: Registry,
                    target: Target) -> web.Response:
        doc = await read_document(request)
        binding = subresources.decode_binding(doc)
        binding.metadata.namespace = binding.metadata.namespace or target.namespace
        if binding.metadata.namespace != target.namespace:
            raise bad("the namespace of the provided object does not match the "
                      "namespace sent on the request")
        binding.metadata.name = binding.metadata.name or target.name
        await bind(registry, binding)
        return respond(success(), 201)


def _list_table(result: Message, kind: Kind, include_object: str | None) -> bytes:
    """A list as a Table, encoded: the items from the per-version JSON cache (a big
    list is run off the loop, as its JSON is)."""
    items = [codec.encode_cached(item, kind) for item in result.items]  # type: ignore[attr-defined]
    list_meta = codec.encode_message(result.metadata)  # type: ignore[attr-defined]
    return dumps(translate.to_table(kind, items, list_meta, include_object))
