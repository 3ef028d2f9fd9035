"""Where the chaos runs (:class:`Target`): a cluster of child processes started for the
run (:class:`ProcessTarget`, for ``tests/chaos``) or the local cluster ``skiff up``
started under supervisord (:class:`SupervisorTarget`, for ``skiff chaos``). A target
lists its components and kills, restarts and health-checks them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from skiff.chaos.config import (
    APISERVER,
    CONTROLLER_MANAGER,
    ELECTION_FLAGS,
    HEALTHY_TIMEOUT,
    KUBELET,
    KUBELET_FLAGS,
    LEADER_LEASES,
    SCHEDULER,
    STORE,
)
from skiff.health import grpc_healthy, wait_for


@dataclass(frozen=True)
class Component:
    """One killable process: its name (unique in the target), kind, and, for a store
    replica, its client endpoint."""

    name: str
    kind: str
    endpoint: str = ""


class Target(Protocol):
    """A running cluster the chaos can kill parts of."""

    @property
    def apiservers(self) -> list[str]: ...

    @property
    def store_endpoints(self) -> list[str]: ...

    @property
    def nodes(self) -> list[str]: ...

    def components(self) -> list[Component]:
        """Every component: store replicas, apiservers, schedulers, controller-managers
        and kubelets."""
        ...

    async def kill(self, component: Component) -> None:
        """SIGKILL it (no chance to clean up or release a Lease)."""
        ...

    async def restart(self, component: Component) -> None:
        """Start it again (a no-op if something already restarted it)."""
        ...

    async def wait_healthy(self, component: Component, timeout: float) -> None:
        """Return once it serves again (TimeoutError otherwise)."""
        ...

    async def identity(self, component: Component) -> str | None:
        """Its leader-election identity (for a scheduler or controller-manager)."""
        ...


async def _free_cidrs(count: int) -> list[str]:
    """``count`` /24s in 10.100.0.0-10.199.255.0 that no Docker network overlaps."""
    import aiodocker

    docker = aiodocker.Docker()
    try:
        taken = [ipaddress.ip_network(c["Subnet"], strict=False)
                 for network in await docker.networks.list()
                 for c in (network.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
    finally:
        await docker.close()
    chosen: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for _ in range(1000):
        candidate = ipaddress.ip_network(
            f"10.{secrets.randbelow(100) + 100}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(t) for t in [*taken, *chosen] if t.version == 4):
            chosen.append(candidate)
            if len(chosen) == count:
                return [str(c) for c in chosen]
    raise RuntimeError("no free /24 for the pod networks")


class ProcessTarget:
    """A cluster of child processes on free loopback ports (``skiff.testing.processes``):
    three store replicas, two apiservers (so clients fail over), two schedulers and two
    controller-managers (leader-elected, short leases), ``nodes`` kubelets on Docker.
    No proxy: nothing here goes through Services."""

    def __init__(self, base_dir: Path, *, nodes: int = 1, log_level: str = "info") -> None:
        from skiff.testing import processes as p  # test machinery: only this target needs it

        self._p = p
        self.base_dir = base_dir
        self.store = p.StoreCluster(base_dir / "store", log_level=log_level)
        self.apiserver_processes = [
            p.APIServer(base_dir / "apiserver", self.store.endpoints, name=f"apiserver-{i}",
                        log_level=log_level) for i in range(2)]
        servers = [a.address for a in self.apiserver_processes]
        self.schedulers = [p.Scheduler(base_dir / "scheduler", servers, name=f"scheduler-{i}",
                                       extra_args=ELECTION_FLAGS, log_level=log_level)
                           for i in range(2)]
        self.controller_managers = [
            p.ControllerManager(base_dir / "controller-manager", servers,
                                name=f"controller-manager-{i}", extra_args=ELECTION_FLAGS,
                                log_level=log_level) for i in range(2)]
        run = secrets.token_hex(3)
        self._node_names = [f"chaos-{run}-{i}" for i in range(nodes)]
        self.kubelets: list[Any] = []
        self._log_level = log_level

    @property
    def apiservers(self) -> list[str]:
        return [a.address for a in self.apiserver_processes]

    @property
    def store_endpoints(self) -> list[str]:
        return self.store.endpoints

    @property
    def nodes(self) -> list[str]:
        return list(self._node_names)

    def _processes(self) -> dict[str, Any]:
        return {proc.name: proc for proc in (*self.apiserver_processes, *self.schedulers,
                                             *self.controller_managers, *self.kubelets)}

    def components(self) -> list[Component]:
        stores = [Component(m.name, STORE, m.endpoint) for m in self.store.members]
        kinds = {**{a.name: APISERVER for a in self.apiserver_processes},
                 **{s.name: SCHEDULER for s in self.schedulers},
                 **{c.name: CONTROLLER_MANAGER for c in self.controller_managers},
                 **{k.name: KUBELET for k in self.kubelets}}
        return [*stores, *(Component(name, kind) for name, kind in kinds.items())]

    async def start(self) -> None:
        """Start everything and wait until it serves (kubelets: their Node Ready)."""
        self.store.start()
        await self.store.wait_healthy(timeout=HEALTHY_TIMEOUT)
        for server in self.apiserver_processes:
            server.start()
        for server in self.apiserver_processes:
            await server.wait_healthy(timeout=HEALTHY_TIMEOUT)
        for process in (*self.schedulers, *self.controller_managers):
            process.start()
        cidrs = await _free_cidrs(len(self._node_names))
        self.kubelets = [self._p.Kubelet(self.base_dir / "kubelet", self.apiservers,
                                         node_name=name, pod_cidr=cidr,
                                         extra_args=KUBELET_FLAGS, log_level=self._log_level)
                         for name, cidr in zip(self._node_names, cidrs, strict=True)]
        for kubelet in self.kubelets:
            kubelet.start()
        for kubelet in self.kubelets:
            await kubelet.wait_ready(timeout=HEALTHY_TIMEOUT)

    async def stop(self) -> None:
        """Stop every process, then remove the nodes' containers and networks (kubelets
        leave them running on purpose, for their successor to adopt): the Docker
        network, and what a kubelet's bridge plugin put into the kernel (links,
        routes, its nftables table, DOCKER-USER entries: nothing for the docker plugin)."""
        for process in self._processes().values():
            process.stop()
        self.store.stop()
        import aiodocker

        from skiff.kubelet import podnet
        from skiff.kubelet.containers import remove_node

        docker = aiodocker.Docker()
        try:
            for node in self._node_names:
                await remove_node(docker, node)
                await podnet.remove_pod_network(node)
        finally:
            await docker.close()

    def logs(self, lines: int = 80) -> str:
        return "\n".join([self.store.logs(lines),
                          *(p.logs(lines) for p in self._processes().values())])

    async def kill(self, component: Component) -> None:
        if component.kind == STORE:
            self.store.kill(self._store_index(component))
        else:
            self._processes()[component.name].kill()

    async def restart(self, component: Component) -> None:
        if component.kind == STORE:
            self.store.restart(self._store_index(component))
        else:
            self._processes()[component.name].restart()

    async def wait_healthy(self, component: Component, timeout: float) -> None:
        if component.kind == STORE:
            await self.store.wait_healthy(timeout=timeout,
                                          members=[self._store_index(component)])
            return
        process = self._processes()[component.name]
        if component.kind == APISERVER:
            await process.wait_healthy(timeout=timeout)
        elif component.kind == KUBELET:
            await process.wait_ready(timeout=timeout)
        else:
            # Schedulers and controller-managers serve no health check here: alive is
            # all there is to see (whether one leads is measured from its Lease).
            async def alive() -> bool:
                return bool(process.alive)
            await wait_for(alive, timeout=timeout, what=f"{component.name} running")

    async def identity(self, component: Component) -> str | None:
        # Schedulers and controller-managers are started with --identity <name>.
        return component.name if component.kind in LEADER_LEASES else None

    def _store_index(self, component: Component) -> int:
        return [m.name for m in self.store.members].index(component.name)


class SupervisorTarget:
    """The local cluster ``skiff up`` runs under supervisord from ``data_dir``.

    What runs where is read from the cluster's own supervisord.conf (program names and
    their listen flags), so any ports ``skiff up`` chose work. Kills are
    ``supervisorctl signal KILL <program>``; supervisord's autorestart may bring the
    victim back before :meth:`restart` asks it to. Identities are the daemons'
    default, ``<hostname>_<pid>``.
    """

    def __init__(self, data_dir: Path) -> None:
        self.config = data_dir / "supervisord.conf"
        if not self.config.exists():
            raise RuntimeError(f"no cluster configured in {data_dir} (skiff up starts one)")
        self._programs = supervised_programs(self.config.read_text())
        if not any(c.kind == APISERVER for c in self._programs):
            raise RuntimeError(f"{self.config} runs no apiserver")

    @property
    def apiservers(self) -> list[str]:
        return [c.endpoint for c in self._programs if c.kind == APISERVER]

    @property
    def store_endpoints(self) -> list[str]:
        return [c.endpoint for c in self._programs if c.kind == STORE]

    @property
    def nodes(self) -> list[str]:
        return [c.name.removeprefix("kubelet-") for c in self._programs if c.kind == KUBELET]

    def components(self) -> list[Component]:
        return list(self._programs)

    async def _ctl(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "supervisorctl", "-c", str(self.config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        return out.decode(errors="replace").strip()

    async def kill(self, component: Component) -> None:
        await self._ctl("signal", "KILL", component.name)

    async def restart(self, component: Component) -> None:
        # "already started" when autorestart was quicker: fine.
        await self._ctl("start", component.name)

    async def wait_healthy(self, component: Component, timeout: float) -> None:
        if component.kind in (STORE, APISERVER):
            address = component.endpoint
        else:
            async def running() -> bool:
                return "RUNNING" in await self._ctl("status", component.name)
            await wait_for(running, timeout=timeout, interval=0.2,
                           what=f"{component.name} running")
            return
        await wait_for(lambda: grpc_healthy(address), timeout=timeout,
                       what=f"{component.name} healthy")

    async def identity(self, component: Component) -> str | None:
        pid = await self._ctl("pid", component.name)
        return f"{socket.gethostname()}_{pid}" if pid.isdigit() and pid != "0" else None


def supervised_programs(config_text: str) -> list[Component]:
    """The components a supervisord.conf of ``skiff up`` runs, by program: store
    replicas (``services.store``, endpoint from --listen-client-urls), apiservers
    (``services.apiserver``, endpoint from --listen), schedulers, controller-managers
    and kubelets (``services.<name>``). Other programs (proxies) are left alone."""
    kinds = {"store": STORE, "apiserver": APISERVER, "scheduler": SCHEDULER,
             "controller_manager": CONTROLLER_MANAGER, "kubelet": KUBELET}
    found = []
    for name, body in re.findall(r"^\[program:([^\]]+)\]\n(.*?)(?=^\[|\Z)", config_text,
                                 flags=re.M | re.S):
        command = re.search(r"^command=.*?-m services\.(\w+)(.*)$", body, flags=re.M)
        if command is None or command.group(1) not in kinds:
            continue
        kind = kinds[command.group(1)]
        flag = {STORE: r"--listen-client-urls\s+(?:https?://)?([^\s,]+)",
                APISERVER: r"--listen\s+([^\s,]+)"}.get(kind)
        listen = re.search(flag, command.group(2)) if flag else None
        found.append(Component(name, kind, listen.group(1) if listen else ""))
    return found
