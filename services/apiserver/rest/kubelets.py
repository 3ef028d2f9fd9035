"""Reaching kubelets from the REST edge: where a pod's kubelet listens, every node's
kubelet, and how a kubelet's gRPC error reads as a Kubernetes Status.

A kubelet's address is its Node's InternalIP and
``status.daemonEndpoints.kubeletEndpoint.port``, both written by the kubelet when it
registers (as ``skiffctl`` finds it). The streaming and metrics handlers take a
:class:`KubeletConnector`, so the core passes in whatever reads pods and nodes for it;
:class:`LookupConnector` builds one from three lookups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from skiff.api import errors
from skiff.api.v1 import core_pb2


class KubeletConnector(Protocol):
    """Where kubelets listen. Raises skiff.api.errors (NotFound, BadRequest,
    Unavailable) when the pod, its node or the node's address is missing."""

    async def pod_kubelet(self, namespace: str, name: str) -> str:
        """``host:port`` of the kubelet running the pod."""
        ...

    async def node_kubelets(self) -> dict[str, str]:
        """Node name -> ``host:port`` of its kubelet, for nodes that published one."""
        ...

    async def pods(self, namespace: str, label_selector: str) -> set[tuple[str, str]]:
        """(namespace, name) of the pods a label selector matches (namespace "": all);
        BadRequest for a selector that does not parse."""
        ...


def kubelet_address(node: core_pb2.Node) -> str | None:
    """``host:port`` of the node's kubelet API, or None before it published one (pure)."""
    host = next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    if not host or not port:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"{host}:{port}"


@dataclass(frozen=True)
class LookupConnector:
    """A KubeletConnector from lookups of pods and nodes (a client, a registry...)."""

    get_pod: Callable[[str, str], Awaitable[core_pb2.Pod]]  # (namespace, name)
    get_node: Callable[[str], Awaitable[core_pb2.Node]]
    list_nodes: Callable[[], Awaitable[Sequence[core_pb2.Node]]]
    #: (namespace, label selector) -> the pods; for metrics' labelSelector.
    list_pods: Callable[[str, str], Awaitable[Sequence[core_pb2.Pod]]]

    async def pod_kubelet(self, namespace: str, name: str) -> str:
        pod = await self.get_pod(namespace, name)
        if not pod.spec.node_name:
            raise errors.BadRequest(f'pod "{name}" is not scheduled to a node yet')
        node = await self.get_node(pod.spec.node_name)
        address = kubelet_address(node)
        if address is None:
            raise errors.Unavailable(f'node "{node.metadata.name}" has no kubelet address '
                                     "yet (InternalIP and kubelet port)")
        return address

    async def pods(self, namespace: str, label_selector: str) -> set[tuple[str, str]]:
        return {(p.metadata.namespace, p.metadata.name)
                for p in await self.list_pods(namespace, label_selector)}

    async def node_kubelets(self) -> dict[str, str]:
        found = {}
        for node in await self.list_nodes():
            address = kubelet_address(node)
            if address is not None:
                found[node.metadata.name] = address
        return found


#: gRPC code -> (HTTP status, Kubernetes reason).
_HTTP = {
    grpc.StatusCode.NOT_FOUND: (404, "NotFound"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "BadRequest"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "BadRequest"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "AlreadyExists"),
    grpc.StatusCode.ABORTED: (409, "Conflict"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "Unauthorized"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "Forbidden"),
    grpc.StatusCode.UNAVAILABLE: (503, "ServiceUnavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "Timeout"),
}


def http_status(code: grpc.StatusCode) -> tuple[int, str]:
    """(HTTP status, reason) of a gRPC code (pure); 500 InternalError otherwise."""
    return _HTTP.get(code, (500, "InternalError"))


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Failure metav1.Status (pure)."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def status_of_rpc_error(error: grpc.RpcError, what: str) -> dict[str, Any]:
    """The Status of a failed kubelet call; ``what`` names the kubelet for reach errors."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    http, reason = http_status(code)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"{what}: {details}"
    return status(http, reason, details or str(code))


def status_of_api_error(error: errors.APIError) -> dict[str, Any]:
    """The Status of a skiff API error (NotFound, BadRequest, Unavailable...)."""
    code, message = errors.to_grpc(error)
    http, reason = http_status(code)
    return status(http, reason, message)


async def write(call: Any, message: Any) -> bool:
    """Send one request message on a streaming kubelet call; False once the call has
    ended (its outcome is then read from the call, not from here)."""
    try:
        await call.write(message)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return False
    return True
