"""Images: making sure a container's image is there before it starts, and building the
two images the cluster needs from the host's busybox.

Kubernetes' ``pkg/kubelet/images`` (``EnsureImageExists``), for Docker:

- ``imagePullPolicy`` decides: ``Never`` uses what is present (else ``ErrImageNeverPull``),
  ``IfNotPresent`` pulls only when the image is missing, ``Always`` pulls every time a
  container starts. The API server defaults the policy to ``Always`` for ``:latest``
  (or untagged) images, as Kubernetes does; here no registry is reachable, so such a
  pull fails like any other: manifests use ``IfNotPresent`` or ``Never`` for the local
  ``skiff/*`` images (the README says so).
- A failed pull gives the container the waiting reason ``ErrImagePull`` and starts a
  per-image back-off; syncs during that back-off answer ``ImagePullBackOff`` without
  pulling, as the kubelet's ``imageManager`` does.

:func:`build_local_images` builds ``skiff/pause`` and ``skiff/busybox`` through Docker's
build API from a tar context made in memory: the host's static busybox, a symlink per
applet (what ``busybox --install -s /bin`` makes, done here so the build runs no
container and needs no network), and for the pause image a tiny shell script that
sleeps until TERM or INT. ``skiff images build`` (skiff/cli) and a starting kubelet call it.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiodocker

from services.kubelet.backoff import Backoff
from services.kubelet.labels import BUSYBOX_IMAGE, PAUSE_IMAGE
from skiff.logging import get_logger

log = get_logger("skiff.kubelet.images")

#: Where Debian's busybox-static puts the binary.
HOST_BUSYBOX = Path("/bin/busybox")
#: The label every locally built image carries (what built it, so GC can tell).
BUILT_BY_LABEL = "skiff.image.built-by"

# Waiting reasons, Kubernetes' words.
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"

#: The pause process: PID 1 of every sandbox, it only holds the network namespace.
#: A trap makes TERM/INT end it at once (PID 1 ignores unhandled signals).
PAUSE_SCRIPT = """#!/bin/sh
trap 'exit 0' TERM INT
while :; do
  sleep 3600 &
  wait $!
done
"""


class ImageError(Exception):
    """The image could not be made present: ``reason`` is the container's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PullDecision:
    """What :func:`pull_decision` says to do for one container start (pure)."""

    pull: bool
    error: ImageError | None = None


def pull_decision(policy: str, present: bool, *, in_backoff: bool, image: str) -> PullDecision:
    """Whether to pull ``image`` under ``policy`` given whether it is ``present`` and
    whether its pull back-off is running (pure; Kubernetes' ``EnsureImageExists``)."""
    policy = policy or "IfNotPresent"
    if policy == "Never":
        if present:
            return PullDecision(pull=False)
        return PullDecision(False, ImageError(
            ERR_IMAGE_NEVER_PULL,
            f'Container image "{image}" is not present with pull policy of Never'))
    if policy == "IfNotPresent" and present:
        return PullDecision(pull=False)
    if in_backoff:
        return PullDecision(False, ImageError(
            IMAGE_PULL_BACKOFF, f'Back-off pulling image "{image}"'))
    return PullDecision(pull=True)


def split_image(image: str) -> tuple[str, str]:
    """``repo:tag`` -> (repo, tag), ``latest`` when untagged; digests stay in repo."""
    if "@" in image:
        return image, ""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


class ImageManager:
    """Ensures images are present for container starts, with a per-image pull back-off.

    ``on_pulling(image)`` / ``on_pulled(image, seconds)`` let the kubelet record the
    Pulling / Pulled events on the pod that asked.
    """

    def __init__(self, docker: aiodocker.Docker, backoff: Backoff, *,
                 clock: Callable[[], float]) -> None:
        self.docker = docker
        self.backoff = backoff
        self.clock = clock
        # One pull at a time per image: concurrent pods that need it wait for the same one.
        self._pulls: dict[str, asyncio.Lock] = {}

    async def present(self, image: str) -> bool:
        try:
            await self.docker.images.inspect(image)
        except aiodocker.DockerError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def ensure(self, image: str, policy: str, *,
                     on_pulling: Callable[[], None] | None = None) -> bool:
        """Make ``image`` present as ``policy`` says; True if a pull happened.

        Raises :class:`ImageError` with the waiting reason when it cannot."""
        lock = self._pulls.setdefault(image, asyncio.Lock())
        async with lock:
            present = await self.present(image)
            decision = pull_decision(policy, present, image=image,
                                     in_backoff=self.backoff.in_backoff(image, self.clock()))
            if decision.error is not None:
                raise decision.error
            if not decision.pull:
                return False
            if on_pulling is not None:
                on_pulling()
            repo, tag = split_image(image)
            try:
                await self.docker.images.pull(repo, tag=tag or None)
            except aiodocker.DockerError as e:
                self.backoff.next(image, self.clock())
                message = e.message if isinstance(e.message, str) else str(e)
                raise ImageError(ERR_IMAGE_PULL, message) from None
            self.backoff.forget(image)
            return True


# ------------------------------------------------------------------ local images


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted({a for a in out.stdout.split() if a and "/" not in a and a != "busybox"})


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def build_context(kind: str, busybox: bytes, applets: list[str]) -> bytes:
    """The build context (a tar, in memory) of ``kind`` "pause" or "busybox" (pure)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_dir(tar, "rootfs")
        _add_dir(tar, "rootfs/bin")
        _add_dir(tar, "rootfs/tmp", 0o1777)
        _add_file(tar, "rootfs/bin/busybox", busybox)
        if kind == "busybox":
            for name in ("rootfs/root", "rootfs/var", "rootfs/var/www", "rootfs/etc"):
                _add_dir(tar, name)
            _add_file(tar, "rootfs/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
            _add_file(tar, "rootfs/etc/group", b"root:x:0:\n", 0o644)
            for applet in applets:
                link = tarfile.TarInfo(f"rootfs/bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tar.addfile(link)
            dockerfile = ("FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n"
                          'CMD ["/bin/sh"]\n')
        else:
            _add_file(tar, "rootfs/pause", PAUSE_SCRIPT.encode())
            dockerfile = ("FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n"
                          'ENTRYPOINT ["/bin/busybox", "sh", "/pause"]\n')
        _add_file(tar, "Dockerfile", dockerfile.encode(), 0o644)
    return buf.getvalue()


async def build_image(docker: aiodocker.Docker, kind: str, tag: str, *,
                      busybox: Path = HOST_BUSYBOX) -> None:
    """Build one local image (``kind`` "pause" or "busybox") as ``tag``."""
    data = await asyncio.to_thread(busybox.read_bytes)
    applets = await asyncio.to_thread(_applets, busybox)
    context = build_context(kind, data, applets)
    result = await docker.images.build(fileobj=io.BytesIO(context), encoding="identity",
                                       tag=tag, rm=True, labels={BUILT_BY_LABEL: "skiff"})
    errors = [line["error"] for line in result or [] if isinstance(line, dict)
              and "error" in line]
    if errors:
        raise RuntimeError(f"building {tag} failed: {errors[-1]}")


LOCAL_IMAGES = {PAUSE_IMAGE: "pause", BUSYBOX_IMAGE: "busybox"}


async def build_local_images(docker: aiodocker.Docker, *, force: bool = False,
                             busybox: Path = HOST_BUSYBOX) -> list[str]:
    """Build skiff/pause and skiff/busybox (those missing, or all with ``force``);
    returns the tags built. Needs the host's static busybox (Debian's busybox-static)."""
    if not await asyncio.to_thread(busybox.exists):
        raise FileNotFoundError(f"{busybox} is missing: install busybox-static")
    built = []
    for tag, kind in LOCAL_IMAGES.items():
        if not force:
            try:
                await docker.images.inspect(tag)
                continue
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise
        await build_image(docker, kind, tag, busybox=busybox)
        log.info("built image", image=tag)
        built.append(tag)
    return built
