"""``exec``: run a command in a container, through its node's kubelet.

``skiffctl exec POD [-c CONTAINER] [--timeout 30s] -- COMMAND [ARGS...]``. Not
interactive (no stdin, no terminal: ``-i``/``-t`` are refused): the command runs to its
end, its stdout and stderr are printed, and skiffctl exits with its exit code, as
kubectl does (with kubectl's ``command terminated with exit code N`` on stderr).

Flags may come between POD and ``--``; everything after ``--`` is the command, even
words that look like flags.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from skiff.cli.skiffctl.common import CommandError, Context, parse_duration
from skiff.cli.skiffctl.kubelet import (
    kubelet,
    kubelet_error,
    pod_and_node,
    pod_name,
)
from skiff.kubelet.v1 import kubelet_pb2


def _own_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """exec's flags; with ``suppress`` they default to "not given" (for re-parsing the
    words before ``--`` without undoing flags given before POD)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("-c", "--container", default=default(""),
                        help="the container (needed when the pod has several)")
    parser.add_argument("--timeout", type=parse_duration, default=default(0.0),
                        help="give up on the command after this long (0: no limit)")
    parser.add_argument("-i", "--stdin", action="store_true", default=default(False),
                        help=argparse.SUPPRESS)
    parser.add_argument("-t", "--tty", action="store_true", default=default(False),
                        help=argparse.SUPPRESS)


def add_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("exec", parents=[common],
                                   help="run a command in a container (non-interactive)")
    parser.add_argument("pod", metavar="POD", help="POD or pod/POD")
    _own_flags(parser, suppress=False)
    # REMAINDER: the command keeps its own flags; words before a "--" are ours (see
    # split_command).
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    parser.set_defaults(func=run)


def split_command(args: argparse.Namespace) -> tuple[argparse.Namespace, str | None]:
    """Separate skiffctl's flags given after POD from the command (pure).

    argparse hands everything after POD to the command; when a ``--`` is among those
    words, what comes before it are flags (``-c``, ``--timeout``, ``-n``). Returns the
    completed arguments and the namespace given there (None if none).
    """
    words = list(args.command)
    if "--" not in words:
        return args, None
    cut = words.index("--")
    flags, command = words[:cut], words[cut + 1:]
    parser = argparse.ArgumentParser(prog="skiffctl exec", add_help=False)
    _own_flags(parser, suppress=True)
    parser.add_argument("-n", "--namespace", default=None)
    try:
        extra, unknown = parser.parse_known_args(flags)
    except SystemExit:
        raise CommandError(f"invalid flags before --: {' '.join(flags)}") from None
    if unknown:
        raise CommandError(f"unknown flags before --: {' '.join(unknown)}")
    namespace = vars(extra).pop("namespace", None)
    merged = argparse.Namespace(**{**vars(args), **vars(extra), "command": command})
    return merged, namespace


def exec_request(args: argparse.Namespace, namespace: str) -> kubelet_pb2.ExecRequest:
    """The kubelet request (pure); CommandError for what cannot be run."""
    if args.stdin or args.tty:
        raise CommandError("skiffctl exec is not interactive: -i/--stdin and -t/--tty are "
                           "not supported")
    if not args.command:
        raise CommandError("you must specify at least one command for the container "
                           "(skiffctl exec POD -- COMMAND [ARGS...])")
    return kubelet_pb2.ExecRequest(namespace=namespace, pod=pod_name(args.pod),
                                   container=args.container, command=list(args.command),
                                   timeout=args.timeout)


async def run(ctx: Context, args: argparse.Namespace) -> int:
    args, namespace = split_command(args)
    request = exec_request(args, namespace or ctx.namespace)
    if namespace:
        ctx.namespace = namespace
    _, node = await pod_and_node(ctx, request.pod)
    async with kubelet(node) as (stub, address):
        # The command may run as long as it likes unless --timeout says otherwise; the
        # kubelet enforces that, the deadline here only guards against one that hangs.
        deadline = request.timeout + args.request_timeout if request.timeout else None
        try:
            reply = await stub.Exec(request, timeout=deadline)
        except grpc.aio.AioRpcError as e:
            raise kubelet_error(node.metadata.name, address, e) from None
    ctx.out.write(reply.stdout.decode(errors="replace"))
    ctx.out.flush()
    ctx.err.write(reply.stderr.decode(errors="replace"))
    if reply.exit_code:
        ctx.warn(f"command terminated with exit code {reply.exit_code}")
    ctx.err.flush()
    return reply.exit_code
