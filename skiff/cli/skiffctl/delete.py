"""``delete``: by name, ``KIND/NAME``, ``-f FILE``, ``-l SELECTOR`` or ``--all``.

kubectl's rules for the grace period: ``--now`` is 1 second; ``--grace-period=0`` is
made 1 unless ``--force`` (a bound pod would otherwise vanish before its kubelet
stopped it); ``--force`` alone is 0. ``--cascade`` picks what happens to dependents:
``background`` (the default), ``foreground`` or ``orphan`` (``true``/``false`` as
kubectl's old spelling). ``--wait`` waits until the objects are really gone
(finalizers done, graceful pods stopped); by default the command returns once the
deletion is accepted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from skiff.api import errors
from skiff.api.kinds import Kind
from skiff.cli.skiffctl import apply
from skiff.cli.skiffctl.common import (
    CommandError,
    Context,
    parse_bool,
    parse_duration,
    parse_targets,
    wait_gone,
    with_timeout,
)
from skiff.cli.skiffctl.printers import object_ref, qualified

CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
           "true": "Background", "false": "Orphan"}
FORCE_WARNING = ("Warning: Immediate deletion does not wait for confirmation that the "
                 "running resource has been terminated. The resource may continue to run "
                 "on the cluster indefinitely.")


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("delete", parents=[common], help="delete objects")
    parser.add_argument("resources", nargs="*", metavar="RESOURCE",
                        help="KIND [NAME...] or KIND/NAME...")
    apply.add_file_flags(parser, required=False)
    parser.add_argument("-l", "--selector", default="", help="delete the matching objects")
    parser.add_argument("--field-selector", default="")
    parser.add_argument("--all", action="store_true", help="every object of the kinds")
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("--grace-period", type=int, default=-1,
                        help="seconds a pod gets to stop (-1: its own; 0 needs --force)")
    parser.add_argument("--now", action="store_true", help="the same as --grace-period=1")
    parser.add_argument("--force", action="store_true",
                        help="with --grace-period=0: remove at once")
    parser.add_argument("--cascade", default="background", type=_cascade,
                        metavar="background|foreground|orphan")
    parser.add_argument("--wait", type=parse_bool, nargs="?", const=True, default=False,
                        metavar="true|false", help="wait until the objects are gone")
    parser.add_argument("--timeout", type=parse_duration, default=0.0,
                        help="how long --wait waits (0: no limit)")
    parser.add_argument("--ignore-not-found", action="store_true")
    parser.add_argument("-o", "--output", default="", choices=("", "name"))
    parser.set_defaults(func=run, words_dest="resources")


def _cascade(text: str) -> str:
    try:
        return CASCADE[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            'must be "background", "orphan", or "foreground"') from None


def grace_period(seconds: int, *, now: bool, force: bool) -> int | None:
    """kubectl's grace period from its flags; None: the object's own."""
    if now:
        if seconds != -1:
            raise CommandError("--now and --grace-period cannot be specified together")
        seconds = 1
    if seconds == 0 and not force:
        seconds = 1
    if force and seconds < 0:
        seconds = 0
    return None if seconds < 0 else seconds


@dataclass(frozen=True)
class Victim:
    kind: Kind
    name: str
    namespace: str


async def run(ctx: Context, args: argparse.Namespace) -> int:
    grace = grace_period(args.grace_period, now=args.now, force=args.force)
    if args.force and grace == 0:
        ctx.warn(FORCE_WARNING)
    victims = await choose(ctx, args)
    deleted = []
    for victim in victims:
        try:
            obj = await ctx.resource(victim.kind).delete(
                victim.name, victim.namespace, grace_period_seconds=grace,
                propagation_policy=args.cascade)
        except errors.NotFound as e:
            if not args.ignore_not_found:
                ctx.report(e)
            continue
        if args.output == "name":
            ctx.echo(object_ref(victim.kind, victim.name))
        else:
            ctx.echo(f'{qualified(victim.kind)} "{victim.name}" deleted')
        deleted.append((victim, obj.metadata.uid))
    if args.wait and deleted:
        await with_timeout(_wait_all(ctx, deleted), args.timeout,
                           "timed out waiting for the condition")
    return ctx.status


async def _wait_all(ctx: Context, deleted: list[tuple[Victim, str]]) -> int:
    for victim, uid in deleted:
        await wait_gone(ctx, victim.kind, victim.name, victim.namespace, uid)
    return 0


async def choose(ctx: Context, args: argparse.Namespace) -> list[Victim]:
    """The objects the arguments name."""
    if args.filename:
        if args.resources:
            raise CommandError("give either -f or resources, not both")
        loaded = apply.load(args.filename, recursive=args.recursive)
        return [Victim(item.kind, item.obj.metadata.name, apply.namespace_for(ctx, item))
                for item in loaded]
    if not args.resources:
        raise CommandError("You must provide one or more resources by argument or filename.")
    kinds, targets = parse_targets(args.resources)
    if targets:
        if args.selector or args.all:
            raise CommandError("name cannot be provided when a selector or --all is specified")
        return [Victim(t.kind, t.name, ctx.namespace_of(t.kind)) for t in targets]
    if not (args.selector or args.field_selector or args.all):
        raise CommandError("resource(s) were provided, but no name was specified")
    victims = []
    for kind in kinds:
        namespace = "" if args.all_namespaces else ctx.namespace_of(kind)
        listing = await ctx.resource(kind).list(namespace, label_selector=args.selector,
                                                field_selector=args.field_selector)
        victims += [Victim(kind, o.metadata.name, o.metadata.namespace) for o in listing.items]
    if not victims:
        ctx.warn("No resources found")
    return victims
