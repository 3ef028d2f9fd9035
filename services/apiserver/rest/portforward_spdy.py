"""kubectl's port-forward: SPDY/3.1 streams tunnelled in a WebSocket
(``SPDY/3.1+portforward.k8s.io``), each data stream relayed through the kubelet's
``PortForward`` call. Framing is :mod:`services.apiserver.rest.spdy`.

Per local connection kubectl opens an error stream and a data stream sharing a
``requestid``; the kubelet call starts with the data stream. The pod's bytes go back on
the data stream; a failure (e.g. nothing listens on the port) goes as text on the error
stream, which kubectl prints as "an error occurred forwarding L -> R: ...". Both end
with FIN when the call does; a RST_STREAM from kubectl (it resets the data stream once
its side is done) cancels the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from services.apiserver.rest import spdy
from services.apiserver.rest.kubelets import write
from skiff.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from skiff.logging import get_logger

log = get_logger("apiserver.rest.portforward")

@dataclass
class _Session:
    """One tunnelled SPDY connection."""

    ws: web.WebSocketResponse
    stub: kubelet_pb2_grpc.KubeletStub
    namespace: str
    pod: str
    encoder: spdy.HeaderEncoder = field(default_factory=spdy.HeaderEncoder)
    decoder: spdy.HeaderDecoder = field(default_factory=spdy.HeaderDecoder)
    error_streams: dict[str, int] = field(default_factory=dict)  # requestid -> stream
    calls: dict[int, Any] = field(default_factory=dict)          # data stream -> call
    relays: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    last_stream: int = 0

    async def send(self, frame: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(frame)

    async def handle(self, frame: spdy.Frame) -> bool:
        """Act on one frame; False when the client is going away."""
        if not frame.control:
            call = self.calls.get(frame.stream_id)
            if call is not None:
                if frame.payload:
                    await write(call, kubelet_pb2.PortForwardInput(data=frame.payload))
                if frame.fin:
                    await write(call, kubelet_pb2.PortForwardInput(close_write=True))
        elif frame.kind == spdy.SYN_STREAM:
            await self.open(frame)
        elif frame.kind == spdy.HEADERS:
            self.decoder.decode(spdy.header_block(frame))  # keeps the zlib stream in step
        elif frame.kind == spdy.RST_STREAM:
            relay = self.relays.get(frame.stream_id)
            if relay is not None:
                relay.cancel()
        elif frame.kind == spdy.PING:
            await self.send(spdy.ping(frame))
        elif frame.kind == spdy.GOAWAY:
            return False
        return True

    async def open(self, frame: spdy.Frame) -> None:
        headers = self.decoder.decode(spdy.header_block(frame))
        stream = frame.stream_id
        self.last_stream = max(self.last_stream, stream)
        await self.send(spdy.syn_reply(stream, self.encoder.encode({})))
        kind, request = headers.get("streamtype", ""), headers.get("requestid", "")
        if kind == "error":
            self.error_streams[request] = stream
            return
        if kind != "data":
            await self.send(spdy.rst_stream(stream, spdy.PROTOCOL_ERROR))
            return
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            await self.fail(stream, request, f"port: {headers.get('port')!r} is not a port")
            return
        call = self.stub.PortForward()
        self.calls[stream] = call
        await write(call, kubelet_pb2.PortForwardInput(start=kubelet_pb2.PortForwardStart(
            namespace=self.namespace, pod=self.pod, port=port)))
        self.relays[stream] = asyncio.create_task(self.relay(stream, request, call))

    async def fail(self, stream: int, request: str, message: str) -> None:
        errors = self.error_streams.get(request)
        if errors is not None:
            await self.send(spdy.data(errors, message.encode(), fin=True))
        await self.send(spdy.data(stream, b"", fin=True))

    async def relay(self, stream: int, request: str, call: Any) -> None:
        message = ""
        try:
            async for output in call:
                await self.send(spdy.data(stream, output.data))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                message = e.details() or str(e.code())
        except asyncio.CancelledError:
            call.cancel()
            return  # reset by the client: nothing more to say on this stream
        finally:
            self.calls.pop(stream, None)
        errors = self.error_streams.pop(request, None)
        if errors is not None:
            await self.send(spdy.data(errors, message.encode(), fin=True))
        await self.send(spdy.data(stream, b"", fin=True))


async def serve(ws: web.WebSocketResponse, stub: kubelet_pb2_grpc.KubeletStub,
                namespace: str, pod: str) -> None:
    """Run the tunnelled SPDY connection until the client goes away."""
    session = _Session(ws, stub, namespace, pod)
    reader = spdy.FrameReader()
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            going = True
            for frame in reader.feed(message.data):
                going = await session.handle(frame) and going
            if not going:
                break
    except spdy.ProtocolError as e:
        log.info("port-forward: bad SPDY from the client", error=str(e))
        await session.send(spdy.goaway(session.last_stream))
    finally:
        for task in session.relays.values():
            task.cancel()
        await asyncio.gather(*session.relays.values(), return_exceptions=True)
