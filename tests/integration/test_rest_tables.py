"""Tables of big lists through REST: built off the loop from the per-version JSON
cache, the same rows as a small list's, and their errors still Statuses."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from services.apiserver.rest.resources import THREADED_ENCODING
from skiff.api.manifest import from_dict
from skiff.client import Client
from skiff.testing.fixtures import rest_apiserver
from skiff.testing.processes import APIServer

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture(scope="module")
def server(shared_cluster, tmp_path_factory) -> Iterator[APIServer]:
    with rest_apiserver(tmp_path_factory.mktemp("rest-tables"),
                        shared_cluster.store.endpoints) as api:
        yield api


@pytest.fixture
async def http(server) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    async with aiohttp.ClientSession(
            base_url=server.rest_url, connector=aiohttp.TCPConnector(ssl=context),
            headers={"Authorization": f"Bearer {server.token}"}) as session:
        yield session


async def test_table_of_a_big_list(shared_cluster, http):
    ns = f"tb-{secrets.token_hex(3)}"
    count = THREADED_ENCODING + 20  # over the threshold: the threaded path
    async with Client(shared_cluster.apiserver.address) as client:
        await client.namespaces.create(from_dict(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        gate = asyncio.Semaphore(32)

        async def make(i: int) -> None:
            async with gate:
                await client.pods.create(from_dict({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"p-{i:04d}", "namespace": ns},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))

        await asyncio.gather(*(make(i) for i in range(count)))
    path = f"/api/v1/namespaces/{ns}/pods"
    async with http.get(path, headers={"Accept": TABLE}) as r:
        assert r.status == 200
        table = await r.json()
    assert table["kind"] == "Table" and table["metadata"]["resourceVersion"]
    assert [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Ready", "Status"]
    assert [row["cells"][:3] for row in table["rows"]] == [
        [f"p-{i:04d}", "0/1", "Pending"] for i in range(count)]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    async with http.get(path, params={"limit": "5"}, headers={"Accept": TABLE}) as r:
        small = await r.json()
    assert small["rows"] == table["rows"][:5] and small["metadata"]["continue"]
    async with http.get(path, params={"includeObject": "Bogus"},
                        headers={"Accept": TABLE}) as r:
        status = await r.json()
    assert r.status == 400 and status["kind"] == "Status"
    assert 'includeObject: Unsupported value: "Bogus"' in status["message"]
