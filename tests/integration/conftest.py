"""Fixtures of the integration tests beyond the plain ``store_cluster`` and ``apiserver``:
store clusters with extra flags, and one store + apiserver shared by the apiserver tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from apiclient import Client, namespace, unique
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.testing.processes import APIServer, StoreCluster

MakeCluster = Callable[..., Awaitable[StoreCluster]]


@pytest.fixture
async def make_store_cluster(tmp_path, request) -> AsyncIterator[MakeCluster]:
    """``await make_store_cluster(*flags)``: three healthy replicas run with extra flags;
    stopped (and their logs printed if the test failed) after the test."""
    clusters: list[StoreCluster] = []

    async def make(*extra_args: str) -> StoreCluster:
        cluster = StoreCluster(tmp_path / f"store-{len(clusters)}", extra_args=list(extra_args))
        clusters.append(cluster)
        cluster.start()
        await cluster.wait_healthy()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()
        node = request.node
        if any(getattr(node, f"rep_{when}", None) is not None
               and getattr(node, f"rep_{when}").failed for when in ("setup", "call")):
            for cluster in clusters:
                print(cluster.logs())


# ------------------------------------------------------------ the shared apiserver


@dataclass
class SharedCluster:
    """Three store replicas and one apiserver, started once for every apiserver test.

    Tests share them, so each works in a namespace of its own (the ``ns`` fixture) and
    gives cluster-scoped objects unique names; none kills or reconfigures them (tests
    that do start their own).
    """

    store: StoreCluster
    apiserver: APIServer


def _wait_serving(address: str, what: str, timeout: float = 30.0) -> None:
    """Poll gRPC health (synchronously: session fixtures run outside the test loop)."""
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


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory) -> Iterator[SharedCluster]:
    base = tmp_path_factory.mktemp("shared")
    store = StoreCluster(base / "store")
    server = APIServer(base / "apiserver", store.endpoints)
    try:
        store.start()
        for member in store.members:
            _wait_serving(member.endpoint, f"store member {member.name}")
        server.start()
        _wait_serving(server.address, "the shared apiserver")
        yield SharedCluster(store, server)
    finally:
        server.stop()
        store.stop()


@pytest.fixture
async def api(shared_cluster, request) -> AsyncIterator[Client]:
    """A client of the shared apiserver (its log shown if the test fails)."""
    client = Client(shared_cluster.apiserver.address)
    try:
        yield client
    finally:
        await client.close()
        node = request.node
        if any(getattr(node, f"rep_{when}", None) is not None
               and getattr(node, f"rep_{when}").failed for when in ("setup", "call")):
            print(shared_cluster.apiserver.logs(120))


@pytest.fixture
async def ns(api) -> str:
    """A fresh namespace of the test's own on the shared apiserver."""
    created = await api.namespaces.create(namespace(unique("t")))
    return created.metadata.name
