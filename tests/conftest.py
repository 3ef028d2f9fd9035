"""Shared fixtures: real daemons on free loopback ports, their logs shown when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from skiff.testing.fixtures import SharedCluster, failed
from skiff.testing.fixtures import shared_cluster as start_shared_cluster
from skiff.testing.processes import APIServer, StoreCluster


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory) -> Iterator[SharedCluster]:
    """Three store replicas and an apiserver shared by the session's tests."""
    with start_shared_cluster(tmp_path_factory.mktemp("shared")) as cluster:
        yield cluster


@pytest.fixture
async def store_cluster(tmp_path, request) -> AsyncIterator[StoreCluster]:
    """Three real skiff-store replicas, healthy; stopped (and logs printed on failure) after."""
    cluster = StoreCluster(tmp_path / "store")
    cluster.start()
    try:
        await cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        if failed(request):
            print(cluster.logs())


@pytest.fixture
async def apiserver(store_cluster, tmp_path, request) -> AsyncIterator[APIServer]:
    """A real skiff-apiserver on the three-replica store, healthy; stopped after."""
    server = APIServer(tmp_path / "apiserver", store_cluster.endpoints)
    server.start()
    try:
        await server.wait_healthy()
        yield server
    finally:
        server.stop()
        if failed(request):
            print(server.logs())
