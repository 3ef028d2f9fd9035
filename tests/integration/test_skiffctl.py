"""skiffctl as a user runs it: a subprocess against a real apiserver (on three store
replicas), checked by what it prints and its exit status.

No controllers, scheduler or kubelet exist yet, so what they would do is done here
through the API: pods are bound with Pods.Bind, ReplicaSets of a deployment are
created by hand with their ownerReferences and revision annotations, and deployment
status is written with UpdateStatus. Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from skiff.api import manifest
from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.kubelet.images import BUSYBOX_IMAGE
from skiff.testing.processes import APIServer, free_port

CTL = [sys.executable, "-m", "skiff.cli.skiffctl"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: How long a test waits for a command or an event.
DEADLINE = 30.0
POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  containers:
  - name: c
    image: busybox
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SKIFF_SERVER", "SKIFF_CONFIG")}
    env["SKIFF_CONFIG"] = str(tmp / "no-config")
    return env


async def ctl(server: str, *args: str, stdin: str | None = None) -> Result:
    """Run skiffctl against ``server`` and wait (with a deadline) for it to finish."""
    process = await asyncio.create_subprocess_exec(
        *CTL, "--server", server, *args, env=_env(Path("/nonexistent")),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Result(process.returncode or 0, out.decode(), err.decode())


async def ok(server: str, *args: str, stdin: str | None = None) -> str:
    """Run skiffctl, expect success and no error output; return stdout."""
    result = await ctl(server, *args, stdin=stdin)
    assert result.code == 0, result
    return result.out


def table(text: str) -> list[list[str]]:
    """A table's rows as cells (cells are separated by three spaces or more)."""
    return [re.split(r" {3,}", line.rstrip()) for line in text.splitlines() if line.strip()]


def column(text: str, name: str) -> list[str]:
    rows = table(text)
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


async def bind(client: Client, pod: str, node: str, namespace: str = "default") -> None:
    await client.pods.bind(core_pb2.Binding(
        metadata=meta_pb2.ObjectMeta(name=pod, namespace=namespace),
        target=meta_pb2.ObjectReference(kind="Node", name=node)))


def pod_manifest(name: str, app: str = "web") -> str:
    return POD_YAML.format(name=name, app=app)


# ---- apply, create, get ----


async def test_apply_the_examples_and_get_them_in_every_form(apiserver: APIServer) -> None:
    server = apiserver.address
    out = await ok(server, "apply", "-f", str(EXAMPLES))
    assert "pod/web created" in out.splitlines()
    assert "deployment.apps/hello created" in out and "service/hello created" in out
    assert "namespace/guestbook created" in out and "replicationcontroller/clock created" in out
    again = await ok(server, "apply", "-f", str(EXAMPLES))
    assert all(line.endswith(" unchanged") for line in again.splitlines()), again
    changed = (EXAMPLES / "pod.yaml").read_text().replace("app: web", "app: web\n    tier: fe")
    assert await ok(server, "apply", "-f", "-", stdin=changed) == "pod/web configured\n"

    pods = await ok(server, "get", "pods")
    assert table(pods)[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table(pods)[1][:4] == ["web", "0/1", "Pending", "0"]
    wide = await ok(server, "get", "po", "-o", "wide")
    assert column(wide, "NODE") == ["<none>"]
    services = await ok(server, "get", "svc", "hello")
    assert column(services, "PORT(S)") == ["80:30080/TCP"]
    assert column(services, "TYPE") == ["NodePort"]
    deploys = await ok(server, "get", "deploy")
    assert table(deploys)[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table(deploys)[1][:2] == ["hello", "0/3"]

    as_yaml = yaml.safe_load(await ok(server, "get", "pod", "web", "-o", "yaml"))
    assert as_yaml["kind"] == "Pod" and as_yaml["metadata"]["labels"]["tier"] == "fe"
    assert manifest.from_dict(as_yaml).spec.containers[0].image == BUSYBOX_IMAGE
    listed = json.loads(await ok(server, "get", "pods", "-o", "json"))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == [
        "web"]
    assert await ok(server, "get", "deploy/hello", "svc/hello", "-o", "name") == (
        "deployment.apps/hello\nservice/hello\n")

    assert await ok(server, "get", "po", "-l", "tier=fe", "-o", "name") == "pod/web\n"
    empty = await ctl(server, "get", "po", "-l", "tier=be")
    assert (empty.code, empty.out) == (0, "")
    assert empty.err == "No resources found in default namespace.\n"
    by_field = await ok(server, "get", "pods", "--field-selector", "status.phase=Pending",
                        "-o", "name")
    assert by_field == "pod/web\n"
    everywhere = await ok(server, "get", "deploy", "-A")
    assert table(everywhere)[0][:2] == ["NAMESPACE", "NAME"]
    assert sorted((r[0], r[1]) for r in table(everywhere)[1:]) == [
        ("default", "hello"), ("guestbook", "backend"), ("guestbook", "frontend")]
    labels = await ok(server, "get", "po", "--show-labels")
    assert column(labels, "LABELS") == ["app=web,tier=fe"]
    in_namespace = await ok(server, "get", "svc", "-n", "guestbook", "-o", "name")
    assert in_namespace == "service/backend\nservice/frontend\n"

    missing = await ctl(server, "get", "pod", "web", "nope", "-o", "name")
    assert (missing.code, missing.out) == (1, "pod/web\n")
    assert missing.err == 'Error from server (NotFound): pods "nope" not found\n'
    twice = await ctl(server, "create", "-f", str(EXAMPLES / "pod.yaml"))
    assert twice.code == 1
    assert twice.err == 'Error from server (AlreadyExists): pods "web" already exists\n'
    created = await ok(server, "create", "-f", "-", stdin=pod_manifest("other"))
    assert created == "pod/other created\n"


async def test_apply_keeps_what_the_server_and_others_set(apiserver: APIServer) -> None:
    server = apiserver.address
    full = (EXAMPLES / "deployment.yaml").read_text()
    without_replicas = full.replace("  replicas: 3\n", "")
    await ok(server, "apply", "-f", "-", stdin=without_replicas)
    await ok(server, "scale", "deploy/hello", "--replicas", "5")
    await ok(server, "label", "svc", "hello", "owner=ops")
    async with Client(server) as client:
        before = await client.services.get("hello")
    changed = without_replicas.replace("periodSeconds: 5", "periodSeconds: 7")
    out = await ok(server, "apply", "-f", "-", stdin=changed)
    assert out == "deployment.apps/hello configured\nservice/hello unchanged\n"
    async with Client(server) as client:
        deploy = await client.deployments.get("hello")
        service = await client.services.get("hello")
    # Never in the manifest, set by others: kept.
    assert deploy.spec.replicas == 5
    assert deploy.spec.template.spec.containers[0].readiness_probe.period_seconds == 7
    assert service.metadata.labels["owner"] == "ops"
    assert service.spec.cluster_ip == before.spec.cluster_ip
    assert service.spec.ports[0].node_port == 30080
    # In the manifest now: the manifest's. Then dropped from it: back to the default.
    await ok(server, "apply", "-f", "-", stdin=full)
    async with Client(server) as client:
        assert (await client.deployments.get("hello")).spec.replicas == 3
    await ok(server, "apply", "-f", "-", stdin=without_replicas)
    async with Client(server) as client:
        assert (await client.deployments.get("hello")).spec.replicas == 1


# ---- watch ----


async def test_get_watch_prints_a_row_per_event(apiserver: APIServer) -> None:
    server = apiserver.address
    process = await asyncio.create_subprocess_exec(
        *CTL, "--server", server, "get", "po", "-w", env=_env(Path("/nonexistent")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with Client(server) as client:
            pod = manifest.load_documents(pod_manifest("watched"), source="test")[0]
            # The watch may start after the create: either the list or the watch shows it.
            await client.pods.create(pod)
            rows = await _read_until(process, lambda line: line.startswith("watched "))
            assert rows[0].split()[:3] == ["NAME", "READY", "STATUS"]
            await bind(client, "watched", "node-1")
            await client.pods.delete("watched", grace_period_seconds=30)
            terminating = await _read_until(process, lambda line: "Terminating" in line)
            assert terminating[-1].split()[:3] == ["watched", "0/1", "Terminating"]
    finally:
        process.terminate()
        await process.wait()


async def _read_until(process: asyncio.subprocess.Process,
                      wanted: Callable[[str], bool]) -> list[str]:
    """Lines of the process's stdout up to the first ``wanted`` one (with a deadline)."""
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEADLINE
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not seen in time; got {lines}"
        line = (await asyncio.wait_for(process.stdout.readline(), remaining)).decode()
        assert line, f"skiffctl ended: {lines}, {(await process.stderr.read()).decode()}"
        lines.append(line.rstrip("\n"))
        if wanted(lines[-1]):
            return lines


# ---- delete ----


async def test_delete_by_name_file_and_selector(apiserver: APIServer) -> None:
    server = apiserver.address
    for name, app in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "y")):
        await ok(server, "create", "-f", "-", stdin=pod_manifest(name, app))
    assert await ok(server, "delete", "pod", "a") == 'pod "a" deleted\n'
    assert await ok(server, "delete", "po/b") == 'pod "b" deleted\n'
    deleted = await ok(server, "delete", "pods", "-l", "app=y", "--wait", "--timeout", "20s")
    assert deleted == 'pod "c" deleted\npod "d" deleted\n'
    await ok(server, "apply", "-f", str(EXAMPLES / "deployment.yaml"))
    out = await ok(server, "delete", "-f", str(EXAMPLES / "deployment.yaml"),
                   "--cascade=orphan")
    assert out == 'deployment.apps "hello" deleted\nservice "hello" deleted\n'
    missing = await ctl(server, "delete", "pod", "a")
    assert missing.code == 1 and missing.err == (
        'Error from server (NotFound): pods "a" not found\n')
    assert (await ctl(server, "delete", "pod", "a", "--ignore-not-found")).code == 0
    no_name = await ctl(server, "delete", "pods")
    assert no_name.code == 1 and "no name was specified" in no_name.err
    async with Client(server) as client:
        assert list((await client.pods.list("default")).items) == []
        orphaned = await client.deployments.get("hello")  # Orphan: waits for its GC
        assert "orphan" in orphaned.metadata.finalizers


# ---- describe ----


async def test_describe_shows_sections_and_the_objects_events(apiserver: APIServer) -> None:
    server = apiserver.address
    await ok(server, "apply", "-f", str(EXAMPLES / "pod.yaml"),
             "-f", str(EXAMPLES / "deployment.yaml"))
    async with Client(server) as client:
        pod = await client.pods.get("web")
        event = core_pb2.Event(
            metadata=meta_pb2.ObjectMeta(name="web.1", namespace="default"),
            involved_object=meta_pb2.ObjectReference(kind="Pod", name="web",
                                                     namespace="default", uid=pod.metadata.uid),
            reason="Scheduled", message="Successfully assigned default/web to node-1",
            type="Normal", source=core_pb2.EventSource(component="default-scheduler"),
            count=1)
        event.first_timestamp.FromSeconds(int(time.time()) - 65)
        await client.events.create(event)
        other = core_pb2.Event()
        other.CopyFrom(event)
        other.metadata.name, other.involved_object.name, other.reason = "x.1", "x", "Other"
        await client.events.create(other)
    text = await ok(server, "describe", "pod", "web")
    assert re.search(r"^Name:\s+web$", text, re.M) and re.search(r"^Status:\s+Pending$",
                                                                   text, re.M)
    assert re.search(rf"^    Image:\s+{re.escape(BUSYBOX_IMAGE)}$", text, re.M)
    assert re.search(r"^  Type\s+Reason\s+Age\s+From\s+Message$", text, re.M)
    assert re.search(r"^  Normal\s+Scheduled\s+\d+s\s+default-scheduler\s+Successfully "
                     r"assigned default/web to node-1$", text, re.M), text
    assert "Other" not in text
    service = await ok(server, "describe", "svc/hello")
    assert re.search(r"^NodePort:\s+http\s+30080/TCP$", service, re.M)
    assert re.search(r"^Events:\s+<none>$", service, re.M)
    deployment = await ok(server, "describe", "deploy", "hello")
    assert re.search(r"^Replicas:\s+3 desired \| 0 updated", deployment, re.M)
    assert "Pod Template:" in deployment
    generic = await ok(server, "describe", "ev", "web.1")
    assert re.search(r"^Reason:\s+Scheduled$", generic, re.M)
    events = await ok(server, "get", "events")
    assert table(events)[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [r[1:4] for r in table(events)[1:]] == [["Normal", "Scheduled", "pod/web"],
                                                   ["Normal", "Other", "pod/x"]]


# ---- scale, label, annotate, cordon ----


async def test_scale_label_annotate_cordon_uncordon(apiserver: APIServer) -> None:
    server = apiserver.address
    await ok(server, "apply", "-f", str(EXAMPLES / "deployment.yaml"),
             "-f", str(EXAMPLES / "rc.yaml"), "-f", str(EXAMPLES / "pod.yaml"))
    assert await ok(server, "scale", "deploy/hello", "--replicas", "5") == (
        "deployment.apps/hello scaled\n")
    assert await ok(server, "scale", "rc", "clock", "--replicas", "0") == (
        "replicationcontroller/clock scaled\n")
    wrong = await ctl(server, "scale", "rc/clock", "--replicas", "1", "--current-replicas", "4")
    assert wrong.code == 1 and wrong.err == "error: Expected replicas to be 4, was 0\n"
    assert (await ctl(server, "scale", "pod/web", "--replicas", "2")).code == 1

    assert await ok(server, "label", "pod", "web", "tier=fe") == "pod/web labeled\n"
    refused = await ctl(server, "label", "pod", "web", "tier=be")
    assert refused.code == 1
    assert refused.err == "error: 'tier' already has a value (fe), and --overwrite is false\n"
    assert await ok(server, "label", "po/web", "tier=be", "--overwrite") == "pod/web labeled\n"
    assert await ok(server, "label", "pods", "-l", "app=web", "tier-") == "pod/web unlabeled\n"
    assert await ok(server, "annotate", "pod", "web", "note=hello world") == (
        "pod/web annotated\n")
    async with Client(server) as client:
        deploy = await client.deployments.get("hello")
        rc = await client.replication_controllers.get("clock")
        pod = await client.pods.get("web")
    assert deploy.spec.replicas == 5 and rc.spec.replicas == 0
    assert dict(pod.metadata.labels) == {"app": "web"}
    assert pod.metadata.annotations["note"] == "hello world"

    await ok(server, "create", "-f", "-", stdin="kind: Node\napiVersion: v1\n"
                                                 "metadata: {name: node-1}\n")
    assert await ok(server, "cordon", "node-1") == "node/node-1 cordoned\n"
    assert await ok(server, "cordon", "node/node-1") == "node/node-1 already cordoned\n"
    nodes = await ok(server, "get", "nodes")
    assert column(nodes, "STATUS") == ["Unknown,SchedulingDisabled"]
    assert await ok(server, "uncordon", "node-1") == "node/node-1 uncordoned\n"
    assert column(await ok(server, "get", "no"), "STATUS") == ["Unknown"]


# ---- drain ----


async def test_drain_cordons_and_waits_for_the_nodes_pods(apiserver: APIServer) -> None:
    server = apiserver.address
    await ok(server, "create", "-f", "-", stdin="kind: Node\napiVersion: v1\n"
                                                 "metadata: {name: node-1}\n")
    managed = yaml.safe_load(pod_manifest("managed"))
    managed["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                               "name": "rs", "uid": "u-1", "controller": True}]
    await ok(server, "create", "-f", "-", stdin=json.dumps(managed))
    for name in ("bare", "elsewhere"):
        await ok(server, "create", "-f", "-", stdin=pod_manifest(name))
    async with Client(server) as client:
        await bind(client, "managed", "node-1")
        await bind(client, "bare", "node-1")
        await bind(client, "elsewhere", "node-2")

    refused = await ctl(server, "drain", "node-1", "--ignore-daemonsets")
    assert refused.code == 1
    assert "cannot delete Pods that declare no controller (use --force to override): " \
           "default/bare" in refused.err
    assert refused.out == "node/node-1 cordoned\n"

    out = await ok(server, "drain", "node-1", "--force", "--ignore-daemonsets",
                   "--grace-period", "0", "--timeout", "20s")
    lines = out.splitlines()
    assert lines[0] == "node/node-1 already cordoned" and lines[-1] == "node/node-1 drained"
    assert sorted(lines[1:-1]) == ["deleting pod default/bare", "deleting pod default/managed",
                                   "pod/bare deleted", "pod/managed deleted"]
    async with Client(server) as client:
        left = [p.metadata.name for p in (await client.pods.list("default")).items]
        node = await client.nodes.get("node-1")
    assert left == ["elsewhere"] and node.spec.unschedulable


async def test_drain_times_out_on_pods_that_do_not_stop(apiserver: APIServer) -> None:
    server = apiserver.address
    await ok(server, "create", "-f", "-", stdin="kind: Node\napiVersion: v1\n"
                                                 "metadata: {name: node-1}\n")
    await ok(server, "create", "-f", "-", stdin=pod_manifest("stuck"))
    async with Client(server) as client:
        await bind(client, "stuck", "node-1")
    # Bound, deleted gracefully, and no kubelet to finish the job: it never goes.
    result = await ctl(server, "drain", "node-1", "--force", "--timeout", "1s")
    assert result.code == 1
    assert result.err.endswith('error: unable to drain node "node-1": global timeout '
                               "reached: 1s\n")
    assert await ok(server, "get", "po", "stuck", "-o", "name") == "pod/stuck\n"


# ---- rollout ----


async def _create_revisions(client: Client, deploy: apps_pb2.Deployment) -> None:
    """Two ReplicaSets of ``deploy``, as its controller would have made them: revision 1
    runs busybox:old, revision 2 the deployment's template."""
    for revision, image in ((1, "busybox:old"), (2, "")):
        rs = apps_pb2.ReplicaSet(metadata=meta_pb2.ObjectMeta(
            name=f"hello-{revision}", namespace="default",
            labels={"app": "hello", "pod-template-hash": f"h{revision}"},
            annotations={"deployment.kubernetes.io/revision": str(revision)},
            owner_references=[meta_pb2.OwnerReference(
                api_version="apps/v1", kind="Deployment", name="hello",
                uid=deploy.metadata.uid, controller=True)]))
        rs.spec.replicas = 0
        rs.spec.template.CopyFrom(deploy.spec.template)
        rs.spec.template.metadata.labels["pod-template-hash"] = f"h{revision}"
        rs.spec.selector.match_labels.update(rs.spec.template.metadata.labels)
        if image:
            rs.spec.template.spec.containers[0].image = image
        await client.replica_sets.create(rs)


async def test_rollout_undo_restart_and_status(apiserver: APIServer) -> None:
    server = apiserver.address
    await ok(server, "apply", "-f", str(EXAMPLES / "deployment.yaml"))
    async with Client(server) as client:
        await _create_revisions(client, await client.deployments.get("hello"))
    history = await ok(server, "rollout", "history", "deploy/hello")
    assert table(history) == [["deployment.apps/hello"], ["REVISION", "CHANGE-CAUSE"],
                              ["1", "<none>"], ["2", "<none>"]]

    assert await ok(server, "rollout", "undo", "deploy/hello") == (
        "deployment.apps/hello rolled back\n")
    async with Client(server) as client:
        deploy = await client.deployments.get("hello")
    assert deploy.spec.template.spec.containers[0].image == "busybox:old"
    assert "pod-template-hash" not in deploy.spec.template.metadata.labels
    assert await ok(server, "rollout", "undo", "deploy/hello", "--to-revision", "1") == (
        "deployment.apps/hello skipped rollback (current template already matches "
        "revision 1)\n")
    await ok(server, "rollout", "undo", "deployment/hello", "--to-revision", "2")
    missing = await ctl(server, "rollout", "undo", "deploy/hello", "--to-revision", "9")
    assert missing.err == "error: unable to find specified revision 9 in history\n"

    assert await ok(server, "rollout", "restart", "deploy/hello") == (
        "deployment.apps/hello restarted\n")
    async with Client(server) as client:
        deploy = await client.deployments.get("hello")
    assert deploy.spec.template.spec.containers[0].image == BUSYBOX_IMAGE
    assert "kubectl.kubernetes.io/restartedAt" in deploy.spec.template.metadata.annotations

    waiting = await ctl(server, "rollout", "status", "deploy/hello", "--timeout", "1s")
    assert waiting.code == 1 and waiting.err == "error: timed out waiting for the condition\n"
    status = asyncio.create_task(ctl(server, "rollout", "status", "deploy/hello",
                                     "--timeout", "25s"))
    async with Client(server) as client:
        deploy.status.observed_generation = deploy.metadata.generation
        deploy.status.replicas = deploy.status.updated_replicas = 3
        deploy.status.available_replicas = deploy.status.ready_replicas = 3
        await client.deployments.update_status(deploy)
    result = await status
    assert result.code == 0, result
    assert result.out.splitlines()[-1] == 'deployment "hello" successfully rolled out'


# ---- errors ----


async def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    server = f"127.0.0.1:{free_port()}"  # nothing listens there
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n")
    result = await ctl(server, "apply", "-f", str(bad_yaml))
    assert (result.code, result.out) == (1, "")
    assert result.err == (f"error: {bad_yaml}: invalid YAML at line 5, column 1: did not "
                          "find expected ',' or ']'\n")

    bad_field = tmp_path / "bad-field.yaml"
    bad_field.write_text((EXAMPLES / "namespace.yaml").read_text() + "---\n"
                         + pod_manifest("web") + "    ports:\n    - containerPort: http\n")
    result = await ctl(server, "apply", "-f", str(bad_field))
    assert result.code == 1
    assert result.err == (f"error: {bad_field} (document 2): spec.containers[0].ports[0]."
                          'containerPort: expected an integer, got "http"\n')

    result = await ctl(server, "get", "foo")
    assert (result.code, result.err) == (
        1, 'error: the server doesn\'t have a resource type "foo"\n')

    started = time.monotonic()
    result = await ctl(server, "get", "pods")
    assert time.monotonic() - started < 15
    assert (result.code, result.out) == (1, "")
    assert result.err == (f"error: cannot reach the Skiff apiserver at {server} (is it "
                          "running? skiff up starts one)\n")
    assert "Traceback" not in result.err

    version = await ctl(server, "version")
    assert version.code == 1 and version.out.startswith("Client Version: v")


async def test_version_reports_the_server(apiserver: APIServer) -> None:
    out = await ok(apiserver.address, "version")
    lines = out.splitlines()
    assert lines[0].startswith("Client Version: v")
    assert lines[1] == (f"Server Version: skiff-apiserver at {apiserver.address} "
                        "(SERVING, 13 API services)")


@pytest.mark.parametrize("source", ["SKIFF_SERVER", "SKIFF_CONFIG"])
async def test_the_server_comes_from_the_environment_or_a_config_file(
        apiserver: APIServer, tmp_path: Path, source: str) -> None:
    env = _env(tmp_path)
    if source == "SKIFF_SERVER":
        env["SKIFF_SERVER"] = f"127.0.0.1:{free_port()},{apiserver.address}"  # fails over
    else:
        (tmp_path / "config").write_text(f"server: {apiserver.address}\n")
        env["SKIFF_CONFIG"] = str(tmp_path / "config")
    process = await asyncio.create_subprocess_exec(
        *CTL, "get", "ns", "default", "-o", "name", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert (process.returncode, out.decode()) == (0, "namespace/default\n"), err
