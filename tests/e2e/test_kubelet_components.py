"""The kubelet's probes, container and image GC and its API, against the real Docker
engine: containers made here carry the kubelet's labels the way the kubelet makes them
(a busybox "sandbox" serving HTTP, app containers joined to its network namespace).

Everything made here is labelled ``skiff.test=<run id>`` and removed afterwards; each
test uses its own node name so GC only ever sees this test's containers. No registry is
needed: the busybox image is built from the kubelet's own recipe (skiff.kubelet.images).
"""

from __future__ import annotations

import asyncio
import io
import re
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import grpc
import pytest

from services.kubelet import container_gc
from services.kubelet.image_gc import DiskUsage, ImageGCManager, ImageGCPolicy
from services.kubelet.probes import ContainerRef, ProbeManager, wall_time
from services.kubelet.server import serve
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.kubelet import images, labels
from skiff.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc

RUN_ID = uuid.uuid4().hex[:10]
TEST_LABEL = "skiff.test"
IMAGE = f"skiff-test/busybox:probe-{RUN_ID}"
#: Condition deadlines: generous, the machine is shared.
DEADLINE = 30.0

pytestmark = pytest.mark.skipif(not Path("/var/run/docker.sock").exists() or
                                not images.BUSYBOX_BINARY.exists(),
                                reason=f"needs a Docker engine and {images.BUSYBOX_BINARY}")


# ---- fixtures: an image, a Docker client, pods made of labelled containers ----


def _context(dockerfile: str, files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in {"Dockerfile": (dockerfile.encode(), 0o644),
                                   **files}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


async def _build(tag: str, dockerfile: str, files: dict[str, tuple[bytes, int]]) -> None:
    async with aiodocker.Docker() as docker:
        await docker.images.build(fileobj=_context(dockerfile, files), encoding="identity",
                                  tag=tag, labels={TEST_LABEL: RUN_ID}, rm=True,
                                  forcerm=True)


async def _remove_everything() -> None:
    async with aiodocker.Docker() as docker:
        for c in await docker.containers.list(
                all=True, filters={"label": [f"{TEST_LABEL}={RUN_ID}"]}):
            await c.delete(force=True, v=True)
        found = await docker.images.list(filters={"label": [f"{TEST_LABEL}={RUN_ID}"]})
        # Children (built FROM ours) first: newest first does that.
        for image in sorted(found, key=lambda i: i["Created"], reverse=True):
            for tag in image.get("RepoTags") or ():
                if tag != "<none>:<none>":
                    await docker.images.delete(tag, force=True)
            try:
                await docker.images.delete(image["Id"], force=True)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise


async def _build_busybox(tag: str) -> None:
    context = images.build_context("busybox", await asyncio.to_thread(images.load_busybox))
    async with aiodocker.Docker() as docker:
        await images.build_image(docker, context, [tag], labels={TEST_LABEL: RUN_ID})


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The busybox image's recipe under a tag of this run, removed after the module."""
    asyncio.run(_build_busybox(IMAGE))
    try:
        yield IMAGE
    finally:
        asyncio.run(_remove_everything())


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


class Pods:
    """Makes pods the way the kubelet does: a labelled sandbox, app containers joined
    to its network; remembers what it made so the fixture removes it."""

    def __init__(self, docker: aiodocker.Docker, image: str) -> None:
        self.docker, self.image = docker, image
        self.node = f"e2e-{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def pod(self, name: str, *containers: core_pb2.Container) -> core_pb2.Pod:
        pod = core_pb2.Pod()
        pod.metadata.name, pod.metadata.namespace = name, "default"
        pod.metadata.uid = str(uuid.uuid4())
        pod.spec.node_name = self.node
        pod.spec.containers.extend(containers)
        return pod

    async def run(self, pod: core_pb2.Pod, name: str, command: list[str], *,
                  joins: str = "", restart_count: int = 0, start: bool = True,
                  wait_exit: bool = False) -> aiodocker.containers.DockerContainer:
        kind = labels.SANDBOX if name == labels.SANDBOX_NAME else labels.CONTAINER
        tags = labels.container_labels(node=self.node, uid=pod.metadata.uid,
                                       namespace=pod.metadata.namespace,
                                       pod=pod.metadata.name, container=name, kind=kind,
                                       restart_count=restart_count)
        tags[TEST_LABEL] = RUN_ID
        host: dict[str, object] = {"NetworkMode": f"container:{joins}"} if joins else {}
        container = await self.docker.containers.create(
            {"Image": self.image, "Cmd": command, "Labels": tags, "HostConfig": host},
            name=f"{labels.docker_name(tags)}_{RUN_ID}")
        self.made.append(container.id)
        if start:
            await container.start()
        if wait_exit:
            await container.wait()
        return container

    async def sandbox(self, pod: core_pb2.Pod) -> aiodocker.containers.DockerContainer:
        """A sandbox serving HTTP on 8080 from /www (the pod's IP is its IP)."""
        return await self.run(pod, labels.SANDBOX_NAME,
                              ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"])

    async def ref(self, container: aiodocker.containers.DockerContainer) -> ContainerRef:
        info = await container.show()
        return ContainerRef(id=container.id, started_at=wall_time(info["State"]["StartedAt"]))

    async def remove(self) -> None:
        for container_id in self.made:
            try:
                await self.docker.containers.container(container_id).delete(force=True,
                                                                            v=True)
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise


@pytest.fixture
async def pods(docker, image) -> AsyncIterator[Pods]:
    made = Pods(docker, image)
    try:
        yield made
    finally:
        await made.remove()


async def sh(container: aiodocker.containers.DockerContainer, script: str) -> None:
    """Run a shell command in the container to its end."""
    execution = await container.exec(["sh", "-c", script])
    async with execution.start(detach=False) as stream:
        while await stream.read_out() is not None:
            pass


def exec_probe(*command: str, **fields: int) -> core_pb2.Probe:
    return core_pb2.Probe(exec=core_pb2.ExecAction(command=list(command)), **fields)


SLEEP = ["sleep", "3600"]


# ---- probes ----


async def test_exec_probe_failing_flips_liveness_failed(docker, pods):
    container = core_pb2.Container(
        name="app", image=IMAGE,
        liveness_probe=exec_probe("cat", "/tmp/healthy", period_seconds=1,
                                  failure_threshold=2),
        readiness_probe=exec_probe("cat", "/tmp/healthy", period_seconds=1,
                                   failure_threshold=1))
    pod = pods.pod("exec-probe", container)
    sandbox = await pods.sandbox(pod)
    app = await pods.run(pod, "app", ["sh", "-c", "touch /tmp/healthy && exec sleep 3600"],
                         joins=sandbox.id)
    changed: list[str] = []
    manager = ProbeManager(docker, changed.append)
    try:
        manager.update_pod(pod, {"app": await pods.ref(app)})
        uid = pod.metadata.uid

        async def ready() -> bool:
            return manager.ready(uid, "app")

        await wait_for(ready, timeout=DEADLINE, what="exec readiness")
        assert not manager.liveness_failed(uid, "app")
        await sh(app, "rm /tmp/healthy")

        async def dead() -> bool:
            return manager.liveness_failed(uid, "app")

        await wait_for(dead, timeout=DEADLINE, what="liveness failure")
        assert not manager.ready(uid, "app")
        assert set(changed) == {uid}
    finally:
        await manager.stop()


async def test_http_probe_follows_the_served_file(docker, pods):
    container = core_pb2.Container(
        name="web", image=IMAGE,
        ports=[core_pb2.ContainerPort(name="http", container_port=8080)],
        readiness_probe=core_pb2.Probe(
            http_get=core_pb2.HTTPGetAction(
                path="/ready.txt",
                port=meta_pb2.IntOrString(type=meta_pb2.IntOrString.STRING, str_val="http"),
                http_headers=[core_pb2.HTTPHeader(name="X-Probe", value="yes")]),
            period_seconds=1, failure_threshold=1))
    pod = pods.pod("http-probe", container)
    sandbox = await pods.sandbox(pod)
    web = await pods.run(pod, "web", SLEEP, joins=sandbox.id)
    manager = ProbeManager(docker, lambda uid: None)
    uid = pod.metadata.uid

    async def ready() -> bool:
        return manager.ready(uid, "web")

    async def not_ready() -> bool:
        return not manager.ready(uid, "web")

    try:
        # No pod IP in the status yet: the manager finds the sandbox's through Docker.
        manager.update_pod(pod, {"web": await pods.ref(web)})
        await wait_for(not_ready, timeout=DEADLINE)
        await sh(sandbox, "echo ok > /www/ready.txt")
        await wait_for(ready, timeout=DEADLINE, what="ready once the file is served")
        await sh(sandbox, "rm /www/ready.txt")
        await wait_for(not_ready, timeout=DEADLINE, what="not ready once it is gone (404)")
    finally:
        await manager.stop()


async def test_tcp_probe_follows_the_listener(docker, pods):
    container = core_pb2.Container(
        name="db", image=IMAGE,
        readiness_probe=core_pb2.Probe(
            tcp_socket=core_pb2.TCPSocketAction(port=meta_pb2.IntOrString(int_val=9000)),
            period_seconds=1, failure_threshold=1))
    pod = pods.pod("tcp-probe", container)
    sandbox = await pods.sandbox(pod)
    db = await pods.run(pod, "db", SLEEP, joins=sandbox.id)
    info = await sandbox.show()
    pod.status.pod_ip = info["NetworkSettings"]["IPAddress"]
    manager = ProbeManager(docker, lambda uid: None)
    uid = pod.metadata.uid

    async def ready() -> bool:
        return manager.ready(uid, "db")

    async def not_ready() -> bool:
        return not manager.ready(uid, "db")

    try:
        manager.update_pod(pod, {"db": await pods.ref(db)})
        await sh(db, "mkdir -p /srv && httpd -p 9000 -h /srv")  # httpd daemonizes
        await wait_for(ready, timeout=DEADLINE, what="ready once 9000 listens")
        await sh(db, "killall httpd")
        await wait_for(not_ready, timeout=DEADLINE, what="not ready once it stopped")
    finally:
        await manager.stop()


# ---- garbage collection ----


async def test_container_gc_removes_dead_beyond_the_limit_never_running(docker, pods):
    active = pods.pod("active", core_pb2.Container(name="app", image=IMAGE))
    gone = pods.pod("gone", core_pb2.Container(name="app", image=IMAGE))
    sandbox = await pods.sandbox(active)
    exited = [await pods.run(active, "app", ["true"], joins=sandbox.id, restart_count=i,
                             wait_exit=True) for i in range(3)]
    current = await pods.run(active, "app", SLEEP, joins=sandbox.id, restart_count=3)
    gone_sandbox = await pods.run(gone, labels.SANDBOX_NAME, ["true"], wait_exit=True)
    gone_app = await pods.run(gone, "app", ["true"], wait_exit=True)
    gone_running = await pods.run(gone, "side", SLEEP)

    removed = await container_gc.collect(docker, pods.node, container_gc.ContainerGCPolicy(),
                                         {active.metadata.uid})
    assert set(removed) == {exited[0].id, exited[1].id, gone_app.id, gone_sandbox.id}
    left = {c.id for c in await docker.containers.list(
        all=True, filters=labels.node_filter(pods.node))}
    assert left == {sandbox.id, exited[2].id, current.id, gone_running.id}
    # A second round finds nothing more to do; a young dead container is protected.
    assert await container_gc.collect(docker, pods.node, container_gc.ContainerGCPolicy(
        min_age=3600, max_per_pod_container=0), {active.metadata.uid}) == []


async def test_image_gc_plans_unused_images_only(docker, pods, image):
    # An unused image of our own (a child of the busybox one, so it costs no space).
    unused = f"skiff-test/busybox:unused-{RUN_ID}"
    await _build(unused, f"FROM {image}\nLABEL purpose=unused\n", {})
    pod = pods.pod("uses-image", core_pb2.Container(name="app", image=image))
    await pods.run(pod, "app", ["true"], wait_exit=True)  # a stopped container uses it too

    async def full_disk() -> DiskUsage:
        return DiskUsage(capacity=10**15, available=0)

    manager = ImageGCManager(docker, ImageGCPolicy(min_age=0), disk_usage=full_disk,
                             protected={images.PAUSE_IMAGE, "test/busybox:latest"})
    chosen = await manager.plan()  # plan only: other images on this engine are not ours
    ids = {record.id: record for record in manager.records.values()}
    ours = next(i for i, r in ids.items() if image in r.tags)
    theirs = next(i for i, r in ids.items() if unused in r.tags)
    assert theirs in chosen.remove
    assert ours not in chosen.remove
    assert not any(images.PAUSE_IMAGE in ids[i].tags for i in chosen.remove)


# ---- the kubelet API ----


@pytest.fixture
async def api(docker, pods) -> AsyncIterator[tuple[kubelet_pb2_grpc.KubeletStub, dict]]:
    """The kubelet API in-process on a free loopback port, looking pods up in a dict."""
    known: dict[tuple[str, str], core_pb2.Pod] = {}
    server = await serve(docker, pods.node, lambda ns, name: known.get((ns, name)),
                         address="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield kubelet_pb2_grpc.KubeletStub(channel), known
    finally:
        await channel.close()
        await server.stop(0)


PRINTER = ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; exec sleep 3600"]
TICKER = ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]


async def _logs(stub, **fields) -> str:
    chunks = [c.data async for c in stub.ContainerLogs(kubelet_pb2.LogsRequest(**fields),
                                                      timeout=DEADLINE)]
    return b"".join(chunks).decode()


async def test_api_logs_tail_timestamps_follow_previous(pods, api):
    stub, known = api
    pod = pods.pod("logs", core_pb2.Container(name="printer", image=IMAGE),
                   core_pb2.Container(name="ticker", image=IMAGE))
    known[("default", "logs")] = pod
    sandbox = await pods.sandbox(pod)
    await pods.run(pod, "printer", ["sh", "-c", "echo old instance"], joins=sandbox.id,
                   wait_exit=True)
    await pods.run(pod, "printer", PRINTER, joins=sandbox.id, restart_count=1)
    await pods.run(pod, "ticker", TICKER, joins=sandbox.id)

    async def five_lines() -> str:
        text = await _logs(stub, pod="logs", container="printer")
        return text if "line 5" in text else ""

    assert await wait_for(five_lines, timeout=DEADLINE) == "".join(
        f"line {i}\n" for i in range(1, 6))
    assert await _logs(stub, pod="logs", container="printer", tail_lines=2) == \
        "line 4\nline 5\n"
    stamped = (await _logs(stub, pod="logs", container="printer",
                           timestamps=True)).splitlines()
    assert len(stamped) == 5
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z line \d$", line)
               for line in stamped), stamped
    assert await _logs(stub, namespace="default", pod="logs", container="printer",
                       previous=True) == "old instance\n"

    # Follow: ticks keep coming while the container runs; the caller stops reading.
    call = stub.ContainerLogs(kubelet_pb2.LogsRequest(pod="logs", container="ticker",
                                                      follow=True, tail_lines=0))
    seen = ""
    async for chunk in call:
        seen += chunk.data.decode()
        if seen.count("tick") >= 3:
            break
    call.cancel()
    assert seen.count("tick") >= 3


async def test_api_errors_name_what_is_wrong(pods, api):
    stub, known = api
    pod = pods.pod("two", core_pb2.Container(name="a", image=IMAGE),
                   core_pb2.Container(name="b", image=IMAGE))
    known[("default", "two")] = pod
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _logs(stub, pod="nope")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and '"nope"' in e.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _logs(stub, pod="two")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("container:") and "a b" in e.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Exec(kubelet_pb2.ExecRequest(pod="two", container="c", command=["true"]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and '"c"' in e.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _logs(stub, pod="two", container="a")  # in the spec, never created
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and '"a"' in e.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Exec(kubelet_pb2.ExecRequest(pod="two", container="a"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("command:")


async def test_api_exec_and_stats(pods, api):
    stub, known = api
    pod = pods.pod("work", core_pb2.Container(name="app", image=IMAGE))
    known[("default", "work")] = pod
    sandbox = await pods.sandbox(pod)
    # Something that holds memory: a shell variable of about a megabyte.
    await pods.run(pod, "app", ["sh", "-c", "x=$(head -c 1000000 /dev/zero | tr '\\0' a);"
                                            " exec sleep 3600"], joins=sandbox.id)
    reply = await stub.Exec(kubelet_pb2.ExecRequest(
        pod="work", command=["sh", "-c", "echo out; echo err >&2; exit 3"]),
        timeout=DEADLINE)
    assert (reply.stdout, reply.stderr, reply.exit_code) == (b"out\n", b"err\n", 3)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Exec(kubelet_pb2.ExecRequest(pod="work", command=["sleep", "30"],
                                                timeout=0.5), timeout=DEADLINE)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    stats = await stub.PodStats(kubelet_pb2.StatsRequest(), timeout=DEADLINE)
    assert stats.node.name == pods.node
    [work] = [p for p in stats.pods if p.name == "work"]
    assert work.uid == pod.metadata.uid and [c.name for c in work.containers] == ["app"]
    assert work.memory_working_set_bytes > 0
    assert stats.node.memory_working_set_bytes >= work.memory_working_set_bytes
    # The node's usage is the machine's (root cgroup), the pod sums are kept apart.
    assert stats.node.pods_memory_working_set_bytes == work.memory_working_set_bytes
    assert stats.node.memory_working_set_bytes > 32 * 2**20
    assert stats.node.memory_capacity_bytes > 0 and stats.node.cpu_capacity_nanocores > 0
    other = await stub.PodStats(kubelet_pb2.StatsRequest(namespace="elsewhere"),
                                timeout=DEADLINE)
    assert list(other.pods) == []
