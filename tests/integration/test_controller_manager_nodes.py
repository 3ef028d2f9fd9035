"""A node that stops heartbeating is tainted and its pods are replaced elsewhere, end to
end with real processes.

The session's shared store and apiserver; a real scheduler process and a real
controller-manager process (replication and node lifecycle, a 3 s
``--node-monitor-grace-period``); three hollow nodes (``skiff.testing.hollow``) that
register, heartbeat their Leases and report bound pods Running and Ready.

An RC of four replicas whose pods tolerate the ``not-ready`` / ``unreachable`` NoExecute
taints for 2 s (instead of the 300 s DefaultTolerationSeconds adds) is spread over the
nodes. One node dies (no more heartbeats, nothing done for its pods). Checked as
Kubernetes behaves: the node's Ready condition turns Unknown and it gets the
``node.kubernetes.io/unreachable:NoExecute`` taint; its pods are evicted (none of them
is left not terminating); the RC has exactly four non-terminating pods again, all
Running on the surviving nodes. Then the node comes back and the taint goes.

The test's pods carry a scheduler name of their own (only this test's scheduler binds
them) and a node selector (only this test's nodes take them), so other tests' pods and
nodes on the shared apiserver do not interfere. Every wait polls a condition with a
deadline; none sleeps in place of one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import failed
from skiff.testing.hollow import HollowNode, hollow_nodes
from skiff.testing.processes import ControllerManager, Scheduler

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
#: The controller-manager's grace for a silent node, and how often it looks.
GRACE_PERIOD, MONITOR_PERIOD = 3.0, 0.5
#: How long the test's pods stay on a tainted node.
TOLERATION_SECONDS = 2
REPLICAS = 4
#: How long a step may take on a slow shared machine.
DEADLINE = 30.0

TAG = secrets.token_hex(3)
SCHEDULER_NAME = f"scheduler-{TAG}"


@pytest.fixture(scope="module")
def daemons(shared_cluster, tmp_path_factory) -> Iterator[list[Any]]:
    """The scheduler and the controller-manager, for the module."""
    base = tmp_path_factory.mktemp("nodes")
    server = [shared_cluster.apiserver.address]
    # Leader election is the failover test's subject: here each runs on its own.
    scheduler = Scheduler(base, server, name=SCHEDULER_NAME, extra_args=[
        "--leader-elect", "false", "--scheduler-name", SCHEDULER_NAME])
    manager = ControllerManager(
        base, server, name=f"cm-nodes-{TAG}", controllers=["replication", "nodelifecycle"],
        extra_args=["--leader-elect", "false",
                    "--node-monitor-grace-period", str(GRACE_PERIOD),
                    "--node-monitor-period", str(MONITOR_PERIOD)])
    started = [scheduler, manager]
    try:
        for daemon in started:
            daemon.start()
        yield started
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture
async def client(shared_cluster, daemons, request) -> AsyncIterator[Client]:
    async with Client(shared_cluster.apiserver.address, retry_deadline=DEADLINE) as api:
        try:
            yield api
        finally:
            if failed(request):
                for daemon in daemons:
                    print(daemon.logs(120))


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"nodes-{secrets.token_hex(4)}"
    await client.namespaces.create(from_dict(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


@pytest.fixture
async def nodes(client: Client) -> AsyncIterator[list[HollowNode]]:
    """Three hollow nodes labelled for this test; stopped and deleted afterwards."""
    started = await hollow_nodes(client, 3, prefix=f"hollow-{TAG}", heartbeat=0.5,
                                 labels={"skiff-test": TAG})
    try:
        yield started
    finally:
        for node in started:
            await node.die()
            await client.nodes.delete(node.node_name)


# ------------------------------------------------------------------ helpers


def rc_manifest(name: str, ns: str) -> Any:
    labels = {"app": name}
    tolerations = [{"key": key, "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": TOLERATION_SECONDS}
                   for key in (NOT_READY_TAINT, UNREACHABLE_TAINT)]
    return from_dict({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": REPLICAS, "selector": labels, "template": {
            "metadata": {"labels": labels},
            "spec": {"schedulerName": SCHEDULER_NAME, "nodeSelector": {"skiff-test": TAG},
                     "tolerations": tolerations,
                     "containers": [{"name": "app", "image": "busybox"}]}}}})


def ready_status(node: core_pb2.Node) -> str:
    return next((c.status for c in node.status.conditions if c.type == "Ready"), "")


def our_taints(node: core_pb2.Node) -> list[tuple[str, str]]:
    return [(t.key, t.effect) for t in node.spec.taints
            if t.key in (NOT_READY_TAINT, UNREACHABLE_TAINT)]


async def running_replicas(client: Client, ns: str, rc: Any,
                           nodes: set[str]) -> list[core_pb2.Pod] | None:
    """The RC's pods if exactly ``REPLICAS`` are not terminating, every one owned by the
    RC, Running and on one of ``nodes``; None otherwise."""
    listed = await client.pods.list(ns)
    active = [p for p in listed.items  # type: ignore[attr-defined]
              if not p.metadata.HasField("deletion_timestamp")]
    if len(active) != REPLICAS:
        return None
    for pod in active:
        owned = any(r.uid == rc.metadata.uid and r.controller
                    for r in pod.metadata.owner_references)
        if not owned or pod.spec.node_name not in nodes or pod.status.phase != "Running":
            return None
    return active


# -------------------------------------------------------------------- tests


async def test_a_silent_node_is_tainted_and_its_pods_replaced_elsewhere(
        client: Client, ns: str, nodes: list[HollowNode]) -> None:
    names = {n.node_name for n in nodes}
    rc = await client.replication_controllers.create(rc_manifest("web", ns))

    async def all_running() -> list[core_pb2.Pod] | None:
        return await running_replicas(client, ns, rc, names)

    pods = await wait_for(all_running, timeout=DEADLINE, interval=0.1,
                          what=f"{REPLICAS} pods Running on the hollow nodes")
    # The node with the most pods dies: it certainly has some.
    by_node = {name: [p for p in pods if p.spec.node_name == name] for name in names}
    victim = next(n for n in nodes if n.node_name == max(by_node, key=lambda k: len(by_node[k])))
    evicted = {p.metadata.uid for p in by_node[victim.node_name]}
    survivors = names - {victim.node_name}
    await victim.die()

    async def unreachable() -> core_pb2.Node | None:
        node = await client.nodes.get(victim.node_name, "")
        tainted = our_taints(node) == [(UNREACHABLE_TAINT, "NoExecute")]  # type: ignore[arg-type]
        return node if tainted and ready_status(node) == "Unknown" else None  # type: ignore[arg-type,return-value]

    node = await wait_for(unreachable, timeout=DEADLINE, interval=0.1,
                          what="the silent node Ready=Unknown and tainted unreachable")
    assert all(c.status == "Unknown" for c in node.status.conditions
               if c.type in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"))
    for other in survivors:
        healthy = await client.nodes.get(other, "")
        assert ready_status(healthy) == "True" and not our_taints(healthy)  # type: ignore[arg-type]

    async def replaced() -> list[core_pb2.Pod] | None:
        return await running_replicas(client, ns, rc, survivors)

    now_running = await wait_for(replaced, timeout=DEADLINE, interval=0.1,
                                 what=f"{REPLICAS} pods Running on the surviving nodes")
    assert not evicted & {p.metadata.uid for p in now_running}
    # The dead node's pods are evicted: gone, or at least terminating (a node that never
    # comes back cannot confirm their end); none is left counted as running there.
    listed = await client.pods.list(ns)
    for pod in listed.items:  # type: ignore[attr-defined]
        if pod.metadata.uid in evicted:
            assert pod.metadata.HasField("deletion_timestamp"), pod.metadata.name

    async def eviction_reported() -> bool:
        events = await client.events.list(ns)  # written in the background: poll
        return "TaintManagerEviction" in {e.reason for e in events.items}  # type: ignore[attr-defined]

    await wait_for(eviction_reported, timeout=DEADLINE, what="a TaintManagerEviction event")

    await victim.revive()

    async def recovered() -> bool:
        node = await client.nodes.get(victim.node_name, "")
        return ready_status(node) == "True" and not our_taints(node)  # type: ignore[arg-type]

    await wait_for(recovered, timeout=DEADLINE, interval=0.1,
                   what="the revived node Ready and untainted")
    # Coming back moves nothing: the RC keeps its four pods where they run.
    assert await running_replicas(client, ns, rc, names)
