"""Fixtures of the integration tests beyond the plain ``store_cluster`` and ``apiserver``:
store clusters with extra flags, a client and namespace on the store + apiserver the
test runs against (``api_cluster``: the session's shared one, in tests/conftest.py,
or the same on a real etcd), and a fresh store of either backend (``store``).

A test marked ``store_backends`` (tests/integration/backends.py) is run once per named
backend, with ``api_cluster`` or ``store`` parametrized over them.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from apiclient import Client, namespace, unique

from skiff.testing.fixtures import SharedCluster, failed, new_store
from skiff.testing.fixtures import shared_cluster as start_shared_cluster
from skiff.testing.processes import ProcessCluster, StoreCluster

MakeCluster = Callable[..., Awaitable[StoreCluster]]
#: The fixtures that stand for "the store backend" and are parametrized over them.
BACKEND_FIXTURES = ("api_cluster", "store")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a ``store_backends`` test's backend fixture over the names it gives."""
    marker = metafunc.definition.get_closest_marker("store_backends")
    if marker is None:
        return
    used = [name for name in BACKEND_FIXTURES if name in metafunc.fixturenames]
    if len(used) > 1:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: uses both {used}; "
                                "a test runs against one store backend")
    if used:
        metafunc.parametrize(used[0], marker.args, indirect=True)


def _need_etcd() -> None:
    if shutil.which("etcd") is None:
        pytest.skip("no etcd on PATH (Debian: apt-get install etcd-server)")


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


@pytest.fixture
async def store(tmp_path, request) -> AsyncIterator[ProcessCluster]:
    """A fresh three-member store of the test's backend (Skiff's unless parametrized),
    healthy; stopped (and its logs printed if the test failed) after the test."""
    backend = getattr(request, "param", "skiff")
    if backend == "etcd":
        _need_etcd()
    cluster = new_store(backend, tmp_path / f"store-{backend}")
    cluster.start()
    try:
        await cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        if failed(request):
            print(cluster.logs())


# ------------------------------------------------------------ the shared apiserver


@pytest.fixture(scope="session")
def api_cluster(request, tmp_path_factory) -> Iterator[SharedCluster]:
    """The store + apiserver ``api`` and ``ns`` talk to: the session's shared cluster,
    or, for the etcd backend, an apiserver on a real three-member etcd, also started
    once for the session (pytest groups the tests of one backend together)."""
    backend = getattr(request, "param", "skiff")
    if backend == "skiff":
        yield request.getfixturevalue("shared_cluster")
        return
    _need_etcd()
    with start_shared_cluster(tmp_path_factory.mktemp(f"shared-{backend}"), backend) as cluster:
        yield cluster


@pytest.fixture
async def api(api_cluster, request) -> AsyncIterator[Client]:
    """A client of the shared apiserver (its log shown if the test fails)."""
    client = Client(api_cluster.apiserver.address)
    try:
        yield client
    finally:
        await client.close()
        if failed(request):
            print(api_cluster.apiserver.logs(120))


@pytest.fixture
async def ns(api) -> str:
    """A fresh namespace of the test's own on the shared apiserver."""
    created = await api.namespaces.create(namespace(unique("t")))
    return created.metadata.name
