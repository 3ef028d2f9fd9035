"""``skiff``: start, stop and inspect a local cluster under supervisord.

``skiff up`` makes sure a Docker engine answers (starting Debian's dockerd when it is
installed but not running), builds the local images, renders
``deploy/supervisord.conf.tmpl`` into the data directory for N nodes, starts supervisord
with it, and waits (polling with one deadline, never a fixed sleep) until every daemon
is healthy and every node is Ready. Then it applies ``examples/`` (the code path of
``skiffctl apply -f examples/``), waits until the ``hello`` Deployment is available,
checks that its NodePort answers an HTTP GET, and prints how to use the cluster.

``skiff down`` stops supervisord and removes the nodes' pod containers and networks;
``skiff status`` shows each process, its health, who leads the store, the scheduler
and the controller-manager, and each node's Ready condition.

``skiff up --etcd-servers URLS`` (kube-apiserver's flag) runs the cluster on an
existing etcd instead of Skiff's own store: no store replicas are started, the
apiserver is given those endpoints, ``skiff status`` shows the etcd members' health,
and ``skiff down`` (``--purge`` too) never touches etcd or its data.

What decides the layout (ports, addresses) is pure and lives at the top
(:class:`ClusterSettings`, :func:`render_config`) so unit tests render it for N nodes
without starting anything.
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
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TypeVar

import grpc

from skiff import chaos
from skiff.api.v1 import core_pb2
from skiff.cli import images, kubeapi
from skiff.cli.external_etcd import (
    configured_etcd_servers,
    etcd_problems,
    etcd_status,
    parse_etcd_servers,
    parse_etcd_url,
)
from skiff.client import Client
from skiff.health import grpc_healthy, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EXAMPLES = REPO / "examples"
HOST = "127.0.0.1"
T = TypeVar("T")


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
#: The pods' network the controller-manager cuts one podCIDR per node from (node IPAM).
CLUSTER_CIDR, NODE_CIDR_MASK_SIZE = "10.244.0.0/16", 24
#: The cluster's DNS domain, and the cluster DNS Service's IP(s) the kubelets give
#: ClusterFirst pods (none until the cluster DNS is deployed: pods get Default then).
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS: tuple[str, ...] = ()
#: The kubelet's network plugins (services/kubelet/network_plugin.py).
NETWORK_PLUGINS = ("docker", "bridge")
#: The Leases the scheduler and the controller-manager elect their leader on.
LEADER_LEASES = {"scheduler": "kube-scheduler", "controller-manager": "kube-controller-manager"}
LEASE_NAMESPACE = "kube-system"
#: The demo's Deployment and Service (examples/deployment.yaml), in namespace default.
DEMO = "hello"
DEMO_NAMESPACE = "default"


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

    @property
    def address(self) -> str:
        return HOST if self.index == 1 else f"127.0.1.{self.index}"

    def fields(self) -> dict[str, object]:
        port = 10250 + 2 * (self.index - 1)
        proxy = 10356 + 2 * (self.index - 1)
        return {"node": self.name, "host": HOST, "address": self.address, "port": port,
                "metrics_port": port + 1, "pod_cidr": f"10.244.{self.index - 1}.0/24",
                "proxy_health_port": proxy, "proxy_metrics_port": proxy + 1}

    @property
    def kubelet_endpoint(self) -> str:
        return f"{self.address}:{self.fields()['port']}"

    @property
    def proxy_endpoint(self) -> str:
        return f"{HOST}:{self.fields()['proxy_health_port']}"


def _env_number(name: str, default: float, kind: Callable[[str], T]) -> T:
    """$name as a number of type ``kind``, else ``default``."""
    value = os.environ.get(name, "").strip()
    return kind(value) if value else kind(str(default))


@dataclass(frozen=True)
class ClusterSettings:
    """What varies between local clusters: how many nodes, and how fast a silent node
    is noticed and its pods moved (the defaults are Kubernetes'; a test of node
    failure shortens them to finish in seconds rather than minutes)."""

    nodes: int = 1
    #: The controller-manager's --node-monitor-grace-period: silence before Unknown.
    node_monitor_grace_period: float = 40.0
    #: The controller-manager's --node-monitor-period: how often nodes are looked at.
    node_monitor_period: float = 5.0
    #: The apiserver's --default-{not-ready,unreachable}-toleration-seconds.
    default_toleration_seconds: int = 300
    #: Client URLs of an existing etcd to run on (kube-apiserver's --etcd-servers);
    #: empty: Skiff's own three store replicas. Normalized by :func:`parse_etcd_servers`.
    etcd_servers: tuple[str, ...] = ()
    #: The kubelets' --network-plugin: ``docker`` or ``bridge`` (Skiff's own bridge).
    network_plugin: str = "docker"

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if self.node_monitor_grace_period <= 0 or self.node_monitor_period <= 0:
            raise ValueError("node monitor periods must be positive")
        if self.default_toleration_seconds < 0:
            raise ValueError("toleration seconds must not be negative")
        for url in self.etcd_servers:
            parse_etcd_url(url)
        if self.network_plugin not in NETWORK_PLUGINS:
            raise ValueError(f"unknown network plugin {self.network_plugin!r} "
                             f"(one of {', '.join(NETWORK_PLUGINS)})")

    @property
    def heartbeat_interval(self) -> float:
        """How often kubelets renew their Lease and post status: Kubernetes' 10 s, or a
        quarter of the grace period when that is shorter, so a node is declared
        silent only after several heartbeats in a row were missed, never after one."""
        return max(0.5, min(10.0, self.node_monitor_grace_period / 4))

    @property
    def node_list(self) -> list[LocalNode]:
        return [LocalNode(i) for i in range(1, self.nodes + 1)]


def _etcd_servers_flag(text: str) -> tuple[str, ...]:
    """``--etcd-servers``' value, its error as argparse shows one."""
    try:
        return parse_etcd_servers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def settings_from_env() -> ClusterSettings:
    """The settings' defaults: $SKIFF_NODES, $SKIFF_NODE_MONITOR_GRACE_PERIOD,
    $SKIFF_NODE_MONITOR_PERIOD, $SKIFF_DEFAULT_TOLERATION_SECONDS, $SKIFF_ETCD_SERVERS
    (flags override)."""
    base = ClusterSettings()
    return ClusterSettings(
        nodes=_env_number("SKIFF_NODES", base.nodes, int),
        node_monitor_grace_period=_env_number(
            "SKIFF_NODE_MONITOR_GRACE_PERIOD", base.node_monitor_grace_period, float),
        node_monitor_period=_env_number(
            "SKIFF_NODE_MONITOR_PERIOD", base.node_monitor_period, float),
        default_toleration_seconds=_env_number(
            "SKIFF_DEFAULT_TOLERATION_SECONDS", base.default_toleration_seconds, int),
        etcd_servers=parse_etcd_servers(os.environ.get("SKIFF_ETCD_SERVERS", "")),
        network_plugin=os.environ.get("SKIFF_NETWORK_PLUGIN", "").strip()
        or base.network_plugin)


def default_data_dir() -> Path:
    return Path(os.environ.get("SKIFF_DATA_DIR", "data")).resolve()


def _number(value: float) -> str:
    """A flag's value without a needless ``.0`` (``40`` rather than ``40.0``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def render_programs(data_dir: Path, settings: ClusterSettings) -> str:
    """The [program:...] sections of every daemon (pure: reads only the templates)."""
    initial = ",".join(f"{r.name}=http://{HOST}:{r.client_port + 1}" for r in REPLICAS)
    common = {"data_dir": data_dir, "python": sys.executable, "repo": REPO,
              "initial_cluster": initial}

    def render(template: str, **fields: object) -> str:
        return Template((DEPLOY / template).read_text()).substitute(common, **fields)

    # On an existing etcd, Skiff runs no store of its own.
    stores = ([] if settings.etcd_servers
              else [render("store.program.tmpl", **r.fields()) for r in REPLICAS])
    apiserver = render(
        "apiserver.program.tmpl", host=HOST, port=APISERVER_PORT,
        metrics_port=APISERVER_METRICS_PORT,
        store_endpoints=",".join(settings.etcd_servers
                                 or [r.endpoint for r in REPLICAS]),
        toleration_seconds=settings.default_toleration_seconds,
        rest_flags=kubeapi.rest_flags(data_dir))
    scheduler = render("scheduler.program.tmpl", host=HOST, apiserver=APISERVER,
                       metrics_port=SCHEDULER_METRICS_PORT)
    controller_manager = render(
        "controller-manager.program.tmpl", host=HOST, apiserver=APISERVER,
        metrics_port=CONTROLLER_MANAGER_METRICS_PORT,
        node_monitor_grace_period=_number(settings.node_monitor_grace_period),
        node_monitor_period=_number(settings.node_monitor_period),
        cluster_cidr=CLUSTER_CIDR, node_cidr_mask_size=NODE_CIDR_MASK_SIZE)
    heartbeat = _number(settings.heartbeat_interval)
    dns_flag = f" --cluster-dns {','.join(CLUSTER_DNS)}" if CLUSTER_DNS else ""
    nodes = [render(name, apiserver=APISERVER, heartbeat=heartbeat,
                    cluster_domain=CLUSTER_DOMAIN, cluster_dns_flag=dns_flag,
                    network_plugin=settings.network_plugin, cluster_cidr=CLUSTER_CIDR,
                    **node.fields())
             for node in settings.node_list
             for name in ("kubelet.program.tmpl", "proxy.program.tmpl")]
    return "\n".join((*stores, apiserver, scheduler, controller_manager, *nodes))


def render_config(data_dir: Path, settings: ClusterSettings | None = None) -> Path:
    """Write supervisord.conf for this data directory; returns its path."""
    settings = settings or settings_from_env()
    config = Template((DEPLOY / "supervisord.conf.tmpl").read_text()).substitute(
        data_dir=data_dir, programs=render_programs(data_dir, settings))
    path = data_dir / "supervisord.conf"
    path.write_text(config)
    return path


def supervisorctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", "-c", str(config), *args], capture_output=True,
                          text=True, check=False)


def _running(config: Path) -> bool:
    return config.exists() and supervisorctl(config, "pid").stdout.strip().isdigit()


class Deadline:
    """One time budget shared by the successive waits of ``skiff up``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.1, self._end - time.monotonic())


class UpFailed(Exception):
    """``skiff up`` cannot go on; the message says what to do."""


# ------------------------------------------------------------------ Docker


async def docker_answers() -> bool:
    """Whether a Docker engine answers a ping on $DOCKER_HOST or the local socket."""
    import aiodocker

    try:
        docker = aiodocker.Docker()
    except (ValueError, OSError):
        return False  # no socket to talk to at all
    try:
        # GET /version: the public call nearest to `docker info` (aiodocker has no ping).
        await asyncio.wait_for(docker.version(), timeout=3.0)
        return True
    except (TimeoutError, aiodocker.DockerError, OSError):
        return False
    finally:
        await docker.close()


def _as_root(argv: list[str]) -> list[str]:
    """``argv``, through ``sudo -n`` when we are not root (and sudo exists)."""
    if os.geteuid() == 0 or shutil.which("sudo") is None:
        return argv
    return ["sudo", "-n", *argv]


def start_docker(data_dir: Path) -> str:
    """Start Debian's dockerd: systemd's unit where systemd runs, else dockerd in the
    background with its log in the data directory. Returns where its log is."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise UpFailed("no Docker engine answers and dockerd is not installed: "
                       "apt-get install docker.io (or make up, which installs it)")
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        print("skiff up: starting Docker (systemctl start docker)", flush=True)
        subprocess.run(_as_root(["systemctl", "start", "docker"]), check=False)
        return "journalctl -u docker"
    log = data_dir / "logs" / "dockerd.log"
    print(f"skiff up: starting dockerd (log: {log})", flush=True)
    with log.open("ab") as out:
        # Its own session: dockerd outlives this command, as a service would.
        subprocess.Popen(_as_root([dockerd]), stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    return str(log)


def ensure_docker(data_dir: Path, deadline: Deadline) -> None:
    """Make sure Docker answers, starting it when it is installed but not running, and
    wait for it with a deadline; UpFailed says what to install or where to look."""
    if asyncio.run(docker_answers()):
        return
    where = start_docker(data_dir)
    try:
        asyncio.run(wait_for(docker_answers, timeout=min(60.0, deadline.left()),
                             interval=0.5, what="Docker answering"))
    except TimeoutError:
        raise UpFailed(f"dockerd did not answer in time (see {where})") from None


# ------------------------------------------------------------------ an existing etcd
# (skiff/cli/external_etcd.py: its URLs, its members' answers)


async def check_etcd(urls: tuple[str, ...], timeout: float = 3.0) -> None:
    """Every etcd client URL answers and knows a leader; UpFailed naming each URL that
    does not, and why."""
    problems = await etcd_problems(urls, timeout)
    if problems:
        raise UpFailed("the etcd given by --etcd-servers is not usable: "
                       + "; ".join(problems))


# ------------------------------------------------------------------ waiting


async def wait_healthy(settings: ClusterSettings, deadline: Deadline) -> None:
    """Every daemon that serves gRPC health says SERVING (an existing etcd was checked
    before anything started: :func:`check_etcd`)."""
    for replica in [] if settings.etcd_servers else REPLICAS:
        await wait_for(lambda r=replica: grpc_healthy(r.endpoint), timeout=deadline.left(),
                       what=f"{replica.name} healthy")
    await wait_for(lambda: grpc_healthy(APISERVER), timeout=deadline.left(),
                   what="apiserver healthy")
    for node in settings.node_list:
        await wait_for(lambda n=node: grpc_healthy(n.kubelet_endpoint),
                       timeout=deadline.left(), what=f"kubelet of {node.name} healthy")
        await wait_for(lambda n=node: grpc_healthy(n.proxy_endpoint),
                       timeout=deadline.left(), what=f"proxy of {node.name} healthy")


def ready_condition(node: core_pb2.Node) -> tuple[str, str]:
    """(status, reason) of a Node's Ready condition; ("Unknown", "NoCondition") when the
    kubelet never posted one (pure)."""
    for condition in node.status.conditions:
        if condition.type == "Ready":
            return condition.status, condition.reason
    return "Unknown", "NoCondition"


async def wait_nodes_ready(client: Client, settings: ClusterSettings,
                           deadline: Deadline) -> None:
    """Every configured node's Ready condition is True, as the apiserver has it."""
    wanted = {n.name for n in settings.node_list}

    async def all_ready() -> bool:
        nodes = await client.nodes.list()
        ready = {n.metadata.name for n in nodes.items if ready_condition(n)[0] == "True"}
        return wanted <= ready

    await wait_for(all_ready, timeout=deadline.left(), interval=0.2,
                   what=f"nodes {', '.join(sorted(wanted))} Ready")


async def apply_demo(client: Client) -> None:
    """``skiffctl apply -f examples/``, through skiffctl's own apply code."""
    from skiff.api.manifest import ManifestError
    from skiff.cli.skiffctl.apply import run_apply
    from skiff.cli.skiffctl.common import CommandError, Context

    ctx = Context(client=client)
    try:
        status = await run_apply(ctx, argparse.Namespace(filename=[str(EXAMPLES)],
                                                         recursive=False))
    except (CommandError, ManifestError) as e:
        raise UpFailed(f"examples/: {e}") from None
    if status:
        raise UpFailed("applying examples/ failed (see above)")


async def wait_demo_available(client: Client, deadline: Deadline) -> None:
    """The demo Deployment rolled out and all its replicas available."""
    from skiff.cli.skiffctl.rollout import rollout_status

    async def available() -> bool:
        deploy = await client.deployments.get(DEMO, DEMO_NAMESPACE)
        done = rollout_status(deploy)[1]
        return done and deploy.status.available_replicas >= deploy.spec.replicas

    await wait_for(available, timeout=deadline.left(), interval=0.2,
                   what=f"deployment {DEMO} available")


async def http_get(url: str, timeout: float = 2.0) -> str:
    """GET ``url`` (in a thread: urllib blocks); the body, stripped."""
    def get() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read().decode().strip()

    return await asyncio.to_thread(get)


@dataclass(frozen=True)
class DemoEndpoints:
    """Where the demo Service answers, each checked with a real GET."""

    node_port_url: str
    cluster_ip_url: str
    answer: str


async def check_demo_answers(client: Client, deadline: Deadline) -> DemoEndpoints:
    """GET /hostname through the Service's NodePort on the first node and through its
    cluster IP until a pod of the demo answers (the proxies may not have the endpoints
    yet when the Deployment turns available)."""
    service = await client.services.get(DEMO, DEMO_NAMESPACE)
    port = service.spec.ports[0]
    node_port_url = f"http://{LocalNode(1).address}:{port.node_port}/hostname"
    cluster_ip_url = f"http://{service.spec.cluster_ip}:{port.port}/hostname"

    async def answered_by_a_pod(url: str) -> str:
        body = await http_get(url)
        return body if body.startswith(f"{DEMO}-") else ""

    answer = await wait_for(lambda: answered_by_a_pod(node_port_url),
                            timeout=deadline.left(), interval=0.2,
                            what=f"GET {node_port_url}")
    await wait_for(lambda: answered_by_a_pod(cluster_ip_url), timeout=deadline.left(),
                   interval=0.2, what=f"GET {cluster_ip_url}")
    return DemoEndpoints(node_port_url, cluster_ip_url, answer)


def _curl(url: str) -> str:
    """``http://127.0.0.1:30080/hostname`` -> ``curl 127.0.0.1:30080/hostname``."""
    return "curl " + url.removeprefix("http://").replace(":80/", "/")


async def start_and_wait(data_dir: Path, settings: ClusterSettings, *, demo: bool,
                         deadline: Deadline) -> DemoEndpoints | None:
    """The asynchronous part of ``skiff up`` once supervisord runs."""
    await wait_healthy(settings, deadline)
    async with Client(APISERVER) as client:
        await wait_nodes_ready(client, settings, deadline)
        if not demo:
            return None
        await apply_demo(client)
        await wait_demo_available(client, deadline)
        return await check_demo_answers(client, deadline)


def build_images() -> None:
    """Build the local images that are missing. Done here, before any kubelet starts, so
    that the kubelets of several nodes do not race to build the same images and a build
    error shows on the terminal, not in a log."""
    try:
        built = asyncio.run(images.build(force=False))
    except Exception as e:  # whatever broke the build (no busybox, Docker refusing) is shown
        raise UpFailed(f"building the local images failed: {e}") from None
    if built:
        print(f"built images: {', '.join(built)}", flush=True)


def _start_supervisord(data_dir: Path, config: Path) -> None:
    if _running(config):
        # Already up: pick up changed programs (another node count, other flags).
        supervisorctl(config, "reread")
        supervisorctl(config, "update")
        return
    started = subprocess.run(["supervisord", "-c", str(config)], check=False)
    if started.returncode:
        raise UpFailed(f"supervisord did not start (see {data_dir / 'supervisord.log'})")


def up(data_dir: Path, settings: ClusterSettings, *, timeout: float, demo: bool = True) -> int:
    """``skiff up``; the exit status."""
    if shutil.which("supervisord") is None:
        print("skiff up: supervisord is not installed (apt-get install supervisor)")
        return 1
    deadline = Deadline(timeout)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    password = data_dir / "peer-password"
    if not password.exists():
        password.write_text(secrets.token_hex(24))
        password.chmod(0o600)
    try:
        if settings.etcd_servers:
            asyncio.run(check_etcd(settings.etcd_servers))
        ensure_docker(data_dir, deadline)
        build_images()
        kubeapi.prepare(data_dir, [n.address for n in settings.node_list])
        config = render_config(data_dir, settings)
        _start_supervisord(data_dir, config)
        endpoints = asyncio.run(start_and_wait(data_dir, settings, demo=demo,
                                               deadline=deadline))
    except UpFailed as e:
        print(f"skiff up: {e}")
        return 1
    except TimeoutError as e:
        print(f"skiff up: {e}; logs are in {data_dir / 'logs'} (skiff status)")
        return 1
    print(usage(data_dir, settings, endpoints))
    return 0


def usage(data_dir: Path, settings: ClusterSettings, demo: DemoEndpoints | None) -> str:
    """What ``skiff up`` prints at the end: where things are and what to try."""
    store = ",".join(settings.etcd_servers or [r.endpoint for r in REPLICAS])
    nodes = ", ".join(n.name for n in settings.node_list)
    # Later commands must find this cluster: name its directory unless it is the default.
    where = "" if data_dir == default_data_dir() else f" --data-dir {data_dir}"

    def line(command: str, comment: str) -> str:
        return f"  {command:<46}# {comment}"

    lines = [f"Skiff is up: {settings.nodes} node(s) Ready ({nodes}); data and logs in "
             f"{data_dir}.",
             f"  apiserver (gRPC, skiff.api.v1): {APISERVER}",
             f"  kubectl (HTTPS, context skiff): https://{kubeapi.REST_HOST}:"
             f"{kubeapi.REST_PORT}, {data_dir / 'kubeconfig'}",
             (f"  etcd (existing, not managed):   {store}" if settings.etcd_servers
              else f"  store (etcd v3 API):            {store}")]
    if demo is not None:
        lines += [f"  demo: examples/ applied; deployment {DEMO} available behind service "
                  f"{DEMO}", "", "Try:",
                  line(_curl(demo.node_port_url),
                       f"the {DEMO} Service's NodePort (answered: {demo.answer})"),
                  line(_curl(demo.cluster_ip_url), "its cluster IP, through the proxy")]
    else:
        lines += ["", "Try:", line("skiffctl apply -f examples/", "the demo (--no-demo)")]
    lines += [line("skiffctl get nodes,po -o wide", "nodes and pods"),
              line("skiffctl logs web; skiffctl exec web -- ls /", "the kubelet API"),
              line("skiffctl top pods", "CPU and memory"),
              line(f"skiff status{where}", "processes, health, leaders, nodes"),
              line(f"skiff down{where} [--purge]", "stop (--purge: and delete the data)")]
    return "\n".join(lines)


# ------------------------------------------------------------------ down


def down(data_dir: Path, purge: bool) -> int:
    """``skiff down``; the exit status."""
    config = data_dir / "supervisord.conf"
    # Read before anything stops: which nodes' containers to remove afterwards.
    nodes = _configured_nodes(config)
    etcd = configured_etcd_servers(config.read_text()) if config.exists() else ()
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
    removed = asyncio.run(_remove_pod_containers(nodes))
    if removed:
        print(f"removed {removed} pod containers")
    _remove_pod_networks(nodes)
    if purge and data_dir.exists():
        shutil.rmtree(data_dir)
        print(f"removed {data_dir}")
    if etcd:
        print(f"left alone: the etcd at {','.join(etcd)} and the cluster's objects in it "
              "(under /registry/)")
    return 0


def configured_nodes(config_text: str) -> list[str]:
    """The nodes a supervisord configuration runs kubelets for (pure)."""
    return re.findall(r"^\[program:kubelet-(.+)\]$", config_text, flags=re.M)


def _configured_nodes(config: Path) -> list[str]:
    return configured_nodes(config.read_text()) if config.exists() else []


async def _remove_pod_containers(nodes: list[str]) -> int:
    """The local nodes' pod containers and networks: a stopped cluster leaves none
    running (kubelets themselves leave them, so that a restarted kubelet adopts them)."""
    import aiodocker  # imported here: ~0.2 s that other commands skip

    from skiff.kubelet.containers import remove_node

    if not nodes:
        return 0
    try:
        docker = aiodocker.Docker()
    except (ValueError, OSError):
        return 0  # no Docker here: nothing of ours can be running
    try:
        counts = [await remove_node(docker, node) for node in nodes]
    except (aiodocker.DockerError, OSError) as e:
        print(f"skiff down: could not remove pod containers ({e})")
        return 0
    finally:
        await docker.close()
    return sum(counts)


def _remove_pod_networks(nodes: list[str]) -> None:
    """The local nodes' ``bridge`` pod network: bridges, veths, nftables tables and
    DOCKER-USER entries, and Skiff's routes once no Skiff bridge is left on the machine
    (kubelets leave all of it on SIGTERM, for the next kubelet to adopt)."""
    from skiff.kubelet.podnet import remove_pod_network

    async def remove() -> dict[str, int]:
        totals: dict[str, int] = {}
        for node in nodes:
            for what, count in (await remove_pod_network(node)).items():
                totals[what] = totals.get(what, 0) + count
        return totals

    try:
        removed = asyncio.run(remove())
    except (OSError, RuntimeError) as e:  # not root, no netlink: nothing could be ours
        print(f"skiff down: could not remove the pod network ({e})")
        return
    if any(removed.values()):
        print("removed the pod network: " + ", ".join(
            f"{count} {what}" for what, count in removed.items() if count))


async def _exited(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ------------------------------------------------------------------ status


async def _store_status(endpoint: str) -> str:
    """A store replica's or etcd member's health (gRPC health, which both serve), its
    raft role and term, and the revision it has applied."""
    try:
        status = await etcd_status(endpoint, timeout=1.0)
        healthy = await grpc_healthy(endpoint) and not status.errors
    except grpc.aio.AioRpcError as e:
        return f"unreachable ({e.code().name})"
    role = ("no leader" if not status.leader
            else "leader" if status.leader == status.header.member_id else "follower")
    return (f"{'healthy' if healthy else 'unhealthy'}, {role}, term {status.raftTerm}, "
            f"revision {status.header.revision}")


async def _grpc_status(address: str) -> str:
    try:
        return "healthy" if await grpc_healthy(address) else "not serving yet"
    except grpc.aio.AioRpcError as e:
        return f"unreachable ({e.code().name})"


async def _metrics_status(port: int) -> str:
    """The scheduler and the controller-manager serve no gRPC: their metrics endpoint
    answering is their liveness."""
    try:
        await http_get(f"http://{HOST}:{port}/metrics", timeout=1.0)
    except OSError as e:
        return f"unreachable ({e})"
    return "healthy (metrics answer)"


async def _guard(call: Awaitable[str]) -> str:
    """A status line's value; an apiserver that cannot answer says so instead of a
    traceback (status is most wanted when something is down)."""
    from skiff.api import errors

    try:
        return await call
    except (errors.APIError, grpc.aio.AioRpcError) as e:
        return f"unknown ({type(e).__name__}: {e})"


async def _leader(client: Client, lease_name: str) -> str:
    from skiff.api import errors

    try:
        lease = await client.leases.get(lease_name, LEASE_NAMESPACE)
    except errors.NotFound:
        return "none yet"
    holder = lease.spec.holder_identity or "none"
    if lease.spec.HasField("renew_time"):
        renewed = lease.spec.renew_time.seconds + lease.spec.renew_time.nanos / 1e9
        return f"{holder} (renewed {max(0.0, time.time() - renewed):.0f}s ago)"
    return holder


async def _nodes(client: Client) -> list[str]:
    nodes = await client.nodes.list()
    lines = []
    for node in sorted(nodes.items, key=lambda n: n.metadata.name):
        ready, reason = ready_condition(node)
        taints = ",".join(f"{t.key}:{t.effect}" for t in node.spec.taints)
        lines.append(f"node {node.metadata.name}: Ready={ready} ({reason})"
                     + (f", taints {taints}" if taints else ""))
    return lines or ["no nodes registered"]


async def status_report(nodes: list[LocalNode], etcd_servers: tuple[str, ...] = ()
                        ) -> list[str]:
    """Health of every daemon, who leads what, and each node's Ready condition; of the
    existing etcd's members instead of the store replicas when it runs on one."""
    if etcd_servers:
        lines = [f"etcd {url}: {await _store_status(parse_etcd_url(url))}"
                 for url in etcd_servers]
    else:
        lines = [f"{r.name} {r.endpoint}: {await _store_status(r.endpoint)}"
                 for r in REPLICAS]
    apiserver = await _grpc_status(APISERVER)
    lines.append(f"apiserver {APISERVER}: {apiserver}")
    lines.append(f"scheduler {HOST}:{SCHEDULER_METRICS_PORT}: "
                 f"{await _metrics_status(SCHEDULER_METRICS_PORT)}")
    lines.append(f"controller-manager {HOST}:{CONTROLLER_MANAGER_METRICS_PORT}: "
                 f"{await _metrics_status(CONTROLLER_MANAGER_METRICS_PORT)}")
    for node in nodes:
        lines.append(f"kubelet-{node.name} {node.kubelet_endpoint}: "
                     f"{await _grpc_status(node.kubelet_endpoint)}")
        lines.append(f"proxy-{node.name} {node.proxy_endpoint}: "
                     f"{await _grpc_status(node.proxy_endpoint)}")
    if apiserver != "healthy":
        return [*lines, "leaders and nodes: unknown (the apiserver does not answer)"]
    # Short retries: status should answer quickly even when parts are down.
    async with Client(APISERVER, timeout=2.0, retry_deadline=3.0) as client:
        for component, lease in LEADER_LEASES.items():
            lines.append(f"{component} leader: {await _guard(_leader(client, lease))}")
        try:
            lines += await _nodes(client)
        except Exception as e:  # reported, not raised: see _guard
            lines.append(f"nodes: unknown ({e})")
    return lines


def status(data_dir: Path) -> int:
    """``skiff status``; the exit status."""
    config = data_dir / "supervisord.conf"
    if not _running(config):
        print(f"no cluster is running from {data_dir} (skiff up starts one)")
        return 1
    print(supervisorctl(config, "status").stdout.rstrip())
    nodes = [LocalNode(int(name.removeprefix("node-"))) for name in _configured_nodes(config)
             if name.removeprefix("node-").isdigit()]
    etcd = configured_etcd_servers(config.read_text())
    print("\n".join(asyncio.run(status_report(nodes, etcd))))
    return 0


# ------------------------------------------------------------------ the command


def _parser() -> argparse.ArgumentParser:
    env = settings_from_env()
    parser = argparse.ArgumentParser(prog="skiff", description="Run a local Skiff cluster.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the cluster keeps its data and logs ($SKIFF_DATA_DIR, ./data)")
    commands = parser.add_subparsers(dest="command", required=True)
    # --data-dir is accepted after the subcommand too (skiff up --data-dir DIR).
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                          help="where the cluster keeps its data and logs "
                               "($SKIFF_DATA_DIR, ./data)")
    up_parser = commands.add_parser("up", parents=[data_dir],
                                    help="start the cluster and wait until it is healthy")
    up_parser.add_argument("--nodes", type=int, default=env.nodes,
                           help="how many nodes (kubelet + proxy) to run ($SKIFF_NODES, 1)")
    up_parser.add_argument("--timeout", type=float, default=300.0,
                           help="seconds for everything to come up (default 300)")
    up_parser.add_argument("--no-demo", dest="demo", action="store_false",
                           help="do not apply examples/")
    up_parser.add_argument("--node-monitor-grace-period", type=float,
                           default=env.node_monitor_grace_period,
                           help="seconds a node may be silent before it is Unknown "
                                "($SKIFF_NODE_MONITOR_GRACE_PERIOD, 40)")
    up_parser.add_argument("--node-monitor-period", type=float,
                           default=env.node_monitor_period,
                           help="seconds between looks at the nodes "
                                "($SKIFF_NODE_MONITOR_PERIOD, 5)")
    up_parser.add_argument("--default-toleration-seconds", type=int,
                           default=env.default_toleration_seconds,
                           help="how long pods stay on a not-ready or unreachable node "
                                "($SKIFF_DEFAULT_TOLERATION_SECONDS, 300)")
    up_parser.add_argument("--etcd-servers", type=_etcd_servers_flag,
                           default=env.etcd_servers, metavar="URLS",
                           help="run on this existing etcd (comma-separated client URLs "
                                "http://host:port) instead of Skiff's own store "
                                "($SKIFF_ETCD_SERVERS)")
    up_parser.add_argument("--network-plugin", choices=NETWORK_PLUGINS,
                           default=env.network_plugin,
                           help="the kubelets' pod network: docker (a Docker network per "
                                "node) or bridge (Skiff's own bridge, veths and routes) "
                                "($SKIFF_NETWORK_PLUGIN, docker)")
    down_parser = commands.add_parser("down", parents=[data_dir], help="stop the cluster")
    down_parser.add_argument("--purge", action="store_true", help="also delete the data")
    commands.add_parser("status", parents=[data_dir],
                        help="each process, its health, who leads, each node")
    images.add_parser(commands)
    chaos.add_parser(commands)
    return parser


def settings_from_args(args: argparse.Namespace) -> ClusterSettings:
    """The settings ``skiff up``'s flags ask for (ValueError names a bad one)."""
    return ClusterSettings(nodes=args.nodes,
                           node_monitor_grace_period=args.node_monitor_grace_period,
                           node_monitor_period=args.node_monitor_period,
                           default_toleration_seconds=args.default_toleration_seconds,
                           etcd_servers=args.etcd_servers,
                           network_plugin=args.network_plugin)


def main(argv: list[str] | None = None) -> None:
    try:
        parser = _parser()
    except ValueError as e:  # a malformed $SKIFF_* default
        sys.exit(f"skiff: {e}")
    args = parser.parse_args(argv)
    if args.command == "images":
        sys.exit(images.run(args))
    data_dir = (args.data_dir or default_data_dir()).resolve()
    if args.command == "chaos":
        sys.exit(chaos.run(args, data_dir))
    if args.command == "up":
        try:
            settings = settings_from_args(args)
        except ValueError as e:
            parser.error(str(e))
        sys.exit(up(data_dir, settings, timeout=args.timeout, demo=args.demo))
    if args.command == "down":
        sys.exit(down(data_dir, args.purge))
    sys.exit(status(data_dir))


if __name__ == "__main__":
    main()
