"""``top pods`` and ``top nodes``: CPU and memory in use, from the kubelets.

Kubernetes' ``kubectl top`` asks metrics-server, which scrapes every kubelet; skiffctl
asks the kubelets itself (each node's ``PodStats``), so the figures are fresh (Docker
samples CPU over about a second) and there is nothing else to run. Output is kubectl's:
CPU in millicores (``12m``), memory working set in MiB (``5Mi``); for nodes, percentages
of the node's allocatable CPU and memory. A node whose kubelet does not answer is
reported on stderr and its pods left out (kubectl shows nodes without metrics as
``<unknown>``; so does ``top nodes`` here).

The rows are built by pure functions (:func:`pod_rows`, :func:`node_rows`) of the
objects and the stats, for the unit tests.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.quantity import milli_value, value
from skiff.cli.skiffctl.common import CommandError, Context
from skiff.cli.skiffctl.kubelet import kubelet, kubelet_error, pod_name
from skiff.cli.skiffctl.printers import render_table
from skiff.kubelet.v1 import kubelet_pb2

UNKNOWN = "<unknown>"
MI = 1024 * 1024


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    top = subparsers.add_parser("top", parents=[common],
                                help="show CPU and memory use of pods or nodes")
    kinds = top.add_subparsers(dest="top_kind", metavar="pods|nodes", required=True)
    pods = kinds.add_parser("pods", aliases=["pod", "po"], parents=[common],
                            help="CPU and memory of pods")
    pods.add_argument("name", nargs="?", default="", metavar="POD")
    pods.add_argument("-l", "--selector", default="", help="label selector")
    pods.add_argument("-A", "--all-namespaces", action="store_true",
                      help="every namespace (adds a NAMESPACE column)")
    pods.add_argument("--containers", action="store_true",
                      help="a line per container")
    pods.add_argument("--no-headers", action="store_true")
    pods.set_defaults(func=run_pods)
    nodes = kinds.add_parser("nodes", aliases=["node", "no"], parents=[common],
                             help="CPU and memory of nodes")
    nodes.add_argument("name", nargs="?", default="", metavar="NODE")
    nodes.add_argument("-l", "--selector", default="", help="label selector")
    nodes.add_argument("--no-headers", action="store_true")
    nodes.set_defaults(func=run_nodes)


# ---- formatting (pure) ----


def format_cpu(nanocores: int) -> str:
    """``12m``: millicores, rounded up as a Kubernetes quantity's MilliValue."""
    return f"{-(-nanocores // 1_000_000)}m"


def format_memory(size: int) -> str:
    """``5Mi``: whole MiB, rounded down (kubectl's Value() / 1Mi)."""
    return f"{size // MI}Mi"


def pod_rows(pods: Sequence[Message], stats: Mapping[str, kubelet_pb2.PodStats], *,
             all_namespaces: bool = False, containers: bool = False) -> list[list[str]]:
    """The table rows for the pods that have stats (by uid), in the given order."""
    rows = []
    for pod in pods:
        found = stats.get(pod.metadata.uid)
        if found is None:
            continue
        prefix = [pod.metadata.namespace] if all_namespaces else []
        if containers:
            rows += [[*prefix, pod.metadata.name, c.name, format_cpu(c.cpu_nanocores),
                      format_memory(c.memory_working_set_bytes)] for c in found.containers]
        else:
            rows.append([*prefix, pod.metadata.name, format_cpu(found.cpu_nanocores),
                         format_memory(found.memory_working_set_bytes)])
    return rows


def pod_header(*, all_namespaces: bool = False, containers: bool = False) -> list[str]:
    return ([*(["NAMESPACE"] if all_namespaces else []),
             *(["POD", "NAME"] if containers else ["NAME"]), "CPU(cores)", "MEMORY(bytes)"])


def _allocatable(node: Message, resource: str) -> str:
    return (node.status.allocatable.get(resource)
            or node.status.capacity.get(resource) or "")


def node_rows(nodes: Sequence[Message], stats: Mapping[str, kubelet_pb2.NodeStats],
              ) -> list[list[str]]:
    """Rows of ``top nodes``: usage, and percent of the node's allocatable (else its
    capacity, else what its kubelet sees of the machine)."""
    rows = []
    for node in nodes:
        found = stats.get(node.metadata.name)
        if found is None:
            rows.append([node.metadata.name, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN])
            continue
        cpu_milli = -(-found.cpu_nanocores // 1_000_000)
        cpu_text = _allocatable(node, "cpu")
        cpu_total = milli_value(cpu_text) if cpu_text else (
            found.cpu_capacity_nanocores // 1_000_000)
        memory_text = _allocatable(node, "memory")
        memory_total = value(memory_text) if memory_text else found.memory_capacity_bytes
        rows.append([node.metadata.name, f"{cpu_milli}m",
                     f"{cpu_milli * 100 // cpu_total}%" if cpu_total else UNKNOWN,
                     format_memory(found.memory_working_set_bytes),
                     f"{found.memory_working_set_bytes * 100 // memory_total}%"
                     if memory_total else UNKNOWN])
    return rows


NODE_HEADER = ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]


# ---- asking the kubelets ----


async def node_stats(ctx: Context, node: Message, namespace: str,
                     timeout: float) -> kubelet_pb2.StatsResponse | None:
    """One kubelet's stats; None (and a line on stderr) when it cannot give them."""
    name = node.metadata.name
    try:
        async with kubelet(node) as (stub, address):
            try:
                return await stub.PodStats(kubelet_pb2.StatsRequest(namespace=namespace),
                                           timeout=timeout)
            except grpc.aio.AioRpcError as e:
                raise kubelet_error(name, address, e) from None
    except (CommandError, errors.APIError) as e:
        ctx.warn(f"error: metrics not available for node {name}: {e}")
        ctx.failed = True
        return None


async def run_pods(ctx: Context, args: argparse.Namespace) -> int:
    namespace = "" if args.all_namespaces else ctx.namespace
    if args.name:
        pods = [await ctx.client.pods.get(pod_name(args.name), ctx.namespace)]
    else:
        listing = await ctx.client.pods.list(namespace, label_selector=args.selector)
        pods = sorted(listing.items, key=lambda p: (p.metadata.namespace, p.metadata.name))
    if not pods:
        where = "any namespace" if args.all_namespaces else f"{ctx.namespace} namespace"
        ctx.warn(f"No resources found in {where}.")
        return 0
    node_names = sorted({p.spec.node_name for p in pods if p.spec.node_name})
    nodes = await asyncio.gather(*(ctx.client.nodes.get(n, "") for n in node_names))
    answers = await asyncio.gather(*(node_stats(ctx, n, namespace, args.request_timeout)
                                     for n in nodes))
    stats = {p.uid: p for answer in answers if answer is not None for p in answer.pods}
    rows = pod_rows(pods, stats, all_namespaces=args.all_namespaces,
                    containers=args.containers)
    if not rows:
        raise CommandError("metrics not available yet (no running containers found on "
                           "the pods' nodes)")
    header = None if args.no_headers else pod_header(all_namespaces=args.all_namespaces,
                                                     containers=args.containers)
    ctx.out.write(render_table(header, rows))
    ctx.out.flush()
    return ctx.status


async def run_nodes(ctx: Context, args: argparse.Namespace) -> int:
    if args.name:
        nodes = [await ctx.client.nodes.get(args.name.removeprefix("node/"), "")]
    else:
        listing = await ctx.client.nodes.list(label_selector=args.selector)
        nodes = sorted(listing.items, key=lambda n: n.metadata.name)
    if not nodes:
        ctx.warn("No resources found")
        return 0
    answers = await asyncio.gather(*(node_stats(ctx, n, "", args.request_timeout)
                                     for n in nodes))
    stats = {a.node.name: a.node for a in answers if a is not None}
    header = None if args.no_headers else NODE_HEADER
    ctx.out.write(render_table(header, node_rows(nodes, stats)))
    ctx.out.flush()
    return ctx.status
