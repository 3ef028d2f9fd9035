"""The pod path of ``bench/proxy.py``: pod -> Service through each proxy mode, beside
pod -> pod direct (see that file's docstring). Run it through ``bench/proxy.py``.

What runs: three store replicas and an apiserver, one kubelet (node ``bench``, the
``bridge`` network plugin, pod CIDR :data:`POD_CIDR`), two sleeping busybox pods, and
per mode one ``skiff-proxy`` with ``--pod-bridge-interface`` on that node's bridge. The
backend and the load generator are this host's Python inside the pods' network
namespaces. Between modes the proxy stops cleanly, which removes its table, so the
next mode starts from a kernel without the previous one's rules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiodocker
from proxy import (  # the shared pieces of bench/proxy.py
    REPLY,
    REQUEST,
    _in_netns,
    _report_head,
    create_service,
    progress,
    rss_mb,
    run_load,
    summarize,
)

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.kubelet import labels as L
from skiff.kubelet.containers import remove_node
from skiff.kubelet.images import BUSYBOX_IMAGE
from skiff.kubelet.podnet import bridge_name, remove_pod_network
from skiff.testing.processes import Kubelet, Proxy, control_plane

NODE = "bench"
POD_CIDR = "10.244.250.0/24"
RR_PORT, BULK_PORT = 9000, 9001
#: nftables mode: the kernel DNATs, so the Service should cost almost nothing.
TARGET_NFTABLES_RATIO = 0.9


async def run_pods(args: argparse.Namespace) -> dict[str, Any]:
    report = _report_head(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    report["modes"] = {}
    with tempfile.TemporaryDirectory(prefix="skiff-proxy-bench-") as tmp:
        base = Path(tmp)
        async with control_plane(base, log_level="warning") as (_, apiserver):
            kubelet = Kubelet(base / "kubelet", [apiserver.address], node_name=NODE,
                              pod_cidr=POD_CIDR, log_level="warning",
                              extra_args=["--network-plugin", "bridge"])
            kubelet.start()
            backend: asyncio.subprocess.Process | None = None
            try:
                await kubelet.wait_ready(timeout=90)
                async with Client(apiserver.address) as client:
                    server_ip, server_pid, client_pid = await start_pods(client)
                    backend = await asyncio.create_subprocess_exec(
                        *_in_netns(server_pid), sys.executable, str(Path(__file__).parent
                                                                    / "proxy.py"),
                        "_backend", str(RR_PORT), str(BULK_PORT), "0.0.0.0",
                        stdout=asyncio.subprocess.PIPE)
                    assert backend.stdout is not None
                    await backend.stdout.readline()  # "ready"
                    service_ip = await create_service(client, "bench", server_ip, RR_PORT,
                                                      BULK_PORT)
                for mode in modes:
                    report["modes"][mode] = await measure_mode(
                        mode, apiserver.address, base, args, server_ip, service_ip,
                        client_pid, backend.pid)
            finally:
                if backend is not None:
                    backend.terminate()
                    await backend.wait()
                kubelet.stop()
                async with aiodocker.Docker() as docker:
                    await remove_node(docker, NODE)
                await remove_pod_network(NODE)
    report["targets"] = {}
    for mode, result in report["modes"].items():
        for name, target in result.pop("targets").items():
            report["targets"][f"{mode}_{name}"] = target
    return report


async def measure_mode(mode: str, apiserver: str, base: Path, args: argparse.Namespace,
                       server_ip: str, service_ip: str, client_pid: int,
                       backend_pid: int) -> dict[str, Any]:
    """Rounds of pod -> pod direct and pod -> Service through a proxy in ``mode``."""
    proxy = Proxy(base / f"proxy-{mode}", [apiserver], node_name=NODE, log_level="warning",
                  extra_args=["--proxy-mode", mode, "--pod-bridge-interface",
                              bridge_name(NODE)])
    proxy.start()
    results: dict[str, list[dict[str, Any]]] = {
        "requests_direct": [], "requests_service": [], "bulk_direct": [], "bulk_service": []}
    try:
        await proxy.wait_healthy(timeout=60)
        assert proxy.pid is not None
        await wait_for(lambda: reachable_from(client_pid, service_ip, 80), timeout=30,
                       interval=0.2, what=f"the Service through the {mode} proxy")
        watched = {"proxy": proxy.pid, "backend": backend_pid}
        for round_ in range(args.rounds):
            for kind, port_d, port_s in (("requests", RR_PORT, 80), ("bulk", BULK_PORT, 81)):
                for where, host, port in (("direct", server_ip, port_d),
                                          ("service", service_ip, port_s)):
                    progress(f"{mode} round {round_ + 1}: {kind} {where}")
                    results[f"{kind}_{where}"].append(await run_load(
                        kind, host, port, args, watched, netns_pid=client_pid))
        rss = round(rss_mb(proxy.pid), 1)
    finally:
        proxy.stop()
    target = TARGET_NFTABLES_RATIO if mode == "nftables" else None
    return {"proxy_rss_mb": rss, "results": results,
            **summarize(results, "service", target, target)}


async def start_pods(client: Client) -> tuple[str, int, int]:
    """The server and client pods, running; the server's IP and both sandboxes' pids."""
    for name in ("bench-server", "bench-client"):
        container = core_pb2.Container(name="sleep", image=BUSYBOX_IMAGE,
                                       image_pull_policy="IfNotPresent",
                                       command=["sleep", "86400"])
        await client.pods.create(core_pb2.Pod(
            metadata=meta_pb2.ObjectMeta(name=name, namespace="default"),
            spec=core_pb2.PodSpec(containers=[container], node_name=NODE)))

    async def running(name: str) -> core_pb2.Pod | None:
        pod = await client.pods.get(name, "default")
        return pod if pod.status.phase == "Running" and pod.status.pod_ip else None

    server = await wait_for(lambda: running("bench-server"), timeout=90, interval=0.2,
                            what="bench-server running")
    await wait_for(lambda: running("bench-client"), timeout=90, interval=0.2,
                   what="bench-client running")
    client_pid = await sandbox_pid("bench-client")
    await widen_ephemeral_ports(client_pid)
    return server.status.pod_ip, await sandbox_pid("bench-server"), client_pid


async def widen_ephemeral_ports(pid: int) -> None:
    """Let the client pod reuse TIME_WAIT ports: one round of short connections leaves
    tens of thousands of them toward the same address and port, and the next round would
    measure the search for a free port instead of the path. Both sysctls are per network
    namespace: only the benchmark's pod changes."""
    for setting in ("net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"):
        process = await asyncio.create_subprocess_exec(
            *_in_netns(pid), "sysctl", "-q", "-w", setting)
        await process.wait()


async def sandbox_pid(pod: str) -> int:
    """The pid of the pod's sandbox (its network namespace's holder)."""
    filters = {"label": [f"{L.NODE}={NODE}", f"{L.POD_NAME}={pod}",
                         f"{L.CONTAINER_TYPE}={L.SANDBOX}"]}
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(filters=json.dumps(filters))
        assert found, f"no sandbox for {pod}"
        info = await found[0].show()
    return int(info["State"]["Pid"])


async def reachable_from(pid: int, host: str, port: int) -> bool:
    """One request/reply to ``host:port`` from inside the network namespace of ``pid``."""
    probe = ("import socket,sys;s=socket.create_connection((sys.argv[1],int(sys.argv[2])),2);"
             f"s.sendall(b'q'*{len(REQUEST)});n=0\n"
             f"while n<{len(REPLY)}:\n d=s.recv(65536)\n if not d: break\n n+=len(d)\n"
             f"sys.exit(0 if n>={len(REPLY)} else 1)")
    process = await asyncio.create_subprocess_exec(
        *_in_netns(pid), sys.executable, "-c", probe, host, str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await process.wait() == 0
