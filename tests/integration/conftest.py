"""Fixtures of the store's integration tests beyond the plain ``store_cluster``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

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
        node = request.node
        if any(getattr(node, f"rep_{when}", None) is not None
               and getattr(node, f"rep_{when}").failed for when in ("setup", "call")):
            for cluster in clusters:
                print(cluster.logs())
