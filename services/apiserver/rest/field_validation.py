"""Server-side field validation: unknown and duplicate fields in a request's object.

Kubernetes decodes a create, update or patch body strictly and, by the request's
``fieldValidation`` parameter, treats what strict decoding finds as:

- ``Strict``: an error, 400 BadRequest, ``Deployment in version "v1" cannot be handled
  as a Deployment: strict decoding error: unknown field "spec.replica", duplicate field
  "metadata.name"`` (kubectl's default ``--validate=strict`` sends this);
- ``Warn`` (the default when the parameter is absent): the request succeeds without the
  unknown fields, with a ``Warning`` header per field (``unknown field "spec.replica"``);
- ``Ignore``: the request succeeds without them, silently.

Unknown means not a property of the kind's OpenAPI schema (``openapi.py``), which has
every proto field under the JSON name the codec writes, so a body the codec wrote always
passes, and a field the schema lacks would be refused by the codec anyway (it is strict):
:func:`validate` hands the codec the body without them. Duplicates can only be seen in
the raw JSON text, so :func:`load_json` parses it and reports them with their paths.
Paths are Kubernetes': ``spec.template.spec.containers[0].imagee``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.apiserver.rest import openapi, patch
from skiff.api.kinds import Kind

IGNORE, WARN, STRICT = "Ignore", "Warn", "Strict"
DIRECTIVES = (IGNORE, WARN, STRICT)


class InvalidDirective(ValueError):
    """A ``fieldValidation`` value that is none of Ignore, Warn, Strict (a 400)."""


class MalformedJSON(ValueError):
    """A body that is not JSON (a 400 naming the problem)."""


class StrictDecodingError(ValueError):
    """Unknown or duplicate fields under ``fieldValidation=Strict`` (a 400 BadRequest)."""

    code, reason = 400, "BadRequest"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "strict decoding error: " + ", ".join(self.problems)

    def message(self, kind: str, version: str = "v1") -> str:
        """The Status message Kubernetes writes: ``Pod in version "v1" cannot be ...``."""
        return f'{kind} in version "{version}" cannot be handled as a {kind}: {self}'


def parse_directive(value: str | None) -> str:
    """The ``fieldValidation`` query parameter; absent or empty means Warn."""
    if not value:
        return WARN
    if value not in DIRECTIVES:
        raise InvalidDirective(f'fieldValidation: Unsupported value: "{value}": supported '
                               f'values: "Ignore", "Strict", "Warn"')
    return value


def warning_header(warning: str) -> str:
    """A ``Warning`` header value as Kubernetes writes it: ``299 - "<quoted text>"``."""
    quoted = warning.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted}"'


# ---- paths ----


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


# ---- duplicates, from the raw JSON ----


class _Pairs(dict):
    """A JSON object as parsed, remembering the keys it saw more than once."""

    duplicates: list[str]


def _object_hook(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value  # the last one wins, as in Go's decoder
    return obj


def _plain(value: Any, path: str, found: list[str]) -> Any:
    """``value`` as plain dicts and lists, collecting duplicate fields' paths."""
    if isinstance(value, _Pairs):
        found.extend(f'duplicate field "{_child(path, k)}"' for k in value.duplicates)
        return {k: _plain(v, _child(path, k), found) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, _index(path, i), found) for i, v in enumerate(value)]
    return value


def load_json(raw: bytes | str) -> tuple[Any, list[str]]:
    """Parse a request body; also return its duplicate fields (``duplicate field "x"``)."""
    try:
        parsed = json.loads(raw, object_pairs_hook=_object_hook)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedJSON(f"the body is not valid JSON: {e}") from None
    found: list[str] = []
    return _plain(parsed, "", found), found


# ---- unknown fields, against the schema ----


@dataclass
class _Walk:
    """One pass over a body: collects unknown fields' paths and prunes them."""

    table: Mapping[str, Mapping[str, Any]]
    unknown: list[str] = field(default_factory=list)

    def value(self, value: Any, schema: Mapping[str, Any] | None, path: str) -> Any:
        schema = openapi.resolve(schema, self.table)
        if schema is None:
            return value
        if isinstance(value, dict):
            return self.object(value, schema, path)
        if isinstance(value, list) and "items" in schema:
            return [self.value(v, schema["items"], _index(path, i)) for i, v in enumerate(value)]
        return value

    def object(self, value: dict[str, Any], schema: Mapping[str, Any], path: str) -> Any:
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None:
            if isinstance(extra, Mapping):
                return {k: self.value(v, extra, _child(path, k)) for k, v in value.items()}
            return value  # an open object (RawExtension, Patch): anything goes
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in props:
                kept[key] = self.value(item, props[key], _child(path, key))
            else:
                self.unknown.append(f'unknown field "{_child(path, key)}"')
        return kept


def unknown_fields(body: Any, schema: Mapping[str, Any]) -> list[str]:
    """``unknown field "<path>"`` for each field of ``body`` its schema lacks."""
    walk = _Walk(openapi.schemas())
    walk.value(body, schema, "")
    return walk.unknown


def _schema_of(target: Kind | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(target, Kind):
        return openapi.schema_for_kind(target)
    if isinstance(target, str):
        return openapi.schemas()[target]
    return target


def validate(body: Any, target: Kind | str | Mapping[str, Any], directive: str, *,
             duplicates: Sequence[str] = ()) -> tuple[Any, list[str]]:
    """Check ``body`` against a kind (or a schema, or a schema's name).

    Returns the body without its unknown fields and the warnings to send (none under
    Ignore); raises :class:`StrictDecodingError` under Strict when there is any
    unknown or duplicate field. ``duplicates`` are :func:`load_json`'s findings.
    """
    directive = parse_directive(directive)
    walk = _Walk(openapi.schemas())
    cleaned = walk.value(body, _schema_of(target), "")
    problems = [*walk.unknown, *duplicates]
    if problems and directive == STRICT:
        raise StrictDecodingError(problems)
    return cleaned, (problems if directive == WARN else [])


def check_body(raw: bytes | str, target: Kind | str | Mapping[str, Any],
               directive: str) -> tuple[Any, list[str]]:
    """:func:`load_json` then :func:`validate`: a raw JSON request body, checked."""
    body, duplicates = load_json(raw)
    return validate(body, target, directive, duplicates=duplicates)


def patch_and_validate(content_type: str, original: Mapping[str, Any], body: bytes | str,
                       kind: Kind, directive: str) -> tuple[Any, list[str]]:
    """Apply a PATCH body (``patch.apply_patch``) and check the result like a body.

    The original (stored, so known fields only) plus the patch: what is unknown in the
    result came with the patch. Duplicates are looked for in merge and strategic merge
    patch bodies, whose shape is the object's. Raises ``patch.PatchError`` for a patch
    that does not apply and :class:`StrictDecodingError` under Strict (Kubernetes
    answers that one with 422 Invalid for a strategic merge patch, 400 otherwise).
    """
    directive = parse_directive(directive)
    media = content_type.split(";", 1)[0].strip().lower()
    duplicates: list[str] = []
    if directive != IGNORE and media in (patch.MERGE_PATCH, patch.STRATEGIC_MERGE_PATCH):
        try:
            _, duplicates = load_json(body)
        except MalformedJSON:
            pass  # apply_patch below answers it, as a 400 PatchError
    patched = patch.apply_patch(content_type, original, body, kind)
    return validate(patched, kind, directive, duplicates=duplicates)
