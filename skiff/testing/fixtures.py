"""What the test suites' fixtures share: a failed-test check (to show daemon logs), a
blocking health wait for session fixtures, and the store + apiserver a whole session
shares."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.testing.processes import APIServer, StoreCluster

__all__ = ["SharedCluster", "failed", "shared_cluster", "wait_serving"]


def failed(request: Any) -> bool:
    """Whether the pytest test behind ``request`` failed (in setup or in its body); needs
    the ``rep_<when>`` attributes tests/conftest.py's report hook sets."""
    node = request.node
    return any(getattr(node, f"rep_{when}", None) is not None
               and getattr(node, f"rep_{when}").failed for when in ("setup", "call"))


def wait_serving(address: str, what: str, timeout: float = 30.0) -> None:
    """Poll gRPC health until SERVING, blocking: session and module fixtures run outside
    the tests' event loop."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as e:
                last = e
            time.sleep(0.05)
    raise TimeoutError(f"{what} not healthy within {timeout}s (last error: {last!r})")


@dataclass
class SharedCluster:
    """Three store replicas and one apiserver, started once for a whole test session.

    Tests share them, so each works in a namespace of its own and gives cluster-scoped
    objects unique names; none kills or reconfigures them (tests that do start their own).
    """

    store: StoreCluster
    apiserver: APIServer


@contextlib.contextmanager
def shared_cluster(base: Path) -> Iterator[SharedCluster]:
    """Start a :class:`SharedCluster` under ``base``, healthy; stop it on leaving."""
    store = StoreCluster(base / "store")
    server = APIServer(base / "apiserver", store.endpoints)
    try:
        store.start()
        for member in store.members:
            wait_serving(member.endpoint, f"store member {member.name}")
        server.start()
        wait_serving(server.address, "the shared apiserver")
        yield SharedCluster(store, server)
    finally:
        server.stop()
        store.stop()
