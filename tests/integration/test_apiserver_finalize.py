"""Namespaces' finalize subresource: the only write that changes spec.finalizers; a
deleting namespace left without finalizers is removed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from apiclient import namespace, unique
from backends import ON_BOTH_BACKENDS

from skiff.api import errors
from skiff.api.v1 import core_pb2
from skiff.client.client import Client

pytestmark = ON_BOTH_BACKENDS


@pytest.fixture
async def client(api_cluster) -> AsyncIterator[Client]:
    async with Client(api_cluster.apiserver.address, retry_deadline=10.0) as c:
        yield c


def finalizers(ns: core_pb2.Namespace, *names: str) -> core_pb2.Namespace:
    request = core_pb2.Namespace()
    request.CopyFrom(ns)
    del request.spec.finalizers[:]
    request.spec.finalizers.extend(names)
    return request


async def test_update_keeps_finalizers_but_finalize_writes_them(client: Client):
    created = await client.namespaces.create(namespace(unique("fin")))
    name = created.metadata.name
    assert list(created.spec.finalizers) == ["kubernetes"]
    updated = await client.namespaces.update(finalizers(created))
    assert list(updated.spec.finalizers) == ["kubernetes"]
    finalized = await client.namespaces.finalize(
        finalizers(updated, "kubernetes", "example.com/cleanup"))
    assert list(finalized.spec.finalizers) == ["kubernetes", "example.com/cleanup"]
    assert int(finalized.metadata.resource_version) > int(updated.metadata.resource_version)
    # Only spec.finalizers is taken from the request.
    request = finalizers(finalized, "example.com/cleanup")
    request.metadata.labels["sneaky"] = "yes"
    request.status.phase = "Terminating"
    written = await client.namespaces.finalize(request)
    assert list(written.spec.finalizers) == ["example.com/cleanup"]
    assert "sneaky" not in written.metadata.labels and written.status.phase == "Active"
    stored = await client.namespaces.get(name)
    assert list(stored.spec.finalizers) == ["example.com/cleanup"]
    # Not being deleted: no finalizers at all is fine, and the namespace stays.
    await client.namespaces.finalize(finalizers(stored))
    assert not (await client.namespaces.get(name)).spec.finalizers


async def test_finalize_checks_version_and_validates(client: Client):
    created = await client.namespaces.create(namespace(unique("fin")))
    moved = await client.namespaces.finalize(finalizers(created, "kubernetes", "a.io/x"))
    with pytest.raises(errors.Conflict):
        await client.namespaces.finalize(finalizers(created, "kubernetes"))  # stale version
    with pytest.raises(errors.BadRequest):  # INVALID_ARGUMENT, the field named
        await client.namespaces.finalize(finalizers(moved, "not qualified"))
    with pytest.raises(errors.NotFound):
        await client.namespaces.finalize(finalizers(namespace(unique("missing"))))


async def test_a_deleting_namespace_goes_when_its_last_finalizer_does(client: Client):
    created = await client.namespaces.create(namespace(unique("fin")))
    name = created.metadata.name
    await client.namespaces.finalize(finalizers(created, "kubernetes", "example.com/x"))
    deleting = await client.namespaces.delete(name)
    assert deleting.metadata.HasField("deletion_timestamp")
    assert deleting.status.phase == "Terminating"
    request = finalizers(deleting, "example.com/x")
    request.metadata.resource_version = ""
    left = await client.namespaces.finalize(request)
    assert list(left.spec.finalizers) == ["example.com/x"]
    assert (await client.namespaces.get(name)).status.phase == "Terminating"
    await client.namespaces.finalize(finalizers(left))
    with pytest.raises(errors.NotFound):
        await client.namespaces.get(name)


async def test_only_namespaces_are_finalized(client: Client):
    with pytest.raises(errors.BadRequest):
        await client.pods.finalize(core_pb2.Namespace())  # type: ignore[arg-type]
