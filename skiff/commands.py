"""Running a short host command (nft, iptables, conntrack) from a daemon's event loop.

A worker thread runs the command and waits for it, rather than an asyncio subprocess:
under uvloop an asyncio subprocess's exit was now and then never delivered (a daemon
forks the command while gRPC's threads run), and the caller then hung for good. The
loop never blocks; a command that does not answer within ``timeout`` is killed.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

#: Seconds a host command may take before it is killed and reported.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Completed:
    """What a command left: its exit code, stdout and stderr (text)."""

    code: int
    out: str
    err: str


class CommandError(RuntimeError):
    """The command could not run: not installed, or no answer within the timeout."""


async def run(argv: Sequence[str], *, stdin: str | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> Completed:
    """Run ``argv`` to its end on a worker thread; its exit code and output."""
    return await asyncio.to_thread(_run_blocking, tuple(argv), stdin, timeout)


def _run_blocking(argv: tuple[str, ...], stdin: str | None, timeout: float) -> Completed:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              errors="replace", timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError as err:
        raise CommandError(f"{err.filename or argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"{' '.join(argv[:4])}: no answer in {timeout:g}s") from None
    return Completed(done.returncode, done.stdout, done.stderr)
