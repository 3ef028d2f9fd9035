"""The node: registering it, its status, and its Lease heartbeat.

Kubernetes' ``kubelet_node_status.go`` and ``nodelease``:

- :meth:`NodeStatusManager.register` creates the Node (or takes over an existing one of
  that name): labels, ``spec.podCIDR``, and a full status: capacity from the host (or
  flags), allocatable = capacity - ``--system-reserved``, ``nodeInfo``, addresses
  (InternalIP = ``--address``, Hostname = the node name) and the kubelet endpoint port.
- :meth:`NodeStatusManager.run_status` computes the conditions every
  ``node_status_update_frequency`` (Ready; MemoryPressure and DiskPressure from the
  host's real figures against ``--eviction-hard``) and posts the status when they
  changed, and at least every ``node_status_report_frequency`` (the heartbeat of the
  Ready condition's lastHeartbeatTime).
- :meth:`NodeStatusManager.run_lease` renews ``kube-node-lease/<node>`` every
  ``node_lease_renew_interval``: the cheap heartbeat node lifecycle watches.

The condition computation (:func:`conditions_for`) and capacity arithmetic are pure.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

import skiff
from services.kubelet.config import EvictionThresholds, KubeletConfig
from skiff.api import errors
from skiff.api.namespaces import NODE_LEASE_NAMESPACE
from skiff.api.quantity import format_quantity, parse_quantity
from skiff.api.v1 import coordination_pb2, core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.logging import get_logger

log = get_logger("skiff.kubelet.node_status")

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


@dataclass(frozen=True)
class HostFigures:
    """What the conditions are computed from (bytes)."""

    memory_available: int
    disk_available: int
    disk_total: int
    runtime_up: bool
    runtime_error: str = ""


def _meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[name] = int(parts[0]) * 1024
    return values


def host_memory() -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes."""
    info = _meminfo()
    return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))


def disk_figures(path: str) -> tuple[int, int]:
    """(available, total) bytes of the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def allocatable(capacity: dict[str, str], reserved: dict[str, str]) -> dict[str, str]:
    """capacity - reserved, per resource, never below zero (pure)."""
    result = {}
    for name, value in capacity.items():
        left = parse_quantity(value) - parse_quantity(reserved.get(name, "0"))
        left = max(Fraction(0), left)
        result[name] = format_quantity(left, binary=name == "memory")
    return result


def _condition(type_: str, status: str, reason: str, message: str
               ) -> core_pb2.NodeCondition:
    return core_pb2.NodeCondition(type=type_, status=status, reason=reason, message=message)


def conditions_for(figures: HostFigures, thresholds: EvictionThresholds
                   ) -> list[core_pb2.NodeCondition]:
    """The kubelet's node conditions for these figures, without times (pure)."""
    memory = figures.memory_available < thresholds.memory_available
    disk = (figures.disk_total > 0
            and figures.disk_available / figures.disk_total < thresholds.nodefs_available)
    if figures.runtime_up:
        ready = _condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
    else:
        ready = _condition("Ready", "False", "KubeletNotReady",
                           f"container runtime is down: {figures.runtime_error}")
    return [
        _condition("MemoryPressure", "True" if memory else "False",
                   "KubeletHasInsufficientMemory" if memory else "KubeletHasSufficientMemory",
                   "kubelet has insufficient memory available" if memory
                   else "kubelet has sufficient memory available"),
        _condition("DiskPressure", "True" if disk else "False",
                   "KubeletHasDiskPressure" if disk else "KubeletHasNoDiskPressure",
                   "kubelet has disk pressure" if disk else "kubelet has no disk pressure"),
        _condition("PIDPressure", "False", "KubeletHasSufficientPID",
                   "kubelet has sufficient PID available"),
        ready,
    ]


def merge_conditions(old: list[core_pb2.NodeCondition], new: list[core_pb2.NodeCondition],
                     now: Timestamp) -> tuple[list[core_pb2.NodeCondition], bool]:
    """``new`` stamped with heartbeat ``now`` and transition times kept from ``old``
    where the status stayed; whether any status, reason or message changed (pure)."""
    by_type = {c.type: c for c in old}
    changed = False
    merged = []
    for condition in new:
        c = core_pb2.NodeCondition()
        c.CopyFrom(condition)
        c.last_heartbeat_time.CopyFrom(now)
        previous = by_type.pop(condition.type, None)
        if previous is not None and previous.status == c.status:
            c.last_transition_time.CopyFrom(previous.last_transition_time)
        else:
            c.last_transition_time.CopyFrom(now)
        if previous is None or (previous.status, previous.reason, previous.message) != (
                c.status, c.reason, c.message):
            changed = True
        merged.append(c)
    merged.extend(by_type.values())  # others' conditions are kept as they are
    return merged, changed


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip('"')
    return "Linux"


class NodeStatusManager:
    """Registers the node and keeps its status and Lease fresh (see the module).

    ``figures()`` reads the host and the runtime (injected so tests can press on it).
    """

    def __init__(self, client: Client, config: KubeletConfig, *,
                 runtime_version: Callable[[], Awaitable[str]],
                 figures: Callable[[], Awaitable[HostFigures]]) -> None:
        self.client = client
        self.config = config
        self.runtime_version = runtime_version
        self.figures = figures
        self.node_uid = ""
        self._last_report = 0.0
        self._log = log.bind(node=config.node_name)

    # -------------------------------------------------------------- building

    def capacity(self) -> dict[str, str]:
        total, _ = host_memory()
        cpus = self.config.cpus or str(os.cpu_count() or 1)
        memory = self.config.memory or format_quantity(total, binary=True)
        return {"cpu": format_quantity(parse_quantity(cpus)),
                "memory": format_quantity(parse_quantity(memory), binary=True),
                "pods": str(self.config.max_pods)}

    async def node_info(self) -> core_pb2.NodeSystemInfo:
        try:
            version = await self.runtime_version()
        except Exception as e:  # the runtime may be down: report what is known
            self._log.warning("cannot read the container runtime's version", error=repr(e))
            version = "unknown"
        uname = os.uname()
        return core_pb2.NodeSystemInfo(
            machine_id=_read("/etc/machine-id"), boot_id=_read("/proc/sys/kernel/random/boot_id"),
            system_uuid=_read("/sys/class/dmi/id/product_uuid"),
            kernel_version=uname.release, os_image=_os_image(),
            container_runtime_version=f"docker://{version}",
            kubelet_version=f"v{skiff.__version__}-skiff",
            kube_proxy_version=f"v{skiff.__version__}-skiff",
            operating_system=platform.system().lower(),
            architecture=_ARCH.get(uname.machine, uname.machine))

    def _node_labels(self) -> dict[str, str]:
        uname = os.uname()
        return {"kubernetes.io/hostname": self.config.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _ARCH.get(uname.machine, uname.machine),
                **self.config.node_labels}

    async def _fill_status(self, node: core_pb2.Node) -> None:
        status = node.status
        capacity = self.capacity()
        status.capacity.clear()
        status.capacity.update(capacity)
        status.allocatable.clear()
        status.allocatable.update(allocatable(capacity, self.config.system_reserved))
        del status.addresses[:]
        status.addresses.add(type="InternalIP", address=self.config.address)
        status.addresses.add(type="Hostname", address=self.config.node_name)
        status.daemon_endpoints.kubelet_endpoint.port = self.config.port
        status.node_info.CopyFrom(await self.node_info())
        now = Timestamp()
        now.GetCurrentTime()
        conditions, _ = merge_conditions(list(status.conditions),
                                         conditions_for(await self.figures(),
                                                        self.config.eviction_hard), now)
        del status.conditions[:]
        status.conditions.extend(conditions)

    # ------------------------------------------------------------ registering

    async def register(self) -> core_pb2.Node:
        """Create the Node, or take over the existing one; post a full status."""
        name = self.config.node_name
        node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name,
                                                          labels=self._node_labels()),
                             spec=core_pb2.NodeSpec(pod_cidr=self.config.pod_cidr,
                                                    pod_cidrs=[self.config.pod_cidr]))
        try:
            node = await self.client.nodes.create(node)
            self._log.info("registered the node")
        except errors.AlreadyExists:
            node = await self.client.nodes.get(name, "")
            wanted = self._node_labels()
            if any(node.metadata.labels.get(k) != v for k, v in wanted.items()) or (
                    not node.spec.pod_cidr):
                node.metadata.labels.update(wanted)
                if not node.spec.pod_cidr:
                    node.spec.pod_cidr = self.config.pod_cidr
                    node.spec.pod_cidrs[:] = [self.config.pod_cidr]
                node = await self.client.nodes.update(node)
            self._log.info("node exists; taking it over")
        self.node_uid = node.metadata.uid
        await self._fill_status(node)
        node.metadata.ClearField("resource_version")
        node = await self.client.nodes.update_status(node)
        self._last_report = asyncio.get_running_loop().time()
        return node

    # -------------------------------------------------------------- status

    async def update_status(self, *, force: bool = False) -> bool:
        """Post the conditions if they changed or the report is due; whether it posted."""
        loop = asyncio.get_running_loop()
        due = loop.time() - self._last_report >= self.config.node_status_report_frequency
        node = await self.client.nodes.get(self.config.node_name, "")
        now = Timestamp()
        now.GetCurrentTime()
        conditions, changed = merge_conditions(
            list(node.status.conditions),
            conditions_for(await self.figures(), self.config.eviction_hard), now)
        if not (changed or due or force):
            return False
        del node.status.conditions[:]
        node.status.conditions.extend(conditions)
        node.metadata.ClearField("resource_version")
        await self.client.nodes.update_status(node)
        self._last_report = loop.time()
        if changed:
            self._log.info("node conditions changed",
                           conditions={c.type: c.status for c in conditions})
        return True

    async def run_status(self) -> None:
        while True:
            await asyncio.sleep(self.config.node_status_update_frequency)
            try:
                await self.update_status()
            except errors.NotFound:
                self._log.warning("the node was deleted; registering it again")
                await self.register()
            except errors.APIError as e:
                self._log.warning("node status not posted", error=str(e))

    # --------------------------------------------------------------- lease

    async def renew_lease(self) -> None:
        name = self.config.node_name
        try:
            lease = await self.client.leases.get(name, NODE_LEASE_NAMESPACE)
        except errors.NotFound:
            lease = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(
                name=name, namespace=NODE_LEASE_NAMESPACE))
            if self.node_uid:
                lease.metadata.owner_references.add(
                    api_version="v1", kind="Node", name=name, uid=self.node_uid)
            lease.spec.holder_identity = name
            lease.spec.lease_duration_seconds = self.config.node_lease_duration
            lease.spec.renew_time.GetCurrentTime()
            await self.client.leases.create(lease)
            return
        lease.spec.holder_identity = name
        lease.spec.lease_duration_seconds = self.config.node_lease_duration
        lease.spec.renew_time.GetCurrentTime()
        await self.client.leases.update(lease)

    async def run_lease(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except errors.APIError as e:
                self._log.warning("lease not renewed", error=str(e))
            await asyncio.sleep(self.config.node_lease_renew_interval)
