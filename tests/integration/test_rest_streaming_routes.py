"""The streaming and metrics routes' edges over real HTTP on loopback, before any
kubelet is involved: a pod the connector cannot find is a 404 Status, a request that
does not upgrade is a 400, and a node without a reachable kubelet is left out of the
metrics (authentication: the REST server's middleware, test_rest_python_client.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from services.apiserver.rest import metrics_api, streaming
from services.apiserver.rest.kubelets import LookupConnector, kubelet_address
from skiff.api import errors
from skiff.api.v1 import core_pb2


def _node(name: str, port: int) -> core_pb2.Node:
    node = core_pb2.Node()
    node.metadata.name = name
    node.status.addresses.add(type="InternalIP", address="127.0.0.1")
    node.status.daemon_endpoints.kubelet_endpoint.port = port
    return node


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def base() -> AsyncIterator[str]:
    dead = _unused_port()  # nothing listens: a kubelet that is down

    async def get_pod(namespace: str, name: str) -> core_pb2.Pod:
        if name != "web":
            raise errors.NotFound(f'pods "{name}" not found')
        pod = core_pb2.Pod()
        pod.metadata.name, pod.metadata.namespace, pod.spec.node_name = name, namespace, "n1"
        return pod

    async def get_node(name: str) -> core_pb2.Node:
        return _node(name, dead)

    async def list_nodes() -> list[core_pb2.Node]:
        return [_node("n1", dead)]

    async def list_pods(namespace: str, selector: str) -> list[core_pb2.Pod]:
        raise errors.BadRequest(f"labelSelector: {selector!r} does not parse")

    connector = LookupConnector(get_pod, get_node, list_nodes, list_pods)
    app = web.Application()
    streaming.add_routes(app, connector)
    metrics_api.add_routes(app, connector)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


async def test_errors_before_the_upgrade_are_statuses(base):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/v1/namespaces/ns/pods/nope/exec",
                               params={"command": "true"}) as reply:
            body = await reply.json()
        assert (reply.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
        async with session.get(f"{base}/api/v1/namespaces/ns/pods/web/portforward",
                               params={"ports": "70000"}) as reply:
            assert reply.status == 400 and "70000" in (await reply.json())["message"]
        async with session.get(f"{base}/api/v1/namespaces/ns/pods/web/attach") as reply:
            assert reply.status == 400 and "Upgrade" in (await reply.json())["message"]
        async with session.get(f"{base}/api/v1/namespaces/ns/pods/web/log") as reply:
            body = await reply.json()
        assert reply.status == 503 and "kubelet" in body["message"]


async def test_unreachable_kubelets_are_left_out_of_metrics(base):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/apis/metrics.k8s.io/v1beta1/nodes") as reply:
            assert (await reply.json())["items"] == []
        async with session.get(f"{base}/apis/metrics.k8s.io/v1beta1/nodes/n1") as reply:
            assert reply.status == 404
        async with session.get(f"{base}/apis/metrics.k8s.io/v1beta1/pods",
                               params={"labelSelector": "a in (b"}) as reply:
            assert reply.status == 400 and "labelSelector" in (await reply.json())["message"]
        async with session.get(f"{base}/apis/metrics.k8s.io") as reply:
            assert (await reply.json())["name"] == "metrics.k8s.io"


def test_kubelet_address_needs_ip_and_port():
    assert kubelet_address(_node("n", 10250)) == "127.0.0.1:10250"
    assert kubelet_address(_node("n", 0)) is None
