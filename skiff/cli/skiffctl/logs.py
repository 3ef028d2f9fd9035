"""``logs``: a container's output, from its node's kubelet.

``skiffctl logs POD [-c CONTAINER] [--tail N] [-f] [--timestamps] [-p]``, as kubectl:
``-c`` is needed when the pod has several containers; ``--tail -1`` (the default) means
everything; ``-p/--previous`` shows the instance before the last restart; ``-f`` keeps
printing until the container stops or Ctrl-C.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from skiff.cli.skiffctl.common import CommandError, Context
from skiff.cli.skiffctl.kubelet import (
    add_container_flag,
    kubelet,
    kubelet_error,
    pod_and_node,
    pod_name,
)
from skiff.kubelet.v1 import kubelet_pb2


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("logs", parents=[common],
                                   help="print the logs of a container in a pod")
    parser.add_argument("pod", metavar="POD", help="POD or pod/POD")
    add_container_flag(parser)
    parser.add_argument("--tail", type=int, default=-1,
                        help="lines of recent log to show (-1: all)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep streaming new output")
    parser.add_argument("--timestamps", action="store_true",
                        help="prefix each line with its RFC 3339 timestamp")
    parser.add_argument("-p", "--previous", action="store_true",
                        help="the previous (terminated) instance of the container")
    parser.set_defaults(func=run)


def logs_request(args: argparse.Namespace, namespace: str) -> kubelet_pb2.LogsRequest:
    """The kubelet request the flags ask for (pure)."""
    if args.tail < -1:
        raise CommandError("--tail must be -1 (all) or more")
    request = kubelet_pb2.LogsRequest(namespace=namespace, pod=pod_name(args.pod),
                                      container=args.container, follow=args.follow,
                                      timestamps=args.timestamps, previous=args.previous)
    if args.tail >= 0:
        request.tail_lines = args.tail
    return request


async def run(ctx: Context, args: argparse.Namespace) -> int:
    request = logs_request(args, ctx.namespace)
    _, node = await pod_and_node(ctx, request.pod)
    async with kubelet(node) as (stub, address):
        # Following has no deadline; a plain read is one request.
        timeout = None if request.follow else args.request_timeout
        try:
            async for chunk in stub.ContainerLogs(request, timeout=timeout):
                ctx.out.write(chunk.data.decode(errors="replace"))
                ctx.out.flush()
        except grpc.aio.AioRpcError as e:
            raise kubelet_error(node.metadata.name, address, e) from None
    return 0
