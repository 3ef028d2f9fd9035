"""Real daemons as child processes on free loopback ports, for tests and benchmarks.

A :class:`Daemon` is one process with its log file; a :class:`StoreCluster` is three
(or N) ``skiff-store`` replicas wired together. Both wait on real health checks
(polled with a deadline, never a fixed sleep), can SIGKILL and restart members, and
always stop what they started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from skiff.health import grpc_healthy, wait_for
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc

__all__ = ["APIServer", "ControllerManager", "Daemon", "DnsServer", "Kubelet", "ProcessCluster",
           "Proxy",
           "Scheduler", "StoreCluster", "free_port", "grpc_healthy", "wait_for"]

LOOPBACK = "127.0.0.1"


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now, below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` is ephemeral: any outgoing connection
    (a raft peer dialling, a gRPC client) may take it before the daemon binds it, and
    that replica then never joins. Ports below the range are only ever taken on purpose.
    """
    rng = secrets.SystemRandom()
    low, high = 15000, _ephemeral_low()
    for _ in range(1000):
        port = rng.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high} on {host}")


@dataclass
class Daemon:
    """One daemon process, its arguments and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env}, start_new_session=True)
        log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and, for SIGKILL, reap the process."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(sig)
            if sig == signal.SIGKILL:
                self.process.wait()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class StoreMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    daemon: Daemon

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"


class ProcessCluster:
    """Members that each run as one :class:`Daemon` and serve clients at ``endpoint``.

    What the store's cluster here and the benchmarks' etcd and gRPC-floor clusters
    share; each says how a member shows it is healthy (:meth:`_healthy`).
    """

    members: list[Any]
    #: What a member is called in wait_healthy's timeout message.
    kind = "member"

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        for member in self.members:
            member.daemon.start()

    async def _healthy(self, endpoint: str) -> bool:
        raise NotImplementedError

    async def wait_healthy(self, timeout: float = 30.0,
                           members: list[int] | None = None) -> None:
        """Wait until every (given) member is healthy, each within ``timeout``."""
        for i in members if members is not None else range(len(self.members)):
            member = self.members[i]
            await wait_for(lambda m=member: self._healthy(m.endpoint), timeout=timeout,
                           what=f"{self.kind} {member.name} healthy")

    async def leader(self, timeout: float = 10.0) -> int:
        """Index of the member that leads, as the live members themselves report it
        (etcd's Maintenance.Status, which Skiff's store answers too)."""

        async def find() -> int | None:
            for i, member in enumerate(self.members):
                if not member.daemon.alive:
                    continue
                async with grpc.aio.insecure_channel(member.endpoint) as channel:
                    status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                        rpc_pb2.StatusRequest(), timeout=1.0)
                if status.leader and status.leader == status.header.member_id:
                    return i + 1  # truthy even for member 0
            return None

        return await wait_for(find, timeout=timeout, what=f"a leader among the {self.kind}s") - 1

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        self.members[index].daemon.kill(sig)

    def restart(self, index: int) -> None:
        """Start a stopped (or killed) member again, on its own data."""
        daemon = self.members[index].daemon
        daemon.stop()
        daemon.start()

    def stop(self) -> None:
        for member in self.members:
            member.daemon.stop()

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"----- {m.name} ({m.daemon.log_path}) -----\n{m.daemon.log_tail(lines)}"
                         for m in self.members)


class StoreCluster(ProcessCluster):
    """``size`` skiff-store replicas under ``base_dir`` (data, logs, the peer password).

    ``unsafe_no_fsync`` runs them with ``--unsafe-no-fsync`` (nothing synced to disk);
    ``env`` adds to each replica's environment (e.g. ``SKIFF_STORE_SYNC_LOG``).
    """

    kind = "store member"

    def __init__(self, base_dir: Path, *, size: int = 3, extra_args: list[str] | None = None,
                 log_level: str = "info", unsafe_no_fsync: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        base_dir.mkdir(parents=True, exist_ok=True)
        password_file = base_dir / "peer-password"
        password_file.write_text(secrets.token_hex(16))
        self.members: list[StoreMember] = []
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"s{i}=http://{LOOPBACK}:{peer}" for i, (_, peer) in enumerate(ports))
        for i, (client, peer) in enumerate(ports):
            name = f"s{i}"
            argv = [sys.executable, "-m", "services.store", "--name", name,
                    "--data-dir", str(base_dir / name),
                    "--listen-client-urls", f"http://{LOOPBACK}:{client}",
                    "--listen-peer-urls", f"http://{LOOPBACK}:{peer}",
                    "--initial-cluster", initial, "--peer-password-file", str(password_file),
                    "--log-level", log_level, *(extra_args or [])]
            if unsafe_no_fsync:
                argv.append("--unsafe-no-fsync")
            daemon = Daemon(name, argv, base_dir / f"{name}.log", env=dict(env or {}))
            self.members.append(StoreMember(name, client, peer, base_dir / name, daemon))

    async def _healthy(self, endpoint: str) -> bool:
        return await grpc_healthy(endpoint)  # SERVING: a leader known, caught up

    def crash_all(self) -> None:
        """SIGKILL every replica at once, then start each again on its own data directory."""
        for index in range(len(self.members)):
            self.kill(index)
        for index in range(len(self.members)):
            self.restart(index)


class Process:
    """One named Skiff daemon process with its log: start, kill, restart, stop, logs."""

    def __init__(self, base_dir: Path, name: str, argv: list[str]) -> None:
        self.name = name
        base_dir.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(name, argv, base_dir / f"{name}.log")

    @property
    def pid(self) -> int | None:
        return self.daemon.process.pid if self.daemon.process is not None else None

    @property
    def alive(self) -> bool:
        return self.daemon.alive

    def start(self) -> None:
        self.daemon.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.daemon.kill(sig)

    def restart(self) -> None:
        self.daemon.stop()
        self.daemon.start()

    def stop(self) -> None:
        self.daemon.stop()

    def logs(self, lines: int = 60) -> str:
        return f"----- {self.name} ({self.daemon.log_path}) -----\n{self.daemon.log_tail(lines)}"


@contextlib.asynccontextmanager
async def control_plane(base_dir: Path, *, log_level: str = "info",
                        apiserver_args: list[str] | None = None, timeout: float = 60.0,
                        unsafe_no_fsync: bool = False, rest: bool = False,
                        ) -> AsyncIterator[tuple[StoreCluster, APIServer]]:
    """Three store replicas and an apiserver under ``base_dir``, healthy; stopped on
    leaving (what every benchmark that starts its own cluster needs). ``rest=True``
    also serves the Kubernetes REST API (see :class:`APIServer`)."""
    store = StoreCluster(base_dir / "store", log_level=log_level,
                         unsafe_no_fsync=unsafe_no_fsync)
    apiserver = APIServer(base_dir / "apiserver", store.endpoints, log_level=log_level,
                          extra_args=apiserver_args, rest=rest)
    store.start()
    try:
        await store.wait_healthy(timeout=timeout)
        apiserver.start()
        await apiserver.wait_healthy(timeout=timeout)
        yield store, apiserver
    finally:
        apiserver.stop()
        store.stop()


class APIServer(Process):
    """One ``skiff-apiserver`` process against ``store_endpoints``, on a free port.

    ``rest=True`` also serves the Kubernetes REST API over HTTPS on another free port
    (:attr:`rest_url`), with a CA, serving certificate, admin token and kubeconfig made
    in ``base_dir`` (:attr:`ca_file`, :attr:`token`, :attr:`kubeconfig`).
    """

    def __init__(self, base_dir: Path, store_endpoints: list[str], *, name: str = "apiserver",
                 extra_args: list[str] | None = None, log_level: str = "info",
                 rest: bool = False) -> None:
        self.port = free_port()
        self.rest_port = 0
        rest_args: list[str] = []
        if rest:
            rest_args = self._make_rest(base_dir)
        super().__init__(base_dir, name, [
            sys.executable, "-m", "services.apiserver",
            "--store-endpoints", ",".join(store_endpoints),
            "--listen", f"{LOOPBACK}:{self.port}", "--log-level", log_level,
            *rest_args, *(extra_args or [])])

    def _make_rest(self, base_dir: Path) -> list[str]:
        from skiff import kubeconfig, pki, tokenfile  # only tests with REST need them

        self.rest_port = free_port()
        pki_dir = base_dir / "pki"
        ca = pki.ensure_ca(pki_dir)
        serving = pki.ensure_serving_cert(pki_dir, ca)
        tokens = base_dir / "tokens.csv"
        self.token = tokenfile.ensure_admin_token(tokens)
        self.ca_file = ca.cert
        self.kubeconfig = base_dir / "kubeconfig"
        kubeconfig.write_admin_kubeconfig(self.kubeconfig, server=self.rest_url,
                                          ca_pem=ca.cert.read_bytes(), token=self.token)
        return ["--secure-port", str(self.rest_port), "--bind-address", LOOPBACK,
                "--tls-cert-file", str(serving.cert),
                "--tls-private-key-file", str(serving.key), "--token-auth-file", str(tokens)]

    @property
    def rest_url(self) -> str:
        return f"https://{LOOPBACK}:{self.rest_port}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        await wait_for(lambda: grpc_healthy(self.address), timeout=timeout,
                       what=f"{self.name} healthy")


class Scheduler(Process):
    """One ``skiff-scheduler`` process against the apiservers ``servers``.

    ``name`` is its ``--identity`` too, so a test finds the leader by the Lease's
    holderIdentity. It serves no health check: whether it works shows in what it does
    (pods bound, the Lease held).
    """

    def __init__(self, base_dir: Path, servers: list[str], *, name: str = "scheduler",
                 extra_args: list[str] | None = None, log_level: str = "info") -> None:
        super().__init__(base_dir, name, [
            sys.executable, "-m", "services.scheduler", "--server", ",".join(servers),
            "--identity", name, "--log-level", log_level, *(extra_args or [])])


class ControllerManager(Process):
    """One ``skiff-controller-manager`` process against the apiservers ``servers``.

    ``name`` is its ``--identity`` (the Lease's holderIdentity when it leads);
    ``controllers`` the ``--controllers`` it runs (None: all). Like the scheduler it
    serves no health check: whether it works shows in what it does.
    """

    def __init__(self, base_dir: Path, servers: list[str], *,
                 name: str = "controller-manager", controllers: list[str] | None = None,
                 extra_args: list[str] | None = None, log_level: str = "info") -> None:
        argv = [sys.executable, "-m", "services.controller_manager",
                "--server", ",".join(servers), "--identity", name, "--log-level", log_level]
        if controllers is not None:
            argv += ["--controllers", ",".join(controllers)]
        super().__init__(base_dir, name, [*argv, *(extra_args or [])])


class Proxy(Process):
    """One ``skiff-proxy`` process for node ``node_name`` against the apiservers ``servers``.

    Its gRPC health listens on a free port (:attr:`health_address`); NodePorts listen on
    ``node_address`` (a loopback address of its own keeps tests apart). ``pid`` gives
    its RSS to tests that check memory. ``metrics=True`` serves Prometheus metrics at
    :attr:`metrics_url` (a free port).
    """

    def __init__(self, base_dir: Path, servers: list[str], *, node_name: str = "n1",
                 node_address: str | None = LOOPBACK, name: str = "proxy",
                 connect_timeout: float | None = None, metrics: bool = False,
                 extra_args: list[str] | None = None, log_level: str = "info") -> None:
        self.health_port = free_port()
        self.node_address = node_address
        self.metrics_url = f"http://{LOOPBACK}:{free_port()}" if metrics else None
        argv = [sys.executable, "-m", "services.proxy", "--server", ",".join(servers),
                "--node-name", node_name, "--health-listen", self.health_address,
                "--log-level", log_level]
        if node_address is not None:
            argv += ["--node-address", node_address]
        if connect_timeout is not None:
            argv += ["--connect-timeout", str(connect_timeout)]
        if self.metrics_url is not None:
            argv += ["--listen-metrics-urls", self.metrics_url]
        super().__init__(base_dir, name, [*argv, *(extra_args or [])])

    @property
    def health_address(self) -> str:
        return f"{LOOPBACK}:{self.health_port}"

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until it has synced its caches and set up every Service once."""
        await wait_for(lambda: grpc_healthy(self.health_address), timeout=timeout,
                       what=f"{self.name} healthy")


class DnsServer(Process):
    """One ``skiff-dns`` process against the apiservers ``servers``.

    It answers UDP and TCP on :attr:`address` (``host``, a free port) and serves gRPC
    health on :attr:`health_address`; ``upstreams`` (HOST:PORT) are where names
    outside the cluster domain go (None: the host's resolv.conf). ``metrics=True``
    serves Prometheus metrics at :attr:`metrics_url`.
    """

    def __init__(self, base_dir: Path, servers: list[str], *, name: str = "dns",
                 host: str = LOOPBACK, upstreams: list[str] | None = None,
                 metrics: bool = False, extra_args: list[str] | None = None,
                 log_level: str = "info") -> None:
        self.host = host
        self.port = free_port(host)
        self.health_port = free_port()
        self.metrics_url = f"http://{LOOPBACK}:{free_port()}" if metrics else None
        argv = [sys.executable, "-m", "services.dns", "--server", ",".join(servers),
                "--listen", f"{host}:{self.port}", "--health-listen", self.health_address,
                "--log-level", log_level]
        if upstreams is not None:
            argv += ["--upstream", ",".join(upstreams)]
        if self.metrics_url is not None:
            argv += ["--listen-metrics-urls", self.metrics_url]
        super().__init__(base_dir, name, [*argv, *(extra_args or [])])

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def health_address(self) -> str:
        return f"{LOOPBACK}:{self.health_port}"

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until its caches synced and it answers."""
        await wait_for(lambda: grpc_healthy(self.health_address), timeout=timeout,
                       what=f"{self.name} healthy")


class Kubelet(Process):
    """One ``skiff-kubelet`` process for node ``node_name`` against the apiservers
    ``servers``, running pods in Docker on the bridge network it makes on ``pod_cidr``.

    ``port`` is its ``--port`` (a free one unless given). It serves no health check of
    its own here: :meth:`wait_ready` waits until the Node it registered says Ready with
    a heartbeat posted after this process started.
    """

    def __init__(self, base_dir: Path, servers: list[str], *, node_name: str,
                 pod_cidr: str = "10.244.0.0/24", port: int | None = None,
                 address: str = LOOPBACK, extra_args: list[str] | None = None,
                 log_level: str = "info") -> None:
        self.node_name = node_name
        self.servers = list(servers)
        self.port = port if port is not None else free_port()
        self.started_at = 0.0
        super().__init__(base_dir, f"kubelet-{node_name}", [
            sys.executable, "-m", "services.kubelet", "--server", ",".join(servers),
            "--node-name", node_name, "--pod-cidr", pod_cidr, "--address", address,
            "--port", str(self.port), "--log-level", log_level,
            "--root-dir", str(base_dir / f"kubelet-{node_name}-root"), *(extra_args or [])])

    def start(self) -> None:
        self.started_at = time.time()
        super().start()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the Node is Ready with a heartbeat from this process."""
        from skiff.client.client import Client  # the client is only needed here

        async with Client(",".join(self.servers)) as client:

            async def ready() -> bool:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited:\n{self.daemon.log_tail(30)}")
                node = await client.nodes.get(self.node_name, "")
                return any(c.type == "Ready" and c.status == "True"
                           and c.last_heartbeat_time.ToNanoseconds() / 1e9 >= self.started_at
                           for c in node.status.conditions)

            await wait_for(ready, timeout=timeout, interval=0.1,
                           what=f"node {self.node_name} Ready")
