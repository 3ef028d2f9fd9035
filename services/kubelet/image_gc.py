"""Image garbage collection: freeing Docker's disk by removing images nobody uses.

As in the Kubernetes kubelet (``pkg/kubelet/images/image_gc_manager.go``): the
:class:`ImageGCManager` observes the node's images and containers every period,
recording when it first saw each image and when a container (running or not) last used
it. When the disk holding Docker's root directory is fuller than
``high_threshold_percent``, it removes images that no container uses, least recently
used first, skipping those first seen less than ``min_age`` ago, until the use would be
below ``low_threshold_percent``. The sandbox image (``skiff/pause``, either tag) is never
removed: the node cannot start a pod without it and there is no registry to pull it
back from.

What to remove is chosen by :func:`plan`, pure, from the records and the disk's numbers;
the disk is measured with ``statvfs`` in a thread (it is a system call on a path, which
can block on a busy file system).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiodocker

from skiff.client.clock import Clock, RealClock
from skiff.kubelet.images import PAUSE_IMAGE, latest
from skiff.logging import get_logger

log = get_logger("kubelet.image_gc")

#: How often the kubelet checks (Kubernetes' ImageGCPeriod).
DEFAULT_PERIOD = 300.0
PROTECTED_IMAGES = frozenset({PAUSE_IMAGE, latest(PAUSE_IMAGE)})


@dataclass(frozen=True)
class ImageGCPolicy:
    """The kubelet's ``--image-gc-high-threshold``, ``--image-gc-low-threshold`` and
    ``--minimum-image-ttl-duration``."""

    #: Disk use (percent) at or above which images are collected; 100 disables GC.
    high_threshold_percent: int = 85
    #: Disk use (percent) collection aims to get below.
    low_threshold_percent: int = 80
    #: Images first seen less than this many seconds ago are never removed.
    min_age: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_threshold_percent <= self.high_threshold_percent <= 100:
            raise ValueError("image GC thresholds must satisfy 0 <= low <= high <= 100, "
                             f"got low={self.low_threshold_percent} "
                             f"high={self.high_threshold_percent}")


@dataclass(frozen=True)
class DiskUsage:
    """The file system holding Docker's images, in bytes."""

    capacity: int
    available: int

    @property
    def percent(self) -> int:
        """Percent used, as Kubernetes rounds it (100 - floor(available * 100 / capacity))."""
        if self.capacity <= 0:
            return 0
        return 100 - self.available * 100 // self.capacity


@dataclass(frozen=True)
class ImageRecord:
    """An image as GC sees it."""

    id: str
    size: int
    tags: tuple[str, ...] = ()
    #: When this kubelet first saw the image (clock seconds).
    first_detected: float = 0.0
    #: When a container last used it (clock seconds); first_detected if never seen used.
    last_used: float = 0.0


@dataclass(frozen=True)
class Plan:
    """Images to remove (ids, least recently used first) and the bytes they free."""

    remove: tuple[str, ...] = ()
    bytes_to_free: int = 0
    bytes_freed: int = 0


def plan(usage: DiskUsage, images: Sequence[ImageRecord], in_use: Collection[str],
         policy: ImageGCPolicy, now: float, *,
         protected: Collection[str] = PROTECTED_IMAGES) -> Plan:
    """Which images to remove to bring disk use below the low threshold (pure).

    Nothing when use is below the high threshold. Candidates: not used by any container,
    no tag in ``protected``, first seen at least ``min_age`` ago; least recently used
    first (then first detected, then id, for a stable order).
    """
    if usage.percent < policy.high_threshold_percent:
        return Plan()
    target_available = usage.capacity * (100 - policy.low_threshold_percent) // 100
    to_free = target_available - usage.available
    if to_free <= 0:
        return Plan()
    candidates = [i for i in images if i.id not in in_use
                  and not any(tag in protected for tag in i.tags)
                  and now - i.first_detected >= policy.min_age]
    candidates.sort(key=lambda i: (i.last_used, i.first_detected, i.id))
    chosen: list[str] = []
    freed = 0
    for image in candidates:
        if freed >= to_free:
            break
        chosen.append(image.id)
        freed += image.size
    return Plan(remove=tuple(chosen), bytes_to_free=to_free, bytes_freed=freed)


def observe(records: Mapping[str, ImageRecord], images: Sequence[Mapping[str, Any]],
            in_use: Collection[str], now: float) -> dict[str, ImageRecord]:
    """The records after one look at Docker's images (pure): new images are first
    detected now; used ones were last used now; images gone are forgotten."""
    result: dict[str, ImageRecord] = {}
    for image in images:
        image_id = image["Id"]
        old = records.get(image_id)
        record = old or ImageRecord(id=image_id, size=0, first_detected=now, last_used=now)
        record = replace(record, size=int(image.get("Size") or 0),
                         tags=tuple(t for t in image.get("RepoTags") or ()
                                    if t != "<none>:<none>"))
        if image_id in in_use:
            record = replace(record, last_used=now)
        result[image_id] = record
    return result


async def docker_disk_usage(docker: aiodocker.Docker) -> DiskUsage:
    """The file system of Docker's root directory (``docker info``'s DockerRootDir)."""
    info = await docker.system.info()
    root = info.get("DockerRootDir") or "/var/lib/docker"
    stat = await asyncio.to_thread(os.statvfs, root)
    # f_bavail: what an unprivileged writer may still use, Kubernetes' "available".
    return DiskUsage(capacity=stat.f_blocks * stat.f_frsize,
                     available=stat.f_bavail * stat.f_frsize)


@dataclass
class ImageGCManager:
    """Tracks image use and removes unused images when the disk fills up.

    ``disk_usage`` measures the disk (default: :func:`docker_disk_usage`); ``clock``
    supplies the time records are made in (``now()``).
    """

    docker: aiodocker.Docker
    policy: ImageGCPolicy = field(default_factory=ImageGCPolicy)
    clock: Clock = field(default_factory=RealClock)
    disk_usage: Callable[[], Awaitable[DiskUsage]] | None = None
    protected: Collection[str] = PROTECTED_IMAGES
    #: Invariant: one record per image Docker had at the last detect_images().
    records: dict[str, ImageRecord] = field(default_factory=dict)

    async def detect_images(self) -> set[str]:
        """Look at the images and every container (running or not); returns the ids of
        the images in use."""
        images = await self.docker.images.list()
        containers = await self.docker.containers.list(all=True)
        in_use = {c["ImageID"] for c in containers if "ImageID" in c}
        self.records = observe(self.records, images, in_use, self.clock.now())
        return in_use

    async def plan(self) -> Plan:
        """Detect, measure the disk, and choose what to remove (without removing it)."""
        in_use = await self.detect_images()
        usage = await (self.disk_usage() if self.disk_usage is not None
                       else docker_disk_usage(self.docker))
        return plan(usage, list(self.records.values()), in_use, self.policy,
                    self.clock.now(), protected=self.protected)

    async def garbage_collect(self) -> list[str]:
        """One round: remove what :meth:`plan` chose; the ids removed."""
        started = time.perf_counter()
        chosen = await self.plan()
        removed = []
        for image_id in chosen.remove:
            if await self._remove(image_id):
                removed.append(image_id)
                self.records.pop(image_id, None)
        if chosen.remove:
            log.info("image GC", to_free=chosen.bytes_to_free, planned=chosen.bytes_freed,
                     removed=len(removed), seconds=round(time.perf_counter() - started, 3))
        if chosen.bytes_freed < chosen.bytes_to_free:
            log.warning("image GC cannot free enough space", to_free=chosen.bytes_to_free,
                        can_free=chosen.bytes_freed)
        return removed

    async def _remove(self, image_id: str) -> bool:
        # An image with several tags cannot be removed by id without force; untag it
        # tag by tag first (as Kubernetes' dockershim does), then remove what is left.
        record = self.records.get(image_id)
        try:
            for tag in record.tags if record is not None else ():
                await self.docker.images.delete(tag)
            await self.docker.images.delete(image_id)
        except aiodocker.DockerError as e:
            if e.status == 404:
                return True  # gone already (the last tag took it)
            log.warning("cannot remove image", image=image_id, error=e.message)
            return False
        return True

    async def run(self, *, period: float = DEFAULT_PERIOD) -> None:
        """Detect images often (so last-used times are accurate) and collect every
        ``period`` seconds, until cancelled; a failed round is logged."""
        detect_every = min(period, 30.0)
        last_gc = self.clock.now()
        while True:
            await self.clock.sleep(detect_every)
            try:
                if self.clock.now() - last_gc >= period:
                    last_gc = self.clock.now()
                    await self.garbage_collect()
                else:
                    await self.detect_images()
            except aiodocker.DockerError as e:
                log.warning("image GC failed", error=e.message)
