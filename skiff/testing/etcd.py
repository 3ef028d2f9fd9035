"""A real etcd cluster as child processes on free loopback ports, for tests and benchmarks.

The etcd counterpart of :class:`skiff.testing.processes.StoreCluster`, both a
:class:`~skiff.testing.processes.ProcessCluster` (``start``, ``wait_healthy``, ``kill``,
``restart``, ``stop``, ``endpoints``), so ``bench/store.py`` can run one workload
against either and the apiserver's integration tests can run against both backends.
Each member is a :class:`~skiff.testing.processes.Daemon` running Debian's ``etcd``
binary (3.4) with a fresh data directory under ``base_dir`` and
``--initial-cluster-state new``; health is polled through the v3 API itself
(Maintenance.Status on every member: answered, a leader known, no errors), never a
fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc
from skiff.testing.processes import LOOPBACK, Daemon, ProcessCluster, free_port

#: etcd's own defaults (ms); a flag of the benchmark may override them.
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    daemon: Daemon

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"


class EtcdCluster(ProcessCluster):
    """``size`` etcd members under ``base_dir`` (a data directory and a log each)."""

    kind = "etcd member"

    def __init__(self, base_dir: Path, *, size: int = 3, binary: str = "etcd",
                 heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
                 election_ms: int = DEFAULT_ELECTION_MS) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"no {binary!r} on PATH (Debian: apt-get install etcd-server)")
        self.base_dir = base_dir
        base_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"e{i}=http://{LOOPBACK}:{peer}" for i, (_, peer) in enumerate(ports))
        token = f"skiff-test-{os.getpid()}-{time.monotonic_ns()}"
        # etcd reads ETCD_* variables as flags: none of the caller's may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self.members: list[EtcdMember] = []
        for i, (client, peer) in enumerate(ports):
            name = f"e{i}"
            client_url, peer_url = f"http://{LOOPBACK}:{client}", f"http://{LOOPBACK}:{peer}"
            argv = [path, "--name", name, "--data-dir", str(base_dir / name),
                    "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                    "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token,
                    "--heartbeat-interval", str(heartbeat_ms),
                    "--election-timeout", str(election_ms),
                    "--logger", "zap", "--log-level", "warn"]
            daemon = Daemon(name, argv, base_dir / f"{name}.log")
            daemon.env = env
            self.members.append(EtcdMember(name, client, peer, base_dir / name, daemon))

    @property
    def pids(self) -> list[int | None]:
        return [m.daemon.process.pid if m.daemon.alive and m.daemon.process else None
                for m in self.members]

    async def _healthy(self, endpoint: str) -> bool:
        """Status answered, a leader known, no errors."""
        async with grpc.aio.insecure_channel(endpoint) as channel:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=1.0)
        return bool(status.leader) and not status.errors

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM every member at once, then SIGKILL what is left after ``grace``.

        All at once: a leader whose peers are gone waits several seconds on shutdown
        (it tries to hand its leadership over); what it would still write is nothing a
        test or a benchmark reads again, so it is not waited for.
        """
        running = [m.daemon.process for m in self.members if m.daemon.alive]
        for process in running:
            assert process is not None
            process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            assert process is not None
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":  # a manual check: start, report health, stop
    import tempfile

    async def _main() -> None:
        with tempfile.TemporaryDirectory(prefix="etcd-cluster-") as tmp:
            cluster = EtcdCluster(Path(tmp))
            cluster.start()
            try:
                started = time.monotonic()
                await cluster.wait_healthy()
                print(f"healthy in {time.monotonic() - started:.2f}s: {cluster.endpoints}")
            finally:
                cluster.stop()

    asyncio.run(_main())
