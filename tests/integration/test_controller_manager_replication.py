"""The controller-manager's replication and garbage collector, as a process against a
real apiserver on a real three-replica store.

There are no kubelets and no scheduler: pods stay unbound unless a test binds them
(``Pods.Bind``) and only become Running / Ready when a test says so (UpdateStatus). An
unbound pod is deleted at once; a bound one waits for a kubelet, so tests delete those
with grace 0 themselves. What is checked is what a user sees: pods with controller
ownerReferences, counts following ``spec.replicas``, which pods a scale-down keeps,
adoption and release, status, and the three deletion propagation policies.

The store and apiserver are the session's shared ones; one controller-manager serves
the module and each test works in a namespace of its own. Every wait polls a condition
with a deadline; none sleeps in place of one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import failed, running_controller_manager
from skiff.testing.processes import ControllerManager

#: How long a test waits for the controllers to do something (a slow shared machine).
DEADLINE = 30.0


@pytest.fixture(scope="module")
def controller_manager(shared_cluster, tmp_path_factory) -> Iterator[ControllerManager]:
    with running_controller_manager(tmp_path_factory.mktemp("cm"),
                                    [shared_cluster.apiserver.address],
                                    ["replication", "garbagecollector"]) as manager:
        yield manager


@pytest.fixture
async def client(shared_cluster, controller_manager, request) -> AsyncIterator[Client]:
    api = Client(shared_cluster.apiserver.address)
    try:
        yield api
    finally:
        await api.close()
        if failed(request):
            print(controller_manager.logs(150))


@pytest.fixture
async def ns(client) -> str:
    name = f"rc-{secrets.token_hex(4)}"
    await client.namespaces.create(from_dict(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


# ------------------------------------------------------------------ helpers


def template(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}}


def rc_manifest(name: str, ns: str, replicas: int, labels: dict[str, str]) -> Any:
    return from_dict({"apiVersion": "v1", "kind": "ReplicationController",
                      "metadata": {"name": name, "namespace": ns},
                      "spec": {"replicas": replicas, "selector": labels,
                               "template": template(labels)}})


def pod_manifest(name: str, ns: str, labels: dict[str, str]) -> Any:
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": ns, "labels": labels},
                      "spec": {"containers": [{"name": "app", "image": "busybox"}]}})


async def active_pods(client: Client, ns: str) -> list[core_pb2.Pod]:
    listed = await client.pods.list(ns)
    return [p for p in listed.items  # type: ignore[attr-defined]
            if not p.metadata.HasField("deletion_timestamp")]


def owned_by(pod: core_pb2.Pod, owner: Any) -> bool:
    return any(r.uid == owner.metadata.uid and r.controller and r.block_owner_deletion
               and r.kind == owner.kind and r.name == owner.metadata.name
               for r in pod.metadata.owner_references)


async def wait_pods(client: Client, ns: str, count: int, owner: Any = None,
                    what: str = "") -> list[core_pb2.Pod]:
    """Wait until exactly ``count`` active pods are in ``ns`` (all owned by ``owner``)."""
    async def check() -> list[core_pb2.Pod] | None:
        pods = await active_pods(client, ns)
        if len(pods) != count:
            return None
        if owner is not None and not all(owned_by(p, owner) for p in pods):
            return None
        return pods or [core_pb2.Pod()]
    pods = await wait_for(check, timeout=DEADLINE, interval=0.1,
                          what=what or f"{count} pods in {ns}")
    return [p for p in pods if p.metadata.name]


async def modify(get: Callable[[], Awaitable[Any]], change: Callable[[Any], None],
                 write: Callable[[Any], Awaitable[Any]]) -> Any:
    """Read, change, write; again on Conflict (controllers write the same objects)."""
    for _ in range(20):
        obj = await get()
        change(obj)
        try:
            return await write(obj)
        except errors.Conflict:
            continue
    raise AssertionError("kept conflicting")


async def scale(client: Client, name: str, ns: str, replicas: int) -> None:
    def change(rc: Any) -> None:
        rc.spec.replicas = replicas
    await modify(lambda: client.replication_controllers.get(name, ns), change,
                 client.replication_controllers.update)


async def wait_status(client: Client, name: str, ns: str, **expected: int) -> Any:
    async def check() -> Any:
        rc = await client.replication_controllers.get(name, ns)
        s = rc.status
        return rc if all(getattr(s, k) == v for k, v in expected.items()) else None
    return await wait_for(check, timeout=DEADLINE, interval=0.1, what=f"status {expected}")


async def make_ready(client: Client, pod: core_pb2.Pod) -> None:
    def change(p: Any) -> None:
        p.status.phase = "Running"
        del p.status.conditions[:]
        p.status.conditions.append(core_pb2.PodCondition(type="Ready", status="True"))
        p.status.conditions[0].last_transition_time.GetCurrentTime()
    await modify(lambda: client.pods.get(pod.metadata.name, pod.metadata.namespace), change,
                 client.pods.update_status)


async def bind(client: Client, pod: core_pb2.Pod, node: str) -> None:
    await client.pods.bind(core_pb2.Binding(
        metadata=meta_pb2.ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
        target=meta_pb2.ObjectReference(kind="Node", name=node)))


async def gone(get: Callable[[], Awaitable[Any]]) -> bool:
    try:
        await get()
    except errors.NotFound:
        return True
    return False


# -------------------------------------------------------------------- tests


async def test_rc_converges_scales_ranks_and_replaces(client: Client, ns: str) -> None:
    labels = {"app": "web"}
    rc = await client.replication_controllers.create(rc_manifest("web", ns, 5, labels))
    pods = await wait_pods(client, ns, 5, rc, "5 owned pods")
    assert all(p.metadata.name.startswith("web-") for p in pods)
    assert all(dict(p.metadata.labels) == labels for p in pods)
    await wait_status(client, "web", ns, replicas=5, fully_labeled_replicas=5,
                      ready_replicas=0, observed_generation=rc.metadata.generation)

    await scale(client, "web", ns, 8)
    pods = await wait_pods(client, ns, 8, rc, "scaled up to 8")
    await wait_status(client, "web", ns, replicas=8)

    # Three pods on a node, two of them Ready: a scale-down to 2 must keep those two.
    bound = pods[:3]
    for pod in bound:
        await bind(client, pod, "node-a")
    for pod in bound[:2]:
        await make_ready(client, pod)
    await wait_status(client, "web", ns, ready_replicas=2, available_replicas=2)
    await scale(client, "web", ns, 2)
    kept = await wait_pods(client, ns, 2, rc, "scaled down to 2")
    assert {p.metadata.name for p in kept} == {p.metadata.name for p in bound[:2]}
    await wait_status(client, "web", ns, replicas=2, ready_replicas=2)
    # The bound, not-ready one is deleting gracefully (no kubelet): finish it.
    await client.pods.delete(bound[2].metadata.name, ns, grace_period_seconds=0)

    # A deleted pod is replaced.
    await client.pods.delete(kept[0].metadata.name, ns, grace_period_seconds=0)

    async def replaced() -> bool:
        names = {p.metadata.name for p in await active_pods(client, ns)}
        return len(names) == 2 and kept[0].metadata.name not in names
    await wait_for(replaced, timeout=DEADLINE, interval=0.1, what="a replacement pod")
    await wait_status(client, "web", ns, replicas=2, ready_replicas=1)

    events = await client.events.list(ns)
    reasons = {e.reason for e in events.items}  # type: ignore[attr-defined]
    assert {"SuccessfulCreate", "SuccessfulDelete"} <= reasons


async def test_replicaset_expressions_adopts_and_releases(client: Client, ns: str) -> None:
    orphan = await client.pods.create(pod_manifest("orphan", ns, {"app": "db", "tier": "b"}))
    rs = await client.replica_sets.create(from_dict({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 3,
                 "selector": {"matchLabels": {"app": "db"},
                              "matchExpressions": [{"key": "tier", "operator": "In",
                                                    "values": ["a", "b"]}]},
                 "template": template({"app": "db", "tier": "a"})}}))
    pods = await wait_pods(client, ns, 3, rs, "the orphan adopted and two created")
    assert orphan.metadata.name in {p.metadata.name for p in pods}

    # Relabelled out of the selector: released (no ownerReference) and replaced.
    victim = next(p for p in pods if p.metadata.name != "orphan")

    def relabel(p: Any) -> None:
        p.metadata.labels["tier"] = "c"
    await modify(lambda: client.pods.get(victim.metadata.name, ns), relabel, client.pods.update)

    async def released() -> bool:
        pod = await client.pods.get(victim.metadata.name, ns)
        owned = [p for p in await active_pods(client, ns) if owned_by(p, rs)]
        return not pod.metadata.owner_references and len(owned) == 3
    await wait_for(released, timeout=DEADLINE, interval=0.1, what="release and replacement")

    async def status_ok() -> bool:
        got = await client.replica_sets.get("db", ns)
        return got.status.replicas == 3 and got.status.fully_labeled_replicas == 2
    await wait_for(status_ok, timeout=DEADLINE, interval=0.1, what="replica set status")


async def test_background_deletion_collects_pods(client: Client, ns: str) -> None:
    rc = await client.replication_controllers.create(rc_manifest("bg", ns, 3, {"app": "bg"}))
    await wait_pods(client, ns, 3, rc)
    await client.replication_controllers.delete("bg", ns)
    await wait_pods(client, ns, 0, what="pods garbage collected")
    assert await gone(lambda: client.replication_controllers.get("bg", ns))


async def test_owned_config_maps_and_secrets_are_collected(client: Client, ns: str) -> None:
    rc = await client.replication_controllers.create(rc_manifest("cfg", ns, 0, {"app": "cfg"}))
    owner = [{"apiVersion": "v1", "kind": "ReplicationController", "name": "cfg",
              "uid": rc.metadata.uid}]
    for kind in ("ConfigMap", "Secret", "ServiceAccount"):
        await client.resource(kind).create(from_dict({
            "apiVersion": "v1", "kind": kind,
            "metadata": {"name": "owned", "namespace": ns, "ownerReferences": owner}}))
    await client.replication_controllers.delete("cfg", ns)
    for resource in (client.config_maps, client.secrets, client.service_accounts):
        await wait_for(lambda r=resource: gone(lambda: r.get("owned", ns)),
                       timeout=DEADLINE, interval=0.1, what=f"owned {resource.kind.kind} gone")


async def test_orphan_deletion_keeps_pods(client: Client, ns: str) -> None:
    rc = await client.replication_controllers.create(rc_manifest("or", ns, 3, {"app": "or"}))
    await wait_pods(client, ns, 3, rc)
    await client.replication_controllers.delete("or", ns, propagation_policy="Orphan")
    await wait_for(lambda: gone(lambda: client.replication_controllers.get("or", ns)),
                   timeout=DEADLINE, interval=0.1, what="the RC gone")
    pods = await active_pods(client, ns)
    assert len(pods) == 3
    assert all(not p.metadata.owner_references for p in pods)


async def test_foreground_deletion_removes_pods_first(client: Client, ns: str) -> None:
    rc = await client.replication_controllers.create(rc_manifest("fg", ns, 3, {"app": "fg"}))
    await wait_pods(client, ns, 3, rc)
    await client.replication_controllers.delete("fg", ns, propagation_policy="Foreground")
    await wait_for(lambda: gone(lambda: client.replication_controllers.get("fg", ns)),
                   timeout=DEADLINE, interval=0.1, what="the RC gone")
    # The finalizer is removed only once no dependent is left.
    listed = await client.pods.list(ns)
    assert list(listed.items) == []  # type: ignore[attr-defined]
