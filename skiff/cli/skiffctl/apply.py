"""``apply -f`` and ``create -f``: manifests from files, directories or stdin.

Every file is read and checked before anything is sent, so a manifest error (named by
file, document and field) changes nothing. Then, object by object:

- ``create`` creates; an object that exists is an error for that object;
- ``apply`` creates what does not exist and updates what does with the three-way
  merge of ``merge.py`` (the manifest, the one applied last time, the live object),
  conditional on the live resourceVersion and redone on a conflict. A merge that
  changes nothing is not sent (``unchanged``); nor is an update the server did not
  write (the same resourceVersion back). The manifest is remembered in the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation, as kubectl does.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from skiff.api import errors, manifest
from skiff.api.kinds import Kind, for_message
from skiff.cli.skiffctl.common import (
    LAST_APPLIED,
    UPDATE_ATTEMPTS,
    CommandError,
    Context,
    resolve_kind,
)
from skiff.cli.skiffctl.merge import three_way_merge
from skiff.cli.skiffctl.printers import object_ref

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Loaded:
    """One object from a manifest and where it came from."""

    obj: Message
    source: str

    @property
    def kind(self) -> Kind:
        return for_message(self.obj)


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    apply = subparsers.add_parser("apply", parents=[common],
                                  help="create or update objects from manifests")
    add_file_flags(apply, required=True)
    apply.set_defaults(func=run_apply)
    create = subparsers.add_parser("create", parents=[common],
                                   help="create objects from manifests (or a namespace)")
    add_file_flags(create, required=False)
    create.add_argument("what", nargs="*", metavar="namespace NAME",
                        help="create namespace NAME, without a file")
    create.add_argument("--save-config", action="store_true",
                        help="record the manifest for later applies")
    create.set_defaults(func=run_create)


def add_file_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("-f", "--filename", action="append", default=[], required=required,
                        help="a file, a directory of .yaml/.yml/.json files, or - (stdin)")
    parser.add_argument("-R", "--recursive", action="store_true",
                        help="read directories recursively")


# ---- reading manifests ----


def manifest_files(path: Path, *, recursive: bool) -> list[Path]:
    """The manifests in a directory (sorted, as kubectl reads them) or the file itself."""
    if not path.is_dir():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern)
                  if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)


def read_sources(names: list[str], *, recursive: bool) -> list[tuple[str, str]]:
    """(source, text) for every manifest named by ``-f``; ``-`` reads stdin."""
    sources = []
    for name in names:
        if name == "-":
            sources.append(("-", sys.stdin.read()))
            continue
        path = Path(name)
        if not path.exists():
            raise CommandError(f'the path "{name}" does not exist')
        for file in manifest_files(path, recursive=recursive):
            try:
                sources.append((str(file), file.read_text()))
            except (OSError, UnicodeDecodeError) as e:
                raise CommandError(f"cannot read {file}: {e}") from None
    return sources


def load(names: list[str], *, recursive: bool) -> list[Loaded]:
    """Every object in the named manifests; ManifestError names the first bad one."""
    loaded = [Loaded(obj, source)
              for source, text in read_sources(names, recursive=recursive)
              for obj in manifest.load_documents(text, source=source)]
    if not loaded:
        raise CommandError("no objects passed to apply" if names else "no objects given")
    return loaded


def namespace_for(ctx: Context, item: Loaded) -> str:
    """The object's namespace: its own, else ``-n``; both given and different: an error."""
    kind = item.kind
    own = item.obj.metadata.namespace if kind.namespaced else ""
    if own and ctx.namespace_given and own != ctx.namespace:
        raise CommandError(f'the namespace from the provided object "{own}" does not match '
                           f'the namespace "{ctx.namespace}". You must pass '
                           f"'--namespace={own}' to perform this operation.")
    return ctx.namespace_of(kind, own)


# ---- apply ----


async def run_apply(ctx: Context, args: argparse.Namespace) -> int:
    for item in load(args.filename, recursive=args.recursive):
        try:
            result = await apply_one(ctx, item)
        except (errors.APIError, CommandError, manifest.ManifestError) as e:
            ctx.report(e)
            continue
        ctx.echo(f"{object_ref(item.kind, item.obj.metadata.name)} {result}")
    return ctx.status


def last_applied(document: dict[str, Any]) -> str:
    """The annotation's value: the manifest as compact JSON with sorted keys, so the
    same manifest gives the same text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def desired_document(obj: Message) -> dict[str, Any]:
    """The manifest as apply sends it: no status, the annotation of itself added."""
    document = manifest.to_dict(obj)
    document.pop("status", None)
    document.get("metadata", {}).get("annotations", {}).pop(LAST_APPLIED, None)
    annotated = copy.deepcopy(document)
    annotated.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = (
        last_applied(document))
    return annotated


async def apply_one(ctx: Context, item: Loaded) -> str:
    """Create or update one object; ``created``, ``configured`` or ``unchanged``."""
    kind, name = item.kind, item.obj.metadata.name
    if not name:
        raise CommandError(f"from {item.source}: a name is required to apply "
                           f"(generateName works only with create)")
    namespace = namespace_for(ctx, item)
    modified = desired_document(item.obj)
    resource = ctx.resource(kind)
    for _ in range(UPDATE_ATTEMPTS):
        try:
            live = await resource.get(name, namespace)
        except errors.NotFound:
            try:
                await resource.create(_for_create(item, modified, namespace))
            except errors.AlreadyExists:
                continue  # created in between: apply to it
            return "created"
        update = _merged(ctx, item, modified, live)
        if update == live:
            return "unchanged"  # nothing to send, as kubectl's empty patch
        try:
            stored = await resource.update(update)
        except errors.Conflict:
            continue
        same = stored.metadata.resource_version == live.metadata.resource_version
        return "unchanged" if same else "configured"
    raise errors.Conflict(f'{kind.plural} "{name}": changed by someone else on every try')


def _merged(ctx: Context, item: Loaded, modified: dict[str, Any], live: Message) -> Message:
    """The live object with the manifest merged in (as a message to send)."""
    recorded = live.metadata.annotations.get(LAST_APPLIED)
    original = None
    if recorded is None:
        ctx.warn(f"Warning: resource {item.kind.plural}/{live.metadata.name} is missing the "
                 f"{LAST_APPLIED} annotation which skiffctl apply uses to tell fields it "
                 f"set from fields others set. It is added now.")
    else:
        try:
            original = json.loads(recorded)
        except ValueError:
            original = None
    merged = three_way_merge(original, modified, manifest.to_dict(live))
    return manifest.from_dict(merged, source=item.source)


def _for_create(item: Loaded, modified: dict[str, Any], namespace: str) -> Message:
    """The object apply creates: the annotated manifest, with the manifest's status (the
    server keeps it only where a creator may set it: a Node registering itself)."""
    obj = manifest.from_dict(modified, source=item.source)
    if item.kind.has_status and item.obj.HasField("status"):
        obj.status.CopyFrom(item.obj.status)
    return _with_namespace(obj, namespace)


def _with_namespace(obj: Message, namespace: str) -> Message:
    obj.metadata.namespace = namespace
    return obj


# ---- create ----


async def run_create(ctx: Context, args: argparse.Namespace) -> int:
    if args.what:
        return await _create_named(ctx, args.what)
    if not args.filename:
        raise CommandError("must specify one of -f and -k, or: create namespace NAME")
    for item in load(args.filename, recursive=args.recursive):
        obj = item.obj
        if args.save_config:
            obj = manifest.from_dict(desired_document(obj), source=item.source)
        try:
            stored = await ctx.resource(item.kind).create(
                _with_namespace(obj, namespace_for(ctx, item)))
        except (errors.APIError, CommandError) as e:
            ctx.report(e)
            continue
        ctx.echo(f"{object_ref(item.kind, stored.metadata.name)} created")
    return ctx.status


async def _create_named(ctx: Context, words: list[str]) -> int:
    """``create namespace NAME``: the one kind kubectl creates from a name alone here."""
    if len(words) != 2 or resolve_kind(words[0]).kind != "Namespace":
        raise CommandError("create takes -f FILE, or: create namespace NAME")
    kind = resolve_kind(words[0])
    stored = await ctx.resource(kind).create(kind.new(metadata={"name": words[1]}))
    ctx.echo(f"{object_ref(kind, stored.metadata.name)} created")
    return 0
