"""``get``: objects as tables or ``-o yaml|json|name``, and ``get -w`` as they change.

``get KIND`` lists (``-l``, ``--field-selector``, ``-n``, ``-A``); ``get KIND NAME...``
and ``get KIND/NAME...`` fetch by name (a missing one is reported and the rest still
printed). Several kinds (``pods,svc``, ``all``) print one table per kind with names as
``pod/web``. ``-w`` lists, then watches from the list's resourceVersion and prints a
row per event in the same columns; ``--watch-only`` skips the list. A watch that
breaks is resumed from the last version seen (relisting when that is compacted).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import Kind
from skiff.cli.skiffctl import printers
from skiff.cli.skiffctl.common import (
    RETRY_DEADLINE,
    CommandError,
    Context,
    Target,
    parse_targets,
)
from skiff.client.client import backoff


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    get = subparsers.add_parser("get", parents=[common], help="show objects")
    get.add_argument("resources", nargs="+", metavar="RESOURCE",
                        help="KIND [NAME...] or KIND/NAME...")
    add_output_flag(get)
    add_selector_flags(get)
    get.add_argument("-w", "--watch", action="store_true",
                     help="after listing, print changes as they happen")
    get.add_argument("--watch-only", action="store_true",
                     help="print changes as they happen, without listing first")
    get.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    get.add_argument("-L", "--label-columns", action="append", default=[],
                     help="a column per label key (comma-separated)")
    get.add_argument("--no-headers", action="store_true", help="omit table headers")
    get.set_defaults(func=run, words_dest="resources")


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="", choices=printers.OUTPUT_FORMATS,
                        metavar="wide|yaml|json|name", help="output format")


def add_selector_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--selector", default="",
                        help="label selector (app=web, env in (a,b), !canary)")
    parser.add_argument("--field-selector", default="",
                        help="field selector (metadata.name=web, spec.nodeName=n1)")
    parser.add_argument("-A", "--all-namespaces", action="store_true",
                        help="every namespace (adds a NAMESPACE column)")


@dataclass
class Found:
    """What one kind gave."""

    kind: Kind
    objects: list[Message]


def table_options(args: argparse.Namespace, *, several_kinds: bool) -> printers.TableOptions:
    """The table's shape from ``-o wide``, ``-A``, ``--show-labels`` and ``-L``."""
    label_columns = tuple(key for text in args.label_columns for key in text.split(",") if key)
    return printers.TableOptions(
        wide=args.output == "wide", namespace_column=args.all_namespaces,
        show_labels=args.show_labels, label_columns=label_columns, with_kind=several_kinds)


def list_namespace(ctx: Context, args: argparse.Namespace, kind: Kind) -> str:
    return "" if args.all_namespaces else ctx.namespace_of(kind)


async def run(ctx: Context, args: argparse.Namespace) -> int:
    kinds, targets = parse_targets(args.resources)
    if args.watch or args.watch_only:
        return await watch(ctx, args, kinds, targets)
    found = await fetch(ctx, args, kinds, targets)
    show(ctx, args, found, named=bool(targets), single=len(targets) == 1)
    return ctx.status


async def fetch(ctx: Context, args: argparse.Namespace, kinds: Sequence[Kind],
                targets: Sequence[Target]) -> list[Found]:
    """The named objects (missing ones reported), or every kind's list."""
    if targets:
        found: dict[str, Found] = {}
        for target in targets:
            try:
                obj = await ctx.resource(target.kind).get(
                    target.name, ctx.namespace_of(target.kind))
            except errors.NotFound as e:
                ctx.report(e)
                continue
            found.setdefault(target.kind.kind, Found(target.kind, [])).objects.append(obj)
        return list(found.values())
    results = []
    for kind in kinds:
        listing = await ctx.resource(kind).list(
            list_namespace(ctx, args, kind), label_selector=args.selector,
            field_selector=args.field_selector)
        items = list(listing.items)
        if kind.kind == "Event":
            items.sort(key=printers.event_time)
        results.append(Found(kind, items))
    return results


def show(ctx: Context, args: argparse.Namespace, found: list[Found], *, named: bool,
         single: bool) -> None:
    """Print what was found in the chosen form (``named``: asked for by name, so an
    empty result was reported already)."""
    objects = [o for f in found for o in f.objects]
    if args.output in ("yaml", "json"):
        if objects or not named:
            ctx.out.write(printers.format_objects(objects, args.output, single=single))
        return
    if not objects:
        if not named:
            ctx.warn(no_resources_message(ctx, args, found))
        return
    if args.output == "name":
        ctx.out.write(printers.format_objects(objects, "name", single=single))
        return
    several = len(found) > 1
    options = table_options(args, several_kinds=several)
    now = ctx.clock()
    blocks = []
    for f in found:
        if not f.objects:
            continue
        header = None if args.no_headers else printers.table_header(f.kind, options)
        rows = [printers.table_row(f.kind, o, options, now) for o in f.objects]
        blocks.append(printers.render_table(header, rows, bold=ctx.out.isatty()))
    ctx.out.write("\n".join(blocks))
    ctx.out.flush()


def no_resources_message(ctx: Context, args: argparse.Namespace, found: list[Found]) -> str:
    namespaced = any(f.kind.namespaced for f in found)
    if args.all_namespaces or not namespaced:
        return "No resources found"
    return f"No resources found in {ctx.namespace} namespace."


# ---- watch ----


async def watch(ctx: Context, args: argparse.Namespace, kinds: Sequence[Kind],
                targets: Sequence[Target]) -> int:
    """List (unless --watch-only), then print every change until interrupted."""
    if len(kinds) != 1 or len(targets) > 1:
        raise CommandError("watch is only supported on individual resources and resource "
                           f"collections, but {max(len(kinds), len(targets))} resources "
                           "were found")
    kind = kinds[0]
    field_selector = args.field_selector
    if targets:
        name_term = f"metadata.name={targets[0].name}"
        field_selector = f"{field_selector},{name_term}" if field_selector else name_term
    watcher = Watcher(ctx, args, kind, field_selector)
    await watcher.run()
    return ctx.status


class Watcher:
    """One kind's list-then-watch, printing as it goes."""

    def __init__(self, ctx: Context, args: argparse.Namespace, kind: Kind,
                 field_selector: str) -> None:
        self.ctx, self.args, self.kind = ctx, args, kind
        self.field_selector = field_selector
        self.namespace = list_namespace(ctx, args, kind)
        self.options = table_options(args, several_kinds=False)
        self.table = printers.TablePrinter(ctx.out, bold=ctx.out.isatty(),
                                           headers=not args.no_headers)
        self.resource_version = ""

    async def relist(self, *, show: bool) -> None:
        listing = await self.ctx.resource(self.kind).list(
            self.namespace, label_selector=self.args.selector,
            field_selector=self.field_selector)
        self.resource_version = listing.metadata.resource_version
        if show:
            self.print(list(listing.items))

    def print(self, objects: list[Message]) -> None:
        if not objects:
            return
        output = self.args.output
        if output in ("yaml", "json", "name"):
            for obj in objects:
                self.ctx.out.write(printers.format_watched(obj, output))
            self.ctx.out.flush()
            return
        now = self.ctx.clock()
        rows = [printers.table_row(self.kind, o, self.options, now) for o in objects]
        self.table.print(printers.table_header(self.kind, self.options), rows)

    async def run(self) -> None:
        await self.relist(show=not self.args.watch_only)
        broken_since: float | None = None
        attempt = 0
        while True:
            try:
                await self.stream()
                broken_since, attempt = None, 0
            except errors.Gone:
                await self.relist(show=False)
            except errors.Unavailable:
                now = time.monotonic()
                broken_since = broken_since or now
                if now - broken_since > RETRY_DEADLINE:
                    raise
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def stream(self) -> None:
        """Print events until the stream ends or breaks; remembers where it got to."""
        events = self.ctx.resource(self.kind).watch(
            self.namespace, resource_version=self.resource_version,
            label_selector=self.args.selector, field_selector=self.field_selector)
        async for event in events:
            if event.type == "ERROR":
                raise errors.APIError(f"watch error: {event.object.metadata.name}")
            self.resource_version = event.object.metadata.resource_version or (
                self.resource_version)
            if event.type != "BOOKMARK":
                self.print([event.object])


