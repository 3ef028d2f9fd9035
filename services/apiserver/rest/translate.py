"""The REST edge's calls into its pure modules (:mod:`~services.apiserver.rest.patch`,
:mod:`~services.apiserver.rest.field_validation`, :mod:`~services.apiserver.rest.printers`),
their errors turned into the edge's :class:`RequestError` (a ``Status``) in this one
place."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from services.apiserver.rest import field_validation, patch, printers
from services.apiserver.rest.request import RequestError, bad
from skiff.api.kinds import Kind

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


# ---- field validation ----


def directive(value: str | None) -> str:
    """The request's ``fieldValidation`` (400 for a value that is none of them)."""
    try:
        return str(field_validation.parse_directive(value))
    except field_validation.InvalidDirective as e:
        raise bad(str(e)) from None


def check_body(doc: Any, raw: bytes | None, kind: Kind,
               validation: str) -> tuple[Any, list[str]]:
    """The body without unknown fields (Warn, Ignore) and the warnings; 400 under
    Strict. ``raw`` (a JSON body's bytes) lets duplicates be found too."""
    try:
        if raw is not None:
            return field_validation.check_body(raw, kind, validation)
        return field_validation.validate(doc, kind, validation)
    except field_validation.StrictDecodingError as e:
        raise bad(e.message(kind.kind, kind.api_version)) from None
    except field_validation.MalformedJSON as e:
        raise bad(str(e)) from None


def warning_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None
    return {"Warning": ", ".join(field_validation.warning_header(w) for w in warnings)}


# ---- patch ----


def patch_media_type(content_type: str) -> str:
    """The patch's media type; 415 for one not served (before the body is read)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in patch.PATCH_TYPES:
        raise RequestError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted "
                           f"media types include: {', '.join(patch.PATCH_TYPES)} "
                           f'(got "{media}")')
    return media


def apply_patch(content_type: str, original: Mapping[str, Any], body: bytes,
                kind: Kind | None, validation: str) -> tuple[dict[str, Any], list[str]]:
    """``original`` patched, and the warnings; a RequestError for a patch type not
    served (415), a malformed patch (400), one that does not apply (422), unknown
    fields under Strict. ``kind`` None: a subresource's document (Scale), not checked
    for unknown fields."""
    media = patch_media_type(content_type)
    try:
        if kind is None:
            return patch.apply_patch(media, original, body, kind), []
        return field_validation.patch_and_validate(media, original, body, kind, validation)
    except patch.PatchError as e:
        raise RequestError(e.code, e.reason, e.message) from None
    except field_validation.StrictDecodingError as e:
        assert kind is not None
        code, reason = ((422, "Invalid") if media == STRATEGIC_MERGE_PATCH
                        else (400, "BadRequest"))
        raise RequestError(code, reason, e.message(kind.kind, kind.api_version)) from None


# ---- tables ----


def to_table(kind: Kind, objects: list[dict[str, Any]], list_meta: Mapping[str, Any],
             include_object: str | None, *, no_headers: bool = False) -> dict[str, Any]:
    """``objects`` as a meta.k8s.io/v1 Table (kubectl get's columns)."""
    try:
        return printers.to_table(
            kind, objects, now=datetime.datetime.now(datetime.UTC),
            include_object=include_object or "Metadata", no_headers=no_headers,
            resource_version=str(list_meta.get("resourceVersion", "")),
            continue_token=str(list_meta.get("continue", "")),
            remaining_item_count=list_meta.get("remainingItemCount"))
    except ValueError as e:  # includeObject not one of None, Metadata, Object
        raise bad(str(e)) from None
