"""``scale``, ``label`` and ``annotate``: small edits as read-modify-write updates.

Each reads the object, changes one thing and updates it conditionally on the version
it read, starting over when someone wrote in between (``common.modify``).

``label``/``annotate`` take kubectl's arguments: objects (``KIND NAME...``,
``KIND/NAME...``, or ``KIND -l SELECTOR`` / ``--all``) followed by changes, ``key=value``
to set and ``key-`` to remove. Changing a key that has a value needs ``--overwrite``.
The change itself is the pure :func:`change_map`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.cli.skiffctl.common import CommandError, Context, Target, modify, parse_targets
from skiff.cli.skiffctl.printers import object_ref

SCALABLE = ("Deployment", "ReplicaSet", "ReplicationController")


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    scale = subparsers.add_parser("scale", parents=[common],
                                  help="set the replicas of deployments, rs, rc")
    scale.add_argument("resources", nargs="+", metavar="RESOURCE",
                       help="KIND NAME... or KIND/NAME...")
    scale.add_argument("--replicas", type=int, required=True)
    scale.add_argument("--current-replicas", type=int, default=-1,
                       help="only if the current replicas are this many")
    scale.set_defaults(func=run_scale, words_dest="resources")
    for verb, field in (("label", "labels"), ("annotate", "annotations")):
        parser = subparsers.add_parser(verb, parents=[common], help=f"update {field}")
        parser.add_argument("words", nargs="+",
                            metavar="ARG",
                            help="KIND NAME... (or KIND/NAME...), then KEY=VALUE... KEY-...")
        parser.add_argument("--overwrite", action="store_true",
                            help="allow changing a key that has a value")
        parser.add_argument("-l", "--selector", default="")
        parser.add_argument("--all", action="store_true")
        parser.add_argument("--list", action="store_true", help="print the current ones")
        parser.set_defaults(func=run_label, field=field, verb=verb, words_dest="words")


# ---- scale ----


async def run_scale(ctx: Context, args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise CommandError("The --replicas=COUNT flag is required, and COUNT must be >= 0")
    _, targets = parse_targets(args.resources)
    if not targets:
        raise CommandError("resource(s) were provided, but no name was specified")
    for target in targets:
        if target.kind.kind not in SCALABLE:
            ctx.report(CommandError(f"{target.kind.plural} cannot be scaled (only "
                                    "deployments, replicasets and replicationcontrollers)"))
            continue
        try:
            await modify(ctx, target.kind, target.name, ctx.namespace_of(target.kind),
                         lambda obj: _scale(obj, args.replicas, args.current_replicas))
        except (errors.APIError, CommandError) as e:
            ctx.report(e)
            continue
        ctx.echo(f"{object_ref(target.kind, target.name)} scaled")
    return ctx.status


def _scale(obj: Message, replicas: int, expected: int) -> None:
    if expected >= 0 and obj.spec.replicas != expected:
        raise CommandError(f"Expected replicas to be {expected}, was {obj.spec.replicas}")
    obj.spec.replicas = replicas


# ---- label / annotate ----


@dataclass(frozen=True)
class Changes:
    """``key=value`` pairs to set and ``key-`` keys to remove."""

    set: Mapping[str, str]
    remove: tuple[str, ...]


def is_change(word: str) -> bool:
    """``key=value`` or ``key-`` (object names never hold ``=`` nor end with ``-``)."""
    return "=" in word or word.endswith("-")


def split_words(words: list[str]) -> tuple[list[str], list[str]]:
    """(the object words, the change words): changes are the trailing
    ``key=value``/``key-`` words."""
    first = next((i for i, w in enumerate(words) if i > 0 and is_change(w)), len(words))
    return words[:first], words[first:]


def parse_changes(words: list[str], verb: str) -> Changes:
    to_set: dict[str, str] = {}
    remove: list[str] = []
    for word in words:
        if "=" in word:
            key, _, value = word.partition("=")
            if not key:
                raise CommandError(f"invalid {verb} format: {word}")
            to_set[key] = value
        elif word.endswith("-") and len(word) > 1:
            remove.append(word[:-1])
        else:
            raise CommandError(f"invalid {verb} format: {word}")
    both = set(to_set) & set(remove)
    if both:
        raise CommandError(f"can not both modify and remove the following key(s) in the "
                           f"same command: {', '.join(sorted(both))}")
    return Changes(to_set, tuple(remove))


def change_map(current: Mapping[str, str], changes: Changes, *, overwrite: bool
               ) -> tuple[dict[str, str], list[str]]:
    """(the map after ``changes``, keys asked to be removed that were not there).

    Setting a key that has a value (even the same one) without ``overwrite`` is an
    error, as in kubectl.
    """
    result = dict(current)
    for key, value in changes.set.items():
        if key in current and not overwrite:
            raise CommandError(f"'{key}' already has a value ({current[key]}), and "
                               f"--overwrite is false")
        result[key] = value
    missing = [key for key in changes.remove if key not in result]
    for key in changes.remove:
        result.pop(key, None)
    return result, missing


def change_message(verb: str, before: Mapping[str, str], after: Mapping[str, str], *,
                   overwrite: bool) -> str:
    """kubectl's word for what happened: labeled, unlabeled, not labeled; annotated."""
    if verb == "annotate":
        return "annotated"
    if dict(before) == dict(after):
        return "not labeled"
    if not overwrite and len(after) < len(before):
        return "unlabeled"
    return "labeled"


async def run_label(ctx: Context, args: argparse.Namespace) -> int:
    object_words, change_words = split_words(args.words)
    targets = await _label_targets(ctx, args, object_words)
    if args.list:
        for target in targets:
            obj = await ctx.resource(target.kind).get(target.name, ctx.namespace_of(target.kind))
            for key, value in sorted(getattr(obj.metadata, args.field).items()):
                ctx.echo(f"{key}={value}")
        return 0
    if not change_words:
        raise CommandError(f"at least one {args.field[:-1]} update is required")
    changes = parse_changes(change_words, args.field[:-1])
    for target in targets:
        try:
            message = await _label_one(ctx, args, target, changes)
        except (errors.APIError, CommandError) as e:
            ctx.report(e)
            continue
        ctx.echo(f"{object_ref(target.kind, target.name)} {message}")
    return ctx.status


async def _label_targets(ctx: Context, args: argparse.Namespace, words: list[str]
                         ) -> list[Target]:
    kinds, targets = parse_targets(words)
    if targets:
        return targets
    if not (args.selector or args.all):
        raise CommandError("one or more resources must be specified as <resource> <name> "
                           "or <resource>/<name>")
    found = []
    for kind in kinds:
        listing = await ctx.resource(kind).list(ctx.namespace_of(kind),
                                                label_selector=args.selector)
        found += [Target(kind, o.metadata.name) for o in listing.items]
    return found


async def _label_one(ctx: Context, args: argparse.Namespace, target: Target,
                     changes: Changes) -> str:
    before: dict[str, str] = {}
    after: dict[str, str] = {}

    def change(obj: Message) -> bool:
        nonlocal before, after
        field = getattr(obj.metadata, args.field)
        before = dict(field)
        after, missing = change_map(before, changes, overwrite=args.overwrite)
        for key in missing:
            ctx.warn(f'{args.field[:-1]} "{key}" not found.')
        if after == before:
            return False
        field.clear()
        field.update(after)
        return True

    await modify(ctx, target.kind, target.name, ctx.namespace_of(target.kind), change)
    return change_message(args.verb, before, after, overwrite=args.overwrite)

