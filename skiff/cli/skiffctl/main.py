"""skiffctl's entry point: flags, the server to talk to, and what failure looks like.

Every command module registers its subcommands (``add_parsers``); the flags every
command takes (``--server``, ``-n``, ``--request-timeout``, ``-v``) are accepted before
or after the command's name. A command is an async function of a
:class:`~skiff.cli.skiffctl.common.Context` and its arguments returning the exit
status. Expected failures end as one line on stderr and status 1: API errors in
kubectl's words, manifest errors naming file, document and field, unknown kinds, and
an apiserver that does not answer (after a short retry, ``RETRY_DEADLINE``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from skiff.api import errors
from skiff.api.kinds import UnknownKind
from skiff.api.manifest import ManifestError
from skiff.cli.skiffctl import (
    apply,
    config,
    delete,
    describe,
    edit_ops,
    execute,
    get,
    logs,
    nodes,
    rollout,
    top,
    version,
)
from skiff.cli.skiffctl.common import (
    RETRY_DEADLINE,
    CommandError,
    Context,
    format_error,
    parse_duration,
)
from skiff.client.client import Client
from skiff.health import grpc_healthy
from skiff.logging import configure

COMMAND_MODULES = (apply, get, describe, delete, edit_ops, nodes, rollout, logs, execute,
                   top, version)
#: Seconds one request may take before it counts as unanswered.
DEFAULT_REQUEST_TIMEOUT = 30.0


def common_flags(*, in_command: bool) -> argparse.ArgumentParser:
    """The flags every command takes. After the command's name they default to
    "not given" (SUPPRESS), so they never undo the same flag given before it."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if in_command else value

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-s", "--server", default=default(None),
                        help="apiserver address(es), host:port[,host:port] "
                             "(else $SKIFF_SERVER, ~/.skiff/config, 127.0.0.1:6443)")
    parser.add_argument("-n", "--namespace", default=default(None),
                        help="the namespace (default: default)")
    parser.add_argument("--request-timeout", type=parse_duration,
                        default=default(DEFAULT_REQUEST_TIMEOUT),
                        help="how long a single request may take (30s, 1m)")
    parser.add_argument("-v", "--v", dest="verbosity", type=int, default=default(0),
                        metavar="LEVEL",
                        help="above 0: log what the client does (JSON lines on stderr)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skiffctl", parents=[common_flags(in_command=False)],
        description="skiffctl controls a Skiff cluster, the way kubectl controls Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_flags(in_command=True)
    for module in COMMAND_MODULES:
        module.add_parsers(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    configure("skiffctl", "debug" if args.verbosity > 0 else "error")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (skiffctl get pods | head): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, letting words come after flags (``label pods -l app=web tier=fe``), as
    kubectl does: argparse leaves such words over; they join the command's list of
    words (its ``words_dest``)."""
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    dest = getattr(args, "words_dest", None)
    flags = [word for word in extras if word.startswith("-") and word != "-"]
    if dest is None or flags:
        parser.error(f"unrecognized arguments: {' '.join(flags or extras)}")
    getattr(args, dest).extend(extras)
    return args


async def run(args: argparse.Namespace) -> int:
    """Run the chosen command; turn every expected failure into one line and 1."""
    try:
        settings = config.resolve(args.server, args.namespace)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    client = Client(settings.server, timeout=args.request_timeout,
                    retry_deadline=RETRY_DEADLINE)
    ctx = Context(client, namespace=settings.namespace,
                  namespace_given=args.namespace is not None)
    try:
        return await args.func(ctx, args)
    except errors.Unavailable as e:
        ctx.warn(await unavailable_message(client, e))
    except (errors.APIError, CommandError, ManifestError, UnknownKind) as e:
        ctx.warn(format_error(e))
    finally:
        await client.close()
    return 1


async def unavailable_message(client: Client, error: errors.Unavailable) -> str:
    """Whose fault it is: no apiserver answers at all, or one answers that it cannot
    serve (its store is down, say)."""
    for address in client.addresses:
        try:
            await grpc_healthy(address)  # SERVING or not: it answered
            return format_error(error)
        except Exception:  # any failure means "does not answer"
            continue
    where = ",".join(client.addresses)
    return (f"error: cannot reach the Skiff apiserver at {where} "
            f"(is it running? skiff up starts one)")
