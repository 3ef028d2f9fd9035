"""Image pull policies, the message of a pull that fails for a present image, and the
local images' recipe (pure)."""

import io
import re
import tarfile
from pathlib import Path

import aiodocker
import pytest
import yaml

import skiff
from services.kubelet.backoff import Backoff
from services.kubelet.images import (
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    IMAGE_PULL_BACKOFF,
    ImageError,
    ImageManager,
    pull_decision,
    pull_failed_message,
)
from skiff.kubelet.images import (
    BUSYBOX_IMAGE,
    LOCAL_IMAGES,
    PAUSE_IMAGE,
    Busybox,
    applet_names,
    build_context,
    latest,
    needed_libraries,
    recipe_hash,
)

REPO = Path(__file__).resolve().parents[2]


def test_pull_policies():
    assert pull_decision("IfNotPresent", True, in_backoff=False, image="i").pull is False
    assert pull_decision("IfNotPresent", False, in_backoff=False, image="i").pull is True
    assert pull_decision("Always", True, in_backoff=False, image="i").pull is True
    never = pull_decision("Never", False, in_backoff=False, image="i")
    assert not never.pull and never.error.reason == ERR_IMAGE_NEVER_PULL
    assert pull_decision("Never", True, in_backoff=True, image="i").error is None
    backing_off = pull_decision("Always", True, in_backoff=True, image="i")
    assert not backing_off.pull and backing_off.error.reason == IMAGE_PULL_BACKOFF


def test_an_empty_policy_is_the_api_servers_default_for_the_tag():
    # A versioned tag: IfNotPresent, so a present image is used as it is.
    assert pull_decision("", True, in_backoff=False, image=BUSYBOX_IMAGE).pull is False
    # :latest or untagged: Always, so even a present image is pulled.
    assert pull_decision("", True, in_backoff=False, image="skiff/busybox:latest").pull
    assert pull_decision("", True, in_backoff=False, image="skiff/busybox").pull


def test_a_failed_pull_of_a_present_image_names_the_policy_and_the_fix():
    message = pull_failed_message("skiff/busybox:latest", "Always", present=True,
                                  error="connection refused")
    assert message == (
        "image skiff/busybox:latest is present locally but imagePullPolicy Always requires "
        "a pull, which failed (connection refused): use a versioned tag such as "
        f"skiff/busybox:{skiff.__version__} or set imagePullPolicy: IfNotPresent")
    # Another image: no version of it is known, the form is named.
    other = pull_failed_message("team/app", "Always", present=True, error="x")
    assert "use a versioned tag such as team/app:<version>" in other
    # A missing image: Docker's error only, nothing to fix locally.
    assert pull_failed_message("team/app:v1", "IfNotPresent", present=False,
                               error="not found") == "not found"
    # Its back-off keeps saying so while the image is present.
    waiting = pull_decision("Always", True, in_backoff=True, image="skiff/busybox:latest")
    assert waiting.error.reason == IMAGE_PULL_BACKOFF
    assert f"skiff/busybox:{skiff.__version__}" in waiting.error.message
    absent = pull_decision("Always", False, in_backoff=True, image="skiff/busybox:latest")
    assert absent.error.message == 'Back-off pulling image "skiff/busybox:latest"'


def test_local_images_carry_the_version_and_latest():
    assert PAUSE_IMAGE == f"skiff/pause:{skiff.__version__}"
    assert BUSYBOX_IMAGE == f"skiff/busybox:{skiff.__version__}"
    assert latest(BUSYBOX_IMAGE) == "skiff/busybox:latest"
    assert set(LOCAL_IMAGES.values()) == {"pause", "busybox"}


LDD = """\
\tlinux-vdso.so.1 (0x00007ffd4b5f2000)
\tlibresolv.so.2 => /lib/x86_64-linux-gnu/libresolv.so.2 (0x00007f0093810000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f009362e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f00938f2000)
"""


def test_needed_libraries_from_ldd():
    assert needed_libraries(LDD) == ["/lib/x86_64-linux-gnu/libresolv.so.2",
                                     "/lib/x86_64-linux-gnu/libc.so.6",
                                     "/lib64/ld-linux-x86-64.so.2"]
    assert needed_libraries("\tnot a dynamic executable\n") == []
    with pytest.raises(FileNotFoundError, match=r"libfoo\.so\.1"):
        needed_libraries("\tlibfoo.so.1 => not found\n")


def test_applet_names():
    assert applet_names("sh\nwget\nbusybox\n[\n\nsh\n") == ("[", "sh", "wget")


BUSYBOX = Busybox(b"\x7fELF...", ("httpd", "nslookup", "sh", "sleep", "wget"), {
    "/lib/x86_64-linux-gnu/libc.so.6": b"libc", "/lib64/ld-linux-x86-64.so.2": b"ld"})


def _members(kind: str, busybox: Busybox = BUSYBOX) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(build_context(kind, busybox))) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else b"")
                for m in tar.getmembers()}


def test_build_contexts():
    busybox = _members("busybox")
    sh, _ = busybox["rootfs/bin/sh"]
    assert sh.issym() and sh.linkname == "/bin/busybox"
    assert busybox["rootfs/bin/busybox"][1] == b"\x7fELF..."
    # The loader and libraries where ldd found them (the loader's path is in the ELF),
    # their directories made.
    assert busybox["rootfs/lib64/ld-linux-x86-64.so.2"][1] == b"ld"
    assert busybox["rootfs/lib/x86_64-linux-gnu/libc.so.6"][1] == b"libc"
    assert busybox["rootfs/lib/x86_64-linux-gnu"][0].isdir()
    assert b"hosts: files dns" in busybox["rootfs/etc/nsswitch.conf"][1]
    assert b'CMD ["/bin/sh"]' in busybox["Dockerfile"][1]
    pause = _members("pause")
    assert b"sleep 3600" in pause["rootfs/pause"][1]
    assert b'ENTRYPOINT ["/bin/busybox", "sh", "/pause"]' in pause["Dockerfile"][1]
    # The dynamic busybox's shell finds applets on PATH only: the script's sleep needs
    # its link.
    assert pause["rootfs/bin/sleep"][0].issym()
    assert "rootfs/var/www" not in pause
    assert "rootfs/lib64/ld-linux-x86-64.so.2" in pause  # the same dynamic busybox
    with pytest.raises(ValueError, match="unknown local image kind 'nginx'"):
        build_context("nginx", BUSYBOX)


def test_the_recipe_hash_follows_the_content_only():
    assert build_context("busybox", BUSYBOX) == build_context("busybox", BUSYBOX)
    other = Busybox(BUSYBOX.binary + b"!", BUSYBOX.applets, BUSYBOX.libraries)
    assert recipe_hash(build_context("busybox", BUSYBOX)) != recipe_hash(
        build_context("busybox", other))
    assert recipe_hash(build_context("busybox", BUSYBOX)) != recipe_hash(
        build_context("pause", BUSYBOX))


def _local_images_named(text: str) -> set[str]:
    return set(re.findall(r"skiff/(?:busybox|pause)(?::[\w.-]+)?", text))


def test_examples_and_readme_name_the_versioned_images():
    """A manifest naming skiff/busybox without the version would default to
    imagePullPolicy Always and fail with no registry."""
    named: set[str] = set()
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            named |= _local_images_named(yaml.safe_dump(document))
    assert named == {BUSYBOX_IMAGE}
    readme = _local_images_named((REPO / "README.md").read_text())
    assert readme <= {*LOCAL_IMAGES, *map(latest, LOCAL_IMAGES), "skiff/busybox",
                      "skiff/pause"}


class _Images:
    """Docker's image API as the ImageManager uses it: ``present`` images inspect; every
    pull fails as with no registry reachable."""

    def __init__(self, present: set[str]) -> None:
        self.present, self.pulls = present, 0

    async def inspect(self, image: str) -> dict:
        if image not in self.present:
            raise aiodocker.DockerError(404, f"No such image: {image}")
        return {}

    async def pull(self, repo: str, *, tag: str | None = None) -> None:
        self.pulls += 1
        raise aiodocker.DockerError(500, "dial tcp: lookup registry: no such host")


class _Docker:
    def __init__(self, present: set[str]) -> None:
        self.images = _Images(present)


async def test_ensure_says_when_only_the_policy_made_a_present_image_fail():
    docker = _Docker({"skiff/busybox:latest", BUSYBOX_IMAGE})
    manager = ImageManager(docker, Backoff(10, 300), clock=lambda: 1000.0)  # type: ignore[arg-type]
    # The API server's default for :latest is Always: it pulls, fails, and says why.
    with pytest.raises(ImageError) as failed:
        await manager.ensure("skiff/busybox:latest", "Always")
    assert failed.value.reason == ERR_IMAGE_PULL
    assert failed.value.message.startswith(
        "image skiff/busybox:latest is present locally but imagePullPolicy Always requires "
        "a pull, which failed (dial tcp: lookup registry: no such host)")
    # The versioned tag defaults to IfNotPresent: no pull at all.
    assert await manager.ensure(BUSYBOX_IMAGE, "") is False
    assert docker.images.pulls == 1
