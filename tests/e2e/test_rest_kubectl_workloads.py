"""The real kubectl (1.32) against the REST API where pods must really run: a real
kubelet on Docker (the ``node`` fixture) and a real controller-manager (deployment,
replication, garbage collector). Covers ``wait --for=condition=Available``, ``rollout
status|history|undo|restart|pause|resume``, ``set image``, ``describe
deployment|pod|node|service``, ``cordon|uncordon|drain`` (drain evicts through
pods/eviction) and ``cp`` into and out of a pod (busybox tar over exec streaming)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.kubelet.images import BUSYBOX_IMAGE
from skiff.testing.fixtures import failed, rest_apiserver, running_controller_manager
from skiff.testing.processes import APIServer, ControllerManager

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="no kubectl on PATH")
OTHER_IMAGE = BUSYBOX_IMAGE.rsplit(":", 1)[0] + ":latest"  # both tags are built locally


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest-workloads"),
                        shared_cluster.store.endpoints) as api:
        yield api


@pytest.fixture(scope="module")
def controllers(shared_cluster, tmp_path_factory) -> Iterator[ControllerManager]:
    with running_controller_manager(tmp_path_factory.mktemp("cm-kubectl"),
                                    [shared_cluster.apiserver.address],
                                    ["deployment", "replication", "garbagecollector"]) as cm:
        yield cm


class Kubectl:
    """kubectl with the server's kubeconfig and a discovery cache of its own."""

    def __init__(self, kubeconfig: Path, home: Path, namespace: str) -> None:
        self.namespace = namespace
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                    "KUBECACHEDIR": str(home / "cache"), "HOME": str(home)}

    async def run(self, *args: str, check: bool = True, timeout: float = 60.0,
                  ) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            KUBECTL, "-n", self.namespace, *args, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        code = process.returncode or 0
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({code}): {err.decode()}")
        return code, out.decode(), err.decode()

    async def __call__(self, *args: str, timeout: float = 60.0) -> str:
        return (await self.run(*args, timeout=timeout))[1]

    async def json(self, *args: str) -> dict:
        return json.loads(await self(*args, "-o", "json"))


@pytest.fixture
def kubectl(server, controllers, ns, tmp_path, request) -> Iterator[Kubectl]:
    yield Kubectl(server.kubeconfig, tmp_path, ns)
    if failed(request):
        print(server.logs(80))
        print(controllers.logs(80))


def deployment(node: str, replicas: int = 1) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {
                     "nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": BUSYBOX_IMAGE,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}}})


async def create(kubectl: Kubectl, manifest: str, tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(manifest)
    await kubectl("create", "-f", str(path))


def image_of(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


async def test_rollout_set_image_wait_and_describe(kubectl, node, tmp_path):
    await create(kubectl, deployment(node.name), tmp_path)
    await kubectl("wait", "--for=condition=Available", "deploy/d", "--timeout=60s")
    await kubectl("set", "image", "deploy/d", f"c={OTHER_IMAGE}")
    out = await kubectl("rollout", "status", "deploy/d", "--timeout=60s")
    assert 'deployment "d" successfully rolled out' in out
    history = (await kubectl("rollout", "history", "deploy/d")).split()
    assert history[:3] == ["deployment.apps/d", "REVISION", "CHANGE-CAUSE"]
    assert history[3::2] == ["1", "2"]
    two = await kubectl("rollout", "history", "deploy/d", "--revision=2")
    assert OTHER_IMAGE in two

    assert "rolled back" in await kubectl("rollout", "undo", "deploy/d")
    await kubectl("rollout", "status", "deploy/d", "--timeout=60s")
    assert image_of(await kubectl.json("get", "deploy/d")) == BUSYBOX_IMAGE

    assert "paused" in await kubectl("rollout", "pause", "deploy/d")
    assert (await kubectl.json("get", "deploy/d"))["spec"]["paused"] is True
    code, _, err = await kubectl.run("rollout", "restart", "deploy/d", check=False)
    assert code != 0 and "paused" in err  # kubectl refuses to restart a paused rollout
    assert "resumed" in await kubectl("rollout", "resume", "deploy/d")
    assert "restarted" in await kubectl("rollout", "restart", "deploy/d")
    d = await kubectl.json("get", "deploy/d")
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"]["annotations"]
    await kubectl("rollout", "status", "deploy/d", "--timeout=60s")

    described = await kubectl("describe", "deployment", "d")
    assert "Name:" in described and "Replicas:" in described and BUSYBOX_IMAGE in described
    await kubectl("expose", "deploy/d", "--port=80", "--target-port=8080", "--name=s")
    service = await kubectl("describe", "service", "s")
    assert "Selector:" in service and "app=d" in service and "80/TCP" in service
    pods = await kubectl("describe", "pods", "-l", "app=d")
    fields = [line.split(None, 1) for line in pods.splitlines() if line[:1].isalpha()]
    assert any(f[0] == "Status:" and f[1].strip() == "Running" for f in fields if len(f) == 2)
    assert "Controlled By:" in pods and "ReplicaSet/d-" in pods
    node_text = await kubectl("describe", "node", node.name)
    assert f"Name:               {node.name}" in node_text and "Conditions:" in node_text


async def test_cordon_drain_uncordon(kubectl, node, tmp_path):
    await create(kubectl, deployment(node.name, replicas=2), tmp_path)
    await kubectl("wait", "--for=condition=Available", "deploy/d", "--timeout=60s")
    first = {p["metadata"]["uid"] for p in (await kubectl.json("get", "pods"))["items"]}
    assert len(first) == 2
    assert "cordoned" in await kubectl("cordon", node.name)
    got = await kubectl.json("get", "node", node.name)
    assert got["spec"]["unschedulable"] is True
    out = await kubectl("drain", node.name, "--ignore-daemonsets", "--delete-emptydir-data",
                        "--pod-selector=app=d", "--timeout=60s")
    assert out.count("evicting pod") == 2 and "drained" in out
    now = {p["metadata"]["uid"] for p in (await kubectl.json("get", "pods"))["items"]}
    assert not first & now  # the evicted pods are gone (the ReplicaSet made others)
    assert "uncordoned" in await kubectl("uncordon", node.name)
    assert not (await kubectl.json("get", "node", node.name))["spec"].get("unschedulable")


async def test_cp_into_and_out_of_a_pod(kubectl, node, tmp_path):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box"},
           "spec": {"nodeName": node.name, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": BUSYBOX_IMAGE,
                                    "command": ["sleep", "3600"]}]}}
    await create(kubectl, json.dumps(pod), tmp_path)
    await kubectl("wait", "--for=condition=Ready", "pod/box", "--timeout=60s")
    sent = tmp_path / "sent.txt"
    sent.write_bytes(b"hello from kubectl cp\n" * 100)
    await kubectl("cp", str(sent), f"{kubectl.namespace}/box:/tmp/in.txt")
    assert (await kubectl("exec", "box", "--", "wc", "-c", "/tmp/in.txt")).split()[0] == "2200"
    await kubectl("exec", "box", "--", "sh", "-c", "echo made-inside > /tmp/out.txt")
    back = tmp_path / "back.txt"
    await kubectl("cp", f"{kubectl.namespace}/box:/tmp/out.txt", str(back))
    assert back.read_text() == "made-inside\n"
    await kubectl("cp", f"{kubectl.namespace}/box:/tmp/in.txt", str(tmp_path / "round.txt"))
    assert (tmp_path / "round.txt").read_bytes() == sent.read_bytes()
