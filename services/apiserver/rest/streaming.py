"""``pods/exec``, ``pods/attach``, ``pods/portforward`` and ``pods/log`` of the REST
edge: Kubernetes' WebSocket channel protocols in front of the kubelet's gRPC streams.

The apiserver proxies these to the pod's kubelet as Kubernetes' does (there over
SPDY/WebSocket to :10250, here over the kubelet's ``ExecStream``, ``Attach``,
``PortForward`` and ``ContainerLogs`` calls). A request is checked and its kubelet found
before the upgrade, so a missing pod or a bad parameter is a plain HTTP Status; once
upgraded, exec and attach end with a Status on the error channel (exit code in
``details.causes``) and port-forward errors go, as text, on the port's error channel.
Framing is :mod:`services.apiserver.rest.channels`.

Mount with :func:`add_routes` before any catch-all route of the app (aiohttp matches
routes in the order they were added).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from services.apiserver.rest import channels, portforward_spdy
from services.apiserver.rest.channels import Codec
from services.apiserver.rest.kubelets import (
    KubeletConnector,
    http_status,
    status,
    status_of_api_error,
    status_of_rpc_error,
    write,
)
from skiff.api import errors
from skiff.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from skiff.logging import get_logger

log = get_logger("apiserver.rest.streaming")

#: Seconds pods/log waits for the first bytes before sending its headers anyway.
LOG_HEADERS_WAIT = 1.0

POD_PATH = "/api/v1/namespaces/{namespace}/pods/{name}"
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


# ---- query parameters (Go's strconv rules, as Kubernetes parses them) ----


def flag(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    """A boolean parameter; BadRequest naming it when it is not one (pure)."""
    value = query.get(name)
    if value is None or value == "":
        return default if value is None else True
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise errors.BadRequest(f"{name}: {value!r} is not a boolean")


def integer(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    """An integer parameter of at least ``minimum``, or None when absent (pure)."""
    value = query.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise errors.BadRequest(f"{name}: {value!r} is not an integer") from None
    if number < minimum:
        raise errors.BadRequest(f"{name}: must be {minimum} or more")
    return number


def stream_start(query: Any, namespace: str, pod: str, *,
                 attach: bool) -> kubelet_pb2.StreamStart:
    """The kubelet's StreamStart for an exec/attach request's query (pure)."""
    start = kubelet_pb2.StreamStart(
        namespace=namespace, pod=pod, container=query.get("container", ""),
        stdin=flag(query, "stdin"), stdout=flag(query, "stdout", default=True),
        stderr=flag(query, "stderr", default=True), tty=flag(query, "tty"))
    if not attach:
        start.command.extend(query.getall("command", []))
        if not start.command:
            raise errors.BadRequest("command: you must specify at least 1 command")
    if start.tty:
        start.stderr = False  # a terminal merges stderr into stdout (Kubernetes' rule)
    if not (start.stdin or start.stdout or start.stderr):
        raise errors.BadRequest("stdin: you must specify at least 1 of stdin, stdout, "
                                "stderr")
    return start


def logs_request(query: Any, namespace: str, pod: str,
                 now: datetime | None = None) -> tuple[kubelet_pb2.LogsRequest, int | None]:
    """The kubelet's LogsRequest for a pods/log query, and ``limitBytes`` (pure)."""
    request = kubelet_pb2.LogsRequest(
        namespace=namespace, pod=pod, container=query.get("container", ""),
        follow=flag(query, "follow"), timestamps=flag(query, "timestamps"),
        previous=flag(query, "previous"))
    tail = integer(query, "tailLines", 0)
    if tail is not None:
        request.tail_lines = tail
    since = integer(query, "sinceSeconds", 1)
    if query.get("sinceTime"):
        if since is not None:
            raise errors.BadRequest("sinceTime: at most one of sinceTime or sinceSeconds "
                                    "may be specified")
        try:
            at = datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
        except ValueError:
            raise errors.BadRequest(f"sinceTime: {query['sinceTime']!r} is not an RFC 3339 "
                                    "time") from None
        now = now or datetime.now(at.tzinfo)
        since = max(1, int((now - at).total_seconds()))
    if since is not None:
        request.since_seconds = since
    return request, integer(query, "limitBytes", 1)


# ---- sending ----


def _error(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=body.get("code", 500))


async def _send(ws: web.WebSocketResponse, codec: Codec, channel: int, data: bytes) -> None:
    frame = codec.encode(channel, data)
    if isinstance(frame, str):
        await ws.send_str(frame)
    else:
        await ws.send_bytes(frame)


async def _upgrade(request: web.Request, protocols: tuple[str, ...],
                   ) -> web.WebSocketResponse | web.Response:
    """The WebSocket, or a 400 Status when the request cannot upgrade to one of them."""
    ws = web.WebSocketResponse(protocols=protocols, autoping=True)
    ready = ws.can_prepare(request)
    if not ready.ok or not ready.protocol:
        return _error(status(400, "BadRequest",
                             "Upgrade request required: a WebSocket with one of the "
                             f"subprotocols {', '.join(protocols)} (plain SPDY upgrades are not "
                             "served)"))
    await ws.prepare(request)
    return ws


# ---- exec and attach ----


async def _read_client(ws: web.WebSocketResponse, codec: Codec,
                       call: Any) -> None:
    """Client frames into the kubelet call: stdin, resize, stdin close (v5)."""
    async for message in ws:
        if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            continue
        try:
            channel, data = codec.decode(message.data)
            if channel == channels.STDIN and data:
                await write(call, kubelet_pb2.StreamInput(stdin=data))
            elif channel == channels.RESIZE:
                width, height = channels.parse_resize(data)
                await write(call, kubelet_pb2.StreamInput(
                    resize=kubelet_pb2.TerminalSize(width=width, height=height)))
            elif channel == channels.CLOSE and codec.closes and data[:1] == b"\x00":
                await write(call, kubelet_pb2.StreamInput(close_stdin=True))
        except channels.FrameError as e:
            log.debug("bad frame from client", error=str(e))


async def _relay_output(call: Any, ws: web.WebSocketResponse, codec: Codec, *,
                        attach: bool) -> dict[str, Any] | None:
    """Kubelet output onto the WebSocket; the Status to end with (None: client gone)."""
    try:
        async for output in call:
            kind = output.WhichOneof("output")
            if kind == "stdout":
                await _send(ws, codec, channels.STDOUT, output.stdout)
            elif kind == "stderr":
                await _send(ws, codec, channels.STDERR, output.stderr)
            elif kind == "exit" and not attach:
                return channels.exit_status(output.exit.exit_code)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.CANCELLED:
            return None
        code, reason = http_status(e.code())
        return channels.failure_status(e.details() or str(e.code()), reason, code)
    except ConnectionError:
        return None
    return channels.exit_status(0)


async def _read_port_frames(
        ws: web.WebSocketResponse, codec: Codec,
        calls: list[Any]) -> None:
    """Client frames into each port's call: data channel 2i feeds port i (the error
    channels carry nothing from clients)."""
    async for message in ws:
        if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            continue
        try:
            channel, data = codec.decode(message.data)
        except channels.FrameError as e:
            log.debug("bad frame from client", error=str(e))
            continue
        index, is_error = divmod(channel, 2)
        if not is_error and index < len(calls) and data:
            await write(calls[index], kubelet_pb2.PortForwardInput(data=data))


async def _forward_port(call: Any, ws: web.WebSocketResponse, codec: Codec,
                        index: int) -> None:
    """One port's bytes from the kubelet onto its data channel; a failure as text on its
    error channel."""
    try:
        async for output in call:
            await _send(ws, codec, 2 * index, output.data)
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            with contextlib.suppress(ConnectionError):
                await _send(ws, codec, 2 * index + 1, (e.details() or "").encode())
    except ConnectionError:
        pass


class StreamingHandlers:
    """The handlers :func:`add_routes` mounts."""

    def __init__(self, connector: KubeletConnector) -> None:
        self._connector = connector

    async def _prelude(self, request: web.Request) -> tuple[str, str, str]:
        """(namespace, pod, kubelet address); API errors propagate."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        return namespace, name, await self._connector.pod_kubelet(namespace, name)

    async def exec(self, request: web.Request) -> web.StreamResponse:
        return await self._exec_or_attach(request, attach=False)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        return await self._exec_or_attach(request, attach=True)

    async def _exec_or_attach(self, request: web.Request, *,
                              attach: bool) -> web.StreamResponse:
        try:
            start = stream_start(request.query, request.match_info["namespace"],
                                 request.match_info["name"], attach=attach)
            _, _, address = await self._prelude(request)
        except errors.APIError as e:
            return _error(status_of_api_error(e))
        ws = await _upgrade(request, channels.EXEC_PROTOCOLS)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        codec = Codec(ws.ws_protocol or channels.V4)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = kubelet_pb2_grpc.KubeletStub(channel)
            call = (stub.Attach if attach else stub.ExecStream)()
            await write(call, kubelet_pb2.StreamInput(start=start))
            reader = asyncio.create_task(_read_client(ws, codec, call))
            # The client leaving ends the call (the kubelet then closes the process's
            # streams).
            reader.add_done_callback(lambda _: call.cancel())
            try:
                final = await _relay_output(call, ws, codec, attach=attach)
            finally:
                reader.cancel()
                call.cancel()
            if final is not None and not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await _send(ws, codec, channels.ERROR, channels.status_bytes(final))
        await ws.close()
        return ws

    # ---- port-forward ----

    async def portforward(self, request: web.Request) -> web.StreamResponse:
        # kubectl's SPDY tunnel names the ports in its streams, not in the query.
        offered = web.WebSocketResponse(protocols=channels.PORT_FORWARD_PROTOCOLS)
        tunnel = offered.can_prepare(request).protocol == channels.SPDY_PORT_FORWARD
        try:
            ports = [] if tunnel else channels.parse_ports(request.query.getall("ports", []))
        except ValueError as e:
            return _error(status(400, "BadRequest", str(e)))
        try:
            namespace, name, address = await self._prelude(request)
        except errors.APIError as e:
            return _error(status_of_api_error(e))
        ws = await _upgrade(request, channels.PORT_FORWARD_PROTOCOLS)
        if not isinstance(ws, web.WebSocketResponse):
            return ws
        if tunnel:
            async with grpc.aio.insecure_channel(address) as channel:
                await portforward_spdy.serve(ws, kubelet_pb2_grpc.KubeletStub(channel),
                                             namespace, name)
            await ws.close()
            return ws
        codec = Codec(ws.ws_protocol or channels.V4)
        for index, port in enumerate(ports):
            await _send(ws, codec, 2 * index, channels.port_prefix(port))
            await _send(ws, codec, 2 * index + 1, channels.port_prefix(port))
        async with grpc.aio.insecure_channel(address) as channel:
            stub = kubelet_pb2_grpc.KubeletStub(channel)
            calls = [stub.PortForward() for _ in ports]
            for call, port in zip(calls, ports, strict=True):
                await write(call, kubelet_pb2.PortForwardInput(start=kubelet_pb2.
                            PortForwardStart(namespace=namespace, pod=name, port=port)))
            relays = [asyncio.create_task(_forward_port(call, ws, codec, index))
                      for index, call in enumerate(calls)]
            reader = asyncio.create_task(_read_port_frames(ws, codec, calls))
            try:
                # Done when every port's connection closed, or the client left.
                await asyncio.wait([asyncio.gather(*relays), reader],
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (*relays, reader):
                    task.cancel()
                for call in calls:
                    call.cancel()
                await asyncio.gather(*relays, reader, return_exceptions=True)
        await ws.close()
        return ws

    # ---- logs ----

    async def logs(self, request: web.Request) -> web.StreamResponse:
        try:
            logs, limit = logs_request(request.query, request.match_info["namespace"],
                                       request.match_info["name"])
            _, _, address = await self._prelude(request)
        except errors.APIError as e:
            return _error(status_of_api_error(e))
        async with grpc.aio.insecure_channel(address) as channel:
            call = kubelet_pb2_grpc.KubeletStub(channel).ContainerLogs(logs)
            try:
                return await _stream_logs(request, call, limit, address)
            finally:
                call.cancel()


async def _stream_logs(request: web.Request, call: Any, limit: int | None,
                       address: str) -> web.StreamResponse:
    """The log bytes as a chunked text/plain body. Errors before any bytes (and within
    LOG_HEADERS_WAIT) are a Status; after, the body just ends."""
    first = asyncio.ensure_future(call.read())
    try:
        await asyncio.wait_for(asyncio.shield(first), LOG_HEADERS_WAIT)
    except TimeoutError:
        pass  # following a quiet container: send the headers, keep waiting
    except grpc.aio.AioRpcError as e:
        return _error(status_of_rpc_error(e, f"kubelet at {address}"))
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    left = limit
    try:
        chunk = await first
        while chunk is not grpc.aio.EOF:
            data = chunk.data if left is None else chunk.data[:left]
            await response.write(data)
            if left is not None:
                left -= len(data)
                if left <= 0:
                    break
            chunk = await call.read()
    except grpc.aio.AioRpcError as e:
        log.debug("logs ended by the kubelet", error=e.details())
    except ConnectionError:
        pass  # the client left
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def add_routes(app: web.Application, connector: KubeletConnector) -> StreamingHandlers:
    """Mount pods/exec, attach, portforward (GET and POST, WebSocket) and pods/log (GET)
    on ``app`` (whose middlewares authenticate)."""
    handlers = StreamingHandlers(connector)
    for method in ("GET", "POST"):
        app.router.add_route(method, f"{POD_PATH}/exec", handlers.exec)
        app.router.add_route(method, f"{POD_PATH}/attach", handlers.attach)
        app.router.add_route(method, f"{POD_PATH}/portforward", handlers.portforward)
    app.router.add_route("GET", f"{POD_PATH}/log", handlers.logs)
    return handlers
