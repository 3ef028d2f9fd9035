"""What the REST edge's handlers share: the target a path names and JSON responses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from skiff.api.kinds import Kind


@dataclass(frozen=True)
class Target:
    """What a resource path names: the kind, namespace ("" for all or cluster-scoped),
    name and subresource ("" when absent)."""

    kind: Kind
    namespace: str
    name: str
    subresource: str


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None
            ) -> web.Response:
    """``body`` (a document, or JSON already encoded) as a JSON response."""
    data = body if isinstance(body, bytes) else dumps(body)
    return web.Response(body=data, status=status, content_type="application/json",
                        headers=headers)
