"""Where the REST edge's pure modules plug in: ``rest.patch``, ``rest.printers``,
``rest.field_validation`` and ``rest.openapi``, found by import at start.

:class:`Hooks` is the one adapter between the edge and them. Until a module is there
its feature answers as a Kubernetes server without it would: PATCH 415 (kubectl says
the patch type is not supported), a Table-only ``Accept`` 406 (kubectl's Accept also
lists plain JSON, which it then gets), ``/openapi/v3`` 404 (kubectl needs
``--validate=false``), and unknown fields refused whatever ``fieldValidation`` says
(the codec is strict). What it uses of each module:

- ``patch``: ``PATCH_TYPES``, ``PatchError`` (``code``, ``reason``, ``message``),
  ``apply_patch(content_type, original, body, kind)``;
- ``field_validation``: ``parse_directive(value)``, ``check_body(raw, kind, directive)``,
  ``validate(body, kind, directive)``, ``patch_and_validate(content_type, original,
  body, kind, directive)``, ``warning_header(text)``, ``StrictDecodingError``
  (``message(kind)``), ``MalformedJSON``, ``InvalidDirective``;
- ``printers``: ``to_table(kind, objects, *, now, include_object, no_headers,
  resource_version, continue_token, remaining_item_count)``;
- ``openapi``: ``index_document()``, ``documents()`` (path -> ``body``, ``etag``).
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from services.apiserver.rest.request import RequestError, bad
from skiff.api.kinds import Kind

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def optional(name: str) -> ModuleType | None:
    """``services.apiserver.rest.<name>`` if it is in the tree, else None."""
    full = f"services.apiserver.rest.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            return None
        raise


class Hooks:
    """The pure modules present (None: not yet), behind the calls the edge makes."""

    def __init__(self, *, patch: ModuleType | None = None,
                 printers: ModuleType | None = None,
                 field_validation: ModuleType | None = None,
                 openapi: ModuleType | None = None) -> None:
        self.patch = patch
        self.printers = printers
        self.field_validation = field_validation
        self.openapi = openapi

    @property
    def tables(self) -> bool:
        return self.printers is not None

    # ---- field validation ----

    def directive(self, value: str | None) -> str:
        """The request's ``fieldValidation`` (400 for a value that is none of them)."""
        if self.field_validation is None:
            if value not in (None, "", "Strict", "Warn", "Ignore"):
                raise bad(f'fieldValidation: Unsupported value: "{value}": supported '
                          f'values: "Ignore", "Strict", "Warn"')
            return "Strict"
        try:
            return str(self.field_validation.parse_directive(value))
        except self.field_validation.InvalidDirective as e:
            raise bad(str(e)) from None

    def check_body(self, doc: Any, raw: bytes | None, kind: Kind,
                   directive: str) -> tuple[Any, list[str]]:
        """The body without unknown fields (Warn, Ignore) and the warnings; 400 under
        Strict. ``raw`` (a JSON body's bytes) lets duplicates be found too."""
        module = self.field_validation
        if module is None:
            return doc, []
        try:
            if raw is not None:
                return module.check_body(raw, kind, directive)  # type: ignore[no-any-return]
            return module.validate(doc, kind, directive)  # type: ignore[no-any-return]
        except module.StrictDecodingError as e:
            raise bad(e.message(kind.kind, kind.api_version)) from None
        except module.MalformedJSON as e:
            raise bad(str(e)) from None

    def warning_headers(self, warnings: list[str]) -> dict[str, str] | None:
        if not warnings or self.field_validation is None:
            return None
        return {"Warning": ", ".join(self.field_validation.warning_header(w)
                                     for w in warnings)}

    # ---- patch ----

    def apply_patch(self, content_type: str, original: Mapping[str, Any], body: bytes,
                    kind: Kind | None, directive: str) -> tuple[dict[str, Any], list[str]]:
        """``original`` patched, and the warnings; a RequestError for a patch type not
        served (415), a malformed patch (400), one that does not apply (422), unknown
        fields under Strict."""
        media = content_type.split(";", 1)[0].strip().lower()
        module = self.patch
        if module is None or media not in module.PATCH_TYPES:
            served = ", ".join(module.PATCH_TYPES) if module is not None else "none"
            raise RequestError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - "
                               f'accepted media types include: {served} (got "{media}")')
        validation = self.field_validation
        try:
            if validation is not None and kind is not None:
                return validation.patch_and_validate(  # type: ignore[no-any-return]
                    media, original, body, kind, directive)
            return module.apply_patch(media, original, body, kind), []
        except module.PatchError as e:
            raise RequestError(e.code, e.reason, e.message) from None
        except Exception as e:
            if validation is not None and isinstance(e, validation.StrictDecodingError):
                assert kind is not None
                code, reason = ((422, "Invalid") if media == STRATEGIC_MERGE_PATCH
                                else (400, "BadRequest"))
                raise RequestError(code, reason,
                                   e.message(kind.kind, kind.api_version)) from None
            raise

    # ---- tables ----

    def to_table(self, kind: Kind, objects: list[dict[str, Any]],
                 list_meta: Mapping[str, Any], include_object: str | None, *,
                 no_headers: bool = False) -> dict[str, Any]:
        assert self.printers is not None
        try:
            return self.printers.to_table(  # type: ignore[no-any-return]
                kind, objects, now=datetime.datetime.now(datetime.UTC),
                include_object=include_object or "Metadata", no_headers=no_headers,
                resource_version=str(list_meta.get("resourceVersion", "")),
                continue_token=str(list_meta.get("continue", "")),
                remaining_item_count=list_meta.get("remainingItemCount"))
        except ValueError as e:  # includeObject not one of None, Metadata, Object
            raise bad(str(e)) from None

    # ---- OpenAPI ----

    def openapi_index(self) -> dict[str, Any] | None:
        return None if self.openapi is None else self.openapi.index_document()

    def openapi_document(self, path: str) -> tuple[bytes, str] | None:
        """(body, etag) of ``api/v1`` or ``apis/<group>/<version>``, or None."""
        if self.openapi is None:
            return None
        document = self.openapi.documents().get(path)
        return None if document is None else (document.body, document.etag)


def load() -> Hooks:
    return Hooks(patch=optional("patch"), printers=optional("printers"),
                 field_validation=optional("field_validation"),
                 openapi=optional("openapi"))
