"""Kubernetes' WebSocket channel protocols (pure): framing, the error channel's Status,
resize messages, port-forward's port prefix.

Every WebSocket message carries one channel's bytes behind a channel byte: for exec and
attach 0 stdin, 1 stdout, 2 stderr, 3 error (a metav1.Status, written once, last), 4
resize (``{"Width": w, "Height": h}``); ``v5.channel.k8s.io`` adds 255, whose payload
names a channel its sender will not write again (stdin's end of file). The base64
variants send text messages: the channel as an ASCII digit, then base64 of the bytes.
Port-forward numbers channels per requested port i: 2i data, 2i+1 errors, and the
server's first message on each carries the port as 2 little-endian bytes.
(Sources: k8s.io/apimachinery pkg/util/httpstream/wsstream, kubelet's
cri/streaming/remotecommand and portforward/websocket.go.)
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
#: v5: "I will not write channel <payload[0]> any more".
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
PORT_FORWARD = "portforward.k8s.io"
#: kubectl 1.31+: SPDY/3.1 tunnelled in the WebSocket (services.apiserver.rest.spdy).
SPDY_PORT_FORWARD = "SPDY/3.1+portforward.k8s.io"

#: What exec and attach speak, best first (a client's own order decides among them).
EXEC_PROTOCOLS = (V5, V4, V4_BASE64)
#: Port-forward's protocols: WebSocket channels, or SPDY tunnelled in the WebSocket.
PORT_FORWARD_PROTOCOLS = (SPDY_PORT_FORWARD, V4, V4_BASE64, PORT_FORWARD, V1, V1_BASE64)


class FrameError(ValueError):
    """A message that is not a channel frame (empty, or bad base64)."""


def is_base64(protocol: str) -> bool:
    return "base64" in protocol


@dataclass(frozen=True)
class Codec:
    """Channel frames of one negotiated subprotocol."""

    protocol: str

    @property
    def base64(self) -> bool:
        return is_base64(self.protocol)

    @property
    def closes(self) -> bool:
        """Whether the protocol has the close signal (channel 255)."""
        return self.protocol == V5

    def encode(self, channel: int, data: bytes) -> bytes | str:
        """One message: bytes for binary protocols, text for base64 ones."""
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(data).decode()
        return bytes((channel,)) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        """(channel, data) of one received message."""
        if not message:
            raise FrameError("empty message: no channel byte")
        if isinstance(message, str) and not self.base64:
            # Binary protocols accept text messages too (the Python client sends stdin
            # as text): the channel is the first character's code.
            message = message.encode()
        if isinstance(message, str):
            channel = ord(message[0]) - ord("0")
            try:
                return channel, base64.b64decode(message[1:], validate=True)
            except ValueError as e:
                raise FrameError(f"channel {channel}: bad base64: {e}") from None
        return message[0], bytes(message[1:])


def exit_status(exit_code: int) -> dict[str, Any]:
    """The error channel's metav1.Status for a process that exited (kubelet's form)."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status "
                       f"{exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}


def failure_status(message: str, reason: str = "InternalError",
                   code: int = 500) -> dict[str, Any]:
    """The error channel's Status for a stream that failed."""
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason,
            "code": code}


def status_bytes(status: dict[str, Any]) -> bytes:
    return json.dumps(status, separators=(",", ":")).encode()


def parse_resize(data: bytes) -> tuple[int, int]:
    """(width, height) of a resize message ``{"Width": w, "Height": h}``."""
    try:
        size = json.loads(data)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError) as e:
        raise FrameError(f"resize: not {{\"Width\": w, \"Height\": h}}: {e}") from None
    if not (0 <= width < 65536 and 0 <= height < 65536):
        raise FrameError(f"resize: {width}x{height} is out of range")
    return width, height


def port_prefix(port: int) -> bytes:
    """The first payload of a port's channels: the port, 2 bytes little-endian."""
    return struct.pack("<H", port)


def parse_ports(values: list[str]) -> list[int]:
    """Port-forward's ``ports`` query values (repeated and/or comma-separated)."""
    ports: list[int] = []
    for value in values:
        for word in value.split(","):
            word = word.strip()
            try:
                port = int(word)
            except ValueError:
                raise ValueError(f"ports: {word!r} is not a port number") from None
            if not 0 < port < 65536:
                raise ValueError(f"ports: {port} is not a valid port (1-65535)")
            ports.append(port)
    if not ports:
        raise ValueError("ports: at least one port is required")
    return ports
