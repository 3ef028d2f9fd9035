"""The container runtime: what the kubelet asks of Docker, behind a small interface.

:class:`ContainerRuntime` is the seam (Kubernetes' CRI, reduced to what Skiff uses);
:class:`DockerRuntime` is the real one, on aiodocker. Everything the runtime reports is
a frozen value (:class:`RuntimeContainer`), read from Docker's inspect output, so the
pod logic above it (``pod_actions``, ``status``) is pure and unit-tested with plain values.

- A pod is a *sandbox* container (``skiff/pause``), which holds the pod's network
  namespace and IP (the network plugin's doing: :mod:`~services.kubelet.network_plugin`),
  and its app containers, which join that namespace (``NetworkMode:
  container:<sandbox id>``): they share localhost and the IP.
- Every container carries the labels of :mod:`skiff.kubelet.labels`; the kubelet
  finds its containers by them (no local state), which is how a restarted kubelet adopts
  what runs.
- :func:`container_config` turns a pod's container spec into Docker's create body
  (pure): command overrides the image's ENTRYPOINT, args its CMD, as in Kubernetes.
- :class:`ContainerRef` is what the probe manager is told about running containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import aiodocker
import aiodocker.events

from skiff.api.quantity import parse_quantity
from skiff.api.v1 import core_pb2
from skiff.kubelet import labels as L
from skiff.kubelet.containers import remove_container
from skiff.kubelet.images import PAUSE_IMAGE
from skiff.logging import get_logger

if TYPE_CHECKING:
    from services.kubelet.network_plugin import NetworkPlugin

log = get_logger("skiff.kubelet.runtime")

RUNNING, EXITED, CREATED = "running", "exited", "created"
#: Docker's CPU period (µs) against which a cpu limit becomes a quota.
CPU_PERIOD = 100_000


@dataclass(frozen=True)
class ContainerRef:
    """A running container as the probe manager sees it: its id and start (epoch s)."""

    id: str
    started_at: float


@dataclass(frozen=True)
class RuntimeContainer:
    """One Docker container of a pod, as inspected (times in epoch seconds, 0 = never)."""

    id: str
    name: str                     # the pod's container name ("POD" for a sandbox)
    pod_uid: str
    kind: str                     # labels.SANDBOX or labels.CONTAINER
    restart_count: int
    state: str                    # running / exited / created / ...
    image: str = ""
    image_id: str = ""
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    ip: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def pod_namespace(self) -> str:
        return self.labels.get(L.POD_NAMESPACE, "")

    @property
    def pod_name(self) -> str:
        return self.labels.get(L.POD_NAME, "")


@dataclass(frozen=True)
class PodContainers:
    """Everything the runtime has of one pod: its sandboxes and app containers, each
    list newest first (by restart count, then creation)."""

    uid: str
    sandboxes: tuple[RuntimeContainer, ...] = ()
    containers: tuple[RuntimeContainer, ...] = ()

    @property
    def sandbox(self) -> RuntimeContainer | None:
        """The newest sandbox, if any."""
        return self.sandboxes[0] if self.sandboxes else None

    def instances(self, name: str) -> list[RuntimeContainer]:
        """The instances of the pod's container ``name``, newest first."""
        return [c for c in self.containers if c.name == name]

    def latest(self, name: str) -> RuntimeContainer | None:
        found = self.instances(name)
        return found[0] if found else None

    @property
    def all(self) -> tuple[RuntimeContainer, ...]:
        return (*self.containers, *self.sandboxes)

    @property
    def running(self) -> list[RuntimeContainer]:
        return [c for c in self.all if c.running]


def group_by_pod(containers: Sequence[RuntimeContainer]) -> dict[str, PodContainers]:
    """Containers grouped into :class:`PodContainers` by pod uid (pure)."""
    by_uid: dict[str, list[RuntimeContainer]] = {}
    for c in containers:
        by_uid.setdefault(c.pod_uid, []).append(c)
    result = {}
    for uid, found in by_uid.items():
        ordered = sorted(found, key=lambda c: (c.restart_count, c.created_at), reverse=True)
        result[uid] = PodContainers(
            uid, tuple(c for c in ordered if c.kind == L.SANDBOX),
            tuple(c for c in ordered if c.kind != L.SANDBOX))
    return result


# ----------------------------------------------------------- translation (pure)


def parse_docker_time(text: str | None) -> float:
    """Docker's RFC 3339 nanosecond time -> epoch seconds; 0 for its zero time."""
    if not text or text.startswith("0001-01-01"):
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    zone = ""
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, rest = frac.partition(sign)
            zone = sign + rest
    stamp = datetime.fromisoformat(head + (zone or "+00:00"))
    return stamp.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def from_inspect(data: Mapping[str, Any], network: str) -> RuntimeContainer:
    """A :class:`RuntimeContainer` from Docker's inspect body (pure)."""
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    state = data.get("State") or {}
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    ip = (networks.get(network) or {}).get("IPAddress", "")
    return RuntimeContainer(
        id=data["Id"], name=labels.get(L.CONTAINER_NAME, ""),
        pod_uid=labels.get(L.POD_UID, ""), kind=labels.get(L.CONTAINER_TYPE, L.CONTAINER),
        restart_count=int(labels.get(L.RESTART_COUNT, "0") or 0),
        state=state.get("Status", ""), image=config.get("Image", ""),
        image_id=data.get("Image", ""), exit_code=int(state.get("ExitCode", 0) or 0),
        oom_killed=bool(state.get("OOMKilled")), error=state.get("Error", "") or "",
        created_at=parse_docker_time(data.get("Created")),
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        ip=ip, labels=dict(labels))


def cpu_quota(limit: str) -> int:
    """A cpu limit ("500m", "2") as Docker's CpuQuota over :data:`CPU_PERIOD` (pure)."""
    return max(1000, int(parse_quantity(limit) * CPU_PERIOD))


def resolv_conf_mount(path: str) -> dict[str, Any]:
    """Docker's bind mount of the pod's resolv.conf (``path`` on the host) over the
    container's, read-only (see ``pod_dirs``: it wins over Docker's own file)."""
    return {"Type": "bind", "Source": path, "Target": "/etc/resolv.conf", "ReadOnly": True}


def container_config(pod: core_pb2.Pod, container: core_pb2.Container, *, node: str,
                     sandbox_id: str, restart_count: int, env: Sequence[str] | None = None,
                     resolv_conf: str = "") -> dict[str, Any]:
    """Docker's create body for one app container of ``pod`` joining ``sandbox_id`` (pure).

    Kubernetes' semantics: ``command`` replaces the image's ENTRYPOINT, ``args`` its CMD
    (``args`` alone keep the ENTRYPOINT); working dir is passed through; ``env`` is
    Docker's ``Env`` (``NAME=value``: the Service variables and the container's own, see
    ``envvars``; the container's own alone when not given); ``resolv_conf`` is the
    pod's file to mount over /etc/resolv.conf; limits become Docker's memory limit and
    CPU quota. Ports are the sandbox's: Docker refuses exposed ports on a container that
    joins another's network.
    """
    md = pod.metadata
    config: dict[str, Any] = {
        "Image": container.image,
        "Labels": L.container_labels(node=node, uid=md.uid, namespace=md.namespace,
                                     pod=md.name, container=container.name,
                                     restart_count=restart_count),
        "Env": list(env) if env is not None else [f"{e.name}={e.value}"
                                                   for e in container.env],
        "Tty": False, "OpenStdin": False,
    }
    if container.command:
        config["Entrypoint"] = list(container.command)
        config["Cmd"] = list(container.args)  # empty: the image's CMD is dropped too
    elif container.args:
        config["Cmd"] = list(container.args)
    if container.working_dir:
        config["WorkingDir"] = container.working_dir
    host: dict[str, Any] = {"NetworkMode": f"container:{sandbox_id}",
                            "IpcMode": f"container:{sandbox_id}"}
    if resolv_conf:
        host["Mounts"] = [resolv_conf_mount(resolv_conf)]
    limits = container.resources.limits
    if "memory" in limits:
        host["Memory"] = int(parse_quantity(limits["memory"]))
    if "cpu" in limits:
        host["CpuPeriod"] = CPU_PERIOD
        host["CpuQuota"] = cpu_quota(limits["cpu"])
    config["HostConfig"] = host
    return config


def sandbox_config(pod: core_pb2.Pod, *, node: str, network: str, image: str,
                   attempt: int, resolv_conf: str = "") -> dict[str, Any]:
    """Docker's create body for a pod's sandbox on the node's network (pure), with the
    pod's resolv.conf (a host path) mounted when given."""
    md = pod.metadata
    hostname = (pod.spec.hostname or md.name)[:63]
    config: dict[str, Any] = {
        "Image": image,
        "Hostname": hostname,
        "Labels": L.container_labels(node=node, uid=md.uid, namespace=md.namespace,
                                     pod=md.name, container=L.SANDBOX_NAME, kind=L.SANDBOX,
                                     restart_count=attempt),
        "HostConfig": {"NetworkMode": network, "IpcMode": "shareable"},
        # Stop the pause process with TERM, which it traps (it is PID 1).
        "StopSignal": "SIGTERM",
    }
    if resolv_conf:
        config["HostConfig"]["Mounts"] = [resolv_conf_mount(resolv_conf)]
    # The pod's network is the sandbox's, so its containers' ports are declared here
    # (informational, as in Kubernetes: nothing is published on the host).
    ports = {f"{p.container_port}/{(p.protocol or 'TCP').lower()}": {}
             for c in pod.spec.containers for p in c.ports}
    if ports:
        config["ExposedPorts"] = ports
    return config


# ----------------------------------------------------------------- the interface


class ContainerRuntime(Protocol):
    """What the kubelet needs of a container runtime (see the module)."""

    async def list_pods(self) -> dict[str, PodContainers]: ...

    async def pod(self, uid: str) -> PodContainers: ...

    async def pod_uids(self) -> set[str]: ...

    async def running_sandboxes(self) -> set[str]: ...

    async def version(self) -> str: ...

    async def info(self) -> dict[str, Any]: ...

    async def create_sandbox(self, pod: core_pb2.Pod, *, attempt: int,
                             resolv_conf: str = "") -> RuntimeContainer: ...

    async def create_container(self, pod: core_pb2.Pod, container: core_pb2.Container, *,
                               sandbox_id: str, restart_count: int,
                               env: Sequence[str] | None = None,
                               resolv_conf: str = "") -> str: ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, grace: float) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    def events(self) -> AsyncIterator[str]: ...


class DockerRuntime:
    """:class:`ContainerRuntime` on Docker's API through aiodocker (see the module)."""

    def __init__(self, docker: aiodocker.Docker, *, node: str, network: NetworkPlugin,
                 pause_image: str = PAUSE_IMAGE) -> None:
        self.docker = docker
        self.node = node
        self.network = network
        self.pause_image = pause_image

    # ------------------------------------------------------------ reading

    async def _inspect(self, container_id: str) -> RuntimeContainer | None:
        try:
            data = await self.docker.containers.container(container_id).show()
        except aiodocker.DockerError as e:
            if e.status == 404:
                return None  # removed between the list and the inspect
            raise
        found = from_inspect(data, self.network.sandbox_network_mode)
        if found.kind == L.SANDBOX:
            found = replace(found, ip=self.network.pod_ip(found.id, found.ip))
        return found

    async def _list(self, filters: dict[str, list[str]]) -> list[RuntimeContainer]:
        listed = await self.docker.containers.list(all=True, filters=json.dumps(filters))
        inspected = await asyncio.gather(*(self._inspect(c.id) for c in listed))
        return [c for c in inspected if c is not None]

    async def list_pods(self) -> dict[str, PodContainers]:
        """Every pod this node's containers belong to."""
        return group_by_pod(await self._list(L.node_filter(self.node)))

    async def pod_uids(self) -> set[str]:
        """The uids of the pods with containers here (one list call, no inspects)."""
        listed = await self.docker.containers.list(
            all=True, filters=json.dumps(L.node_filter(self.node)))
        return {(c["Labels"] or {}).get(L.POD_UID, "") for c in listed} - {""}

    async def running_sandboxes(self) -> set[str]:
        """The ids of this node's running sandboxes (one list call, no inspects)."""
        filters = L.node_filter(self.node)
        filters["label"] = [*filters.get("label", []), f"{L.CONTAINER_TYPE}={L.SANDBOX}"]
        listed = await self.docker.containers.list(filters=json.dumps(filters))
        return {c.id for c in listed}

    async def pod(self, uid: str) -> PodContainers:
        return group_by_pod(await self._list(L.pod_filter(self.node, uid))).get(
            uid, PodContainers(uid))

    async def version(self) -> str:
        return str((await self.docker.version()).get("Version", ""))

    async def info(self) -> dict[str, Any]:
        return await self.docker.system.info()  # type: ignore[no-any-return]

    # ------------------------------------------------------------ writing

    async def create_sandbox(self, pod: core_pb2.Pod, *, attempt: int,
                             resolv_conf: str = "") -> RuntimeContainer:
        """Create and start the pod's sandbox, its network plumbed by the network
        plugin when Docker does not; returns it as inspected (with its IP)."""
        config = sandbox_config(pod, node=self.node,
                                network=self.network.sandbox_network_mode,
                                image=self.pause_image, attempt=attempt,
                                resolv_conf=resolv_conf)
        name = L.docker_name(config["Labels"])
        container = await self._create(config, name)
        await self.start(container)
        if self.network.plumbs_sandbox:
            try:
                data = await self.docker.containers.container(container).show()
                pid = int((data.get("State") or {}).get("Pid") or 0)
                if not pid:
                    raise RuntimeError(f"sandbox {name} is not running")
                ip = await self.network.setup(pod, container, f"/proc/{pid}/ns/net")
                # Docker wrote no line for the pod's own name (network none): add it,
                # as the kubelet's managed hosts file does; the app containers share it.
                if data.get("HostsPath"):
                    await asyncio.to_thread(_add_host, data["HostsPath"], ip,
                                            config["Hostname"])
            except BaseException:
                # A sandbox without its network is of no use: the next sync makes
                # another (and the plugin released what it took).
                await self.remove(container)
                raise
        inspected = await self._inspect(container)
        if inspected is None:
            raise RuntimeError(f"sandbox {name} vanished after it started")
        return inspected

    async def create_container(self, pod: core_pb2.Pod, container: core_pb2.Container, *,
                               sandbox_id: str, restart_count: int,
                               env: Sequence[str] | None = None,
                               resolv_conf: str = "") -> str:
        config = container_config(pod, container, node=self.node, sandbox_id=sandbox_id,
                                  restart_count=restart_count, env=env,
                                  resolv_conf=resolv_conf)
        return await self._create(config, L.docker_name(config["Labels"]))

    async def _create(self, config: dict[str, Any], name: str) -> str:
        try:
            return (await self.docker.containers.create(config, name=name)).id
        except aiodocker.DockerError as e:
            if e.status != 409:
                raise
        # A container of that name is left from a create whose answer was lost (or a
        # crash between create and start): it is ours, by its name; replace it.
        await self.remove(name)
        return (await self.docker.containers.create(config, name=name)).id

    async def start(self, container_id: str) -> None:
        await self.docker.containers.container(container_id).start()

    async def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM (the image's stop signal), then SIGKILL after ``grace`` seconds."""
        seconds = max(0, round(grace))
        try:
            # The HTTP call lasts as long as the grace period: give it room.
            await self.docker.containers.container(container_id).stop(
                t=seconds, timeout=seconds + 30)
        except aiodocker.DockerError as e:
            if e.status not in (304, 404):  # already stopped / already gone
                raise
        # A stopped sandbox's namespace is gone: so is its network (a no-op for the
        # containers that are no sandbox).
        await self.network.teardown(container_id)

    async def remove(self, container_id: str) -> None:
        await remove_container(self.docker, container_id)
        await self.network.teardown(container_id)

    # ------------------------------------------------------------- events

    async def events(self) -> AsyncIterator[str]:
        """The pod uids of this node's container events, until the stream ends (dockerd
        went away: the caller subscribes again)."""
        filters = {"type": ["container"], "label": [f"{L.NODE}={self.node}"]}
        stream = aiodocker.events.DockerEvents(self.docker)
        subscriber = stream.subscribe(filters=json.dumps(filters))
        try:
            while True:
                event = await subscriber.get()
                if event is None:
                    return
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                uid = attributes.get(L.POD_UID)
                if uid:
                    yield uid
        finally:
            await stream.stop()
            if stream.task is not None:
                stream.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream.task


def _add_host(path: str, ip: str, hostname: str) -> None:
    with open(path, "a") as f:
        f.write(f"{ip}\t{hostname}\n")


def now() -> float:
    """Wall-clock seconds (Docker reports times in them)."""
    return time.time()
