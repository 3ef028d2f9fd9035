"""WATCH over HTTP: a chunked response of JSON lines ``{"type": ..., "object": ...}``.

The events are the registry's (the same watch the gRPC edge serves): a synthetic ADDED
per object when the watch starts at resourceVersion "0" or none, BOOKMARKs when asked
(``allowWatchBookmarks``), DELETED when an object stops matching the selector. A
resourceVersion older than the watch cache reaches answers 200 and then one ERROR event
carrying a 410 ``Expired`` Status, as Kubernetes does, so clients re-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from services.apiserver.registry import Registry
from services.apiserver.rest import codec, translate
from services.apiserver.rest.common import dumps
from services.apiserver.rest.request import list_options, wants_table
from services.apiserver.rest.status import from_error
from skiff.api import errors
from skiff.api.kinds import Kind
from skiff.logging import get_logger

log = get_logger("apiserver.rest.watch")


def event_line(kind: Kind, event_type: str, obj: Any) -> bytes:
    """One watch event as its JSON line (the object's JSON from the codec's cache: every
    watcher of a change sends the same bytes)."""
    if event_type == "BOOKMARK":
        body = dumps({"apiVersion": kind.api_version, "kind": kind.kind,
                      "metadata": {"resourceVersion": obj.metadata.resource_version}})
    else:
        body = codec.encode_json(obj, kind)
    return b'{"type":"' + event_type.encode() + b'","object":' + body + b"}\n"


async def serve_watch(request: web.Request, registry: Registry,
                      namespace: str) -> web.StreamResponse:
    """Stream the registry's watch events until the client goes, the watch's
    ``timeoutSeconds`` pass, or the server ends it."""
    table = wants_table(request.headers.get("Accept", ""))
    options = list_options(request.query, namespace)
    kind = registry.kind
    events = _Events(registry.watch(options))
    deadline = (time.monotonic() + options.timeout_seconds
                if options.timeout_seconds > 0 else None)
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "application/json", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    try:
        # A moment for the first event before the headers go, so a request the
        # registry refuses (a bad selector) still answers with its status code; Gone
        # is an ERROR event after a 200, as Kubernetes sends it.
        try:
            first = await events.next(FIRST_EVENT_WAIT)
        except errors.Gone as e:
            await response.prepare(request)
            await response.write(dumps({"type": "ERROR", "object": from_error(e)}) + b"\n")
            await response.write_eof()
            return response
        await response.prepare(request)
        headers_sent = False  # a Table's column definitions go with its first event only
        if first is not None:
            headers_sent = await _send(response, request, kind, first, table,
                                       headers_sent)
        while True:
            if deadline is not None and deadline <= time.monotonic():
                break
            data = await events.until(deadline)
            if data is None:
                if events.finished:
                    break
                continue
            headers_sent = await _send(response, request, kind, data, table,
                                       headers_sent)
    except errors.APIError as e:
        if not response.prepared:
            raise
        await response.write(dumps({"type": "ERROR", "object": from_error(e)}) + b"\n")
    except ConnectionResetError:
        log.debug("watcher went away", kind=kind.kind)
        return response
    finally:
        await events.close()
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


#: Seconds a watch waits for its first event before sending the headers.
FIRST_EVENT_WAIT = 0.05


def _loop_time(deadline: float) -> float:
    """A time.monotonic() deadline on the loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


class _Events:
    """A registry watch read with timeouts that do not end it (cancelling an async
    generator's ``__anext__`` would): the pending read is kept for the next call."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events
        self._pending: asyncio.Future[bytes] | None = None
        self.finished = False

    async def next(self, timeout: float | None) -> bytes | None:
        """The next event, or None if none came within ``timeout`` (or the watch
        ended: then :attr:`finished`). A read cut short stays pending for the next
        call (the first event's short wait)."""
        if self.finished:
            return None
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._events.__anext__())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        pending, self._pending = self._pending, None
        try:
            return pending.result()
        except StopAsyncIteration:
            self.finished = True
            return None

    async def until(self, deadline: float | None) -> bytes | None:
        """The next event before ``deadline`` (monotonic; None: no limit), reading the
        watch directly (no task per event); at the deadline the watch ends, so a
        read cut short there may end the registry's iterator."""
        if self._pending is not None or self.finished:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await self.next(remaining)
        try:
            if deadline is None:
                return await self._events.__anext__()
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await self._events.__anext__()
        except (StopAsyncIteration, TimeoutError):
            self.finished = True
            return None

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await self._pending
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _send(response: web.StreamResponse, request: web.Request, kind: Kind,
                data: bytes, table: bool, headers_sent: bool) -> bool:
    """Write one event; returns whether a Table's column definitions have been sent."""
    if not table:
        await response.write(_cached_line(kind, data))
        return headers_sent
    event = kind.watch_event.FromString(data)
    event_type, obj = event.type, event.object  # type: ignore[attr-defined]
    if table and event_type != "BOOKMARK":
        rows = translate.to_table(kind, [codec.encode(obj, kind)],
                                  {"resourceVersion": obj.metadata.resource_version},
                                  request.query.get("includeObject"),
                                  no_headers=headers_sent)
        line = dumps({"type": event_type, "object": rows}) + b"\n"
        headers_sent = True
    else:
        line = event_line(kind, event_type, obj)
    await response.write(line)
    return headers_sent


#: The JSON line of each recent event, by the registry's serialized event: every
#: watcher of a change gets the same bytes object, so the line is made once.
LINE_CACHE_SIZE = 4096
_lines: dict[tuple[str, bytes], bytes] = {}


def _cached_line(kind: Kind, data: bytes) -> bytes:
    key = (kind.kind, data)
    line = _lines.get(key)
    if line is None:
        event = kind.watch_event.FromString(data)
        line = event_line(kind, event.type, event.object)  # type: ignore[attr-defined]
        _lines[key] = line
        while len(_lines) > LINE_CACHE_SIZE:
            del _lines[next(iter(_lines))]
    return line
