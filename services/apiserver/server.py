"""The apiserver's gRPC edge: one servicer per kind, all of the same shape.

Each method delegates to the kind's registry and maps an API error to its status code
through :func:`skiff.api.errors.to_grpc` (the one table). Requests are counted and
timed by service, method and code; mutations and failures are logged as access log
lines, reads only at debug level.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from prometheus_client import Counter, Gauge, Histogram

from services.apiserver.binding import bind
from services.apiserver.finalize import finalize
from services.apiserver.registry import Registry
from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.logging import get_logger
from skiff.serialized import accepting_bytes

log = get_logger("apiserver.access")

REQUESTS = Counter("skiff_apiserver_requests_total", "API requests answered",
                   ["service", "method", "code"])
LATENCY = Histogram("skiff_apiserver_request_seconds", "API request latency",
                    ["service", "method"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
WATCHERS = Gauge("skiff_apiserver_watchers", "Open watch streams", ["service"])

READS = frozenset({"Get", "List", "Watch"})


def _unary(method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Message]]
           ) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Message]]:
    """Map API errors to gRPC statuses, count, time and log the call."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: ResourceServicer, request: Any,
                      context: grpc.aio.ServicerContext) -> Message:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except errors.APIError as e:
            code, message = errors.to_grpc(e)
            await context.abort(code, message)
            raise  # abort raises; this line is never reached
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("request failed", service=self.service, method=name)
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.observe(name, code, elapsed, request, context)

    return wrapper


class ResourceServicer:
    """Create, Get, List, Update, UpdateStatus, Delete and Watch of one kind."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.service = registry.kind.service_name
        self._latency = {m: LATENCY.labels(self.service, m) for m in
                         ("Create", "Get", "List", "Update", "UpdateStatus", "Delete",
                          "Watch", "Bind", "Finalize")}
        self._watchers = WATCHERS.labels(self.service)
        # Looking a labelled child up costs more than counting: keep each one found.
        self._requests: dict[tuple[str, grpc.StatusCode], Any] = {}

    def observe(self, method: str, code: grpc.StatusCode, elapsed: float, request: Any,
                context: grpc.aio.ServicerContext) -> None:
        counter = self._requests.get((method, code))
        if counter is None:
            counter = self._requests[method, code] = REQUESTS.labels(
                self.service, method, code.name)
        counter.inc()
        self._latency[method].observe(elapsed)
        if method in READS and code == grpc.StatusCode.OK:
            return
        md = getattr(request, "metadata", request)
        log.info("request", service=self.service, method=method, code=code.name,
                 namespace=getattr(md, "namespace", ""), name=getattr(md, "name", ""),
                 ms=round(elapsed * 1000, 2), peer=context.peer())

    @_unary
    async def Create(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        return await self.registry.create(request)

    @_unary
    async def Get(self, request: meta_pb2.GetRequest,
                  context: grpc.aio.ServicerContext) -> Message:
        return await self.registry.get(request.namespace, request.name,
                                       request.resource_version)

    @_unary
    async def List(self, request: meta_pb2.ListOptions,
                   context: grpc.aio.ServicerContext) -> Message:
        return await self.registry.list(request)

    @_unary
    async def Update(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        return await self.registry.update(request)

    @_unary
    async def UpdateStatus(self, request: Message,
                           context: grpc.aio.ServicerContext) -> Message:
        return await self.registry.update_status(request)

    @_unary
    async def Delete(self, request: meta_pb2.DeleteRequest,
                     context: grpc.aio.ServicerContext) -> Message:
        return await self.registry.delete(request)

    async def Watch(self, request: meta_pb2.ListOptions,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        self._watchers.inc()
        try:
            events = self.registry.watch(request)
            deadline = (time.monotonic() + request.timeout_seconds
                        if request.timeout_seconds > 0 else None)
            async for event in _until(events, deadline):
                yield event
        except errors.APIError as e:
            code, message = errors.to_grpc(e)
            await context.abort(code, message)
        finally:
            self._watchers.dec()
            self.observe("Watch", code, time.perf_counter() - started, request, context)


class PodsServicer(ResourceServicer):
    """Pods add Bind: the scheduler's way of setting spec.nodeName."""

    @_unary
    async def Bind(self, request: core_pb2.Binding,
                   context: grpc.aio.ServicerContext) -> core_pb2.Binding:
        return await bind(self.registry, request)


class NamespacesServicer(ResourceServicer):
    """Namespaces add Finalize: the namespace controller's way of changing
    spec.finalizers (see :mod:`services.apiserver.finalize`)."""

    @_unary
    async def Finalize(self, request: core_pb2.Namespace,
                       context: grpc.aio.ServicerContext) -> core_pb2.Namespace:
        return await finalize(self.registry, request)


async def _until(events: AsyncIterator[bytes], deadline: float | None
                 ) -> AsyncIterator[bytes]:
    """``events`` until ``deadline`` (monotonic), if any: a watch's timeoutSeconds."""
    if deadline is None:
        async for event in events:
            yield event
        return
    iterator = events.__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            # A timer, not wait_for: wait_for makes a task (and a loop turn) per event,
            # which doubled the cost of every event sent to a watch with a timeout.
            # Only the wait is bounded, never the yield: the deadline must not cancel
            # the RPC while gRPC sends.
            async with asyncio.timeout(remaining):
                event = await iterator.__anext__()
        except (StopAsyncIteration, TimeoutError):
            return
        yield event


class _WatchAcceptingBytes:
    """What generated ``add_*Servicer_to_server`` functions register with, passed on
    to ``server`` with Watch's serializer also taking the registry's encoded events."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers come again, by name, to add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        handlers = {name: accepting_bytes(h) if name == "Watch" else h
                    for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),))
        self._server.add_registered_method_handlers(service, handlers)


def add_servicer(registry: Registry, server: grpc.aio.Server) -> None:
    """Serve the registry's kind on ``server``."""
    registry.kind.add_servicer(servicer_for(registry), _WatchAcceptingBytes(server))


def servicer_for(registry: Registry) -> ResourceServicer:
    """The servicer of a registry's kind."""
    if registry.kind.kind == "Pod":
        return PodsServicer(registry)
    if registry.kind.kind == "Namespace":
        return NamespacesServicer(registry)
    return ResourceServicer(registry)
