"""What every skiffctl command shares: the context it runs in, how it names kinds and
objects on the command line, and kubectl's words for what went wrong.

Naming follows kubectl: a kind by any of its names (``pods``, ``pod``, ``po``, ``Pod``,
``deployment.apps``), an object as ``KIND NAME`` or ``KIND/NAME``, and an object in
output as ``pod/web`` or ``deployment.apps/web`` (the group after the singular).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import KINDS, Kind, UnknownKind, lookup
from skiff.client.client import Client, ResourceClient

#: How long one call retries an apiserver that does not answer before giving up.
RETRY_DEADLINE = 3.0
#: Attempts at a read-modify-write before a conflict is reported.
UPDATE_ATTEMPTS = 5
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: What ``get all`` lists, as kubectl's "all" category.
ALL_KINDS = ("pods", "services", "deployments", "replicasets", "replicationcontrollers")


class CommandError(Exception):
    """The command cannot go on (a bad argument, a timeout): ``error: <message>``, exit 1."""


@dataclass
class Context:
    """One command's connection, default namespace, output streams and clock."""

    client: Client
    namespace: str = "default"
    namespace_given: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.time
    #: Set once some object failed; the command then exits 1 after the rest.
    failed: bool = False

    def echo(self, text: str = "") -> None:
        """A line on stdout, flushed (output may be a pipe another process reads)."""
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def report(self, error: Exception) -> None:
        """Say what failed for one object and go on with the others.

        An apiserver that cannot be reached is not one object's problem: it is raised.
        """
        if isinstance(error, errors.Unavailable):
            raise error
        self.warn(format_error(error))
        self.failed = True

    @property
    def status(self) -> int:
        return 1 if self.failed else 0

    def namespace_of(self, kind: Kind, given: str = "") -> str:
        """The namespace an object of ``kind`` lives in: its own, else the context's."""
        if not kind.namespaced:
            return ""
        return given or self.namespace

    def resource(self, kind: Kind) -> ResourceClient:
        return self.client.resource(kind)


# ---- kinds and names ----


def resolve_kind(name: str) -> Kind:
    """The kind a command-line word names: ``po``, ``pods``, ``Deployment``,
    ``deployment.apps``; UnknownKind (kubectl's message) otherwise."""
    base, _, group = name.partition(".")
    kind = lookup(base) if base else None
    if kind is None or (group and group != kind.group):
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"')
    return kind


def expand_kinds(text: str) -> list[Kind]:
    """``pods,svc`` -> [Pod, Service]; ``all`` -> kubectl's "all" category."""
    kinds: list[Kind] = []
    for word in text.split(","):
        if not word:
            continue
        names = ALL_KINDS if word == "all" else (word,)
        for name in names:
            kind = resolve_kind(name)
            if kind not in kinds:
                kinds.append(kind)
    if not kinds:
        raise CommandError("you must specify the type of resource")
    return kinds


@dataclass(frozen=True)
class Target:
    """One object named on the command line."""

    kind: Kind
    name: str


def parse_targets(words: list[str]) -> tuple[list[Kind], list[Target]]:
    """``KIND[,KIND] [NAME...]`` or ``KIND/NAME...`` -> the kinds and the named objects.

    Without names the kinds are to be listed; with names every kind is asked for each.
    """
    if not words:
        raise CommandError("you must specify the type of resource to get. "
                           f"Use one of: {', '.join(k.plural for k in KINDS)}")
    if "/" in words[0]:
        targets = [_slash_target(word) for word in words]
        kinds: list[Kind] = []
        for target in targets:
            if target.kind not in kinds:
                kinds.append(target.kind)
        return kinds, targets
    kinds = expand_kinds(words[0])
    for word in words[1:]:
        if "/" in word:
            raise CommandError("there is no need to specify a resource type as a separate "
                               "argument when passing arguments in resource/name form "
                               "(e.g. 'skiffctl get resource/<resource_name>' instead of "
                               "'skiffctl get resource resource/<resource_name>')")
    return kinds, [Target(kind, name) for kind in kinds for name in words[1:]]


def _slash_target(word: str) -> Target:
    kind_name, _, name = word.partition("/")
    if not kind_name or not name or "/" in name:
        raise CommandError(f'arguments in resource/name form must have a single resource '
                           f'and name: "{word}"')
    return Target(resolve_kind(kind_name), name)


def single_target(words: list[str], *, allowed: tuple[str, ...] = ()) -> Target:
    """Exactly one object: ``KIND NAME`` or ``KIND/NAME``; optionally of given kinds."""
    _, targets = parse_targets(words)
    if len(targets) != 1:
        raise CommandError("exactly one object is required: KIND NAME or KIND/NAME")
    target = targets[0]
    if allowed and target.kind.kind not in allowed:
        raise CommandError(f"{target.kind.plural} are not supported here "
                           f"(only {', '.join(allowed)})")
    return target


# ---- errors, as kubectl words them ----

_REASONS: tuple[tuple[type[errors.APIError], str], ...] = (
    (errors.NotFound, "NotFound"),
    (errors.AlreadyExists, "AlreadyExists"),
    (errors.Conflict, "Conflict"),
    (errors.Gone, "Gone"),
    (errors.Invalid, "Invalid"),
    (errors.BadRequest, "BadRequest"),
    (errors.Forbidden, "Forbidden"),
    (errors.Unauthenticated, "Unauthorized"),
    (errors.Unavailable, "ServiceUnavailable"),
)
_INVALID_RE = re.compile(r'^[A-Z]\w* "[^"]*" is invalid: |^[A-Z]\w* is invalid: ')


def format_error(error: Exception) -> str:
    """One line for stderr: ``Error from server (NotFound): pods "x" not found``,
    ``The Pod "x" is invalid: ...``, or ``error: ...`` for our own errors."""
    if not isinstance(error, errors.APIError):
        return f"error: {error}"
    message = str(error)
    if _INVALID_RE.match(message):
        return f"The {message}"
    reason = next((r for cls, r in _REASONS if isinstance(error, cls)), "InternalError")
    return f"Error from server ({reason}): {message}"


# ---- read-modify-write ----


async def modify(ctx: Context, kind: Kind, name: str, namespace: str,
                 change: Callable[[Message], bool | None]) -> tuple[Message, bool]:
    """Get the object, let ``change`` edit it in place, and update it if it changed.

    ``change`` returns False when there is nothing to write. A conflict (someone
    wrote in between) starts over from a fresh read. Returns the object as stored and
    whether it was written.
    """
    resource = ctx.resource(kind)
    for attempt in range(UPDATE_ATTEMPTS):
        obj = await resource.get(name, namespace)
        if change(obj) is False:
            return obj, False
        try:
            return await resource.update(obj), True
        except errors.Conflict:
            if attempt == UPDATE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def with_timeout(what: Awaitable[int], timeout: float, message: str) -> int:
    """``await what`` within ``timeout`` seconds (0: no limit); CommandError after."""
    if timeout <= 0:
        return await what
    try:
        return await asyncio.wait_for(what, timeout)
    except TimeoutError:
        raise CommandError(message) from None


# ---- flag values ----

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's durations as kubectl takes them (``30s``, ``1m30s``, ``500ms``; a bare number
    is seconds) -> seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use 30s, 5m, 1h)")
    return total


def parse_bool(text: str) -> bool:
    """``true``/``false`` (and 1/0, yes/no) as flags like ``--wait=false`` take them."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


async def wait_gone(ctx: Context, kind: Kind, name: str, namespace: str, uid: str, *,
                    interval: float = 0.2) -> None:
    """Poll until the object with ``uid`` is gone (NotFound, or another uid there now)."""
    resource = ctx.resource(kind)
    while True:
        try:
            obj = await resource.get(name, namespace)
        except errors.NotFound:
            return
        if obj.metadata.uid != uid:
            return
        await asyncio.sleep(interval)
