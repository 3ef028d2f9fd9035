"""Where the REST edge's optional, pure modules plug in, found by import at start.

Until a module exists its feature answers as Kubernetes does without it: PATCH 415
(kubectl then says the patch type is unsupported), a Table-only ``Accept`` 406,
``/openapi/v3`` 404 (kubectl falls back, or needs ``--validate=false``), and unknown
fields rejected (Strict). The functions each module must provide:

- ``rest.patch``: ``apply_patch(content_type: str, current: dict, patch: bytes,
  kind: Kind) -> dict`` (the patched Kubernetes-JSON object; ``PatchError(ValueError)``
  for a patch that does not apply or does not parse) and ``CONTENT_TYPES: frozenset[str]``
  (the patch media types it applies).
- ``rest.printers``: ``to_table(kind: Kind, objects: list[dict], list_meta: dict,
  include_object: str) -> dict`` (a meta.k8s.io/v1 Table; ``include_object`` is
  ``None``, ``Object`` or ``Metadata``).
- ``rest.field_validation``: ``check(kind: Kind, body: dict, directive: str) ->
  tuple[dict, list[str]]`` (the body without unknown fields and the warnings to send
  as ``Warning`` headers; raises ``FieldValidationError(ValueError)`` under Strict).
- ``rest.openapi``: ``v3_index() -> dict`` and ``v3_document(group_version: str) ->
  dict | None`` (``group_version`` as in the path: ``api/v1``, ``apis/apps/v1``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


def _optional(name: str) -> ModuleType | None:
    full = f"services.apiserver.rest.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            return None
        raise


@dataclass(frozen=True)
class Hooks:
    """The pure modules present (None: not yet)."""

    patch: ModuleType | None
    printers: ModuleType | None
    field_validation: ModuleType | None
    openapi: ModuleType | None


def load() -> Hooks:
    return Hooks(patch=_optional("patch"), printers=_optional("printers"),
                 field_validation=_optional("field_validation"), openapi=_optional("openapi"))
