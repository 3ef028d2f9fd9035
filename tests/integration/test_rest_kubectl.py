"""The real kubectl (1.32, /usr/bin/kubectl) against the apiserver's REST API: a
kubeconfig the fixture writes, a discovery cache per test (KUBECACHEDIR)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from skiff.testing.fixtures import rest_apiserver
from skiff.testing.processes import APIServer

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="no kubectl on PATH")


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest-kubectl"),
                        shared_cluster.store.endpoints) as api:
        yield api


class Kubectl:
    """Runs kubectl with the server's kubeconfig and a cache of its own."""

    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(cache),
                    "HOME": str(cache)}

    async def run(self, *args: str, stdin: str | None = None, check: bool = True,
                  timeout: float = 30.0) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            KUBECTL, *args, env=self.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout)
        code = process.returncode or 0
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({code}): {err.decode()}")
        return code, out.decode(), err.decode()

    async def __call__(self, *args: str, stdin: str | None = None) -> str:
        return (await self.run(*args, stdin=stdin))[1]


@pytest.fixture
def kubectl(server, tmp_path) -> Kubectl:
    return Kubectl(server.kubeconfig, tmp_path / "kube-cache")


@pytest.fixture
async def ns(kubectl) -> str:
    name = f"kc-{secrets.token_hex(4)}"
    # Not `kubectl create namespace`: its typed client sends protobuf, not served (415).
    await kubectl("create", "--validate=false", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


MANIFEST = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: busybox
    ports: [{containerPort: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 2
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


async def test_version_and_discovery(kubectl):
    version = json.loads(await kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.32.")
    _, out, err = await kubectl.run("version")
    assert "Server Version: v1.32" in out and "WARNING" not in err
    resources = await kubectl("api-resources", "--no-headers")
    rows = {line.split()[0]: line.split() for line in resources.splitlines()}
    assert rows["pods"][1:] == ["po", "v1", "true", "Pod"]
    assert rows["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]
    assert rows["leases"][1:] == ["coordination.k8s.io/v1", "true", "Lease"]
    assert rows["nodes"][1:] == ["no", "v1", "false", "Node"]
    assert sorted((await kubectl("api-versions")).split()) == [
        "apps/v1", "coordination.k8s.io/v1", "v1"]
    assert "couldn't get resource list" not in err


async def test_create_get_and_delete(kubectl, ns):
    out = await kubectl("create", "-n", ns, "--validate=false", "-f", "-", stdin=MANIFEST)
    assert out.split("\n")[:3] == ["pod/web created", "deployment.apps/d created",
                                   "service/s created"]
    assert (await kubectl("get", "pods", "-n", ns, "-o", "name")).split() == ["pod/web"]
    pod = yaml.safe_load(await kubectl("get", "pod", "web", "-n", ns, "-o", "yaml"))
    assert pod["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert pod["metadata"]["namespace"] == ns
    listed = json.loads(await kubectl("get", "pods", "-A", "-o", "json"))
    assert listed["kind"] == "List"
    assert any(p["metadata"]["name"] == "web" and p["metadata"]["namespace"] == ns
               for p in listed["items"])
    wide = await kubectl("get", "pods", "-n", ns, "-o", "wide")
    assert wide.split("\n")[0].split()[0] == "NAME" and "web" in wide
    by_label = await kubectl("get", "pods,deploy,svc", "-n", ns, "-l", "app=web", "-o", "name")
    assert by_label.split() == ["pod/web"]
    ip = await kubectl("get", "svc", "s", "-n", ns, "-o", "jsonpath={.spec.clusterIP}")
    assert ip.count(".") == 3
    out = await kubectl("delete", "-n", ns, "-f", "-", stdin=MANIFEST)
    assert "pod \"web\" deleted" in out and "deployment.apps \"d\" deleted" in out
    assert (await kubectl("get", "all", "-n", ns, "-o", "name")).strip() == ""


async def test_nodes_cluster_scoped(kubectl):
    name = f"node-{secrets.token_hex(3)}"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
                                                             "labels": {"t": name}}}
    await kubectl("create", "--validate=false", "-f", "-", stdin=json.dumps(node))
    assert (await kubectl("get", "nodes", "-l", f"t={name}", "-o", "name")).split() == [
        f"node/{name}"]
    await kubectl("delete", "node", name)
    code, _, err = await kubectl.run("get", "node", name, check=False)
    assert code != 0 and "NotFound" in err


async def test_get_watch_sees_changes(kubectl, ns):
    await kubectl("create", "-n", ns, "--validate=false", "-f", "-",
                  stdin=MANIFEST.split("---")[0])
    watcher = await asyncio.create_subprocess_exec(
        KUBECTL, "get", "pods", "-n", ns, "-w", "-o", "name", env=kubectl.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert watcher.stdout is not None
        first = await asyncio.wait_for(watcher.stdout.readline(), 20)
        assert first.decode().strip() == "pod/web"
        await kubectl("delete", "pod", "web", "-n", ns)
        second = await asyncio.wait_for(watcher.stdout.readline(), 20)
        assert second.decode().strip() == "pod/web"  # the DELETED event
    finally:
        watcher.terminate()
        await watcher.wait()


async def test_scale(kubectl, ns):
    await kubectl("create", "-n", ns, "--validate=false", "-f", "-",
                  stdin=MANIFEST.split("---")[1])
    out = await kubectl("scale", "deployment", "d", "-n", ns, "--replicas=4",
                        "--current-replicas=2")
    assert out.strip() == "deployment.apps/d scaled"
    replicas = await kubectl("get", "deploy", "d", "-n", ns, "-o", "jsonpath={.spec.replicas}")
    assert replicas == "4"
    code, _, err = await kubectl.run("scale", "deployment", "d", "-n", ns, "--replicas=1",
                                     "--current-replicas=2", check=False)
    assert code != 0 and "Expected replicas to be 2, was 4" in err


async def test_errors_reach_the_user(kubectl, ns, server, tmp_path):
    code, _, err = await kubectl.run("get", "pod", "nope", "-n", ns, check=False)
    assert code != 0 and 'pods "nope" not found' in err
    config = yaml.safe_load(server.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    stranger = Kubectl(bad, tmp_path / "cache2")
    code, _, err = await stranger.run("get", "pods", "-n", ns, check=False)
    assert code != 0 and ("Unauthorized" in err or "must be logged in" in err)
