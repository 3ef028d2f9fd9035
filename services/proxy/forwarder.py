"""Forwarding one TCP connection to a backend: a pair of buffered asyncio Protocols.

A listener (:mod:`services.proxy.proxier`) makes a :class:`Frontend` for every
connection it accepts. The frontend stops reading at once, asks its service port's
:class:`~services.proxy.loadbalancer.LoadBalancer` for a backend and connects to it
(bounded by the connect timeout); a refused, failed or timed-out connect is counted and
the next backend tried, with the failed ones excluded. No backend left (or none ready
to begin with): the client's connection is closed at once, with no data — the nearest
a user-space proxy gets to Kubernetes' REJECT.

Once the :class:`Backend` side is connected, bytes flow through ``data_received`` ->
``peer.write`` without any coroutine or intermediate buffer. That is why this is a
Protocol pair and not two StreamReader/StreamWriter pumps: per chunk there is one
callback and one write, instead of a task switch, a StreamReader buffer copy and a
``drain()`` await, which costs most of the throughput on a 2-core machine.

Back-pressure: each transport's write buffer has high/low water marks
(:data:`HIGH_WATER`, :data:`LOW_WATER`). When the buffer towards one side rises above
the high mark, asyncio calls ``pause_writing`` on that side's protocol, which pauses
*reading* from the other side; ``resume_writing`` (below the low mark) resumes it.
So a slow reader makes the proxy hold at most about ``HIGH_WATER`` plus one read
chunk per direction per connection, never an unbounded amount.

Half-close: an EOF from one side is passed on with ``write_eof`` (after whatever is
still buffered) and the other direction keeps flowing; when both sides have sent EOF,
both transports are closed. A connection lost with an error (a reset) aborts the
other side; one closed cleanly closes it after its buffer is flushed.

Invariants, per connection: ``Frontend.backend`` is None until the backend connect
succeeded; until then what the client sends is held in ``_early`` (reading pauses once
that reaches ``HIGH_WATER``) and an early EOF in ``client_eof``: both are passed on at
attach; at most one connect is in flight (``_connecting``, bounded by ``_timer``);
``stats.active`` is incremented once in ``connection_made`` and decremented once in
``connection_lost``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from services.proxy.loadbalancer import Backend as BackendAddress
from services.proxy.loadbalancer import LoadBalancer, ServicePortName
from services.proxy.metrics import PortStats
from skiff.logging import get_logger

log = get_logger("services.proxy.forwarder")

#: Write buffer marks per transport: above HIGH the other side's reading pauses, below
#: LOW it resumes. Large enough for a full uvloop read chunk (256 KiB) to pass without
#: pausing on every chunk; small enough that a slow reader costs about 1 MiB at most.
HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024


class ServicePortTarget:
    """What a listener's connections need of their service port (shared, mutable).

    The proxier updates ``balancer`` in place when the Endpoints change; established
    connections do not look at it again, so they are never cut by an update.
    """

    __slots__ = ("balancer", "connect_timeout", "name", "stats")

    def __init__(self, name: ServicePortName, balancer: LoadBalancer, stats: PortStats, *,
                 connect_timeout: float) -> None:
        self.name = name
        self.balancer = balancer
        self.stats = stats
        self.connect_timeout = connect_timeout


#: Shared by connections that have not failed on any backend (most): no set per connection.
_NONE_FAILED: frozenset[BackendAddress] = frozenset()


def _debug_enabled() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


class Frontend(asyncio.Protocol):
    """The client's side of one proxied connection (what a listener's factory makes)."""

    __slots__ = ("_backend_write", "_client_ip", "_closed", "_connecting", "_early",
                 "_early_size", "_failed", "_paused_early", "_stats", "_timer", "_trying",
                 "backend", "backend_eof", "client_eof", "target", "transport")

    def __init__(self, target: ServicePortTarget) -> None:
        self.target = target
        self._stats = target.stats
        self.transport: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self._backend_write: Any = None
        self._connecting: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._trying: BackendAddress | None = None
        self._failed: set[BackendAddress] | frozenset[BackendAddress] = _NONE_FAILED
        self._client_ip: str | None = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._paused_early = False
        self.client_eof = False
        self.backend_eof = False
        self._closed = False

    # -------------------------------------------------------------- client side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance here.)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        stats = self._stats
        stats.connections += 1
        stats.active += 1
        if not self.target.balancer.backends:
            # No ready endpoint: refuse at once, with no data (Kubernetes REJECTs).
            stats.rejected += 1
            transport.close()
            return
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        balancer = self.target.balancer
        if balancer.affinity_timeout is not None:
            peer = transport.get_extra_info("peername")
            self._client_ip = peer[0] if peer else None
        # Reading goes on while we connect (pausing and resuming would cost two epoll
        # changes on every short connection): data_received holds the first bytes.
        self._connect_next()

    def data_received(self, data: bytes) -> None:
        write = self._backend_write
        if write is None:
            # Still connecting: hold what arrives, and stop reading once it is a
            # buffer's worth (resumed at attach) so a fast client cannot grow it.
            self._early.append(data)
            self._early_size += len(data)
            if self._early_size >= HIGH_WATER and self.transport is not None:
                self._paused_early = True
                self.transport.pause_reading()
            return
        write(data)
        self._stats.bytes_to_backend += len(data)

    def eof_received(self) -> bool:
        self.client_eof = True
        backend = self.backend
        if backend is not None:
            if self.backend_eof:
                self._close_both()
            elif backend.can_write_eof():
                backend.write_eof()
        return True  # keep our sending direction open (half-close)

    def pause_writing(self) -> None:
        # The client is slower than the backend: stop reading the backend.
        backend = self.backend
        if backend is not None and not backend.is_closing():
            backend.pause_reading()

    def resume_writing(self) -> None:
        backend = self.backend
        if backend is not None and not backend.is_closing():
            backend.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stats.active -= 1
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            connecting.cancel()
        backend = self.backend
        if backend is not None and not backend.is_closing():
            if exc is None:
                backend.close()
            else:
                backend.abort()

    # ------------------------------------------------------------- backend side

    def _connect_next(self) -> None:
        """Start connecting to the next backend not failed yet; refuse when none is left.

        Callbacks rather than a coroutine with ``asyncio.timeout``: this runs for every
        connection, and a timer handle plus a done callback cost less than a timeout
        context manager around an extra coroutine.
        """
        target = self.target
        backend = target.balancer.pick(self._client_ip, exclude=self._failed)
        if backend is None:
            self._stats.rejected += 1
            if self.transport is not None:
                self.transport.close()
            return
        self._trying = backend
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.create_connection(self._make_backend, backend[0], backend[1]))
        self._connecting = task
        self._timer = loop.call_later(target.connect_timeout, task.cancel)
        task.add_done_callback(self._connect_done)

    def _make_backend(self) -> Backend:
        return Backend(self)

    def _connect_done(self, task: asyncio.Task[Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connecting = None
        if self._closed or self.backend is not None:
            return  # the client left (attach closed the backend), or we are connected
        if task.cancelled():
            error: BaseException = TimeoutError(f"no answer in {self.target.connect_timeout}s")
        else:
            found = task.exception()
            if found is None:
                return  # connected: attach() did the rest
            error = found
        self._stats.backend_errors += 1
        backend = self._trying
        assert backend is not None
        if self._failed is _NONE_FAILED:
            self._failed = set()
        self._failed.add(backend)
        if _debug_enabled():
            log.debug("backend connect failed; trying the next", service=str(self.target.name),
                      backend=f"{backend[0]}:{backend[1]}", error=repr(error))
        self._connect_next()

    def attach(self, backend: asyncio.Transport) -> None:
        """The backend connected: start forwarding (called by :class:`Backend`)."""
        transport = self.transport
        if self._closed or transport is None:
            backend.close()  # the client left while we were connecting
            return
        self.backend = backend
        self._backend_write = backend.write
        if self._early:
            for data in self._early:
                backend.write(data)
            self._stats.bytes_to_backend += self._early_size
            self._early.clear()
        if self.client_eof:
            if backend.can_write_eof():
                backend.write_eof()
        elif self._paused_early:
            self._paused_early = False
            transport.resume_reading()

    def _close_both(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.backend is not None:
            self.backend.close()


class Backend(asyncio.Protocol):
    """The backend's side of one proxied connection."""

    __slots__ = ("_client_write", "_stats", "frontend", "transport")

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self._stats = frontend.target.stats
        self.transport: asyncio.Transport | None = None
        client = frontend.transport
        self._client_write = client.write if client is not None else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.frontend.attach(transport)

    def data_received(self, data: bytes) -> None:
        self._client_write(data)
        self._stats.bytes_to_client += len(data)

    def eof_received(self) -> bool:
        frontend = self.frontend
        frontend.backend_eof = True
        client = frontend.transport
        if client is not None:
            if frontend.client_eof:
                frontend._close_both()
            elif client.can_write_eof():
                client.write_eof()
        return True

    def pause_writing(self) -> None:
        # The backend is slower than the client: stop reading the client.
        client = self.frontend.transport
        if client is not None and not client.is_closing():
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self.frontend.transport
        if client is not None and not client.is_closing():
            client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.frontend.transport
        if client is not None and not client.is_closing():
            if exc is None:
                client.close()
            else:
                client.abort()


__all__ = ["HIGH_WATER", "LOW_WATER", "Backend", "Frontend", "ServicePortTarget"]
