"""The images every Skiff node needs, built locally: no image registry is assumed.

``skiff/pause`` (PID 1 of every pod's sandbox: it only holds the network namespace) and
``skiff/busybox`` (a small image for examples and tests) are built through Docker's build
API from a tar context made in memory. A starting kubelet builds those missing (or stale);
``skiff images build`` and ``skiff up`` do it from the CLI.

Where busybox comes from: Debian's dynamically linked ``busybox``, which
``scripts/install.sh`` extracts into :data:`BUSYBOX_ROOT` without installing it (the
package conflicts with ``busybox-static``). The image gets what the binary needs at run
time: the loader and libraries ``ldd`` names (ld.so, libc, libresolv), the NSS modules
for files and DNS and an ``/etc/nsswitch.conf`` (``hosts: files dns``), so ``wget``,
``nc`` and ``ping`` resolve names as on any glibc system: ``/etc/hosts`` first, then the
resolver of ``/etc/resolv.conf``; ``nslookup`` asks a DNS server itself. (A statically
linked glibc binary can only use the NSS code linked into it, and glibc warns that it
needs the shared libraries of its own version at run time, which an image lacks.)

Debian builds busybox 1.35 (static and dynamic alike) without wget's timeout option:
``wget -T 5`` crashes (SIGSEGV while parsing the option, before any I/O). Use
``timeout 5 wget ...`` instead.

Tags: each image is tagged ``<repo>:<skiff version>`` and ``<repo>:latest``. The cluster
uses the versioned one (the sandbox image, examples/): a tagged image defaults to
``imagePullPolicy: IfNotPresent``, while ``:latest`` defaults to ``Always``, a pull that
fails with no registry. Each image carries the hash of its build context in
:data:`RECIPE_LABEL`; :func:`build_local_images` rebuilds an image whose hash is not the
current recipe's (the recipe or the busybox changed under the same version).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import subprocess
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import skiff
from skiff.logging import get_logger

if TYPE_CHECKING:
    import aiodocker

log = get_logger("skiff.kubelet.images")

#: The version tag of the images built here: the skiff package's version.
VERSION = skiff.__version__
PAUSE_REPO = "skiff/pause"
BUSYBOX_REPO = "skiff/busybox"
#: What the cluster runs: the versioned tags (see the module for why not ``latest``).
PAUSE_IMAGE = f"{PAUSE_REPO}:{VERSION}"
BUSYBOX_IMAGE = f"{BUSYBOX_REPO}:{VERSION}"
#: Every image built here, by its versioned tag, with its kind (what build_context makes).
LOCAL_IMAGES: Mapping[str, str] = {PAUSE_IMAGE: "pause", BUSYBOX_IMAGE: "busybox"}

#: Where scripts/install.sh extracts Debian's busybox package (``dpkg-deb -x``).
BUSYBOX_ROOT = Path("/var/cache/skiff/busybox")
BUSYBOX_BINARY = BUSYBOX_ROOT / "bin" / "busybox"
#: The label every locally built image carries (what built it, so GC can tell).
BUILT_BY_LABEL = "skiff.image.built-by"
#: The label holding the sha256 of the image's build context.
RECIPE_LABEL = "skiff.image.recipe"

#: The NSS modules for ``hosts: files dns``, copied when the host has them: a glibc
#: before 2.34 loads them at run time; since 2.34 both are built into libc and these
#: files are empty stubs kept for compatibility.
NSS_LIBRARIES = ("libnss_files.so.2", "libnss_dns.so.2")
NSSWITCH_CONF = b"passwd: files\ngroup: files\nhosts: files dns\n"

#: The pause process: PID 1 of every sandbox, it only holds the network namespace.
#: A trap makes TERM/INT end it at once (PID 1 ignores unhandled signals).
PAUSE_SCRIPT = """#!/bin/sh
trap 'exit 0' TERM INT
while :; do
  sleep 3600 &
  wait $!
done
"""


def latest(image: str) -> str:
    """The ``latest`` tag of a local image (``skiff/busybox:0.1.0`` -> ``skiff/busybox:latest``)."""
    return image.rpartition(":")[0] + ":latest"


@dataclass(frozen=True)
class Busybox:
    """A busybox binary and what it needs in an image: its applet names and the shared
    libraries it loads, by their path inside the image (empty for a static binary)."""

    binary: bytes
    applets: tuple[str, ...]
    libraries: Mapping[str, bytes] = field(default_factory=dict)


# ----------------------------------------------------------- the recipe (pure)

_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def needed_libraries(ldd_output: str) -> list[str]:
    """The absolute paths of the libraries ``ldd`` lists, the loader included (pure).

    ``ldd`` prints ``libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`` per library,
    the loader as ``/lib64/ld-linux-x86-64.so.2 (0x...)``, and the kernel's vDSO without
    a path (skipped: it is no file). A static binary gives none."""
    found = []
    for line in ldd_output.splitlines():
        match = _LDD_LINE.match(line)
        if match:
            found.append(match.group(1))
        elif "=> not found" in line:
            raise FileNotFoundError(f"busybox needs a library the host lacks: {line.strip()}")
    return found


def applet_names(listing: str) -> tuple[str, ...]:
    """The applets of ``busybox --list`` to link in /bin (pure)."""
    return tuple(sorted({a for a in listing.split() if a and "/" not in a and a != "busybox"}))


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_parents(tar: tarfile.TarFile, path: str, made: set[str]) -> None:
    parts = Path(path).parts[:-1]
    for i in range(1, len(parts) + 1):
        directory = "/".join(parts[:i])
        if directory not in made:
            made.add(directory)
            _add_dir(tar, directory)


def build_context(kind: str, busybox: Busybox) -> bytes:
    """The build context (a tar, in memory) of ``kind`` "pause" or "busybox" (pure and
    byte-for-byte deterministic, so its hash names the recipe)."""
    if kind not in ("pause", "busybox"):
        raise ValueError(f"unknown local image kind {kind!r} (pause or busybox)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        made = {"rootfs", "rootfs/bin", "rootfs/tmp", "rootfs/etc"}
        _add_dir(tar, "rootfs")
        _add_dir(tar, "rootfs/bin")
        _add_dir(tar, "rootfs/etc")
        _add_dir(tar, "rootfs/tmp", 0o1777)
        _add_file(tar, "rootfs/bin/busybox", busybox.binary)
        for path, data in sorted(busybox.libraries.items()):
            name = "rootfs" + path
            _add_parents(tar, name, made)
            _add_file(tar, name, data)
        _add_file(tar, "rootfs/etc/nsswitch.conf", NSSWITCH_CONF, 0o644)
        _add_file(tar, "rootfs/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        _add_file(tar, "rootfs/etc/group", b"root:x:0:\n", 0o644)
        # A link per applet, as ``busybox --install -s /bin`` makes (done here so the
        # build runs no container). The pause script needs them too: Debian's dynamic
        # busybox runs only applets it finds on PATH (its shell is not "standalone").
        for applet in busybox.applets:
            link = tarfile.TarInfo(f"rootfs/bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tar.addfile(link)
        if kind == "busybox":
            for name in ("rootfs/root", "rootfs/var", "rootfs/var/www"):
                _add_dir(tar, name)
            dockerfile = ("FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n"
                          'CMD ["/bin/sh"]\n')
        else:
            _add_file(tar, "rootfs/pause", PAUSE_SCRIPT.encode())
            dockerfile = ("FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n"
                          'ENTRYPOINT ["/bin/busybox", "sh", "/pause"]\n')
        _add_file(tar, "Dockerfile", dockerfile.encode(), 0o644)
    return buf.getvalue()


def recipe_hash(context: bytes) -> str:
    """What :data:`RECIPE_LABEL` holds for an image built from ``context`` (pure)."""
    return hashlib.sha256(context).hexdigest()


# ----------------------------------------------------------- reading the host


def load_busybox(binary: Path = BUSYBOX_BINARY) -> Busybox:
    """The busybox at ``binary`` with its applets and libraries, read from the host.
    Blocking (files, ``busybox --list``, ``ldd``): run it in a thread."""
    if not binary.exists():
        raise FileNotFoundError(
            f"{binary} is missing: scripts/install.sh extracts Debian's busybox there")
    listing = subprocess.run([str(binary), "--list"], capture_output=True, text=True,
                             check=True).stdout
    # ldd exits 1 for a static binary ("not a dynamic executable"): no libraries.
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    paths = needed_libraries(ldd.stdout) if ldd.returncode == 0 else []
    libc = next((Path(p) for p in paths if Path(p).name == "libc.so.6"), None)
    if libc is not None:
        paths += [str(libc.parent / name) for name in NSS_LIBRARIES
                  if (libc.parent / name).exists()]
    # read_bytes follows symlinks: the image gets each library's content at the path
    # the loader asks for.
    return Busybox(binary.read_bytes(), applet_names(listing),
                   {path: Path(path).read_bytes() for path in paths})


# ----------------------------------------------------------- building


async def _image_labels(docker: aiodocker.Docker, image: str) -> dict[str, str] | None:
    """The image's labels, None when it is not there."""
    # Imported when building only: the image names above are read by commands (skiff up,
    # the chaos run) that should not pay aiodocker's import (~0.2 s) for them.
    import aiodocker

    try:
        found = await docker.images.inspect(image)
    except aiodocker.DockerError as e:
        if e.status == HTTPStatus.NOT_FOUND:
            return None
        raise
    return dict((found.get("Config") or {}).get("Labels") or {})


async def build_image(docker: aiodocker.Docker, context: bytes, tags: list[str], *,
                      labels: Mapping[str, str] | None = None) -> None:
    """Build ``context`` as ``tags`` (the first is built, the others point at it),
    labelled with what built it and its recipe's hash (and ``labels``)."""
    every_label = {BUILT_BY_LABEL: "skiff", RECIPE_LABEL: recipe_hash(context),
                   **(labels or {})}
    result = await docker.images.build(fileobj=io.BytesIO(context), encoding="identity",
                                       tag=tags[0], rm=True, labels=every_label)
    errors = [line["error"] for line in result or [] if isinstance(line, dict)
              and "error" in line]
    if errors:
        raise RuntimeError(f"building {tags[0]} failed: {errors[-1]}")
    for tag in tags[1:]:
        repo, _, name = tag.rpartition(":")
        await docker.images.tag(tags[0], repo, tag=name)


async def build_local_images(docker: aiodocker.Docker, *, force: bool = False,
                             busybox: Path = BUSYBOX_BINARY) -> list[str]:
    """Build skiff/pause and skiff/busybox as ``<repo>:<version>`` and ``<repo>:latest``:
    those missing or built from another recipe, all with ``force``. Returns the tags
    built (the versioned ones). Without the busybox, images already there are used as
    they are (their recipe cannot be checked); missing ones are an error."""
    if not force and not await asyncio.to_thread(busybox.exists):
        missing = [image for image in LOCAL_IMAGES
                   if await _image_labels(docker, image) is None]
        if not missing:
            log.warning("busybox missing: the local images are used unchecked",
                        busybox=str(busybox))
            return []
    loaded = await asyncio.to_thread(load_busybox, busybox)
    built = []
    for image, kind in LOCAL_IMAGES.items():
        context = build_context(kind, loaded)
        recipe = recipe_hash(context)
        labels = await _image_labels(docker, image)
        if not force and labels is not None and labels.get(RECIPE_LABEL) == recipe:
            # Fresh; ``latest`` follows it (it may be missing, or another build's).
            latest_labels = await _image_labels(docker, latest(image))
            if latest_labels is None or latest_labels.get(RECIPE_LABEL) != recipe:
                await docker.images.tag(image, image.rpartition(":")[0], tag="latest")
            continue
        await build_image(docker, context, [image, latest(image)])
        log.info("built image", image=image, also=latest(image),
                 rebuilt=labels is not None)
        built.append(image)
    return built
