"""The ``metrics.k8s.io/v1beta1`` API (what metrics-server serves, and ``kubectl top``
reads): NodeMetrics and PodMetrics from the kubelets' ``PodStats``.

Each request asks every node's kubelet at once (a kubelet samples CPU for about a
second) and shapes the answers as metrics-server does: ``timestamp``, ``window``, usage
``cpu`` in cores as a quantity (``"123456n"``) and ``memory`` in bytes (``"1234Ki"``).
A node's usage is its own (the kubelet's root-cgroup figures), a pod's the sum of its
containers'. A kubelet that does not answer in time is left out, as metrics-server
leaves out nodes it could not scrape. ``labelSelector`` on pod lists keeps the pods it
matches (the connector lists them).

Mount with :func:`add_routes`; the core's discovery includes :func:`api_group`,
:func:`api_resource_list` and :func:`aggregated_group`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from aiohttp import web

from services.apiserver.rest.kubelets import KubeletConnector, status, status_of_api_error
from skiff.api import errors
from skiff.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from skiff.logging import get_logger

log = get_logger("apiserver.rest.metrics")

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"/apis/{GROUP_VERSION}"
#: Seconds to wait for a kubelet's stats.
SCRAPE_TIMEOUT = 10.0
#: The sampling window the figures cover (Docker's CPU sampling interval, about 1 s).
WINDOW = "1s"

_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20),
           ("Ki", 2**10))
_DECIMAL = (("", 10**9), ("m", 10**6), ("u", 10**3))


def cpu_quantity(nanocores: int) -> str:
    """Nanocores as a Kubernetes quantity in its canonical form ("250m", "1234n")."""
    if nanocores == 0:
        return "0"
    for suffix, scale in _DECIMAL:
        if nanocores % scale == 0:
            return f"{nanocores // scale}{suffix}"
    return f"{nanocores}n"


def memory_quantity(size: int) -> str:
    """Bytes as a binary quantity in its canonical form ("1234Ki", "1500")."""
    for suffix, scale in _BINARY:
        if size and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)


def _usage(cpu: int, memory: int) -> dict[str, str]:
    return {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}


def node_metrics(stats: kubelet_pb2.StatsResponse) -> dict[str, Any]:
    """A NodeMetrics from a kubelet's stats (pure)."""
    stamp = stats.time.ToJsonString()
    return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION,
            "metadata": {"name": stats.node.name, "creationTimestamp": stamp},
            "timestamp": stamp, "window": WINDOW,
            "usage": _usage(stats.node.cpu_nanocores, stats.node.memory_working_set_bytes)}


def pod_metrics(pod: kubelet_pb2.PodStats, stats: kubelet_pb2.StatsResponse,
                ) -> dict[str, Any]:
    """A PodMetrics from one pod of a kubelet's stats (pure)."""
    stamp = stats.time.ToJsonString()
    return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION,
            "metadata": {"name": pod.name, "namespace": pod.namespace,
                         "creationTimestamp": stamp},
            "timestamp": stamp, "window": WINDOW,
            "containers": [{"name": c.name,
                            "usage": _usage(c.cpu_nanocores, c.memory_working_set_bytes)}
                           for c in pod.containers]}


def metrics_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": GROUP_VERSION,
            "metadata": {"resourceVersion": ""}, "items": items}


# ---- discovery ----

_RESOURCES = (("nodes", "NodeMetrics", False), ("pods", "PodMetrics", True))


def api_group() -> dict[str, Any]:
    """The APIGroup of metrics.k8s.io, for ``/apis`` and ``/apis/metrics.k8s.io``."""
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version],
            "preferredVersion": version}


def api_resource_list() -> dict[str, Any]:
    """The APIResourceList of ``/apis/metrics.k8s.io/v1beta1``."""
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
            "resources": [{"name": name, "singularName": "", "namespaced": namespaced,
                           "kind": kind, "verbs": ["get", "list"]}
                          for name, kind, namespaced in _RESOURCES]}


def aggregated_group() -> dict[str, Any]:
    """The group's entry of an aggregated discovery APIGroupDiscoveryList (v2)."""
    return {"metadata": {"name": GROUP}, "versions": [{
        "version": VERSION, "freshness": "Current",
        "resources": [{"resource": name, "responseKind": {"group": GROUP,
                                                         "version": VERSION, "kind": kind},
                       "scope": "Namespaced" if namespaced else "Cluster",
                       "singularResource": name[:-1], "verbs": ["get", "list"]}
                      for name, kind, namespaced in _RESOURCES]}]}


# ---- serving ----


async def _scrape(node: str, address: str, namespace: str,
                  ) -> kubelet_pb2.StatsResponse | None:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = kubelet_pb2_grpc.KubeletStub(channel)
            return await stub.PodStats(kubelet_pb2.StatsRequest(namespace=namespace),
                                       timeout=SCRAPE_TIMEOUT)
    except grpc.aio.AioRpcError as e:
        log.warning("kubelet stats failed", node=node, address=address,
                    error=e.details() or str(e.code()))
        return None


class MetricsHandlers:
    """The handlers :func:`add_routes` mounts."""

    def __init__(self, connector: KubeletConnector) -> None:
        self._connector = connector

    async def _stats(self, namespace: str = "",
                     only_node: str = "") -> list[kubelet_pb2.StatsResponse]:
        kubelets = await self._connector.node_kubelets()
        if only_node:
            kubelets = {n: a for n, a in kubelets.items() if n == only_node}
        answers = await asyncio.gather(*(_scrape(node, address, namespace)
                                         for node, address in sorted(kubelets.items())))
        return [a for a in answers if a is not None]

    async def nodes(self, request: web.Request) -> web.Response:
        items = [node_metrics(s) for s in await self._stats()]
        return web.json_response(metrics_list("NodeMetrics", items))

    async def node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await self._stats(only_node=name)
        if not found:
            return _not_found("nodemetrics", name)
        return web.json_response(node_metrics(found[0]))

    async def pods(self, request: web.Request) -> web.Response:
        namespace = request.match_info.get("namespace", "")
        selector = request.query.get("labelSelector", "")
        stats = await self._stats(namespace)
        chosen: set[tuple[str, str]] | None = None
        if selector:
            try:
                chosen = await self._connector.pods(namespace, selector)
            except errors.APIError as e:
                return web.json_response(status_of_api_error(e), status=400)
        items = [pod_metrics(p, s) for s in stats for p in s.pods
                 if (not namespace or p.namespace == namespace)
                 and (chosen is None or (p.namespace, p.name) in chosen)]
        items.sort(key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))
        return web.json_response(metrics_list("PodMetrics", items))

    async def pod(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        for stats in await self._stats(namespace):
            for pod in stats.pods:
                if pod.namespace == namespace and pod.name == name:
                    return web.json_response(pod_metrics(pod, stats))
        return _not_found("podmetrics", name)

    @staticmethod
    async def resources(request: web.Request) -> web.Response:
        return web.json_response(api_resource_list())

    @staticmethod
    async def group(request: web.Request) -> web.Response:
        return web.json_response(api_group())


def _not_found(resource: str, name: str) -> web.Response:
    body = status(404, "NotFound", f'{resource}.{GROUP} "{name}" not found')
    body["details"] = {"name": name, "group": GROUP, "kind": resource}
    return web.json_response(body, status=404)


def add_routes(app: web.Application, connector: KubeletConnector) -> MetricsHandlers:
    """Mount the metrics API on ``app`` (GET only; its middlewares authenticate), with
    ``/apis/metrics.k8s.io`` and ``/apis/metrics.k8s.io/v1beta1``."""
    handlers = MetricsHandlers(connector)
    get = app.router.add_get
    get(f"/apis/{GROUP}", handlers.group)
    get(PREFIX, handlers.resources)
    get(f"{PREFIX}/nodes", handlers.nodes)
    get(f"{PREFIX}/nodes/{{name}}", handlers.node)
    get(f"{PREFIX}/pods", handlers.pods)
    get(f"{PREFIX}/namespaces/{{namespace}}/pods", handlers.pods)
    get(f"{PREFIX}/namespaces/{{namespace}}/pods/{{name}}", handlers.pod)
    return handlers
