"""End-to-end fixtures: a real store and apiserver (``shared_cluster``, shared by the
session; tests/conftest.py), and per test
a real ``skiff-kubelet`` process for a node of the test's own, on the real Docker engine.

Each test's node has a unique name and pod CIDR, so tests never see each other's pods,
containers or networks; teardown removes every container labelled with the node's name
and the node's network. The kubelet runs with fast back-off and sync flags
(:data:`FAST_FLAGS`) so crash loops and pull back-offs show within seconds.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.kubelet.containers import remove_node
from skiff.kubelet.podnet import remove_pod_network
from skiff.testing.fixtures import failed
from skiff.testing.processes import Kubelet

#: Kubelet flags for tests: back-offs of a second or two, frequent relists.
FAST_FLAGS = ["--crash-backoff-initial", "1", "--crash-backoff-max", "4",
              "--crash-backoff-reset", "60", "--image-pull-backoff-initial", "3",
              "--image-pull-backoff-max", "6", "--sync-frequency", "3",
              "--node-status-update-frequency", "2", "--node-lease-renew-interval", "2",
              "--container-gc-period", "2"]


@pytest.fixture
async def api(shared_cluster, request) -> AsyncIterator[Client]:
    client = Client(shared_cluster.apiserver.address)
    try:
        yield client
    finally:
        await client.close()
        if failed(request):
            print(shared_cluster.apiserver.logs(60))


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def ns(api) -> str:
    """A namespace of the test's own."""
    name = f"e2e-{secrets.token_hex(3)}"
    await api.namespaces.create(core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=name)))
    return name


async def _free_cidr(docker: aiodocker.Docker) -> str:
    """A /24 in 10.100.0.0-10.199.255.0 that no Docker network overlaps."""
    taken = []
    for network in await docker.networks.list():
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                taken.append(ipaddress.ip_network(config["Subnet"], strict=False))
    for _ in range(100):
        candidate = ipaddress.ip_network(
            f"10.{secrets.randbelow(100) + 100}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(t) for t in taken if t.version == 4):
            return str(candidate)
    raise RuntimeError("no free /24 for the test's pod network")


@dataclass
class Node:
    """The test's node: its kubelet process and what it was started with."""

    name: str
    pod_cidr: str
    kubelet: Kubelet


#: ``SKIFF_NETWORK_PLUGIN=bridge`` runs the tests' kubelets on the bridge network plugin
#: (pod CIDRs then come from 10.244.128.0/17, inside the cluster CIDR).
NETWORK_PLUGIN = os.environ.get("SKIFF_NETWORK_PLUGIN", "docker")


def _free_bridge_cidr() -> str:
    """A /24 in 10.244.128.0/17 that no route here covers yet."""
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    for _ in range(100):
        prefix = f"10.244.{128 + secrets.randbelow(127)}."
        if prefix not in routes:
            return f"{prefix}0/24"
    raise RuntimeError("no free /24 for the test's pod network")


@pytest.fixture
async def node(shared_cluster, docker, tmp_path, request) -> AsyncIterator[Node]:
    """A node of the test's own, its kubelet running and Ready (fast flags, and those
    of the test's ``kubelet_flags`` mark)."""
    name = f"e2e-{secrets.token_hex(4)}"
    bridge = NETWORK_PLUGIN == "bridge"
    cidr = _free_bridge_cidr() if bridge else await _free_cidr(docker)
    marker = request.node.get_closest_marker("kubelet_flags")
    flags = [*FAST_FLAGS, "--network-plugin", NETWORK_PLUGIN, "--root-dir",
             str(tmp_path / "kubelet-root"), *(marker.args if marker else ())]
    kubelet = Kubelet(tmp_path / "kubelet", [shared_cluster.apiserver.address],
                      node_name=name, pod_cidr=cidr, extra_args=flags)
    kubelet.start()
    try:
        await kubelet.wait_ready()
        yield Node(name, cidr, kubelet)
    finally:
        kubelet.stop()
        if failed(request):
            print(kubelet.logs(200))
        await remove_node(docker, name)
        if bridge:
            await remove_pod_network(name)


def log_path(node: Node) -> Path:
    return node.kubelet.daemon.log_path
