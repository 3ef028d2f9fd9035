"""exec, attach, port-forward, logs and metrics through the REST edge's streaming
routes, end to end: a real kubelet on the real Docker engine, the routes mounted on an
aiohttp app over plain HTTP on loopback, and the official ``kubernetes`` Python client
(its WebSocket ``stream`` and ``portforward``) as the client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from aiohttp import web
from kubernetes import client as k8s
from kubernetes.stream import portforward, stream

from services.apiserver.rest import metrics_api, streaming
from services.apiserver.rest.kubelets import LookupConnector
from skiff.client.client import Client
from skiff.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from tests.e2e.e2e_pods import container, http_server, pod, running_ready, wait_pod

TICKER = ("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")


def connector(api: Client) -> LookupConnector:
    async def list_nodes() -> list:
        return list((await api.nodes.list()).items)

    async def list_pods(namespace: str, selector: str) -> list:
        return list((await api.pods.list(namespace, label_selector=selector)).items)

    return LookupConnector(get_pod=lambda ns, name: api.pods.get(name, ns),
                           get_node=lambda name: api.nodes.get(name, ""),
                           list_nodes=list_nodes, list_pods=list_pods)


@pytest.fixture
async def rest(api) -> AsyncIterator[str]:
    """The streaming and metrics routes served on loopback; their base URL."""
    app = web.Application()
    streaming.add_routes(app, connector(api))
    metrics_api.add_routes(app, connector(api))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def core(rest) -> k8s.CoreV1Api:
    config = k8s.Configuration(host=rest)
    return k8s.CoreV1Api(k8s.ApiClient(config))


async def running(api, ns: str, node, name: str, *containers) -> None:
    await api.pods.create(pod(name, ns, node.name, *containers))
    await wait_pod(api, ns, name, running_ready, timeout=90, what="running")


async def test_exec_streams_and_exit_code(api, ns, node, core):
    await running(api, ns, node, "box", container("main", "sleep", "3600"))

    def run() -> tuple[str, str, int, dict]:
        resp = stream(core.connect_get_namespaced_pod_exec, "box", ns,
                      command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                      stdin=False, stdout=True, stderr=True, tty=False,
                      _preload_content=False)
        resp.run_forever(timeout=30)
        error = json.loads(resp.peek_channel(3))
        out, err = resp.read_stdout(), resp.read_stderr()
        return out, err, resp.returncode, error

    out, err, code, error = await asyncio.to_thread(run)
    assert (out, err, code) == ("out\n", "err\n", 3)
    assert error["status"] == "Failure" and error["reason"] == "NonZeroExitCode"

    def success() -> int:
        resp = stream(core.connect_get_namespaced_pod_exec, "box", ns,
                      command=["true"], stdout=True, stderr=True, _preload_content=False)
        resp.run_forever(timeout=30)
        return resp.returncode

    assert await asyncio.to_thread(success) == 0


async def test_exec_with_stdin_closed_by_the_v5_signal(api, ns, node, core):
    await running(api, ns, node, "box", container("main", "sleep", "3600"))

    def run() -> tuple[str, int, str]:
        resp = stream(core.connect_get_namespaced_pod_exec, "box", ns,
                      command=["sh", "-c", "wc -c; cat >/dev/null; echo done"],
                      stdin=True, stdout=True, stderr=True, tty=False,
                      _preload_content=False)
        resp.write_stdin("hello world\n")
        resp.close_channel(0)  # end of file on the process's stdin
        resp.run_forever(timeout=30)
        return resp.read_stdout(), resp.returncode, resp.subprotocol

    out, code, protocol = await asyncio.to_thread(run)
    assert protocol == "v5.channel.k8s.io"
    assert out.split() == ["12", "done"] and code == 0


async def test_exec_with_a_terminal_sees_its_resize(api, ns, node, core):
    await running(api, ns, node, "box", container("main", "sleep", "3600"))

    def run() -> str:
        resp = stream(core.connect_get_namespaced_pod_exec, "box", ns,
                      command=["sh", "-c", "read line; stty size"],
                      stdin=True, stdout=True, stderr=False, tty=True,
                      _preload_content=False)
        resp.write_channel(4, json.dumps({"Width": 123, "Height": 45}))
        resp.write_stdin("go\n")
        resp.run_forever(timeout=30)
        return resp.read_stdout()

    out = await asyncio.to_thread(run)
    assert "45 123" in out


async def test_attach_reads_the_main_process(api, ns, node, core):
    await running(api, ns, node, "ticker", container("main", "sh", "-c", TICKER))

    def run() -> str:
        resp = stream(core.connect_get_namespaced_pod_attach, "ticker", ns,
                      stdin=False, stdout=True, stderr=True, tty=False,
                      _preload_content=False)
        try:
            deadline = time.monotonic() + 20
            seen = ""
            while "tick" not in seen and time.monotonic() < deadline:
                resp.update(timeout=1)
                seen += resp.read_stdout(timeout=0) or ""
            return seen
        finally:
            resp.close()

    assert "tick" in await asyncio.to_thread(run)


async def test_portforward_fetches_a_page_from_busybox_httpd(api, ns, node, core):
    await running(api, ns, node, "web", http_server(port=8080, body="forwarded"))

    def fetch() -> bytes:
        forward = portforward(core.connect_get_namespaced_pod_portforward, "web", ns,
                              ports="8080")
        sock = forward.socket(8080)
        sock.settimeout(20)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        sock.close()
        assert forward.error(8080) is None
        forward.close()
        return reply

    reply = await asyncio.to_thread(fetch)
    assert reply.startswith(b"HTTP/1.") and b"forwarded" in reply


async def test_portforward_to_a_closed_port_says_so(api, ns, node, core):
    await running(api, ns, node, "box", container("main", "sleep", "3600"))

    def fetch() -> str | None:
        forward = portforward(core.connect_get_namespaced_pod_portforward, "box", ns,
                              ports="9")
        sock = forward.socket(9)
        sock.settimeout(20)
        try:
            while sock.recv(4096):
                pass
        except (TimeoutError, ConnectionError):
            pass
        return forward.error(9)

    error = await asyncio.to_thread(fetch)
    assert error and "error forwarding port 9" in error


async def test_logs_tail_and_follow(api, ns, node, rest):
    await running(api, ns, node, "ticker", container("main", "sh", "-c", TICKER))
    url = f"{rest}/api/v1/namespaces/{ns}/pods/ticker/log"
    async with aiohttp.ClientSession() as session:
        # Let a few lines accumulate (polling: the ticker writes every 0.2 s).
        deadline = time.monotonic() + 20
        while True:
            async with session.get(url) as reply:
                text = await reply.text()
            if text.count("\n") >= 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        async with session.get(url, params={"tailLines": "2"}) as reply:
            assert reply.status == 200 and reply.content_type == "text/plain"
            tail = (await reply.text()).splitlines()
        assert len(tail) == 2 and all(t.startswith("tick ") for t in tail)
        async with session.get(url, params={"follow": "true", "tailLines": "0"}) as reply:
            line = await asyncio.wait_for(reply.content.readline(), 20)
        last = int(tail[-1].split()[1])
        assert int(line.split()[1]) > last  # a line written after the tail was read
        async with session.get(url, params={"limitBytes": "3"}) as reply:
            assert await reply.read() == b"tic"
        async with session.get(url, params={"tailLines": "x"}) as reply:
            body = await reply.json()
            assert reply.status == 400 and "tailLines" in body["message"]
        missing = f"{rest}/api/v1/namespaces/{ns}/pods/nope/log"
        async with session.get(missing) as reply:
            assert reply.status == 404 and (await reply.json())["reason"] == "NotFound"


async def test_exec_errors_before_the_upgrade(api, ns, node, rest):
    await running(api, ns, node, "box", container("main", "sleep", "3600"))
    base = f"{rest}/api/v1/namespaces/{ns}/pods"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/box/exec", params={"stdout": "true"}) as reply:
            assert reply.status == 400 and "command" in (await reply.json())["message"]
        async with session.get(f"{base}/box/exec", params={"command": "true"}) as reply:
            assert reply.status == 400 and "Upgrade" in (await reply.json())["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(f"{base}/nope/exec?command=true",
                                     protocols=["v4.channel.k8s.io"])
        assert raised.value.status == 404
        # v4 over aiohttp's own client: a container the pod does not have.
        async with session.ws_connect(f"{base}/box/exec?command=true&container=other",
                                      protocols=["v4.channel.k8s.io"]) as ws:
            frames = [m.data async for m in ws if m.type == aiohttp.WSMsgType.BINARY]
        assert frames and frames[-1][0] == 3
        assert json.loads(frames[-1][1:])["reason"] == "NotFound"


async def test_metrics_api_reports_node_and_pods(api, ns, node, rest):
    labelled = pod("ticker", ns, node.name, container("main", "sh", "-c", TICKER))
    labelled.metadata.labels["app"] = "tick"
    await api.pods.create(labelled)
    await running(api, ns, node, "idle", container("main", "sleep", "3600"))
    await wait_pod(api, ns, "ticker", running_ready, timeout=90, what="running")
    prefix = f"{rest}/apis/metrics.k8s.io/v1beta1"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{prefix}/nodes/{node.name}") as reply:
            metrics = await reply.json()
        assert metrics["kind"] == "NodeMetrics" and metrics["window"]
        memory = metrics["usage"]["memory"]
        assert memory.endswith("Ki")
        # The machine's own working set, not the sum of one small pod: well above 64Mi.
        assert int(memory[:-2]) > 64 * 1024
        async with session.get(f"{prefix}/namespaces/{ns}/pods") as reply:
            pods = await reply.json()
        assert pods["kind"] == "PodMetricsList"
        assert [p["metadata"]["name"] for p in pods["items"]] == ["idle", "ticker"]
        async with session.get(f"{prefix}/namespaces/{ns}/pods",
                               params={"labelSelector": "app=tick"}) as reply:
            pods = await reply.json()
        [ticker] = pods["items"]
        assert ticker["metadata"] == {"name": "ticker", "namespace": ns,
                                      "creationTimestamp": ticker["timestamp"]}
        assert [c["name"] for c in ticker["containers"]] == ["main"]
        async with session.get(f"{prefix}/namespaces/{ns}/pods/nope") as reply:
            assert reply.status == 404
        async with session.get(prefix) as reply:
            kinds = {r["kind"] for r in (await reply.json())["resources"]}
        assert kinds == {"NodeMetrics", "PodMetrics"}


async def test_kubelet_streams_name_the_bad_field(api, ns, node):
    """The kubelet's own streaming calls: bad first messages are INVALID_ARGUMENT naming
    the field; a pod it does not run is NOT_FOUND."""
    await running(api, ns, node, "box", container("main", "sleep", "3600"))
    address = await connector(api).pod_kubelet(ns, "box")

    async def first(method: str, message) -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(address) as channel:
            call = getattr(kubelet_pb2_grpc.KubeletStub(channel), method)(iter([message]))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in call:
                    pass
            return raised.value

    start = kubelet_pb2.StreamStart(namespace=ns, pod="box", stdout=True)
    error = await first("ExecStream", kubelet_pb2.StreamInput(start=start))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "command" in error.details()
    error = await first("ExecStream", kubelet_pb2.StreamInput(stdin=b"x"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "start" in error.details()
    error = await first("PortForward", kubelet_pb2.PortForwardInput(
        start=kubelet_pb2.PortForwardStart(namespace=ns, pod="box", port=0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "port" in error.details()
    error = await first("Attach", kubelet_pb2.StreamInput(
        start=kubelet_pb2.StreamStart(namespace=ns, pod="nope", stdout=True)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()
