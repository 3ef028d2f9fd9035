"""Image pull policies and the local images' build context (pure)."""

import io
import tarfile

from services.kubelet.images import (
    ERR_IMAGE_NEVER_PULL,
    IMAGE_PULL_BACKOFF,
    build_context,
    pull_decision,
    split_image,
)


def test_pull_policies():
    assert pull_decision("IfNotPresent", True, in_backoff=False, image="i").pull is False
    assert pull_decision("IfNotPresent", False, in_backoff=False, image="i").pull is True
    assert pull_decision("Always", True, in_backoff=False, image="i").pull is True
    never = pull_decision("Never", False, in_backoff=False, image="i")
    assert not never.pull and never.error.reason == ERR_IMAGE_NEVER_PULL
    assert pull_decision("Never", True, in_backoff=True, image="i").error is None
    backing_off = pull_decision("Always", True, in_backoff=True, image="i")
    assert not backing_off.pull and backing_off.error.reason == IMAGE_PULL_BACKOFF


def test_split_image():
    assert split_image("skiff/busybox:latest") == ("skiff/busybox", "latest")
    assert split_image("busybox") == ("busybox", "latest")
    assert split_image("localhost:5000/app") == ("localhost:5000/app", "latest")
    assert split_image("localhost:5000/app:v1") == ("localhost:5000/app", "v1")


def test_build_contexts():
    def names(kind: str) -> dict[str, tarfile.TarInfo]:
        data = build_context(kind, b"\x7fELF...", ["sh", "httpd", "wget"])
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name: m for m in tar.getmembers()}

    busybox = names("busybox")
    assert busybox["rootfs/bin/sh"].issym() and busybox["rootfs/bin/sh"].linkname == "/bin/busybox"
    assert "Dockerfile" in busybox and "rootfs/bin/busybox" in busybox
    pause = names("pause")
    assert "rootfs/pause" in pause and "rootfs/bin/sh" not in pause
