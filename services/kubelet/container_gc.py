"""Container garbage collection: removing the dead containers of this node's pods.

A container that exited stays in Docker so ``logs --previous`` and the restart count can
look at it; without a limit a crash-looping pod fills the disk with them. As in the
Kubernetes kubelet (``kuberuntime_gc.go``), every minute:

1. containers that are not running and older than ``min_age`` are *evictable*, grouped
   in units of (pod uid, container name), newest first;
2. the containers of pods the kubelet no longer knows (uid not in ``active_pod_uids``)
   are all removed;
3. each unit keeps its newest ``max_per_pod_container`` (negative: no limit);
4. if more than ``max_containers`` remain (negative: no limit), every unit is cut to an
   equal share (at least one), then the oldest go until the total fits;
5. sandboxes that are not running, not older than ``min_age`` excepted, and that no
   remaining container joins, are removed: all of them for a gone pod, all but the
   newest for a known one.

A running (or paused, restarting) container is never touched. What to remove is chosen
by :func:`plan`, pure; :func:`collect` lists, plans and removes; :func:`run` does that
on a period. The caller must only pass ``active_pod_uids`` once it knows all its pods
(a kubelet that has not listed its pods yet would otherwise remove everything).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiodocker

from skiff.client.clock import Clock, RealClock
from skiff.kubelet import labels
from skiff.logging import get_logger

log = get_logger("kubelet.container_gc")

#: Docker states in which a container is alive: never collected.
LIVE_STATES = frozenset({"running", "paused", "restarting", "removing"})
#: How often the kubelet collects (Kubernetes' ContainerGCPeriod).
DEFAULT_PERIOD = 60.0


@dataclass(frozen=True)
class ContainerGCPolicy:
    """The kubelet's ``--minimum-container-ttl-duration``,
    ``--maximum-dead-containers-per-container`` and ``--maximum-dead-containers``."""

    #: Dead containers younger than this (seconds since creation) are left alone.
    min_age: float = 0.0
    #: Dead containers kept per (pod, container name); negative: no limit.
    max_per_pod_container: int = 1
    #: Dead containers kept on the node in all; negative: no limit.
    max_containers: int = -1


@dataclass(frozen=True)
class ContainerInfo:
    """What GC needs to know of one of the node's Docker containers."""

    id: str
    pod_uid: str
    name: str
    sandbox: bool
    #: Docker's creation time, epoch seconds.
    created: float
    running: bool
    restart_count: int = 0
    #: The sandbox this container joins the network of (``container:<id>``), if any.
    joins: str = ""

    @classmethod
    def from_docker(cls, item: Mapping[str, Any]) -> ContainerInfo:
        """From an entry of Docker's container list (``GET /containers/json?all=1``)."""
        tags = item.get("Labels") or {}
        mode = (item.get("HostConfig") or {}).get("NetworkMode") or ""
        try:
            restarts = int(tags.get(labels.RESTART_COUNT, "0"))
        except ValueError:
            restarts = 0
        return cls(id=item["Id"], pod_uid=tags.get(labels.POD_UID, ""),
                   name=tags.get(labels.CONTAINER_NAME, ""),
                   sandbox=tags.get(labels.CONTAINER_TYPE) == labels.SANDBOX,
                   created=float(item.get("Created") or 0),
                   running=item.get("State") in LIVE_STATES,
                   restart_count=restarts,
                   joins=mode.removeprefix("container:") if mode.startswith("container:")
                   else "")


def _newest_first(containers: Iterable[ContainerInfo]) -> list[ContainerInfo]:
    # Creation times are in whole seconds: the restart count breaks ties.
    return sorted(containers, key=lambda c: (c.created, c.restart_count), reverse=True)


def plan(containers: Sequence[ContainerInfo], policy: ContainerGCPolicy,
         active_pod_uids: Collection[str], now: float) -> list[str]:
    """The ids of the containers to remove, app containers before sandboxes (pure)."""
    evictable = [c for c in containers if not c.running and not c.sandbox
                 and now - c.created >= policy.min_age]
    remove: list[ContainerInfo] = []
    units: dict[tuple[str, str], list[ContainerInfo]] = defaultdict(list)
    for c in evictable:
        if c.pod_uid in active_pod_uids:
            units[(c.pod_uid, c.name)].append(c)
        else:
            remove.append(c)  # its pod is gone: nothing will ask for its logs
    units = {key: _newest_first(unit) for key, unit in units.items()}

    def keep_per_unit(limit: int) -> None:
        for key, unit in units.items():
            remove.extend(unit[limit:])
            units[key] = unit[:limit]

    if policy.max_per_pod_container >= 0:
        keep_per_unit(policy.max_per_pod_container)
    total = sum(len(unit) for unit in units.values())
    if policy.max_containers >= 0 and total > policy.max_containers:
        keep_per_unit(max(1, policy.max_containers // max(1, len(units))))
        left = _newest_first(c for unit in units.values() for c in unit)
        remove.extend(left[policy.max_containers:])

    removed = {c.id for c in remove}
    joined = {c.joins for c in containers if c.joins and c.id not in removed}
    sandboxes: dict[str, list[ContainerInfo]] = defaultdict(list)
    for c in containers:
        if (c.sandbox and not c.running and c.id not in joined
                and now - c.created >= policy.min_age):
            sandboxes[c.pod_uid].append(c)
    for uid, dead in sandboxes.items():
        dead = _newest_first(dead)
        remove.extend(dead if uid not in active_pod_uids else dead[1:])
    return [c.id for c in remove]


async def collect(docker: aiodocker.Docker, node: str, policy: ContainerGCPolicy,
                  active_pod_uids: Collection[str], *, now: float | None = None) -> list[str]:
    """Remove this node's dead containers beyond the policy's limits; the ids removed.

    Only containers labelled as this node's kubelet's are considered. One that cannot be
    removed (gone already, removal in progress) is skipped and tried again next time.
    """
    listed = await docker.containers.list(all=True, filters=labels.node_filter(node))
    # The list entries themselves (aiodocker keeps them as the container's attributes).
    infos = [ContainerInfo.from_docker(c._container) for c in listed]
    chosen = plan(infos, policy, active_pod_uids, time.time() if now is None else now)
    removed = []
    for container_id in chosen:
        try:
            await docker.containers.container(container_id).delete(v=True)
        except aiodocker.DockerError as e:
            if e.status != 404:
                log.warning("cannot remove container", container_id=container_id[:12],
                            error=e.message)
            continue
        removed.append(container_id)
    if removed:
        log.info("removed dead containers", node=node, count=len(removed),
                 evaluated=len(infos))
    return removed


async def run(docker: aiodocker.Docker, node: str, policy: ContainerGCPolicy,
              active_pod_uids: Callable[[], Collection[str] | None], *,
              period: float = DEFAULT_PERIOD, clock: Clock | None = None) -> None:
    """Collect every ``period`` seconds until cancelled.

    ``active_pod_uids()`` returns the uids of the pods the kubelet knows, or None while
    it does not know them all yet (then the round is skipped). A failed round is logged
    and the next one tried.
    """
    clock = clock or RealClock()
    while True:
        await clock.sleep(period)
        active = active_pod_uids()
        if active is None:
            continue
        try:
            await collect(docker, node, policy, active)
        except aiodocker.DockerError as e:
            log.warning("container GC failed", error=e.message)
