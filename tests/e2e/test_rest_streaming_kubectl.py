"""kubectl 1.32 itself against the streaming and metrics routes: ``exec`` (exit code,
stdin), ``port-forward`` (SPDY tunnelled in the WebSocket), ``logs`` and ``top``.

kubectl first reads discovery and the pod (or nodes) from the apiserver; the REST core
serves those, so this test's app answers them with the least kubectl needs (the pod and
nodes read from the real apiserver). Everything after that is the routes under test, a
real kubelet and Docker.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from services.apiserver.rest import metrics_api, streaming
from tests.e2e.e2e_pods import container, http_get, http_server
from tests.e2e.test_rest_streaming import connector, running

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")


def _resource(name: str, kind: str, namespaced: bool = True) -> dict:
    return {"name": name, "singularName": "" if "/" in name else name[:-1],
            "namespaced": namespaced, "kind": kind, "verbs": ["get", "list", "create"]}


def _stand_in(app: web.Application, api, node_name: str) -> None:
    """Discovery, GET pod and GET nodes: what the REST core serves kubectl first."""
    async def versions(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": []})

    async def groups(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [metrics_api.api_group()]})

    async def core(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": "v1", "resources": [
                                      _resource("pods", "Pod"),
                                      _resource("pods/exec", "PodExecOptions"),
                                      _resource("pods/log", "Pod"),
                                      _resource("pods/portforward", "PodPortForwardOptions"),
                                      _resource("nodes", "Node", namespaced=False)]})

    async def get_pod(request: web.Request) -> web.Response:
        pod = await api.pods.get(request.match_info["name"], request.match_info["namespace"])
        return web.json_response({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace,
                         "uid": pod.metadata.uid},
            "spec": {"nodeName": pod.spec.node_name,
                     "containers": [{"name": c.name, "image": c.image}
                                    for c in pod.spec.containers]},
            "status": {"phase": pod.status.phase}})

    async def nodes(_: web.Request) -> web.Response:
        capacity = {"cpu": "2", "memory": "8Gi"}
        return web.json_response({"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                                  "items": [{"metadata": {"name": node_name},
                                             "status": {"capacity": capacity,
                                                        "allocatable": capacity}}]})

    app.router.add_get("/api", versions)
    app.router.add_get("/apis", groups)
    app.router.add_get("/api/v1", core)
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", get_pod)
    app.router.add_get("/api/v1/nodes", nodes)


@pytest.fixture
async def server(api, node) -> AsyncIterator[str]:
    app = web.Application()
    streaming.add_routes(app, connector(api))
    metrics_api.add_routes(app, connector(api))
    _stand_in(app, api, node.name)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(tmp_path / "none"),
            "KUBECACHEDIR": str(tmp_path / "cache")}


async def kubectl(server: str, tmp_path: Path, *args: str,
                  stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--server", server, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(tmp_path))
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_kubectl_exec_logs_and_top(api, ns, node, server, tmp_path):
    await running(api, ns, node, "box", container(
        "main", "sh", "-c", "echo started; exec sleep 3600"))
    code, out, err = await kubectl(server, tmp_path, "exec", "-n", ns, "box", "--",
                                   "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (code, out) == (3, "hi\n") and "oops" in err
    code, out, _ = await kubectl(server, tmp_path, "exec", "-i", "-n", ns, "box", "--",
                                 "wc", "-c", stdin=b"hello\n")
    assert (code, out.strip()) == (0, "6")
    code, out, _ = await kubectl(server, tmp_path, "logs", "-n", ns, "box")
    assert (code, out) == (0, "started\n")
    code, out, err = await kubectl(server, tmp_path, "top", "node")
    assert code == 0, err
    [row] = [line.split() for line in out.splitlines() if line.startswith(node.name)]
    assert row[1].endswith("m") and row[3].endswith("Mi")
    code, out, err = await kubectl(server, tmp_path, "top", "pod", "-n", ns)
    assert code == 0 and re.search(r"^box\s+\d+m\s+\d+Mi", out, re.M), (out, err)


async def test_kubectl_port_forward(api, ns, node, server, tmp_path):
    await running(api, ns, node, "web", http_server(port=8080, body="through-spdy"))
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--server", server, "port-forward", "-n", ns, "pod/web", "0:8080",
        "0:9", "--address", "127.0.0.1", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(tmp_path))
    try:
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                 for _ in range(2)]
        ports = dict(re.findall(r"127\.0\.0\.1:(\d+) -> (\d+)", "".join(lines)))
        local = {remote: int(port) for port, remote in ports.items()}
        for _ in range(2):  # one forwarded connection after another
            assert await http_get(f"http://127.0.0.1:{local['8080']}/", timeout=10) == \
                "through-spdy\n"
        with pytest.raises(Exception):  # noqa: B017 - the connection just closes
            await http_get(f"http://127.0.0.1:{local['9']}/", timeout=10)
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert "error forwarding port 9" in err.decode()


async def test_kubectl_attach_follows_the_main_process(api, ns, node, server, tmp_path):
    await running(api, ns, node, "ticker", container(
        "main", "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"))
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--server", server, "attach", "-n", ns, "ticker",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(tmp_path))
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        second = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    finally:
        proc.terminate()
        await proc.communicate()
    assert first.startswith("tick ") and int(second.split()[1]) == int(first.split()[1]) + 1


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script (util-linux)")
async def test_kubectl_exec_with_a_terminal_sends_its_size(api, ns, node, server, tmp_path):
    """``kubectl exec -it`` in a pseudo-terminal of 45x123 (util-linux ``script``): the
    command's terminal takes that size. Docker's API 1.41 has no console size at exec
    creation, so the size lands just after the start (as with ``docker exec -it``): the
    command waits for it (bounded by the test's deadline)."""
    await running(api, ns, node, "box", container("main", "sleep", "3600"))
    command = (f"stty rows 45 cols 123; kubectl --server {server} exec -it -n {ns} box "
               "-- sh -c 'until stty size | grep -q 45; do sleep 0.1; done; stty size; tty'")
    proc = await asyncio.create_subprocess_exec(
        "script", "-qec", command, "/dev/null", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(tmp_path))
    out, err = await asyncio.wait_for(proc.communicate(b""), 60)
    assert proc.returncode == 0, err
    assert b"45 123\r\n/dev/pts/" in out
