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
    # Its typed client sends the namespace as Kubernetes protobuf.
    assert (await kubectl("create", "namespace", name)).strip() == f"namespace/{name} created"
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
    rows = {(line.split()[0], line.split()[-1]): line.split()
            for line in resources.splitlines()}
    assert rows["pods", "Pod"][1:] == ["po", "v1", "true", "Pod"]
    assert rows["pods", "PodMetrics"][1:] == ["metrics.k8s.io/v1beta1", "true", "PodMetrics"]
    assert rows["deployments", "Deployment"][1:] == ["deploy", "apps/v1", "true", "Deployment"]
    assert rows["leases", "Lease"][1:] == ["coordination.k8s.io/v1", "true", "Lease"]
    assert rows["nodes", "Node"][1:] == ["no", "v1", "false", "Node"]
    assert sorted((await kubectl("api-versions")).split()) == [
        "apps/v1", "coordination.k8s.io/v1", "metrics.k8s.io/v1beta1", "v1"]
    assert "couldn't get resource list" not in err
    explained = await kubectl("explain", "deployments.spec.template.spec.containers")
    assert "KIND:       Deployment" in explained and "FIELDS:" in explained
    assert "image\t<string>" in explained


async def test_create_get_and_delete(kubectl, ns):
    out = await kubectl("create", "-n", ns, "-f", "-", stdin=MANIFEST)
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
    await kubectl("create", "-f", "-", stdin=json.dumps(node))
    assert (await kubectl("get", "nodes", "-l", f"t={name}", "-o", "name")).split() == [
        f"node/{name}"]
    await kubectl("delete", "node", name)
    code, _, err = await kubectl.run("get", "node", name, check=False)
    assert code != 0 and "NotFound" in err


async def test_get_watch_sees_changes(kubectl, ns):
    await kubectl("create", "-n", ns, "-f", "-",
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
    await kubectl("create", "-n", ns, "-f", "-",
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


# ---- PATCH, Tables, field validation, OpenAPI ----


async def test_apply_three_way_then_patches_label_annotate_scale_edit(kubectl, ns, tmp_path):
    deployment = MANIFEST.split("---")[1]
    out = await kubectl("apply", "-n", ns, "-f", "-", stdin=deployment)  # strict validation
    assert out.strip() == "deployment.apps/d created"
    changed = deployment.replace("replicas: 2", "replicas: 3").replace(
        "image: nginx}", "image: nginx:1.27}")
    assert (await kubectl("apply", "-n", ns, "-f", "-", stdin=changed)).strip() == (
        "deployment.apps/d configured")
    got = await kubectl("get", "deploy", "d", "-n", ns, "-o",
                        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}")
    assert got == "3 nginx:1.27"
    code, _, err = await kubectl.run("apply", "-n", ns, "-f", "-", check=False,
                                     stdin=changed.replace("replicas: 3", "replicaz: 3"))
    assert code != 0 and 'unknown field "spec.replicaz"' in err
    await kubectl("label", "deploy", "d", "-n", ns, "tier=front")
    await kubectl("annotate", "deploy", "d", "-n", ns, "note=hi")
    await kubectl("patch", "deploy", "d", "-n", ns, "--type=json",
                  "-p", '[{"op":"replace","path":"/spec/replicas","value":5}]')
    await kubectl("patch", "deploy", "d", "-n", ns, "--type=merge",
                  "-p", '{"spec":{"minReadySeconds":2}}')
    await kubectl("patch", "deploy", "d", "-n", ns, "-p",
                  '{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}}}')
    assert (await kubectl("scale", "deploy", "d", "-n", ns, "--replicas=4")).strip() == (
        "deployment.apps/d scaled")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/tier: front/tier: back/' \"$1\"\n")
    editor.chmod(0o755)
    kubectl.env["EDITOR"] = str(editor)
    await kubectl("edit", "deploy", "d", "-n", ns)
    got = json.loads(await kubectl("get", "deploy", "d", "-n", ns, "-o", "json"))
    assert got["metadata"]["labels"] == {"tier": "back"}
    assert got["metadata"]["annotations"]["note"] == "hi"
    assert (got["spec"]["replicas"], got["spec"]["minReadySeconds"]) == (4, 2)
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    code, _, err = await kubectl.run("apply", "--server-side", "-n", ns, "-f", "-",
                                     stdin=changed, check=False)
    assert code != 0  # server-side apply: 415


async def test_get_prints_kubernetes_columns(kubectl, ns):
    await kubectl("create", "-n", ns, "-f", "-", stdin=MANIFEST)
    pods = (await kubectl("get", "pods", "-n", ns, "-o", "wide")).splitlines()
    assert pods[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[:3] == ["web", "0/1", "Pending"]
    services = (await kubectl("get", "svc", "-n", ns)).splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)",
                                   "AGE"]
    everywhere = (await kubectl("get", "deploy", "-A")).splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [ns, "d"] for line in everywhere[1:])


async def test_delete_by_label_with_grace_period_and_wait(kubectl, ns):
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"p{i}", "labels": {"sweep": "yes" if i else "no"}},
             "spec": {"containers": [{"name": "c", "image": "busybox"}]}} for i in range(3)]
    # kubectl validates a v1 List against OpenAPI v2, which is not served.
    await kubectl("create", "-n", ns, "--validate=false", "-f", "-",
                  stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    out = await kubectl("delete", "pods", "-n", ns, "-l", "sweep=yes", "--grace-period=0",
                        "--force", "--wait")
    assert sorted(out.split("\n")[-3:-1]) == ['pod "p1" force deleted', 'pod "p2" force deleted']
    assert (await kubectl("get", "pods", "-n", ns, "-o", "name")).split() == ["pod/p0"]
    await kubectl("delete", "pod", "p0", "-n", ns, "--wait=false")
    await kubectl("wait", "--for=delete", "pod/p0", "-n", ns, "--timeout=10s")


async def test_typed_create_commands_send_protobuf(kubectl, ns):
    await kubectl("create", "deployment", "web", "-n", ns, "--image=nginx:1.27",
                  "--replicas=2", "--port=8080")
    await kubectl("create", "service", "nodeport", "web", "-n", ns, "--tcp=80:http")
    deploy = json.loads(await kubectl("get", "deploy", "web", "-n", ns, "-o", "json"))
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 8080, "protocol": "TCP"}]
    service = json.loads(await kubectl("get", "svc", "web", "-n", ns, "-o", "json"))
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
