"""Which pod updates make the kubelet sync: not its own status coming back."""

from __future__ import annotations

from services.kubelet.kubelet import _only_status_changed
from skiff.api.v1 import core_pb2


def _pod() -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.uid, pod.metadata.resource_version = "p", "u1", "10"
    pod.spec.node_name = "n1"
    pod.spec.containers.add(name="app", image="busybox")
    return pod


def test_a_status_write_alone_does_not_count_as_a_change():
    old, new = _pod(), _pod()
    new.metadata.resource_version = "11"
    new.status.phase = "Pending"
    new.status.container_statuses.add(name="app").state.waiting.reason = "ErrImagePull"
    assert _only_status_changed(old, new)


def test_spec_labels_and_deletion_do_count():
    old = _pod()
    for change in (lambda p: p.spec.containers[0].__setattr__("image", "other"),
                   lambda p: p.metadata.labels.__setitem__("app", "x"),
                   lambda p: p.metadata.deletion_timestamp.GetCurrentTime()):
        new = _pod()
        change(new)
        assert not _only_status_changed(old, new)
