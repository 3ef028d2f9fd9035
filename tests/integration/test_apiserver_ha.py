"""High availability: two apiservers on one store behave as one, and an apiserver rides
out the SIGKILL (and restart) of a store replica, the leader or a follower: requests
succeed again after a short unavailability (clients retry UNAVAILABLE), and a watcher
on the apiserver keeps every event, none lost, none doubled, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from apiclient import (
    ABORTED,
    ADDED,
    ALREADY_EXISTS,
    DELETED,
    INVALID_ARGUMENT,
    MODIFIED,
    PERMISSION_DENIED,
    Client,
    Resource,
    fails,
    namespace,
    pod,
    retrying,
    rv,
    service,
    store_keys,
    summary,
    unique,
)
from backends import ON_BOTH_BACKENDS

from skiff.api.v1 import core_pb2
from skiff.health import grpc_healthy
from skiff.testing.processes import APIServer, StoreCluster

pytestmark = ON_BOTH_BACKENDS

#: Writes, and the writes after which a replica is killed and restarted.
WRITES, KILL_AT, RESTART_AT = 60, 20, 40


async def test_two_apiservers_behave_as_one(api: Client, ns: str, api_cluster, tmp_path):
    second = APIServer(tmp_path / "b", api_cluster.store.endpoints, name="apiserver-b")
    second.start()
    try:
        await second.wait_healthy()
        async with Client(second.address) as b:
            await _behave_as_one(api, b, ns)
    except BaseException:
        print(second.logs(200))
        raise
    finally:
        second.stop()


async def _behave_as_one(a: Client, b: Client, ns: str) -> None:
    # A write on one is read, listed and watched on the other at once.
    created = await a.pods.create(pod("p", ns, labels={"app": "web"}))
    assert await b.pods.get("p", ns) == created
    assert [p.metadata.uid for p in (await b.pods.list(ns)).items] == [created.metadata.uid]
    async with b.pods.watch(ns, resource_version=created.metadata.resource_version) as watch:
        created.metadata.labels["v"] = "2"
        updated = await a.pods.update(created)
        assert summary(await watch.take(1)) == [(MODIFIED, "p", rv(updated))]
        # Either one refuses a version the other made stale.
        created.metadata.labels["v"] = "stale"
        await fails(ABORTED, b.pods.update(created))
        gone = await b.pods.delete("p", ns)
        assert summary(await watch.take(1)) == [(DELETED, "p", rv(gone))]
        assert not await a.pods.exists("p", ns)

    # A pod bound through both at once is bound once.
    await a.pods.create(pod("contested", ns))
    results = await asyncio.gather(*(client.bind("contested", f"n{i}", ns)
                                     for i in range(10) for client in (a, b)),
                                   return_exceptions=True)
    won = [r for r in results if isinstance(r, core_pb2.Binding)]
    assert len(won) == 1, results
    assert all(r.code() == ABORTED for r in results if isinstance(r, grpc.aio.AioRpcError))
    assert (await b.pods.get("contested", ns)).spec.node_name == won[0].target.name

    # A cluster IP taken through one is taken for the other.
    first = await a.services.create(service("first", ns))
    await fails(INVALID_ARGUMENT, b.services.create(
        service("second", ns, cluster_ip=first.spec.cluster_ip)), "spec.clusterIP")

    # A namespace deleted through one takes no new content through the other, at once
    # (however far the other's watch cache lags behind).
    async def terminate_then_create(i: int) -> None:
        doomed = unique(f"doomed{i}")
        await b.namespaces.create(namespace(doomed))
        await a.pods.create(pod("x", doomed))  # each apiserver has used it
        await a.namespaces.delete(doomed)
        await fails(PERMISSION_DENIED, b.pods.create(pod("new", doomed)), "being terminated")

    await asyncio.gather(*(terminate_then_create(i) for i in range(20)))


# ------------------------------------------------------------------ store failures


async def _create(resource: Resource, obj: Any) -> Any:
    """Create ``obj``, retrying while the store is unavailable. A retry that finds the
    object exists means an earlier, unanswered attempt did create it."""
    tried = False

    async def attempt() -> Any:
        nonlocal tried
        try:
            return await resource.create(obj)
        except grpc.aio.AioRpcError as e:
            if e.code() == ALREADY_EXISTS and tried:
                return await resource.get(obj.metadata.name, obj.metadata.namespace)
            raise
        finally:
            tried = True

    return await retrying(attempt)


@pytest.mark.parametrize("victim", ["leader", "follower"])
async def test_a_watcher_keeps_every_event_while_a_store_replica_is_killed(
        store_cluster: StoreCluster, tmp_path, victim: str):
    leader = await store_cluster.leader()
    dead = leader if victim == "leader" else (leader + 1) % len(store_cluster.members)
    # An apiserver sends its calls and its store watches to its first endpoint until
    # that one fails: listing the victim first puts every watch on it.
    endpoints = store_cluster.endpoints
    apiserver = APIServer(tmp_path / "apiserver", [endpoints[dead]] + [
        e for i, e in enumerate(endpoints) if i != dead])
    apiserver.start()
    try:
        await apiserver.wait_healthy()
        await _keep_every_event(store_cluster, apiserver, dead)
    except BaseException:
        print(apiserver.logs(200))
        raise
    finally:
        apiserver.stop()


async def _keep_every_event(store_cluster: StoreCluster, apiserver: APIServer,
                            dead: int) -> None:
    async with Client(apiserver.address) as api:
        created = await _create(api.namespaces, namespace(unique("ha")))
        ns, now = created.metadata.name, created.metadata.resource_version
        async with api.pods.watch(ns, resource_version=now) as watch, \
                api.pods.watch(ns, resource_version=now, label_selector="even=yes") as evens:
            written: list[tuple[str, str, int]] = []
            for i in range(WRITES):
                if i == KILL_AT:
                    store_cluster.kill(dead)
                if i == RESTART_AT:
                    store_cluster.restart(dead)
                name = f"w{i:02}"
                labels = {"even": "yes" if i % 2 == 0 else "no"}
                created = await _create(api.pods, pod(name, ns, labels=labels))
                written.append((ADDED, name, rv(created)))
            events = await watch.take(WRITES, timeout=30)
            assert summary(events) == written
            assert summary(await evens.take(WRITES // 2, timeout=30)) == written[::2]
            assert apiserver.daemon.alive and await grpc_healthy(apiserver.address)

            # Nothing twice: after the restarted replica is back, a sentinel is next.
            await store_cluster.wait_healthy(members=[dead])
            sentinel = await _create(api.pods, pod("sentinel", ns, labels={"even": "yes"}))
            assert summary(await watch.take(1)) == [(ADDED, "sentinel", rv(sentinel))]
            assert summary(await evens.take(1)) == [(ADDED, "sentinel", rv(sentinel))]

        listed = await retrying(lambda: api.pods.list(ns))
        assert len(listed.items) == WRITES + 1
    # The restarted replica caught up: it holds every pod too.
    keys = await store_keys(store_cluster.members[dead].endpoint, f"/registry/pods/{ns}/")
    assert len(keys) == WRITES + 1
