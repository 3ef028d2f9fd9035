"""SPDY/3.1 framing for kubectl's port-forward tunnel (pure)."""

from __future__ import annotations

import struct
import zlib

import pytest

from services.apiserver.rest import spdy


def _syn_stream(stream_id: int, block: bytes, flags: int = 0) -> bytes:
    payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + block
    return struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, (flags << 24) | len(payload)) + \
        payload


def _client_block(deflate, headers: dict[str, str]) -> bytes:
    raw = struct.pack(">I", len(headers)) + b"".join(
        struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        for k, v in headers.items())
    return deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)


def test_the_dictionary_is_the_drafts():
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


def test_frames_split_anywhere_and_headers_share_one_zlib_stream():
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    wire = b"".join(_syn_stream(sid, _client_block(deflate, {
        "streamtype": kind, "port": "8080", "requestid": "0"}))
        for sid, kind in ((1, "error"), (3, "data")))
    wire += spdy.data(3, b"GET /", fin=True)
    reader, decoder, frames = spdy.FrameReader(), spdy.HeaderDecoder(), []
    for i in range(0, len(wire), 7):  # fed in small pieces
        frames += reader.feed(wire[i:i + 7])
    assert [(f.control, f.kind, f.stream_id) for f in frames] == [
        (True, spdy.SYN_STREAM, 1), (True, spdy.SYN_STREAM, 3), (False, 0, 3)]
    headers = [decoder.decode(spdy.header_block(f)) for f in frames[:2]]
    assert [h["streamtype"] for h in headers] == ["error", "data"]
    assert headers[1] == {"streamtype": "data", "port": "8080", "requestid": "0"}
    assert frames[2].payload == b"GET /" and frames[2].fin


def test_replies_decode_on_the_client_side():
    encoder = spdy.HeaderEncoder()
    inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
    for stream in (1, 3):
        [frame] = spdy.FrameReader().feed(spdy.syn_reply(stream, encoder.encode({})))
        assert (frame.kind, frame.stream_id) == (spdy.SYN_REPLY, stream)
        assert inflate.decompress(frame.payload[4:]) == b"\x00\x00\x00\x00"


def test_ping_echo_rst_goaway_and_empty_fin():
    [ping] = spdy.FrameReader().feed(struct.pack(">HHII", 0x8003, spdy.PING, 4, 7))
    assert spdy.ping(ping) == struct.pack(">HHII", 0x8003, spdy.PING, 4, 7)
    [rst] = spdy.FrameReader().feed(spdy.rst_stream(5, spdy.CANCEL))
    assert (rst.kind, rst.stream_id, rst.payload[4:]) == (spdy.RST_STREAM, 5,
                                                          b"\x00\x00\x00\x05")
    assert spdy.goaway(3)[:4] == b"\x80\x03\x00\x07"
    [fin] = spdy.FrameReader().feed(spdy.data(9, b"", fin=True))
    assert (fin.control, fin.stream_id, fin.payload, fin.fin) == (False, 9, b"", True)


def test_bad_input_is_a_protocol_error():
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        spdy.FrameReader().feed(struct.pack(">HHII", 0x8002, spdy.PING, 4, 1))
    with pytest.raises(spdy.ProtocolError, match="header block"):
        spdy.HeaderDecoder().decode(b"not zlib")
