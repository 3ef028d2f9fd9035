"""Kubernetes ``Status`` objects: the REST edge's one table from the API's errors to
HTTP codes and reasons (the gRPC edge has :func:`skiff.api.errors.to_grpc`)."""

from __future__ import annotations

import re
from typing import Any

from skiff.api import errors
from skiff.api.kinds import Kind

#: error class -> (HTTP code, Kubernetes reason); looked up along the class's MRO.
_TABLE: dict[type[errors.APIError], tuple[int, str]] = {
    errors.NotFound: (404, "NotFound"),
    errors.AlreadyExists: (409, "AlreadyExists"),
    errors.Conflict: (409, "Conflict"),
    errors.Gone: (410, "Expired"),
    errors.Unavailable: (503, "ServiceUnavailable"),
    errors.Unauthenticated: (401, "Unauthorized"),
    errors.Forbidden: (403, "Forbidden"),
    errors.Invalid: (422, "Invalid"),
    errors.BadRequest: (400, "BadRequest"),
}
_QUOTED_NAME = re.compile(r'"([^"]*)"')


def status(code: int, reason: str, message: str,
           details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure Status document."""
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason,
                           "code": code}
    if details:
        doc["details"] = details
    return doc


def success(kind: Kind | None = None, name: str = "", uid: str = "") -> dict[str, Any]:
    """The Success Status a delete answers with when the object is gone at once."""
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success"}
    if kind is not None:
        details = {"name": name, "kind": kind.plural, "uid": uid}
        if kind.group:
            details["group"] = kind.group
        doc["details"] = details
    return doc


def from_error(error: errors.APIError, kind: Kind | None = None,
               name: str = "") -> dict[str, Any]:
    """The Status for an API error raised while serving a request on ``kind``."""
    code, reason = 500, "InternalError"
    for cls in type(error).__mro__:
        if cls in _TABLE:
            code, reason = _TABLE[cls]  # type: ignore[index]
            break
    details: dict[str, Any] = {}
    if kind is not None and code in (404, 409, 422):
        details["kind"] = kind.plural
        if kind.group:
            details["group"] = kind.group
        if not name:
            found = _QUOTED_NAME.search(str(error))
            name = found.group(1) if found else ""
        if name:
            details["name"] = name
    if isinstance(error, errors.Invalid):
        details["name"] = error.name or name
        details["kind"] = error.kind
        details["causes"] = [{"reason": "FieldValueInvalid", "message": str(e),
                              "field": e.field} for e in error.errors]
    return status(code, reason, str(error), details or None)


def bad_request(message: str) -> dict[str, Any]:
    return status(400, "BadRequest", message)
