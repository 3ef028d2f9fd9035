"""What the test suites' fixtures share: a failed-test check (to show daemon logs), a
blocking health wait for session fixtures, the store backends (Skiff's own replicas or
a real etcd) and the store + apiserver a whole session shares, and leader-elected
daemons with short election timings."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.testing.etcd import EtcdCluster
from skiff.testing.processes import APIServer, ControllerManager, ProcessCluster, StoreCluster

__all__ = ["BACKENDS", "SharedCluster", "election_flags", "failed", "new_store",
           "running_controller_manager", "shared_cluster", "wait_serving"]

#: The stores the apiserver runs on: Skiff's own replicas, or a real etcd (Debian's 3.4).
BACKENDS = ("skiff", "etcd")


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


def new_store(backend: str, base: Path) -> ProcessCluster:
    """Three members of ``backend`` (one of :data:`BACKENDS`) under ``base``, not started:
    Skiff's store replicas, or etcd members (FileNotFoundError when etcd is missing)."""
    if backend == "skiff":
        return StoreCluster(base)
    if backend == "etcd":
        return EtcdCluster(base)
    raise ValueError(f"unknown store backend {backend!r} (one of {', '.join(BACKENDS)})")


@dataclass
class SharedCluster:
    """Three store members and one apiserver, started once for a whole test session.

    Tests share them, so each works in a namespace of its own and gives cluster-scoped
    objects unique names; none kills or reconfigures them (tests that do start their own).
    ``store`` is Skiff's store (a :class:`StoreCluster`) or, when ``backend`` is
    ``"etcd"``, a real etcd cluster: only the etcd v3 API is common to both.
    """

    store: ProcessCluster
    apiserver: APIServer
    backend: str = "skiff"


@contextlib.contextmanager
def shared_cluster(base: Path, backend: str = "skiff") -> Iterator[SharedCluster]:
    """Start a :class:`SharedCluster` on ``backend`` under ``base``, healthy; stop it on
    leaving."""
    store = new_store(backend, base / "store")
    server = APIServer(base / "apiserver", store.endpoints)
    try:
        store.start()
        # SERVING: for Skiff's replicas a leader known and caught up; etcd says so once
        # its gRPC server is up, and the apiserver below waits for a leader by retrying.
        for member in store.members:
            wait_serving(member.endpoint, f"store member {member.name}")
        server.start()
        wait_serving(server.address, "the shared apiserver")
        yield SharedCluster(store, server, backend)
    finally:
        server.stop()
        store.stop()


def election_flags(lease_duration: float, renew_deadline: float,
                   retry_period: float = 0.5) -> list[str]:
    """A leader-elected daemon's flags for these timings (seconds): tests elect faster
    than the 15 s / 10 s / 2 s defaults."""
    return ["--leader-elect-lease-duration", str(lease_duration),
            "--leader-elect-renew-deadline", str(renew_deadline),
            "--leader-elect-retry-period", str(retry_period)]


@contextlib.contextmanager
def running_controller_manager(base: Path, servers: list[str], controllers: list[str],
                               ) -> Iterator[ControllerManager]:
    """A started controller-manager running ``controllers`` (5 s lease, so it leads
    soon after a previous holder in the same session goes); stopped on leaving."""
    manager = ControllerManager(base, servers, name=f"cm-{secrets.token_hex(3)}",
                                controllers=controllers, extra_args=election_flags(5, 3))
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@contextlib.contextmanager
def rest_apiserver(base: Path, store_endpoints: list[str], *,
                   extra_args: list[str] | None = None) -> Iterator[APIServer]:
    """An apiserver also serving the Kubernetes REST API over HTTPS (its CA, token and
    kubeconfig under ``base``), healthy; stopped on leaving. Blocking, for module
    fixtures."""
    server = APIServer(base, store_endpoints, rest=True, extra_args=extra_args)
    try:
        server.start()
        wait_serving(server.address, "the REST apiserver")
        yield server
    finally:
        server.stop()
