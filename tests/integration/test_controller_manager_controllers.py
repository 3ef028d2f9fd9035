"""The endpoints, namespace and node lifecycle controllers, run in this process against a
real apiserver (each test its own store and apiserver), with a real client and shared
informers: what they write is read back through the API.

The tests play the other components: they bind pods and post their status (the
kubelet), renew node Leases (the kubelet's heartbeat) and stop doing so (a dead node).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from services.controller_manager.endpoints import EndpointsController
from services.controller_manager.namespace import NamespaceController
from services.controller_manager.node_lifecycle import (
    NODE_LEASE_NAMESPACE,
    UNKNOWN_REASON,
    UNREACHABLE_TAINT,
    NodeLifecycleController,
)
from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.v1 import coordination_pb2, core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory


@dataclass(frozen=True)
class Config:
    """What the controllers read of the controller-manager's config."""

    node_monitor_grace_period: float = 3.0
    pod_eviction_timeout: float = 300.0
    concurrent_syncs: int = 2


@contextlib.asynccontextmanager
async def running(client: Client,
                  *builders: Callable[[Client, SharedInformerFactory, EventRecorder],
                                      Controller]) -> AsyncIterator[list[Controller]]:
    """Build the controllers on one informer factory, run them as tasks, stop them after."""
    factory = SharedInformerFactory(client)
    recorder = EventRecorder(client, "controller-manager")
    controllers = [build(client, factory, recorder) for build in builders]
    await factory.start_all()
    tasks = [asyncio.create_task(c.run(), name=c.name) for c in controllers]
    try:
        yield controllers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop_all()


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0,
                     what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; its last result, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what or check}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def client(apiserver) -> AsyncIterator[Client]:
    async with Client(apiserver.address, retry_deadline=15.0) as c:
        yield c


def pod(name: str, ns: str, *, labels: dict[str, str] | None = None, node: str = "n1",
        ports: dict[str, int] | None = None,
        tolerations: list[dict[str, Any]] | None = None) -> Any:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p} for n, p in ports.items()]
    spec: dict[str, Any] = {"containers": [container], "nodeName": node}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
                      "spec": spec})


async def post_pod_status(client: Client, name: str, ns: str, *, ip: str,
                          ready: bool) -> None:
    """What a kubelet writes: the pod's IP and its Ready condition."""
    current = await client.pods.get(name, ns)
    current.status.phase = "Running"  # type: ignore[attr-defined]
    current.status.pod_ip = ip  # type: ignore[attr-defined]
    del current.status.conditions[:]  # type: ignore[attr-defined]
    current.status.conditions.add(type="Ready",  # type: ignore[attr-defined]
                                  status="True" if ready else "False")
    await client.pods.update_status(current)


async def exists(resource: Any, name: str, ns: str = "default") -> bool:
    try:
        await resource.get(name, ns)
    except errors.NotFound:
        return False
    return True


# --------------------------------------------------------------------- endpoints


async def test_endpoints_follow_pod_readiness(client: Client):
    ns = "default"
    service = from_dict({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "web", "namespace": ns, "labels": {"t": "1"}},
                         "spec": {"selector": {"app": "web"},
                                  "ports": [{"name": "http", "port": 80,
                                             "targetPort": "http"}]}})
    headless = from_dict({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "manual", "namespace": ns},
                          "spec": {"ports": [{"port": 81}]}})
    async with running(client, lambda c, f, r: EndpointsController(c, f, r, Config())):
        await client.services.create(service)
        await client.services.create(headless)
        await client.pods.create(pod("a", ns, labels={"app": "web"}, ports={"http": 8080}))
        await client.pods.create(pod("b", ns, labels={"app": "web"}, ports={"http": 8081}))
        await client.pods.create(pod("other", ns, labels={"app": "db"}, ports={"http": 1}))
        await post_pod_status(client, "a", ns, ip="10.1.0.1", ready=True)
        await post_pod_status(client, "b", ns, ip="10.1.0.2", ready=False)
        await post_pod_status(client, "other", ns, ip="10.1.0.9", ready=True)

        async def endpoints() -> list[tuple[list[str], list[str], list[int]]]:
            try:
                found = await client.endpoints.get("web", ns)
            except errors.NotFound:
                return []
            return [([a.ip for a in s.addresses], [a.ip for a in s.not_ready_addresses],
                     [p.port for p in s.ports]) for s in found.subsets]  # type: ignore[attr-defined]

        async def shows(expected: list[Any]) -> bool:
            return sorted(await endpoints()) == sorted(expected)

        await eventually(lambda: shows([(["10.1.0.1"], [], [8080]), ([], ["10.1.0.2"], [8081])]),
                         what="a ready, b not ready")
        found = await client.endpoints.get("web", ns)
        assert found.metadata.labels["t"] == "1"  # type: ignore[attr-defined]
        ref = found.subsets[0].addresses[0].target_ref  # type: ignore[attr-defined]
        assert (ref.kind, ref.name, ref.namespace) == ("Pod", "a", ns) and ref.uid

        await post_pod_status(client, "b", ns, ip="10.1.0.2", ready=True)
        await eventually(lambda: shows([(["10.1.0.1"], [], [8080]), (["10.1.0.2"], [], [8081])]),
                         what="b ready too")
        # A bound pod deleted is terminating (its grace period): no longer an endpoint.
        await client.pods.delete("a", ns)
        await eventually(lambda: shows([(["10.1.0.2"], [], [8081])]), what="a gone")
        version = (await client.endpoints.get("web", ns)).metadata.resource_version  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)  # nothing changed: nothing is written
        assert (await client.endpoints.get("web", ns)).metadata.resource_version == version  # type: ignore[attr-defined]
        # A service without a selector gets no Endpoints from the controller.
        assert not await exists(client.endpoints, "manual", ns)

        await client.services.delete("web", ns)

        async def gone() -> bool:
            return not await exists(client.endpoints, "web", ns)

        await eventually(gone, what="endpoints deleted with their service")


# --------------------------------------------------------------------- namespace


async def test_a_deleted_namespace_is_emptied_then_removed(client: Client):
    ns = "doomed"
    await client.namespaces.create(core_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=ns)))
    await client.pods.create(pod("loose", ns, node=""))
    await client.pods.create(pod("running", ns, node="n1"))
    await client.services.create(from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": ns},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}))
    await client.replication_controllers.create(from_dict({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"app": "x"},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "a", "image": "busybox"}]}}}}))
    lease = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(name="l", namespace=ns))
    await client.leases.create(lease)
    other = await client.services.create(from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}}))

    async with running(client, lambda c, f, r: NamespaceController(c, f, r, Config())):
        await client.namespaces.delete(ns)

        async def running_pod_terminating() -> bool:
            found = await client.pods.get("running", ns)
            return found.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]

        await eventually(running_pod_terminating, what="the bound pod deleted gracefully")

        async def content_gone() -> bool:
            for resource, name in ((client.pods, "loose"), (client.services, "s"),
                                   (client.replication_controllers, "rc"),
                                   (client.leases, "l")):
                if await exists(resource, name, ns):
                    return False
            return True

        await eventually(content_gone, what="the rest of the content deleted")
        # Its kubelet still has to stop it: the namespace waits.
        await asyncio.sleep(1.5)
        found = await client.namespaces.get(ns)
        assert found.status.phase == "Terminating"  # type: ignore[attr-defined]
        assert list(found.spec.finalizers) == ["kubernetes"]  # type: ignore[attr-defined]
        await client.pods.delete("running", ns, grace_period_seconds=0)  # the kubelet's part

        async def namespace_gone() -> bool:
            return not await exists(client.namespaces, ns)

        await eventually(namespace_gone, what="the namespace removed")
    # Other namespaces are untouched.
    assert (await client.services.get("s", "default")).metadata.uid == other.metadata.uid  # type: ignore[attr-defined]


# ---------------------------------------------------------------- node lifecycle


async def test_a_silent_node_is_marked_tainted_and_emptied(client: Client):
    config = Config(node_monitor_grace_period=3.0)
    name = "n1"
    node = await client.nodes.create(core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name)))
    node.status.conditions.add(type="Ready", status="True")  # type: ignore[attr-defined]
    node.status.conditions[0].last_heartbeat_time.GetCurrentTime()  # type: ignore[attr-defined]
    await client.nodes.update_status(node)
    await client.leases.create(coordination_pb2.Lease(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=NODE_LEASE_NAMESPACE),
        spec=coordination_pb2.LeaseSpec(holder_identity=name, lease_duration_seconds=3)))
    unreachable = {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}
    # "Equal" to another value: covers the key (so no default toleration is added) but
    # does not tolerate the taint.
    await client.pods.create(pod("doomed", "default", tolerations=[
        {"key": UNREACHABLE_TAINT, "operator": "Equal", "value": "x", "effect": "NoExecute"}]))
    await client.pods.create(pod("patient", "default",
                                 tolerations=[{**unreachable, "tolerationSeconds": 2}]))
    await client.pods.create(pod("loyal", "default", tolerations=[unreachable]))

    async def renew() -> None:
        while True:
            lease = await client.leases.get(name, NODE_LEASE_NAMESPACE)
            lease.spec.renew_time.GetCurrentTime()  # type: ignore[attr-defined]
            await client.leases.update(lease)
            await asyncio.sleep(0.5)

    def build(c: Client, f: SharedInformerFactory, r: EventRecorder) -> Controller:
        return NodeLifecycleController(c, f, r, config, monitor_period=0.5)

    heartbeat = asyncio.create_task(renew())
    try:
        async with running(client, build):
            await asyncio.sleep(config.node_monitor_grace_period + 1.5)
            current = await client.nodes.get(name, "")
            assert not current.spec.taints  # type: ignore[attr-defined]
            for p in ("doomed", "patient", "loyal"):
                assert await exists(client.pods, p)

            heartbeat.cancel()  # the node dies
            stopped = time.monotonic()

            async def doomed_gone() -> bool:
                return not await exists(client.pods, "doomed")

            await eventually(doomed_gone, timeout=15, what="the untolerating pod evicted")
            assert await exists(client.pods, "patient")  # it tolerates for 2 s
            assert time.monotonic() - stopped > config.node_monitor_grace_period - 0.5
            current = await client.nodes.get(name, "")
            ready = next(c for c in current.status.conditions if c.type == "Ready")  # type: ignore[attr-defined]
            assert (ready.status, ready.reason) == ("Unknown", UNKNOWN_REASON)
            assert {c.type for c in current.status.conditions  # type: ignore[attr-defined]
                    if c.status == "Unknown"} >= {"Ready", "MemoryPressure", "DiskPressure",
                                                  "PIDPressure"}
            assert [(t.key, t.effect) for t in current.spec.taints] == [  # type: ignore[attr-defined]
                (UNREACHABLE_TAINT, "NoExecute")]

            async def patient_gone() -> bool:
                return not await exists(client.pods, "patient")

            await eventually(patient_gone, timeout=10, what="the tolerating pod evicted")
            assert await exists(client.pods, "loyal")

            # The kubelet comes back: it renews its lease and posts Ready again.
            heartbeat = asyncio.create_task(renew())
            current = await client.nodes.get(name, "")
            for condition in current.status.conditions:  # type: ignore[attr-defined]
                condition.status, condition.reason, condition.message = "True", "", ""
                if condition.type != "Ready":
                    condition.status = "False"
                condition.last_heartbeat_time.GetCurrentTime()
            await client.nodes.update_status(current)

            async def untainted() -> bool:
                return not (await client.nodes.get(name, "")).spec.taints  # type: ignore[attr-defined]

            await eventually(untainted, timeout=10, what="the taint removed")
            assert await exists(client.pods, "loyal")
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
