"""Reaching a pod's kubelet: what ``logs``, ``exec`` and ``top`` share.

The apiserver does not proxy to kubelets here (kubectl's requests go through it; ours
go straight to the node): the kubelet's address is the pod's node's InternalIP and
``status.daemonEndpoints.kubeletEndpoint.port``, both written by the kubelet when it
registers its Node. A kubelet that does not answer is the node's problem, said as such,
not the apiserver's.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from google.protobuf.message import Message

from skiff.api import errors
from skiff.cli.skiffctl.common import CommandError, Context, resolve_kind
from skiff.kubelet.v1 import kubelet_pb2_grpc


def pod_name(word: str) -> str:
    """``web`` or ``pod/web`` (``po/web``, ``pods/web``) -> ``web``."""
    kind_name, slash, name = word.partition("/")
    if not slash:
        return word
    if resolve_kind(kind_name).kind != "Pod" or not name:
        raise CommandError(f"{word} is not a pod (use POD or pod/POD)")
    return name


def kubelet_address(node: Message) -> str:
    """``host:port`` of the node's kubelet API (pure); CommandError when the node has not
    published one."""
    host = next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    if not host or not port:
        raise CommandError(f'node "{node.metadata.name}" has no kubelet address (its '
                           "InternalIP and kubelet port are not in its status yet)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"{host}:{port}"


async def pod_and_node(ctx: Context, name: str) -> tuple[Message, Message]:
    """The pod (in the context's namespace) and the node it is bound to."""
    pod = await ctx.client.pods.get(name, ctx.namespace)
    if not pod.spec.node_name:
        raise CommandError(f'pod "{name}" is not scheduled to a node yet')
    node = await ctx.client.nodes.get(pod.spec.node_name, "")
    return pod, node


def kubelet_error(node: str, address: str, error: grpc.RpcError) -> Exception:
    """What a failed kubelet call means for the user: the kubelet could not be reached
    (a CommandError naming node and address), took too long (a CommandError: the
    apiserver is not at fault, so not Unavailable), or answered an API error."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CommandError(f'cannot reach the kubelet of node "{node}" at {address}: '
                            f"{details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CommandError(f'kubelet of node "{node}": {details}')
    return errors.from_grpc(error)


@asynccontextmanager
async def kubelet(node: Message) -> AsyncIterator[tuple[kubelet_pb2_grpc.KubeletStub, str]]:
    """A stub for the node's kubelet and its address; the channel closes after."""
    address = kubelet_address(node)
    async with grpc.aio.insecure_channel(address) as channel:
        yield kubelet_pb2_grpc.KubeletStub(channel), address


def add_container_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--container", default="",
                        help="the container (needed when the pod has several)")
