"""The kubelet's streaming calls: checks of their opening messages (pure)."""

from __future__ import annotations

import pytest

from services.kubelet import streaming
from skiff.api import errors
from skiff.api.v1 import core_pb2
from skiff.kubelet.v1 import kubelet_pb2


def test_exec_needs_a_command_and_a_stream():
    start = kubelet_pb2.StreamStart(pod="web", stdout=True)
    with pytest.raises(errors.BadRequest, match="command"):
        streaming.validate_start(start, needs_command=True)
    streaming.validate_start(start, needs_command=False)  # attach: no command
    with pytest.raises(errors.BadRequest, match="stdin"):
        streaming.validate_start(kubelet_pb2.StreamStart(command=["ls"]), needs_command=True)
    with pytest.raises(errors.BadRequest, match="stderr"):
        streaming.validate_start(kubelet_pb2.StreamStart(
            command=["sh"], tty=True, stdout=True, stderr=True), needs_command=True)


def test_forward_target_is_the_pod_ip():
    pod = core_pb2.Pod()
    pod.metadata.name = "web"
    with pytest.raises(streaming.ForwardFailed, match="no IP"):
        streaming.forward_target(pod, 80)
    pod.status.pod_ip = "10.244.1.5"
    assert streaming.forward_target(pod, 80) == ("10.244.1.5", 80)
    for port in (0, 65536):
        with pytest.raises(errors.BadRequest, match="port"):
            streaming.forward_target(pod, port)


async def test_the_first_message_must_be_start():
    async def messages(*items):
        for item in items:
            yield item

    start = kubelet_pb2.StreamStart(pod="web")
    got = await streaming.first_message(messages(kubelet_pb2.StreamInput(start=start)),
                                        "start")
    assert got == start
    with pytest.raises(errors.BadRequest, match="'start'"):
        await streaming.first_message(messages(kubelet_pb2.StreamInput(stdin=b"x")), "start")
    with pytest.raises(errors.BadRequest, match="open the stream"):
        await streaming.first_message(messages(), "start")
