"""Kubernetes' WebSocket channel framing and the streaming routes' query parsing (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from services.apiserver.rest import channels
from services.apiserver.rest.channels import Codec
from services.apiserver.rest.streaming import flag, logs_request, stream_start
from skiff.api import errors


def test_binary_frames_carry_the_channel_byte_first():
    codec = Codec(channels.V5)
    assert codec.encode(channels.STDOUT, b"hi") == b"\x01hi"
    assert codec.decode(b"\x00input") == (channels.STDIN, b"input")
    assert codec.decode(b"\xff\x00") == (channels.CLOSE, b"\x00")
    assert codec.closes and not Codec(channels.V4).closes


def test_binary_protocols_accept_text_frames():
    assert Codec(channels.V4).decode("\x00abc") == (0, b"abc")


def test_base64_frames_use_an_ascii_digit_and_base64():
    codec = Codec(channels.V4_BASE64)
    assert codec.encode(channels.STDERR, b"err") == "2ZXJy"
    assert codec.decode("0aGk=") == (channels.STDIN, b"hi")
    with pytest.raises(channels.FrameError, match="base64"):
        codec.decode("0!!")


def test_an_empty_frame_is_an_error():
    with pytest.raises(channels.FrameError, match="channel byte"):
        Codec(channels.V4).decode(b"")


def test_exit_status_success_and_non_zero():
    assert channels.exit_status(0) == {"metadata": {}, "status": "Success"}
    failure = channels.exit_status(3)
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads(channels.status_bytes(failure)) == failure


def test_resize_messages():
    assert channels.parse_resize(b'{"Width": 80, "Height": 24}') == (80, 24)
    for bad in (b"{}", b"nope", b'{"Width": -1, "Height": 2}'):
        with pytest.raises(channels.FrameError, match="resize"):
            channels.parse_resize(bad)


def test_port_prefix_is_two_bytes_little_endian():
    assert channels.port_prefix(8080) == bytes((0x90, 0x1F))


def test_ports_repeated_or_comma_separated():
    assert channels.parse_ports(["80,443", "8080"]) == [80, 443, 8080]
    for bad, word in ((["x"], "'x'"), (["0"], "0"), ([], "at least one")):
        with pytest.raises(ValueError, match=word):
            channels.parse_ports(bad)


def test_flags_parse_as_go_booleans_and_name_the_parameter():
    assert flag({"tty": "true"}, "tty") and flag({"tty": "1"}, "tty")
    assert not flag({"tty": "False"}, "tty") and not flag({}, "tty")
    assert flag({}, "stdout", default=True)
    with pytest.raises(errors.BadRequest, match="tty"):
        flag({"tty": "yes"}, "tty")


def test_stream_start_from_an_exec_query():
    query = MultiDict([("command", "sh"), ("command", "-c"), ("command", "ls"),
                       ("stdin", "true"), ("tty", "true"), ("container", "app")])
    start = stream_start(query, "ns", "web", attach=False)
    assert list(start.command) == ["sh", "-c", "ls"] and start.container == "app"
    assert start.stdin and start.stdout and start.tty
    assert not start.stderr  # merged into the terminal
    with pytest.raises(errors.BadRequest, match="command"):
        stream_start(MultiDict(), "ns", "web", attach=False)
    assert not stream_start(MultiDict(), "ns", "web", attach=True).command
    with pytest.raises(errors.BadRequest, match="at least 1 of stdin"):
        stream_start(MultiDict(stdout="false", stderr="false"), "ns", "web", attach=True)


def test_logs_request_from_a_log_query():
    request, limit = logs_request(
        {"container": "app", "follow": "true", "tailLines": "10", "sinceSeconds": "60",
         "limitBytes": "100", "timestamps": "1", "previous": "false"}, "ns", "web")
    assert (request.container, request.follow, request.tail_lines,
            request.since_seconds, request.timestamps, request.previous) == (
        "app", True, 10, 60, True, False)
    assert limit == 100
    now = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)
    request, _ = logs_request({"sinceTime": "2026-01-01T00:00:00Z"}, "ns", "web", now)
    assert request.since_seconds == 60
    for query, word in (({"tailLines": "-1"}, "tailLines"), ({"limitBytes": "0"},
                        "limitBytes"), ({"sinceSeconds": "1", "sinceTime": "x"},
                                        "sinceTime"), ({"sinceTime": "x"}, "sinceTime")):
        with pytest.raises(errors.BadRequest, match=word):
            logs_request(query, "ns", "web")
