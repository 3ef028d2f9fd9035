"""Namespace lifecycle: the system namespaces exist from the start and cannot be
deleted; nothing is created in a namespace that is missing (NOT_FOUND) or terminating
(PERMISSION_DENIED); deleting a namespace makes it Terminating, not gone.
"""

from __future__ import annotations

import time

from apiclient import (
    ALREADY_EXISTS,
    MODIFIED,
    NOT_FOUND,
    PERMISSION_DENIED,
    Client,
    fails,
    namespace,
    node,
    pod,
    rv,
    service,
    summary,
    unique,
)
from backends import ON_BOTH_BACKENDS

pytestmark = ON_BOTH_BACKENDS


async def test_the_system_namespaces_exist_and_cannot_be_deleted(api: Client):
    names = await api.namespaces.names()
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert name in names
        found = await api.namespaces.get(name)
        assert found.status.phase == "Active" and list(found.spec.finalizers) == ["kubernetes"]
    for name in ("default", "kube-system"):
        await fails(PERMISSION_DENIED, api.namespaces.delete(name), "may not be deleted")
        found = await api.namespaces.get(name)
        assert found.status.phase == "Active"
        assert not found.metadata.HasField("deletion_timestamp")


async def test_nothing_is_created_in_a_missing_namespace(api: Client):
    missing = unique("missing")
    await fails(NOT_FOUND, api.pods.create(pod("p", missing)),
                f'namespaces "{missing}" not found')
    await fails(NOT_FOUND, api.services.create(service("s", missing)), "namespaces")
    # Cluster-scoped objects have no namespace to need.
    name = unique("n")
    assert (await api.nodes.create(node(name))).metadata.namespace == ""
    # Once the namespace exists, the create succeeds.
    await api.namespaces.create(namespace(missing))
    assert (await api.pods.create(pod("p", missing))).metadata.namespace == missing


async def test_a_deleted_namespace_terminates_and_refuses_new_content(api: Client):
    name = unique("doomed")
    created = await api.namespaces.create(namespace(name))
    existing = await api.pods.create(pod("existing", name))
    async with api.namespaces.watch(resource_version=created.metadata.resource_version,
                                    field_selector=f"metadata.name={name}") as watch:
        started = time.time()
        deleting = await api.namespaces.delete(name)
        assert deleting.status.phase == "Terminating"
        assert deleting.metadata.HasField("deletion_timestamp")
        assert started - 1 <= deleting.metadata.deletion_timestamp.seconds <= time.time()
        assert summary(await watch.take(1)) == [(MODIFIED, name, rv(deleting))]

        # At once, on this apiserver: no new content.
        await fails(PERMISSION_DENIED, api.pods.create(pod("new", name)),
                    f"unable to create new content in namespace {name} because it is being "
                    "terminated")
        await fails(PERMISSION_DENIED, api.services.create(service("new", name)))
        assert await api.namespaces.get(name) == deleting
        assert name in await api.namespaces.names(field_selector="status.phase=Terminating")
        assert name not in await api.namespaces.names(field_selector="status.phase=Active")
        # Deleting again changes nothing; the name stays taken.
        assert await api.namespaces.delete(name) == deleting
        await fails(ALREADY_EXISTS, api.namespaces.create(namespace(name)))

    # What is in it stays (the namespace controller removes it) and may still change.
    existing.metadata.labels["still"] = "here"
    assert (await api.pods.update(existing)).metadata.labels["still"] == "here"
    await api.pods.delete("existing", name)
    assert await api.pods.names(name) == []
