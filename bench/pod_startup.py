"""Benchmark pod start-up through the real kubelet, and print JSON.

    python bench/pod_startup.py              # 30 pods, fresh store + apiserver + kubelet
    python bench/pod_startup.py --pods 60
    python bench/pod_startup.py --network-plugin bridge   # the kubelet's own bridge

A fresh cluster is started here (3 store replicas, an apiserver, one ``skiff-kubelet``
for a node of its own with its own pod network), then:

- ``docker``: the raw cost of what the kubelet does for one pod, measured through
  aiodocker in this run: create+start the sandbox (``skiff/pause`` on the node's
  network), then create+start the app container joined to it (``--samples`` times,
  one after the other; median). ``docker_parallel``: the same for ``--pods`` pods at once
  (p50, p99), what Docker alone achieves under the same concurrency.
- ``pods``: ``--pods`` pods (one busybox container, ``IfNotPresent``) created at once,
  each timed from its create being sent to its phase ``Running`` arriving on a watch
  (p50, p99, max).

With ``--network-plugin bridge`` the raw Docker runs use network mode ``none`` (what the
kubelet asks Docker for there): the plumbing of the pod's network is then part of the
kubelet's overhead. ``overhead_p50_s``: pods' p50 less ``docker_parallel``'s p50.

Targets: p99 <= 2 s; p50 <= 2 x the raw Docker time of one pod; overhead p50 <= 0.5 s.
Every container and the network made here are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiodocker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.kubelet import labels as L
from skiff.kubelet.containers import network_name, remove_node
from skiff.kubelet.images import BUSYBOX_IMAGE, PAUSE_IMAGE
from skiff.kubelet.podnet import remove_pod_network
from skiff.testing.processes import APIServer, Kubelet, StoreCluster

APP_COMMAND = ["sh", "-c", "exec sleep 3600"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def raw_pod(docker: aiodocker.Docker, network: str, label: str) -> float:
    """Seconds to create+start a sandbox and an app container joined to it."""
    labels = {L.NODE: label}
    started = time.monotonic()
    sandbox = await docker.containers.create(
        {"Image": PAUSE_IMAGE, "Labels": labels,
         "HostConfig": {"NetworkMode": network, "IpcMode": "shareable"}})
    await sandbox.start()
    app = await docker.containers.create(
        {"Image": BUSYBOX_IMAGE, "Entrypoint": APP_COMMAND[:1], "Cmd": APP_COMMAND[1:],
         "Labels": labels, "HostConfig": {"NetworkMode": f"container:{sandbox.id}",
                                          "IpcMode": f"container:{sandbox.id}"}})
    await app.start()
    return time.monotonic() - started


async def remove_labelled(docker: aiodocker.Docker, node: str) -> None:
    listed = await docker.containers.list(all=True, filters=json.dumps(L.node_filter(node)))
    await asyncio.gather(*(c.delete(force=True) for c in listed), return_exceptions=True)


async def measure_docker(docker: aiodocker.Docker, network: str, samples: int,
                         parallel: int) -> dict[str, Any]:
    label = f"bench-raw-{secrets.token_hex(3)}"
    try:
        serial = [await raw_pod(docker, network, label) for _ in range(samples)]
        await remove_labelled(docker, label)
        together = await asyncio.gather(*(raw_pod(docker, network, label)
                                          for _ in range(parallel)))
    finally:
        await remove_labelled(docker, label)
    return {"docker_s": round(statistics.median(serial), 4),
            "docker_samples": [round(s, 4) for s in serial],
            "docker_parallel": {"pods": parallel, "p50_s": round(percentile(together, .5), 4),
                                "p99_s": round(percentile(together, .99), 4)}}


def bench_pod(name: str, namespace: str, node: str) -> core_pb2.Pod:
    container = core_pb2.Container(name="app", image=BUSYBOX_IMAGE,
                                   image_pull_policy="IfNotPresent", command=APP_COMMAND)
    return core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace),
                        spec=core_pb2.PodSpec(containers=[container], node_name=node,
                                              termination_grace_period_seconds=0))


async def measure_pods(client: Client, node: str, count: int) -> dict[str, Any]:
    namespace = f"bench-{secrets.token_hex(3)}"
    await client.namespaces.create(core_pb2.Namespace(
        metadata=meta_pb2.ObjectMeta(name=namespace)))
    listed = await client.pods.list(namespace)
    sent: dict[str, float] = {}
    running: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async for event in client.pods.watch(
                namespace, resource_version=listed.metadata.resource_version):
            pod = event.object
            if pod.status.phase == "Running" and pod.metadata.name not in running:
                running[pod.metadata.name] = time.monotonic()
                if len(running) == count:
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    names = [f"pod-{i}" for i in range(count)]

    async def create(name: str) -> None:
        sent[name] = time.monotonic()
        await client.pods.create(bench_pod(name, namespace, node))

    first = time.monotonic()
    await asyncio.gather(*(create(n) for n in names))
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
    finally:
        watcher.cancel()
    latencies = [running[n] - sent[n] for n in names]
    result = {"pods": count, "p50_s": round(percentile(latencies, .5), 4),
              "p99_s": round(percentile(latencies, .99), 4),
              "max_s": round(max(latencies), 4),
              "all_running_s": round(max(running.values()) - first, 4)}
    for name in names:
        await client.pods.delete(name, namespace, grace_period_seconds=0)
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="skiff-bench-pods-"))
    store = StoreCluster(base / "store", log_level="warning")
    apiserver = APIServer(base / "apiserver", store.endpoints, log_level="warning")
    node = f"bench-{secrets.token_hex(3)}"
    bridge = args.network_plugin == "bridge"
    pod_cidr = args.pod_cidr or ("10.244.240.0/24" if bridge else "10.243.0.0/24")
    extra = ["--network-plugin", args.network_plugin, "--root-dir", str(base / "root")]
    kubelet = Kubelet(base / "kubelet", [apiserver.address], node_name=node,
                      pod_cidr=pod_cidr, log_level="warning", extra_args=extra)
    docker = aiodocker.Docker()
    store.start()
    try:
        await store.wait_healthy()
        apiserver.start()
        await apiserver.wait_healthy()
        kubelet.start()
        await kubelet.wait_ready()
        async with Client(apiserver.address) as client:
            raw = await measure_docker(docker, "none" if bridge else network_name(node),
                                       args.samples, args.pods)
            pods = await measure_pods(client, node, args.pods)
    finally:
        kubelet.stop()
        await remove_node(docker, node)
        if bridge:
            await remove_pod_network(node)
        await docker.close()
        apiserver.stop()
        store.stop()
    overhead = round(pods["p50_s"] - raw["docker_parallel"]["p50_s"], 4)
    targets = {
        "overhead_p50_le_0.5s": {"value": overhead, "met": overhead <= 0.5},
        "p99_le_2s": {"value": pods["p99_s"], "met": pods["p99_s"] <= 2.0},
        "p50_le_2x_docker": {"value": round(pods["p50_s"] / raw["docker_s"], 2),
                             "met": pods["p50_s"] <= 2 * raw["docker_s"]},
    }
    return {"benchmark": "pod_startup", "machine": {"cpus": os.cpu_count(),
                                                    "python": platform.python_version()},
            "network_plugin": args.network_plugin, "pods": pods, **raw,
            "overhead_p50_s": overhead, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--samples", type=int, default=5,
                        help="raw docker runs, one after the other")
    parser.add_argument("--pod-cidr", default="",
                        help="default 10.243.0.0/24 (docker), 10.244.240.0/24 (bridge)")
    parser.add_argument("--network-plugin", choices=("docker", "bridge"), default="docker")
    report = asyncio.run(run(parser.parse_args()))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
