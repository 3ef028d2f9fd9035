"""SPDY/3.1 framing, as much as kubectl's port-forward needs of a server (pure).

kubectl 1.31+ port-forwards over a WebSocket with subprotocol
``SPDY/3.1+portforward.k8s.io``: the WebSocket's binary messages carry a SPDY/3.1
connection (client-go's TunnelingConnection; Go's moby/spdystream on the client side).
Per local connection the client opens two streams (SYN_STREAM) with headers
``streamtype`` (``error`` then ``data``), ``port`` and ``requestid``, waits for each
SYN_REPLY, then sends DATA on the data stream; a FIN flag half-closes. The server sends
the pod's bytes as DATA on the data stream and an error, if any, as text on the error
stream, each ended with FIN. PINGs from the client are echoed.

Frames (SPDY draft 3): control frames start with the bit C=1, version 3, a type, flags
and a 24-bit length; data frames with C=0 and a 31-bit stream id. Header blocks are
zlib-compressed, one stream per direction for the whole connection, with the draft's
dictionary; each block ends with a sync flush.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN = 0x01
#: RST_STREAM status codes used here.
PROTOCOL_ERROR, CANCEL = 1, 5
MAX_FRAME = 2**24 - 1

_WORDS = [*(
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status").split(), "200 OK", *(
    "version HTTP/1.1 url public set-cookie keep-alive origin").split()]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
#: The header compression dictionary of SPDY draft 3 (§2.6.10.1), 1423 bytes: each
#: word behind its 4-byte length, then the tail as is.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + \
    _TAIL.encode()


class ProtocolError(ValueError):
    """Bytes that are not SPDY/3 frames, or a header block that does not decode."""


@dataclass(frozen=True)
class Frame:
    """One frame: a control frame (``kind`` its type) or data (``kind`` 0)."""

    control: bool
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class FrameReader:
    """Frames out of a byte stream fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer.extend(data)
        frames = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            frames.append(_frame(first, second >> 24, payload))
        return frames


def _frame(first: int, flags: int, payload: bytes) -> Frame:
    if not first & 0x80000000:
        return Frame(False, 0, flags, first & 0x7FFFFFFF, payload)
    version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
    if version != VERSION:
        raise ProtocolError(f"SPDY version {version}, not {VERSION}")
    stream_id = 0
    if kind in (SYN_STREAM, SYN_REPLY, RST_STREAM, HEADERS, WINDOW_UPDATE):
        if len(payload) < 4:
            raise ProtocolError(f"control frame {kind}: too short")
        stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
    return Frame(True, kind, flags, stream_id, payload)


def header_block(frame: Frame) -> bytes:
    """The compressed header block of a SYN_STREAM, SYN_REPLY or HEADERS frame."""
    return frame.payload[10:] if frame.kind == SYN_STREAM else frame.payload[4:]


class HeaderDecoder:
    """The client-to-server header compression stream."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def decode(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from None
        return parse_headers(raw)


class HeaderEncoder:
    """The server-to-client header compression stream."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    def encode(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v.encode()))
            + v.encode() for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


def parse_headers(raw: bytes) -> dict[str, str]:
    """An uncompressed header block: a count, then length-prefixed names and values
    (several values of one name joined by NUL; the first is kept)."""
    try:
        (count,), offset = struct.unpack_from(">I", raw), 4
        headers = {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", raw, offset)
            name = raw[offset + 4:offset + 4 + size].decode()
            offset += 4 + size
            (size,) = struct.unpack_from(">I", raw, offset)
            value = raw[offset + 4:offset + 4 + size].decode()
            offset += 4 + size
            headers[name.lower()] = value.split("\x00")[0]
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"header block: {e}") from None
    return headers


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def syn_reply(stream_id: int, block: bytes) -> bytes:
    return _control(SYN_REPLY, 0, struct.pack(">I", stream_id) + block)


def data(stream_id: int, payload: bytes, *, fin: bool = False) -> bytes:
    """DATA frames for ``payload`` (split at the frame limit); an empty one with FIN."""
    frames, start = [], 0
    while True:
        piece = payload[start:start + MAX_FRAME]
        start += len(piece)
        last = start >= len(payload)
        flags = FLAG_FIN if fin and last else 0
        frames.append(struct.pack(">II", stream_id, (flags << 24) | len(piece)) + piece)
        if last:
            return b"".join(frames)


def rst_stream(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def goaway(last_stream_id: int) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream_id, 0))


def ping(frame: Frame) -> bytes:
    """The echo of a PING."""
    return _control(PING, 0, frame.payload[:4])
