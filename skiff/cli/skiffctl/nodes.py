"""``cordon``, ``uncordon`` and ``drain``: taking nodes out of scheduling and emptying them.

``cordon`` sets ``spec.unschedulable`` (the scheduler leaves such nodes alone),
``uncordon`` clears it. ``drain`` cordons, then deletes the node's pods (those whose
``spec.nodeName`` is the node) and waits until they are gone, at most ``--timeout``.
Which pods it may delete is kubectl's rule, in the pure :func:`plan_drain`: mirror pods
are skipped; pods with no controller need ``--force`` (nothing would recreate them);
DaemonSet pods need ``--ignore-daemonsets`` and are then left alone. Pods bound to a
node are deleted gracefully, so the wait lasts until their kubelet has stopped them
(``--grace-period`` shortens that; 0 removes them at once).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import lookup
from skiff.cli.skiffctl.common import (
    CommandError,
    Context,
    modify,
    parse_duration,
    resolve_kind,
    wait_gone,
    with_timeout,
)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
NODE = lookup("Node")
POD = lookup("Pod")


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    for verb, unschedulable in (("cordon", True), ("uncordon", False)):
        parser = subparsers.add_parser(verb, parents=[common],
                                       help=f"mark nodes as {'un' if unschedulable else ''}"
                                            "schedulable")
        parser.add_argument("nodes", nargs="*", metavar="NODE")
        parser.add_argument("-l", "--selector", default="")
        parser.set_defaults(func=run_cordon, unschedulable=unschedulable, verb=verb,
                            words_dest="nodes")
    drain = subparsers.add_parser("drain", parents=[common],
                                  help="cordon a node and delete its pods")
    drain.add_argument("node", metavar="NODE")
    drain.add_argument("--force", action="store_true",
                       help="also delete pods no controller manages")
    drain.add_argument("--ignore-daemonsets", action="store_true",
                       help="leave DaemonSet-managed pods alone")
    drain.add_argument("--delete-emptydir-data", "--delete-local-data", action="store_true",
                       help="accepted for kubectl's sake (Skiff has no emptyDir)")
    drain.add_argument("--grace-period", type=int, default=-1,
                       help="seconds each pod gets to stop (-1: its own)")
    drain.add_argument("--timeout", type=parse_duration, default=0.0,
                       help="give up after this long (0: wait for ever)")
    drain.add_argument("--pod-selector", default="", help="only pods matching this selector")
    drain.set_defaults(func=run_drain)


def node_name(word: str) -> str:
    """``n1`` or ``node/n1`` -> ``n1``."""
    kind_name, slash, name = word.partition("/")
    if not slash:
        return word
    if resolve_kind(kind_name).kind != "Node":
        raise CommandError(f"{word} is not a node")
    return name


async def set_unschedulable(ctx: Context, name: str, unschedulable: bool) -> bool:
    """Cordon or uncordon one node; whether it changed."""

    def change(node: Message) -> bool:
        if node.spec.unschedulable == unschedulable:
            return False
        node.spec.unschedulable = unschedulable
        return True

    _, changed = await modify(ctx, NODE, name, "", change)
    return changed


async def run_cordon(ctx: Context, args: argparse.Namespace) -> int:
    names = [node_name(word) for word in args.nodes]
    if args.selector:
        listing = await ctx.client.nodes.list(label_selector=args.selector)
        names += [n.metadata.name for n in listing.items]
    if not names:
        raise CommandError("USAGE: NODE is required (or -l SELECTOR)")
    for name in names:
        try:
            changed = await set_unschedulable(ctx, name, args.unschedulable)
        except errors.APIError as e:
            ctx.report(e)
            continue
        ctx.echo(f"node/{name} {args.verb}ed" if changed else f"node/{name} already "
                                                                f"{args.verb}ed")
    return ctx.status


@dataclass
class DrainPlan:
    """What drain does with a node's pods."""

    delete: list[Message] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _names(pods: list[Message]) -> str:
    return ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods)


def plan_drain(pods: list[Message], *, force: bool, ignore_daemonsets: bool) -> DrainPlan:
    """Which pods to delete, what to warn about and what stops the drain (pure)."""
    plan = DrainPlan()
    unmanaged, daemons = [], []
    for pod in pods:
        md = pod.metadata
        if MIRROR_ANNOTATION in md.annotations:
            continue
        controller = next((ref for ref in md.owner_references if ref.controller), None)
        if controller is not None and controller.kind == "DaemonSet":
            daemons.append(pod)
            continue
        if controller is None:
            unmanaged.append(pod)
            if not force:
                continue
        plan.delete.append(pod)
    if daemons:
        if ignore_daemonsets:
            plan.warnings.append(f"ignoring DaemonSet-managed Pods: {_names(daemons)}")
        else:
            plan.errors.append("cannot delete DaemonSet-managed Pods (use "
                               f"--ignore-daemonsets to ignore): {_names(daemons)}")
    if unmanaged:
        if force:
            plan.warnings.append(f"deleting Pods that declare no controller: "
                                 f"{_names(unmanaged)}")
        else:
            plan.errors.append("cannot delete Pods that declare no controller (use --force "
                               f"to override): {_names(unmanaged)}")
    return plan


async def run_drain(ctx: Context, args: argparse.Namespace) -> int:
    name = node_name(args.node)
    changed = await set_unschedulable(ctx, name, True)
    ctx.echo(f"node/{name} cordoned" if changed else f"node/{name} already cordoned")
    listing = await ctx.client.pods.list("", field_selector=f"spec.nodeName={name}",
                                         label_selector=args.pod_selector)
    plan = plan_drain(list(listing.items), force=args.force,
                      ignore_daemonsets=args.ignore_daemonsets)
    if plan.errors:
        raise CommandError(f'unable to drain node "{name}" due to error: '
                           f"{'; '.join(plan.errors)}")
    for warning in plan.warnings:
        ctx.warn(f"Warning: {warning}")
    grace = None if args.grace_period < 0 else args.grace_period
    await with_timeout(_delete_and_wait(ctx, plan.delete, grace), args.timeout,
                       f'unable to drain node "{name}": global timeout reached: '
                       f"{args.timeout:g}s")
    ctx.echo(f"node/{name} drained")
    return 0


async def _delete_and_wait(ctx: Context, pods: list[Message], grace: int | None) -> int:
    for pod in pods:
        md = pod.metadata
        ctx.echo(f"deleting pod {md.namespace}/{md.name}")
        try:
            await ctx.client.pods.delete(md.name, md.namespace, grace_period_seconds=grace,
                                         uid=md.uid)
        except (errors.NotFound, errors.Conflict):
            pass  # gone already, or another pod by that name now: not ours to delete
    await asyncio.gather(*(_wait_one(ctx, pod) for pod in pods))
    return 0


async def _wait_one(ctx: Context, pod: Message) -> None:
    md = pod.metadata
    await wait_gone(ctx, POD, md.name, md.namespace, md.uid)
    ctx.echo(f"pod/{md.name} deleted")
