"""Reading a REST request: the body (size-limited JSON or YAML), query parameters as
the registry's ListOptions and DeleteRequest, and content negotiation (``Accept``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from multidict import MultiMapping

from services.apiserver.rest import protobuf
from skiff.api.v1 import meta_pb2

#: Largest request body, as Kubernetes (3 MiB).
MAX_BODY_BYTES = 3 * 1024 * 1024
JSON = "application/json"
YAML = "application/yaml"
TABLE_PARAMS = {"as": "Table", "g": "meta.k8s.io"}
_TRUE = frozenset({"1", "true", "True", "TRUE", "yes"})


class RequestError(Exception):
    """A request the edge refuses before any registry call: HTTP code, reason, message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        self.code, self.reason = code, reason
        super().__init__(message)


def bad(message: str) -> RequestError:
    return RequestError(400, "BadRequest", message)


async def read_body(request: web.Request) -> bytes:
    """The body, at most :data:`MAX_BODY_BYTES` (413 beyond)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError(413, "RequestEntityTooLarge", "the request body is too large: "
                           f"{request.content_length} bytes, the limit is {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, "RequestEntityTooLarge",
                               f"the request body is too large: the limit is "
                               f"{MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_document(data: bytes, content_type: str) -> Any:
    """A JSON or YAML body as a value; 415 for another media type, 400 if malformed."""
    media = content_type.split(";", 1)[0].strip().lower() or JSON
    if not data.strip():
        raise bad("the request body is empty")
    if media == JSON:
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad(f"the request body is not valid JSON: {e}") from None
    if media in (YAML, "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise bad(f"the request body is not valid YAML: {e}") from None
    if media == protobuf.MEDIA_TYPE:  # kubectl's typed commands (create namespace...)
        try:
            return protobuf.decode(data)
        except protobuf.ProtobufError as e:
            raise RequestError(415, "UnsupportedMediaType", str(e)) from None
    raise RequestError(415, "UnsupportedMediaType",
                       f'the body of the request was in an unknown format - accepted media '
                       f'types include: {JSON}, {YAML} (got "{media}")')


async def read_document(request: web.Request) -> Any:
    return parse_document(await read_body(request), request.headers.get("Content-Type", ""))


def flag(query: MultiMapping[str], name: str) -> bool:
    return query.get(name, "") in _TRUE


def _int(query: MultiMapping[str], name: str) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise bad(f'{name}: invalid value "{text}": must be an integer') from None


def list_options(query: MultiMapping[str], namespace: str) -> meta_pb2.ListOptions:
    """Kubernetes' list/watch query parameters as the registry's ListOptions."""
    rv = query.get("resourceVersion", "")
    match = query.get("resourceVersionMatch", "")
    if match:
        if match not in ("NotOlderThan", "Exact"):
            raise bad(f'resourceVersionMatch: Unsupported value: "{match}": supported '
                      f'values: "Exact", "NotOlderThan"')
        if not rv:
            raise bad("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if match == "Exact":
            if rv == "0":
                raise bad('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
            raise RequestError(400, "BadRequest", 'resourceVersionMatch "Exact" is not '
                               "supported by this server; use NotOlderThan")
    options = meta_pb2.ListOptions(
        namespace=namespace, label_selector=query.get("labelSelector", ""),
        field_selector=query.get("fieldSelector", ""), resource_version=rv,
        continue_token=query.get("continue", ""),
        allow_bookmarks=flag(query, "allowWatchBookmarks"))
    limit = _int(query, "limit")
    if limit is not None and limit > 0:
        options.limit = limit
    timeout = _int(query, "timeoutSeconds")
    if timeout is not None and timeout > 0:
        options.timeout_seconds = timeout
    if options.continue_token and rv:
        raise bad("specifying resource version is not allowed when using continue")
    return options


def _preconditions(doc: Any, request: meta_pb2.DeleteRequest) -> None:
    if not isinstance(doc, dict):
        raise bad("preconditions: must be an object")
    if doc.get("uid") is not None:
        request.preconditions.uid = str(doc["uid"])
    if doc.get("resourceVersion") is not None:
        request.preconditions.resource_version = str(doc["resourceVersion"])


def delete_request(query: MultiMapping[str], body: Any, namespace: str,
                   name: str) -> meta_pb2.DeleteRequest:
    """DeleteOptions (the body, else the query) as the registry's DeleteRequest."""
    request = meta_pb2.DeleteRequest(namespace=namespace, name=name)
    options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    if body is not None and not isinstance(body, dict):
        raise bad("the body of a delete must be a DeleteOptions object")
    for key in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents", "dryRun"):
        if key not in options and key in query:
            options[key] = query.getall(key) if key == "dryRun" else query[key]
    if options.get("dryRun"):
        raise bad("dryRun: this server does not support dry-run requests yet")
    grace = options.get("gracePeriodSeconds")
    if grace is not None:
        try:
            request.grace_period_seconds = int(grace)
        except (TypeError, ValueError):
            raise bad(f'gracePeriodSeconds: invalid value "{grace}"') from None
    policy = options.get("propagationPolicy")
    orphan = options.get("orphanDependents")
    if policy:
        request.propagation_policy = str(policy)
    elif orphan is not None:
        request.propagation_policy = "Orphan" if str(orphan).lower() == "true" else "Background"
    if options.get("preconditions") is not None:
        _preconditions(options["preconditions"], request)
    return request


@dataclass(frozen=True)
class MediaType:
    """One entry of an ``Accept`` header."""

    type: str
    params: dict[str, str]

    def is_json(self) -> bool:
        return self.type in (JSON, "application/*", "*/*")

    def wants(self, **params: str) -> bool:
        return all(self.params.get(k) == v for k, v in params.items())


def accepted(header: str) -> list[MediaType]:
    """The entries of an ``Accept`` header, in order (Kubernetes' clients list the
    preferred first; q-values are not used by them)."""
    out = []
    for part in (header or "*/*").split(","):
        pieces = [p.strip() for p in part.split(";")]
        params = {}
        for p in pieces[1:]:
            key, _, value = p.partition("=")
            params[key.strip()] = value.strip()
        params.pop("q", None)
        out.append(MediaType(pieces[0].lower(), params))
    return out


def wants_table(header: str) -> bool:
    """Whether to answer a GET/LIST with a Table: the first acceptable entry is one.
    406 when nothing acceptable is served (protobuf only)."""
    plain = False
    for media in accepted(header):
        if media.type == JSON and media.wants(**TABLE_PARAMS):
            return True
        if media.is_json() and "as" not in media.params:
            plain = True
            break
        if media.type == YAML:
            plain = True
            break
        if media.type == "application/vnd.kubernetes.protobuf":
            continue  # not served: the next entry may be
    if not plain:
        raise RequestError(406, "NotAcceptable", "only the following media types are "
                           f"accepted: {JSON}, {YAML}")
    return False
