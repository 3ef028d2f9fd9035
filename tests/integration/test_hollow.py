"""The hollow node test helper (skiff.testing.hollow) against the shared apiserver: it
registers a Ready node with a lease, reports bound pods Running with an IP and the
readiness the test chooses, finishes deletions, and goes silent when it dies."""

from __future__ import annotations

from skiff.api.manifest import from_dict
from skiff.api.namespaces import NODE_LEASE_NAMESPACE
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.hollow import HollowNode

DEADLINE = 20.0


def bound_pod(name: str, ns: str, node: str) -> core_pb2.Pod:
    return from_dict({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": ns},
                      "spec": {"nodeName": node,
                               "containers": [{"name": "app", "image": "busybox"}]}})


def condition(pod: core_pb2.Pod, type_: str) -> str:
    return next((c.status for c in pod.status.conditions if c.type == type_), "")


async def test_a_hollow_node_runs_pods_and_dies(shared_cluster, ns: str) -> None:
    async with Client(shared_cluster.apiserver.address, retry_deadline=DEADLINE) as api:
        await _run_and_die(api, ns)


async def _run_and_die(api: Client, ns: str) -> None:
    node = HollowNode(api, f"hollow-{ns}", heartbeat=0.2)
    await node.start()
    try:
        registered = await api.nodes.get(node.node_name, "")
        assert condition_of(registered, "Ready") == "True"
        assert registered.status.allocatable["pods"] == "110"
        await api.pods.create(bound_pod("p", ns, node.node_name))

        async def running() -> core_pb2.Pod | None:
            pod = await api.pods.get("p", ns)
            return pod if pod.status.phase == "Running" and pod.status.pod_ip else None

        pod = await wait_for(running, timeout=DEADLINE, what="the pod Running")
        assert condition(pod, "Ready") == "True"
        assert pod.status.container_statuses[0].state.HasField("running")
        node.set_ready(ns, "p", False)

        async def unready() -> bool:
            return condition(await api.pods.get("p", ns), "Ready") == "False"

        await wait_for(unready, timeout=DEADLINE, what="the pod not Ready")
        await api.pods.delete("p", ns)

        async def gone() -> bool:
            return not (await api.pods.list(ns)).items

        await wait_for(gone, timeout=DEADLINE, what="the deletion finished")
        renewed = (await api.leases.get(node.node_name, NODE_LEASE_NAMESPACE)).spec.renew_time
        await node.die()
        # A dead node renews nothing: its lease stays as it was.
        after = (await api.leases.get(node.node_name, NODE_LEASE_NAMESPACE)).spec.renew_time
        assert after.ToNanoseconds() >= renewed.ToNanoseconds()
    finally:
        await node.die()


def condition_of(node: core_pb2.Node, type_: str) -> str:
    return next((c.status for c in node.status.conditions if c.type == type_), "")
