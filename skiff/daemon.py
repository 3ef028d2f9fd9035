"""What every daemon's entry point shares: the event loop, and stopping on a signal.

``main()`` of each daemon parses its flags and calls :func:`run` with its ``serve``
coroutine; ``serve`` does its work until :func:`until_stopped` says SIGTERM or SIGINT
came (or its main task ended by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Coroutine
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from skiff.gc_pauses import observe_gc_pauses
from skiff.logging import get_logger

log = get_logger("skiff.daemon")


def run(serve: Coroutine[Any, Any, None]) -> None:
    """Run ``serve`` to its end on uvloop (asyncio where uvloop does not build); exit 0.

    Garbage collection pauses are timed (``skiff_gc_pause_seconds``; long ones logged).
    """
    observe_gc_pauses()
    try:
        import uvloop
    except ImportError:  # uvloop is optional where it does not build
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve)
    sys.exit(0)


async def wait_for_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()


async def until_stopped(main: Awaitable[None], *, what: str) -> None:
    """Run ``main`` until a stop signal, or until it ends by itself; then cancel it.

    A ``main`` that failed is logged (a supervisor restarts the daemon).
    """
    task = asyncio.ensure_future(main)
    waiter = asyncio.ensure_future(wait_for_signal())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error(f"{what} failed", error=repr(task.exception()))
    log.info("stopping")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    waiter.cancel()


class HealthEndpoint:
    """A daemon's own gRPC health service, for daemons that serve no other gRPC API.

    It says NOT_SERVING from :meth:`start` until :meth:`serving`, so a supervisor or test
    waiting for health waits for the daemon's caches too; :meth:`stop` says so first.
    With no address (``''``) nothing listens and every call does nothing.
    """

    def __init__(self, listen: str, *, prog: str) -> None:
        self.listen = listen
        self.prog = prog
        self.servicer = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Listen, NOT_SERVING; exits the daemon with a message when the port is taken."""
        if not self.listen:
            return
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        try:
            server.add_insecure_port(self.listen)
        except RuntimeError:
            raise SystemExit(f"{self.prog}: cannot listen on {self.listen} "
                             f"(address in use?)") from None
        await self.servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server = server

    async def serving(self) -> None:
        """Report SERVING."""
        await self.servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """Report the shutdown, then stop listening."""
        if self._server is None:
            return
        await self.servicer.enter_graceful_shutdown()
        await self._server.stop(grace=0.5)
