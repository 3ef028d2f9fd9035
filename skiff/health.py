"""Waiting on health: gRPC health checks and polling a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")


async def wait_for(predicate: Callable[[], Awaitable[T]], *, timeout: float,
                   interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``await predicate()`` until it is truthy; return its value or raise TimeoutError.

    An exception from the predicate counts as "not yet" (the server may not be up).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = await predicate()
            if value:
                return value
        except Exception as e:
            last_error = e
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s (last error: {last_error!r})")


async def grpc_healthy(address: str, service: str = "") -> bool:
    """Whether the gRPC health service at ``address`` says SERVING."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
