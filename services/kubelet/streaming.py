"""The kubelet's streaming calls: interactive exec, attach and port-forward.

What Kubernetes' kubelet serves over SPDY/WebSocket at ``/exec``, ``/attach`` and
``/portForward``, here as bidirectional gRPC streams (``ExecStream``, ``Attach``,
``PortForward``). The first client message says what to open; then stdin chunks,
terminal resizes and a stdin close flow in while output flows back.

Exec and attach ride Docker's hijacked connection (aiodocker's ``Stream``): without a
TTY Docker multiplexes stdout and stderr on it, with one it is the raw terminal. A stdin
close half-closes that connection, which Docker turns into end of file on the process's
stdin (what ``docker exec -i`` does). Exec ends with the process's exit status, which
Docker may record a moment after the output ends (hence polling ``inspect``).

Port-forward opens a TCP connection from the node to pod IP:port (reachable from the
host with both network plugins) and relays bytes both ways; ``close_write`` half-closes
toward the pod, and the call ends when the pod closes its side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiodocker
import grpc
from aiodocker.stream import Stream

from skiff.api import errors
from skiff.api.v1 import core_pb2
from skiff.kubelet.v1 import kubelet_pb2
from skiff.logging import get_logger

log = get_logger("kubelet.streaming")

#: Bytes read from a pod's port per message.
CHUNK_BYTES = 32 * 1024
#: Seconds to connect to a pod's port before giving up.
CONNECT_TIMEOUT = 5.0

Resize = Callable[[int, int], Awaitable[None]]


class ForwardFailed(errors.APIError):
    """The pod's port refused or did not answer (Kubernetes: "error forwarding port")."""

    code = grpc.StatusCode.FAILED_PRECONDITION


async def first_message(inputs: AsyncIterator[Any], field: str) -> Any:
    """The call's opening message, which must set ``start`` (BadRequest otherwise)."""
    try:
        first = await anext(inputs)
    except StopAsyncIteration:
        raise errors.BadRequest(f"{field}: the first message must open the stream") from None
    if first.WhichOneof("input") != "start":
        raise errors.BadRequest(f"{field}: the first message must be 'start'")
    return first.start


def validate_start(start: kubelet_pb2.StreamStart, *, needs_command: bool) -> None:
    """Check a StreamStart's fields (pure): a command for exec, at least one stream."""
    if needs_command and not start.command:
        raise errors.BadRequest("command: at least one word is required")
    if not (start.stdin or start.stdout or start.stderr):
        raise errors.BadRequest("stdin: at least one of stdin, stdout and stderr must be "
                                "true")
    if start.tty and start.stderr:
        # Kubernetes: with a terminal stderr is merged into stdout.
        raise errors.BadRequest("stderr: cannot be true when tty is (a terminal merges "
                                "it into stdout)")


def _half_close(stream: Stream) -> None:
    """End of file on the process's stdin: shut the write side of Docker's connection."""
    response = stream._resp
    transport = response.connection.transport if response and response.connection else None
    if transport is not None and transport.can_write_eof():
        transport.write_eof()


async def _pump_input(inputs: AsyncIterator[kubelet_pb2.StreamInput], stream: Stream,
                      resize: Resize, *, stdin: bool) -> None:
    """Client messages into the process: stdin bytes, resizes, stdin close."""
    async for message in inputs:
        kind = message.WhichOneof("input")
        if kind == "stdin" and stdin:
            await stream.write_in(message.stdin)
        elif kind == "resize" and message.resize.width and message.resize.height:
            try:
                await resize(message.resize.width, message.resize.height)
            except aiodocker.DockerError as e:  # e.g. the process just ended
                log.debug("resize failed", error=e.message)
        elif kind == "close_stdin":
            _half_close(stream)
    # The client finished sending: with stdin that is end of file too.
    if stdin:
        _half_close(stream)


async def _relay_output(stream: Stream, inputs: AsyncIterator[kubelet_pb2.StreamInput],
                        resize: Resize, *, stdin: bool,
                        ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
    """The process's output as StreamOutput messages, while a task feeds its input."""
    pump = asyncio.create_task(_pump_input(inputs, stream, resize, stdin=stdin))
    try:
        while (message := await stream.read_out()) is not None:
            if message.stream == 2:
                yield kubelet_pb2.StreamOutput(stderr=message.data)
            else:
                yield kubelet_pb2.StreamOutput(stdout=message.data)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def _exit_code(inspect: Callable[[], Awaitable[dict[str, Any]]],
                     running: Callable[[dict[str, Any]], bool],
                     code: Callable[[dict[str, Any]], int]) -> int | None:
    """Poll until Docker says the process ended (at most ~5 s); its exit code, or None."""
    for _ in range(500):
        info = await inspect()
        if not running(info):
            return code(info)
        await asyncio.sleep(0.01)
    return None


async def exec_stream(docker: aiodocker.Docker, container_id: str,
                      start: kubelet_pb2.StreamStart,
                      inputs: AsyncIterator[kubelet_pb2.StreamInput],
                      ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
    """Run ``start.command`` in the container, streaming; ends with its exit status."""
    container = docker.containers.container(container_id)
    execution = await container.exec(list(start.command), stdin=start.stdin,
                                     stdout=start.stdout, stderr=start.stderr,
                                     tty=start.tty)

    async def resize(width: int, height: int) -> None:
        await execution.resize(w=width, h=height)

    async with execution.start(detach=False) as stream:
        async for output in _relay_output(stream, inputs, resize, stdin=start.stdin):
            yield output
    code = await _exit_code(execution.inspect, lambda i: bool(i.get("Running")),
                            lambda i: int(i.get("ExitCode") or 0))
    yield kubelet_pb2.StreamOutput(exit=kubelet_pb2.ExitStatus(exit_code=code or 0))


async def attach_stream(docker: aiodocker.Docker, container_id: str,
                        start: kubelet_pb2.StreamStart,
                        inputs: AsyncIterator[kubelet_pb2.StreamInput],
                        ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
    """Join the container's main process; ends with its exit status if it ended."""
    container = docker.containers.container(container_id)

    async def resize(width: int, height: int) -> None:
        await container.resize(w=width, h=height)

    stream = container.attach(stdin=start.stdin, stdout=start.stdout, stderr=start.stderr)
    async with stream:
        async for output in _relay_output(stream, inputs, resize, stdin=start.stdin):
            yield output

    async def inspect() -> dict[str, Any]:
        return await container.show()

    code = await _exit_code(inspect, lambda i: bool((i.get("State") or {}).get("Running")),
                            lambda i: int((i.get("State") or {}).get("ExitCode") or 0))
    if code is not None:
        yield kubelet_pb2.StreamOutput(exit=kubelet_pb2.ExitStatus(exit_code=code))


def forward_target(pod: core_pb2.Pod, port: int) -> tuple[str, int]:
    """(pod IP, port) a port-forward connects to (pure); BadRequest/ForwardFailed."""
    if not 0 < port < 65536:
        raise errors.BadRequest(f"port: {port} is not a valid port (1-65535)")
    if not pod.status.pod_ip:
        raise ForwardFailed(f'pod "{pod.metadata.name}" has no IP yet')
    return pod.status.pod_ip, port


async def _pump_to_pod(inputs: AsyncIterator[kubelet_pb2.PortForwardInput],
                       writer: asyncio.StreamWriter) -> None:
    async for message in inputs:
        kind = message.WhichOneof("input")
        if kind == "data":
            writer.write(message.data)
            await writer.drain()
        elif kind == "close_write":
            break
    if writer.can_write_eof():
        writer.write_eof()


async def port_forward(pod: core_pb2.Pod, port: int,
                       inputs: AsyncIterator[kubelet_pb2.PortForwardInput],
                       ) -> AsyncIterator[kubelet_pb2.PortForwardOutput]:
    """Relay between the client and pod IP:port until the pod closes its side."""
    host, port = forward_target(pod, port)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as e:
        raise ForwardFailed(f'error forwarding port {port} to pod "{pod.metadata.name}" '
                            f"({host}): {e or 'timed out'}") from None
    pump = asyncio.create_task(_pump_to_pod(inputs, writer))
    try:
        while data := await reader.read(CHUNK_BYTES):
            yield kubelet_pb2.PortForwardOutput(data=data)
    except ConnectionError as e:
        log.debug("port-forward: pod side reset", pod=pod.metadata.name, error=str(e))
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
