"""``skiff``: start, stop and inspect a local cluster under supervisord.

``skiff up`` makes sure a Docker engine answers (starting Debian's dockerd when it is
installed but not running), builds the local images, renders
``deploy/supervisord.conf.tmpl`` into the data directory for N nodes, starts supervisord
with it, and waits (polling with one deadline, never a fixed sleep) until the store and
the apiserver are healthy. With the ``bridge`` network plugin (the default) it then
creates the cluster DNS Service ``kube-system/kube-dns`` (10.96.0.10), waits until
every kubelet, proxy and DNS program is healthy and every node is Ready, applies
``examples/`` (the code path of ``skiffctl apply -f examples/``), checks that the
``hello`` Service and the two-tier guestbook answer real GETs through a NodePort and
through their cluster IPs from the host, and prints how to use the cluster.

``skiff down`` stops supervisord and removes the nodes' pod containers, their pod
network and their proxies' rules (:func:`_remove_pod_networks`); ``skiff status`` shows
each process, its health, who leads the store, the scheduler and the
controller-manager, and each node's Ready condition.

``skiff up --etcd-servers URLS`` (kube-apiserver's flag) runs the cluster on an
existing etcd instead of Skiff's own store: no store replicas are started, the
apiserver is given those endpoints, ``skiff status`` shows the etcd members' health,
and ``skiff down`` (``--purge`` too) never touches etcd or its data.

What decides the layout (ports, addresses, flags) is pure and lives in
:mod:`skiff.cli.layout`; what ``skiff up`` creates in the cluster and checks, in
:mod:`skiff.cli.workloads`.
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
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

import grpc

from skiff.api.v1 import core_pb2
from skiff.chaos import runner as chaos
from skiff.cli import images, kubeapi
from skiff.cli.external_etcd import (
    configured_etcd_servers,
    etcd_problems,
    etcd_status,
    parse_etcd_servers,
    parse_etcd_url,
)
from skiff.cli.layout import (
    APISERVER,
    CLUSTER_CIDR,
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    CONTROLLER_MANAGER_METRICS_PORT,
    HOST,
    LEADER_LEASES,
    LEASE_NAMESPACE,
    NETWORK_PLUGINS,
    NODE_CIDR_MASK_SIZE,
    PROXY_MODES,
    REPLICAS,
    SCHEDULER_METRICS_PORT,
    SERVICE_CIDR,
    ClusterSettings,
    LocalNode,
    default_data_dir,
    render_config,
    render_programs,
    settings_from_env,
)
from skiff.cli.workloads import (
    DEMO,
    DEMO_NAMESPACE,
    Deadline,
    DemoEndpoints,
    ServiceAnswers,
    UpFailed,
    apply_demo,
    check_demo_answers,
    ensure_kube_dns,
    http_get,
    wait_available,
)
from skiff.client import Client
from skiff.health import grpc_healthy, wait_for

__all__ = ["CLUSTER_DNS", "ClusterSettings", "DemoEndpoints", "UpFailed", "main",
           "render_config", "render_programs"]


def _etcd_servers_flag(text: str) -> tuple[str, ...]:
    """``--etcd-servers``' value, its error as argparse shows one."""
    try:
        return parse_etcd_servers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None



def supervisorctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", "-c", str(config), *args], capture_output=True,
                          text=True, check=False)


def _running(config: Path) -> bool:
    return config.exists() and supervisorctl(config, "pid").stdout.strip().isdigit()


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


async def wait_apiserver(settings: ClusterSettings, deadline: Deadline) -> None:
    """The store (an existing etcd was checked before anything started:
    :func:`check_etcd`) and the apiserver say SERVING."""
    for replica in [] if settings.etcd_servers else REPLICAS:
        await wait_for(lambda r=replica: grpc_healthy(r.endpoint), timeout=deadline.left(),
                       what=f"{replica.name} healthy")
    await wait_for(lambda: grpc_healthy(APISERVER), timeout=deadline.left(),
                   what="apiserver healthy")


async def wait_nodes_healthy(settings: ClusterSettings, deadline: Deadline) -> None:
    """Every node's kubelet, proxy and DNS program says SERVING."""
    for node in settings.node_list:
        if settings.cluster_dns:
            await wait_for(lambda n=node: grpc_healthy(n.dns_endpoint),
                           timeout=deadline.left(), what=f"dns of {node.name} healthy")
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


def _curl(url: str) -> str:
    """``http://127.0.0.1:30080/hostname`` -> ``curl 127.0.0.1:30080/hostname``."""
    return "curl " + url.removeprefix("http://").replace(":80/", "/")


async def start_and_wait(data_dir: Path, settings: ClusterSettings, *, demo: bool,
                         deadline: Deadline) -> DemoEndpoints | None:
    """The asynchronous part of ``skiff up`` once supervisord runs."""
    await wait_apiserver(settings, deadline)
    async with Client(APISERVER) as client:
        if settings.cluster_dns:
            await ensure_kube_dns(client)
        await wait_nodes_healthy(settings, deadline)
        await wait_nodes_ready(client, settings, deadline)
        if not demo:
            return None
        await apply_demo(client)
        await wait_available(client, DEMO, DEMO_NAMESPACE, deadline)
        # Only the bridge plugin's kubelets route the service range on the machine.
        bridge = settings.network_plugin == "bridge"
        return await check_demo_answers(client, LocalNode(1).address, deadline,
                                        guestbook=bridge, cluster_ip=bridge)


def check_privileges(settings: ClusterSettings, euid: int | None = None) -> None:
    """The bridge network plugin (bridges, veths, routes, nftables) and the DNS programs
    (port 53) need root; UpFailed says so before anything starts."""
    if settings.network_plugin == "bridge" and (os.geteuid() if euid is None else euid):
        raise UpFailed("the bridge network plugin needs root (it makes bridges, veths, "
                       "routes and nftables rules, and the cluster DNS listens on port 53): "
                       "run skiff up as root, or with --network-plugin docker")


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
        check_privileges(settings)
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
        return f"  {command:<45} # {comment}"

    lines = [f"Skiff is up: {settings.nodes} node(s) Ready ({nodes}); data and logs in "
             f"{data_dir}.",
             f"  apiserver (gRPC, skiff.api.v1): {APISERVER}",
             f"  kubectl (HTTPS, context skiff): https://{kubeapi.REST_HOST}:"
             f"{kubeapi.REST_PORT}, {data_dir / 'kubeconfig'}",
             (f"  etcd (existing, not managed):   {store}" if settings.etcd_servers
              else f"  store (etcd v3 API):            {store}"),
             f"  network: {network_summary(settings)}"]
    if demo is not None:
        lines += [f"  demo: examples/ applied; deployment {DEMO} available behind service "
                  f"{DEMO}", "", "Try:",
                  line(_curl(demo.node_port_url),
                       f"the {DEMO} Service's NodePort (answered: {demo.answer})"),
                  *([line(_curl(demo.cluster_ip_url), "its cluster IP, through the proxy")]
                    if demo.cluster_ip_url else [])]
        if demo.guestbook is not None:
            lines += guestbook_lines(demo.guestbook, line)
    else:
        lines += ["", "Try:", line("skiffctl apply -f examples/", "the demo (--no-demo)")]
    lines += [line("skiffctl get nodes,po -o wide", "nodes and pods"),
              line("skiffctl logs web; skiffctl exec web -- ls /", "the kubelet API"),
              line("skiffctl top pods", "CPU and memory"),
              line(f"skiff status{where}", "processes, health, leaders, nodes"),
              line(f"skiff down{where} [--purge]", "stop (--purge: and delete the data)")]
    return "\n".join(lines)


def network_summary(settings: ClusterSettings) -> str:
    """One line on the cluster's network: plugin, proxy mode, ranges, DNS (pure)."""
    text = (f"{settings.network_plugin} plugin, proxy {settings.proxy_mode}; pods "
            f"{CLUSTER_CIDR} (a /{NODE_CIDR_MASK_SIZE} per node), services {SERVICE_CIDR}")
    if settings.cluster_dns:
        text += f", cluster DNS {','.join(settings.cluster_dns)} ({CLUSTER_DOMAIN})"
    return text


def guestbook_lines(answers: ServiceAnswers, line: Callable[[str, str], str]) -> list[str]:
    """The guestbook's curls: its frontend through a NodePort and through its cluster
    IP from the host, each answer crossing both tiers (pure)."""
    lines = [line(_curl(answers.node_port_url),
                  f"the guestbook: frontend -> backend by name (answered: {answers.answer})")]
    if answers.cluster_ip_url:
        lines.append(line(_curl(answers.cluster_ip_url), "the guestbook's frontend by cluster IP"))
    return lines


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


def configured_dns(config_text: str) -> list[str]:
    """The nodes a supervisord configuration runs DNS programs for (pure)."""
    return re.findall(r"^\[program:dns-(.+)\]$", config_text, flags=re.M)


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
    """The local nodes' ``bridge`` pod network and their proxies' rules: bridges, veths,
    nftables tables (``skiff-node-<node>``, ``skiff-proxy-<node>``) and DOCKER-USER
    entries, and Skiff's routes (proto 147) once no Skiff bridge is left on the machine
    (kubelets and proxies leave all of it on SIGTERM, for the next ones to adopt)."""
    from skiff.kubelet.podnet import remove_machine_wide, remove_pod_network, remove_proxy_tables

    async def remove() -> dict[str, int]:
        totals: dict[str, int] = {}
        for node in nodes:
            removed = await remove_pod_network(node)
            removed["tables"] += await remove_proxy_tables(node)
            for what, count in removed.items():
                totals[what] = totals.get(what, 0) + count
        if nodes:
            for what, count in (await remove_machine_wide()).items():
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


async def status_report(nodes: list[LocalNode], etcd_servers: tuple[str, ...] = (),
                        dns_nodes: Collection[str] = ()) -> list[str]:
    """Health of every daemon (the DNS programs of ``dns_nodes`` too), who leads what,
    and each node's Ready condition; of the existing etcd's members instead of the
    store replicas when it runs on one."""
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
        if node.name in dns_nodes:
            lines.append(f"dns-{node.name} {node.gateway}:53 (health "
                         f"{node.dns_endpoint}): {await _grpc_status(node.dns_endpoint)}")
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
    text = config.read_text()
    etcd = configured_etcd_servers(text)
    print("\n".join(asyncio.run(status_report(nodes, etcd, configured_dns(text)))))
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
                           help="the kubelets' pod network: bridge (Skiff's own bridge, "
                                "veths and routes, and a cluster DNS per node) or docker (a "
                                "Docker network per node, no cluster DNS) "
                                "($SKIFF_NETWORK_PLUGIN, bridge)")
    up_parser.add_argument("--proxy-mode", choices=PROXY_MODES, default=env.proxy_mode,
                           help="the proxies' data path: userspace (their asyncio load "
                                "balancer) or nftables (DNAT in the kernel) "
                                "($SKIFF_PROXY_MODE, userspace)")
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
                           network_plugin=args.network_plugin,
                           proxy_mode=args.proxy_mode)


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
