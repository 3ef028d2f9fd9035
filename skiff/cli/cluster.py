"""``skiff``: start, stop and inspect a local cluster under supervisord.

``skiff up`` renders ``deploy/supervisord.conf.tmpl`` into the data directory, starts
supervisord with it, and waits (polling health with a deadline) until every daemon
answers. Today the cluster is the three store replicas, an apiserver, a scheduler and
a controller-manager; later components join the same configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import grpc

from skiff.cli import images
from skiff.health import grpc_healthy, wait_for
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class StoreReplica:
    """One replica's name and its ports, by DESIGN.md's defaults."""

    index: int

    @property
    def name(self) -> str:
        return f"store-{self.index}"

    @property
    def client_port(self) -> int:
        return 2379 + 100 * self.index

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    def fields(self) -> dict[str, object]:
        return {"name": self.name, "host": HOST, "client_port": self.client_port,
                "peer_port": self.client_port + 1, "metrics_port": self.client_port + 2}


REPLICAS = [StoreReplica(i) for i in range(3)]
#: The apiserver's gRPC port (DESIGN.md) and its metrics port.
APISERVER_PORT = 6443
APISERVER_METRICS_PORT = 6444
APISERVER = f"{HOST}:{APISERVER_PORT}"
SCHEDULER_METRICS_PORT = 10259
CONTROLLER_MANAGER_METRICS_PORT = 10257


@dataclass(frozen=True)
class LocalNode:
    """One local node's kubelet and proxy: node N (from 1) gets the kubelet port
    10250+2(N-1) (its metrics the next port), the proxy's health port 10356+2(N-1) (its
    metrics the next) and the pod subnet 10.244.N-1.0/24. The first node's InternalIP
    is 127.0.0.1; further nodes take 127.0.1.N, as DESIGN.md's multi-node layout says."""

    index: int

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    def fields(self) -> dict[str, object]:
        port = 10250 + 2 * (self.index - 1)
        address = HOST if self.index == 1 else f"127.0.1.{self.index}"
        proxy = 10356 + 2 * (self.index - 1)
        return {"node": self.name, "host": HOST, "address": address, "port": port,
                "metrics_port": port + 1, "pod_cidr": f"10.244.{self.index - 1}.0/24",
                "proxy_health_port": proxy, "proxy_metrics_port": proxy + 1}

    @property
    def kubelet_endpoint(self) -> str:
        fields = self.fields()
        return f"{fields['address']}:{fields['port']}"

    @property
    def proxy_endpoint(self) -> str:
        return f"{HOST}:{self.fields()['proxy_health_port']}"


def kubelet_nodes() -> list[LocalNode]:
    """The nodes (kubelet and proxy) `skiff up` starts: $SKIFF_NODES of them (default 1)."""
    return [LocalNode(i) for i in range(1, int(os.environ.get("SKIFF_NODES", "1")) + 1)]


def default_data_dir() -> Path:
    return Path(os.environ.get("SKIFF_DATA_DIR", "data")).resolve()


def render_config(data_dir: Path) -> Path:
    """Write supervisord.conf for this data directory; returns its path."""
    initial = ",".join(f"{r.name}=http://{HOST}:{r.client_port + 1}" for r in REPLICAS)
    program = Template((DEPLOY / "store.program.tmpl").read_text())
    common = {"data_dir": data_dir, "python": sys.executable, "repo": REPO,
              "initial_cluster": initial}
    programs = "\n".join(program.substitute(common, **r.fields()) for r in REPLICAS)
    apiserver = Template((DEPLOY / "apiserver.program.tmpl").read_text()).substitute(
        common, host=HOST, port=APISERVER_PORT, metrics_port=APISERVER_METRICS_PORT,
        store_endpoints=",".join(r.endpoint for r in REPLICAS))
    scheduler = Template((DEPLOY / "scheduler.program.tmpl").read_text()).substitute(
        common, host=HOST, apiserver=APISERVER, metrics_port=SCHEDULER_METRICS_PORT)
    controller_manager = Template(
        (DEPLOY / "controller-manager.program.tmpl").read_text()).substitute(
        common, host=HOST, apiserver=APISERVER, metrics_port=CONTROLLER_MANAGER_METRICS_PORT)
    node_programs = [Template((DEPLOY / name).read_text()).substitute(
        common, apiserver=APISERVER, **node.fields())
        for node in kubelet_nodes() for name in ("kubelet.program.tmpl", "proxy.program.tmpl")]
    programs += "\n".join(("", apiserver, scheduler, controller_manager, *node_programs))
    config = Template((DEPLOY / "supervisord.conf.tmpl").read_text()).substitute(
        data_dir=data_dir, programs=programs)
    path = data_dir / "supervisord.conf"
    path.write_text(config)
    return path


def supervisorctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", "-c", str(config), *args], capture_output=True,
                          text=True, check=False)


def _running(config: Path) -> bool:
    return config.exists() and supervisorctl(config, "pid").stdout.strip().isdigit()


def up(data_dir: Path, timeout: float) -> int:
    if shutil.which("supervisord") is None:
        print("skiff up: supervisord is not installed (apt-get install supervisor)")
        return 1
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    password = data_dir / "peer-password"
    if not password.exists():
        password.write_text(secrets.token_hex(24))
        password.chmod(0o600)
    config = render_config(data_dir)
    if _running(config):
        supervisorctl(config, "reread")
        supervisorctl(config, "update")
    else:
        started = subprocess.run(["supervisord", "-c", str(config)], check=False)
        if started.returncode:
            print(f"skiff up: supervisord did not start (see {data_dir / 'supervisord.log'})")
            return 1
    try:
        asyncio.run(_wait_healthy(timeout))
    except TimeoutError as e:
        print(f"skiff up: {e}; logs are in {data_dir / 'logs'}")
        return 1
    endpoints = ",".join(r.endpoint for r in REPLICAS)
    print(f"Skiff is up (data in {data_dir}).\n"
          f"  apiserver (gRPC, skiff.api.v1): {APISERVER}\n"
          f"  store (etcd v3 API): {endpoints}\n"
          f"  nodes: {', '.join(n.name for n in kubelet_nodes())} (skiffctl get nodes)\n"
          f"  try: ETCDCTL_API=3 etcdctl --endpoints={endpoints} put hello world\n"
          f"       ETCDCTL_API=3 etcdctl --endpoints={endpoints} endpoint status -w table\n"
          f"  stop: skiff down")
    return 0


async def _wait_healthy(timeout: float) -> None:
    for replica in REPLICAS:
        await wait_for(lambda r=replica: grpc_healthy(r.endpoint), timeout=timeout,
                       what=f"{replica.name} healthy")
    await wait_for(lambda: grpc_healthy(APISERVER), timeout=timeout, what="apiserver healthy")
    for node in kubelet_nodes():
        await wait_for(lambda n=node: grpc_healthy(n.kubelet_endpoint), timeout=timeout,
                       what=f"kubelet of {node.name} healthy")
        await wait_for(lambda n=node: grpc_healthy(n.proxy_endpoint), timeout=timeout,
                       what=f"proxy of {node.name} healthy")


async def _apiserver_status() -> str:
    try:
        return "healthy" if await grpc_healthy(APISERVER) else "not serving yet"
    except grpc.aio.AioRpcError as e:
        return f"unreachable ({e.code().name})"


def down(data_dir: Path, purge: bool) -> int:
    config = data_dir / "supervisord.conf"
    if _running(config):
        pid = int(supervisorctl(config, "pid").stdout.strip())
        print(supervisorctl(config, "shutdown").stdout.strip())
        try:
            asyncio.run(wait_for(lambda: _exited(pid), timeout=60, what="supervisord to exit"))
        except TimeoutError as e:
            print(f"skiff down: {e}")
            return 1
    else:
        print(f"skiff down: no cluster is running from {data_dir}")
    removed = asyncio.run(_remove_pod_containers(_configured_nodes(config)))
    if removed:
        print(f"removed {removed} pod containers")
    if purge and data_dir.exists():
        shutil.rmtree(data_dir)
        print(f"removed {data_dir}")
    return 0


def _configured_nodes(config: Path) -> list[str]:
    """The nodes the cluster's supervisord configuration runs kubelets for."""
    if not config.exists():
        return []
    return re.findall(r"^\[program:kubelet-(.+)\]$", config.read_text(), flags=re.M)


async def _remove_pod_containers(nodes: list[str]) -> int:
    """The local nodes' pod containers and networks: a stopped cluster leaves none
    running (kubelets themselves leave them, so that a restarted kubelet adopts them)."""
    import aiodocker

    # The kubelet owns how its containers are found; imported only when needed.
    from services.kubelet.runtime import DockerRuntime

    if not nodes:
        return 0
    try:
        docker = aiodocker.Docker()
    except (ValueError, OSError):
        return 0  # no Docker here: nothing of ours can be running
    try:
        counts = [await DockerRuntime(docker, node=node, network=f"skiff-{node}").remove_all()
                  for node in nodes]
    except (aiodocker.DockerError, OSError) as e:
        print(f"skiff down: could not remove pod containers ({e})")
        return 0
    finally:
        await docker.close()
    return sum(counts)


async def _exited(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _store_status(replica: StoreReplica) -> str:
    try:
        async with grpc.aio.insecure_channel(replica.endpoint) as channel:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=1.0)
        healthy = await grpc_healthy(replica.endpoint)
    except grpc.aio.AioRpcError as e:
        return f"unreachable ({e.code().name})"
    role = "leader" if status.leader == status.header.member_id else "follower"
    return (f"{'healthy' if healthy else 'unhealthy'}, {role}, term {status.raftTerm}, "
            f"revision {status.header.revision}")


def status(data_dir: Path) -> int:
    config = data_dir / "supervisord.conf"
    if not _running(config):
        print(f"no cluster is running from {data_dir} (skiff up starts one)")
        return 1
    print(supervisorctl(config, "status").stdout.rstrip())
    for replica in REPLICAS:
        print(f"{replica.name} {replica.endpoint}: {asyncio.run(_store_status(replica))}")
    print(f"apiserver {APISERVER}: {asyncio.run(_apiserver_status())}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="skiff", description="Run a local Skiff cluster.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the cluster keeps its data and logs ($SKIFF_DATA_DIR, ./data)")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the cluster and wait until it is healthy")
    up_parser.add_argument("--timeout", type=float, default=60.0)
    down_parser = commands.add_parser("down", help="stop the cluster")
    down_parser.add_argument("--purge", action="store_true", help="also delete the data")
    commands.add_parser("status", help="each process, its health, and who leads")
    images.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "images":
        sys.exit(images.run(args))
    data_dir = (args.data_dir or default_data_dir()).resolve()
    if args.command == "up":
        sys.exit(up(data_dir, args.timeout))
    if args.command == "down":
        sys.exit(down(data_dir, args.purge))
    sys.exit(status(data_dir))


if __name__ == "__main__":
    main()
