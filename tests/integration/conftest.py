"""Fixtures of the integration tests beyond the plain ``store_cluster`` and ``apiserver``:
store clusters with extra flags, and a client and namespace on the session's shared
store + apiserver (``shared_cluster``, in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from apiclient import Client, namespace, unique

from skiff.testing.fixtures import failed
from skiff.testing.processes import StoreCluster

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
        if failed(request):
            for cluster in clusters:
                print(cluster.logs())


# ------------------------------------------------------------ the shared apiserver


@pytest.fixture
async def api(shared_cluster, request) -> AsyncIterator[Client]:
    """A client of the shared apiserver (its log shown if the test fails)."""
    client = Client(shared_cluster.apiserver.address)
    try:
        yield client
    finally:
        await client.close()
        if failed(request):
            print(shared_cluster.apiserver.logs(120))


@pytest.fixture
async def ns(api) -> str:
    """A fresh namespace of the test's own on the shared apiserver."""
    created = await api.namespaces.create(namespace(unique("t")))
    return created.metadata.name
