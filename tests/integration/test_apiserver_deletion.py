"""Deletion and binding: graceful deletion of pods bound to a node, finalizers (an
object being deleted stays until they are gone), propagation policies, and Pods.Bind
(written once: a second bind, or a bind of a deleting pod, is a conflict).
"""

from __future__ import annotations

import asyncio
import time

import grpc
from apiclient import (
    ABORTED,
    ADDED,
    ALREADY_EXISTS,
    DELETED,
    INVALID_ARGUMENT,
    MODIFIED,
    NOT_FOUND,
    Client,
    fails,
    pod,
    rv,
    summary,
    unique,
)
from backends import ON_BOTH_BACKENDS

from skiff.api.v1 import apps_pb2, core_pb2, meta_pb2

pytestmark = ON_BOTH_BACKENDS

HOLD = "example.com/hold"


def _deleting_since(obj: core_pb2.Pod, grace: int, started: float) -> None:
    """``obj`` is being deleted with ``grace`` seconds, counted from about ``started``."""
    md = obj.metadata
    assert md.HasField("deletion_timestamp") and md.deletion_grace_period_seconds == grace
    assert started - 1 <= md.deletion_timestamp.seconds - grace <= time.time() + 1


async def test_a_bound_pod_is_deleted_gracefully(api: Client, ns: str):
    await api.pods.create(pod("p", ns))
    bound = await api.bind("p", "n1", ns)
    async with api.pods.watch(ns, resource_version=bound.metadata.resource_version) as watch:
        started = time.time()
        deleting = await api.pods.delete("p", ns)
        _deleting_since(deleting, 30, started)  # the pod's default grace period
        assert await api.pods.get("p", ns) == deleting
        assert summary(await watch.take(1)) == [(MODIFIED, "p", rv(deleting))]

        # Deleting again with a shorter grace period cuts it short, never lengthens it.
        shorter = await api.pods.delete("p", ns, grace=10)
        _deleting_since(shorter, 10, started)
        unchanged = await api.pods.delete("p", ns, grace=20)
        assert unchanged == shorter
        assert summary(await watch.take(1)) == [(MODIFIED, "p", rv(shorter))]

        # The kubelet, done, deletes it with grace 0: then it is gone.
        gone = await api.pods.delete("p", ns, grace=0)
        assert summary(await watch.take(1)) == [(DELETED, "p", rv(gone))]
        await fails(NOT_FOUND, api.pods.get("p", ns))

        # A re-created pod of that name is another pod.
        fresh = await api.pods.create(pod("p", ns))
        assert not fresh.metadata.HasField("deletion_timestamp")
        assert summary(await watch.take(1)) == [(ADDED, "p", rv(fresh))]

    # The grace period comes from the request, else from the pod's spec.
    await api.pods.create(pod("short", ns, termination_grace_period_seconds=7))
    await api.bind("short", "n1", ns)
    _deleting_since(await api.pods.delete("short", ns), 7, started)
    await api.pods.create(pod("asked", ns))
    await api.bind("asked", "n1", ns)
    _deleting_since(await api.pods.delete("asked", ns, grace=3), 3, started)


async def test_a_pod_no_kubelet_runs_is_deleted_at_once(api: Client, ns: str):
    await api.pods.create(pod("unbound", ns))
    deleted = await api.pods.delete("unbound", ns)
    assert not deleted.metadata.HasField("deletion_timestamp")
    await fails(NOT_FOUND, api.pods.get("unbound", ns))

    await api.pods.create(pod("done", ns))
    await api.bind("done", "n1", ns)
    done = await api.pods.get("done", ns)
    done.status.phase = "Succeeded"
    await api.pods.update_status(done)
    await api.pods.delete("done", ns)
    await fails(NOT_FOUND, api.pods.get("done", ns))


async def test_finalizers_hold_an_object_until_they_are_removed(api: Client, ns: str):
    rs = _replica_set("held", ns)
    rs.metadata.finalizers.append(HOLD)
    created = await api.replicasets.create(rs)
    async with api.replicasets.watch(ns, resource_version=created.metadata.resource_version
                                     ) as watch:
        deleting = await api.replicasets.delete("held", ns)
        md = deleting.metadata
        assert md.HasField("deletion_timestamp") and md.deletion_grace_period_seconds == 0
        assert list(md.finalizers) == [HOLD] and rv(deleting) > rv(created)
        assert await api.replicasets.get("held", ns) == deleting
        assert summary(await watch.take(1)) == [(MODIFIED, "held", rv(deleting))]
        # Deleting again changes nothing; the name stays taken.
        assert await api.replicasets.delete("held", ns) == deleting
        await fails(ALREADY_EXISTS, api.replicasets.create(_replica_set("held", ns)))
        # Other updates keep the deletion (a client cannot undo it).
        relabelled = apps_pb2.ReplicaSet()
        relabelled.CopyFrom(deleting)
        relabelled.metadata.labels["note"] = "x"
        relabelled.metadata.ClearField("deletion_timestamp")
        relabelled = await api.replicasets.update(relabelled)
        assert relabelled.metadata.deletion_timestamp == md.deletion_timestamp
        assert summary(await watch.take(1)) == [(MODIFIED, "held", rv(relabelled))]
        # ... nor hold it longer: no new finalizers once it is being deleted.
        more = apps_pb2.ReplicaSet()
        more.CopyFrom(relabelled)
        more.metadata.finalizers.append("example.com/another")
        await fails(INVALID_ARGUMENT, api.replicasets.update(more), "metadata.finalizers")

        # The finalizer's owner is done: the update that removes it removes the object.
        del relabelled.metadata.finalizers[:]
        removed = await api.replicasets.update(relabelled)
        events = await watch.take(1)
        assert summary(events) == [(DELETED, "held", rv(removed))]
        await fails(NOT_FOUND, api.replicasets.get("held", ns))

    # A pod with a finalizer waits for it even when deleted with grace 0.
    await api.pods.create(pod("p", ns, finalizers=[HOLD]))
    await api.bind("p", "n1", ns)
    waiting = await api.pods.delete("p", ns, grace=0)
    assert waiting.metadata.HasField("deletion_timestamp")
    assert waiting.metadata.deletion_grace_period_seconds == 0
    del waiting.metadata.finalizers[:]
    await api.pods.update(waiting)
    await fails(NOT_FOUND, api.pods.get("p", ns))


async def test_propagation_policies(api: Client, ns: str):
    for name, policy, finalizer in (("orphan", "Orphan", "orphan"),
                                    ("fg", "Foreground", "foregroundDeletion")):
        await api.replicasets.create(_replica_set(name, ns))
        deleting = await api.replicasets.delete(name, ns, propagation_policy=policy)
        assert list(deleting.metadata.finalizers) == [finalizer]
        assert deleting.metadata.HasField("deletion_timestamp")
        assert await api.replicasets.exists(name, ns)
    await api.replicasets.create(_replica_set("bg", ns))
    await api.replicasets.delete("bg", ns, propagation_policy="Background")
    assert not await api.replicasets.exists("bg", ns)
    await api.replicasets.create(_replica_set("bad", ns))
    await fails(INVALID_ARGUMENT, api.replicasets.delete("bad", ns, propagation_policy="Now"),
                "propagationPolicy")
    assert await api.replicasets.exists("bad", ns)


async def test_bind_sets_the_node_once(api: Client, ns: str):
    created = await api.pods.create(pod("p", ns))
    binding = await api.bind("p", "n1", ns)
    bound = await api.pods.get("p", ns)
    assert bound.spec.node_name == "n1" and rv(bound) == int(binding.metadata.resource_version)
    assert rv(bound) > rv(created) and binding.metadata.uid == created.metadata.uid
    (scheduled,) = [c for c in bound.status.conditions if c.type == "PodScheduled"]
    assert scheduled.status == "True" and scheduled.last_transition_time.seconds > 0
    assert bound.status.phase == "Pending"  # the rest of the status is the kubelet's

    await fails(ABORTED, api.bind("p", "n2", ns), 'already assigned to node "n1"')
    await fails(ABORTED, api.bind("p", "n1", ns))
    # Update may not move a pod either.
    bound.spec.node_name = "n2"
    await fails(INVALID_ARGUMENT, api.pods.update(bound))
    assert (await api.pods.get("p", ns)).spec.node_name == "n1"

    await fails(NOT_FOUND, api.bind("missing", "n1", ns))
    await api.pods.create(pod("q", ns))
    await fails(ABORTED, api.bind("q", "n1", ns, uid="another-uid"), "Precondition failed")
    await fails(INVALID_ARGUMENT, api.bind("q", "", ns), "target.name")
    assert (await api.pods.get("q", ns)).spec.node_name == ""

    # A pod being deleted cannot be bound.
    await api.pods.create(pod("leaving", ns, finalizers=[HOLD]))
    await api.pods.delete("leaving", ns)
    await fails(ABORTED, api.bind("leaving", "n1", ns), "being deleted")


async def test_concurrent_binds_of_one_pod_exactly_one_wins(api: Client, ns: str):
    for _ in range(3):
        name = unique("contested")
        await api.pods.create(pod(name, ns))
        nodes = [f"n{i}" for i in range(20)]
        results = await asyncio.gather(*(api.bind(name, n, ns) for n in nodes),
                                       return_exceptions=True)
        won = [n for n, r in zip(nodes, results, strict=True)
               if isinstance(r, core_pb2.Binding)]
        lost = [r for r in results if not isinstance(r, core_pb2.Binding)]
        assert len(won) == 1, results
        assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == ABORTED for r in lost)
        assert (await api.pods.get(name, ns)).spec.node_name == won[0]


def _replica_set(name: str, ns: str) -> apps_pb2.ReplicaSet:
    labels = {"app": name}
    return apps_pb2.ReplicaSet(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=ns),
        spec=apps_pb2.ReplicaSetSpec(
            selector=meta_pb2.LabelSelector(match_labels=labels),
            template=core_pb2.PodTemplateSpec(
                metadata=meta_pb2.ObjectMeta(labels=labels),
                spec=core_pb2.PodSpec(containers=[core_pb2.Container(
                    name="main", image="busybox:1.36")]))))
