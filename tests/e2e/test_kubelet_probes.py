"""The kubelet's probes, API and garbage collection end to end: a real store, apiserver,
kubelet process and Docker engine, driven as a user drives them (the API for pods,
``skiffctl`` as a subprocess for logs, exec and top)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass

from e2e_pods import BUSYBOX, condition, container, http_server, pod, status_of, wait_pod

from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.kubelet import labels as L

CTL = [sys.executable, "-m", "skiff.cli.skiffctl"]
DEADLINE = 60.0


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def ctl(server: str, namespace: str, *args: str) -> Result:
    """Run skiffctl (with a deadline) and return what it printed."""
    process = await asyncio.create_subprocess_exec(
        *CTL, "--server", server, "-n", namespace, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        raise
    return Result(process.returncode or 0, out.decode(), err.decode())


def probe(*, exec_: list[str] | None = None, http_path: str = "", port: int = 8080,
          period: int = 1, failure: int = 1) -> core_pb2.Probe:
    p = core_pb2.Probe(period_seconds=period, failure_threshold=failure, timeout_seconds=1)
    if exec_:
        p.exec.command.extend(exec_)
    else:
        p.http_get.path = http_path
        p.http_get.port.CopyFrom(meta_pb2.IntOrString(int_val=port))
    return p


async def test_failing_liveness_probe_restarts_the_container(api, ns, node):
    # Alive for about 3 s after each start, then the probe fails and the kubelet kills it.
    c = container("app", "sh", "-c", "touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 3600")
    c.liveness_probe.CopyFrom(probe(exec_=["test", "-f", "/tmp/alive"]))
    await api.pods.create(pod("live", ns, node.name, c))
    restarted = await wait_pod(api, ns, "live",
                               lambda p: (s := status_of(p, "app")) is not None
                               and s.restart_count >= 1, what="restarted by liveness")
    assert restarted.status.phase == "Running"
    app = status_of(restarted, "app")
    # Killed by the kubelet (SIGKILL after the probe's grace): not a crash of its own.
    assert app.last_state.HasField("terminated")


async def test_readiness_follows_the_probe_and_exec_logs_top_work(api, ns, node, shared_cluster):
    web = http_server(body="hello-ready")
    web.readiness_probe.CopyFrom(probe(http_path="/ready.html", failure=1))
    await api.pods.create(pod("web", ns, node.name, web))
    running = await wait_pod(api, ns, "web", lambda p: p.status.phase == "Running"
                             and status_of(p, "web") is not None
                             and status_of(p, "web").state.HasField("running"),
                             what="Running")
    assert condition(running, "Ready") != "True"  # the probe's file is not there yet
    server = shared_cluster.apiserver.address

    made = await ctl(server, ns, "exec", "web", "--", "sh", "-c",
                     "echo ok > /www/ready.html && echo made")
    assert (made.code, made.out.strip()) == (0, "made"), made.err
    await wait_pod(api, ns, "web", lambda p: condition(p, "Ready") == "True",
                   what="Ready once the probe passes")
    failed = await ctl(server, ns, "exec", "web", "--", "sh", "-c", "exit 7")
    assert failed.code == 7
    removed = await ctl(server, ns, "exec", "web", "--", "rm", "/www/ready.html")
    assert removed.code == 0, removed.err
    await wait_pod(api, ns, "web", lambda p: condition(p, "Ready") == "False",
                   what="not Ready once the probe fails")

    # httpd logs nothing by itself: a pod that writes lines shows logs.
    await api.pods.create(pod("talker", ns, node.name, container(
        "talk", "sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; done; sleep 3600")))
    await wait_pod(api, ns, "talker", lambda p: p.status.phase == "Running", what="Running")

    async def five_lines() -> Result | None:
        got = await ctl(server, ns, "logs", "talker")
        return got if got.out.count("line-") == 5 else None

    logs = await wait_for(five_lines, timeout=DEADLINE, what="five log lines")
    assert logs.out.split() == [f"line-{i}" for i in range(1, 6)]
    tail = await ctl(server, ns, "logs", "talker", "--tail", "2")
    assert tail.out.split() == ["line-4", "line-5"]

    async def top_rows() -> dict[str, list[str]] | None:
        got = await ctl(server, ns, "top", "pods", "--no-headers")
        rows = {line.split()[0]: line.split() for line in got.out.splitlines() if line}
        return rows if {"talker", "web"} <= set(rows) else None

    rows = await wait_for(top_rows, timeout=DEADLINE, what="top pods listing both pods")
    # A sleeping busybox may use under 1 MiB: the figures are checked for their form.
    assert re.fullmatch(r"\d+m", rows["talker"][1]) and re.fullmatch(r"\d+Mi", rows["talker"][2])
    nodes = await ctl(server, ns, "top", "nodes", node.name)
    assert nodes.code == 0 and node.name in nodes.out, nodes.err


async def test_dead_containers_are_collected(api, ns, node, docker):
    # Exits at once and is restarted (quick back-off): dead instances pile up unless GC
    # keeps only the newest (--maximum-dead-containers-per-container 1).
    await api.pods.create(pod("crash", ns, node.name, container("boom", "sh", "-c", "exit 1")))
    await wait_pod(api, ns, "crash", lambda p: (s := status_of(p, "boom")) is not None
                   and s.restart_count >= 4, timeout=90, what="four restarts")
    uid = (await api.pods.get("crash", ns)).metadata.uid

    async def dead_instances() -> list[dict[str, object]]:
        found = await docker.containers.list(
            all=True, filters=json.dumps(L.pod_filter(node.name, uid)))
        return [c._container for c in found
                if c["Labels"][L.CONTAINER_TYPE] == L.CONTAINER and c["State"] != "running"]

    async def collected() -> bool:
        return len(await dead_instances()) <= 1

    await wait_for(collected, timeout=DEADLINE, what="dead containers beyond 1 removed")
    assert BUSYBOX  # the image stays: it is in use
