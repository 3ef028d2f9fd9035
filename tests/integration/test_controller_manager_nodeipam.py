"""Node IPAM end to end: real ``skiff-controller-manager`` processes running the
``nodeipam`` controller against a store and apiserver of this module's own.

The module starts its own store and apiserver (nodes are cluster-scoped: on the shared
apiserver other tests' nodes would take blocks of the small ranges used here); each
test starts the controller-managers it needs and deletes every Node afterwards. What
is checked is what a user sees through the API:

- registered nodes get distinct /24s inside 10.244.0.0/16, podCIDRs equal to podCIDR;
  a node registered with a podCIDR keeps it, and nobody else gets it;
- with a two-block range: a node outside the range is reported (``CIDROutOfRange``)
  and kept; the third node gets ``CIDRNotAvailable`` and stays without a podCIDR until
  a node is deleted, then gets that node's block;
- failover: the leading controller-manager SIGKILLed while nodes are being created,
  the other takes over; every node ends with a podCIDR, no two share one, and no
  node's podCIDR ever changed (every Node event is followed through a watch);
- the apiserver refuses changing a podCIDR once set, naming spec.podCIDR.

Every wait polls a condition with a deadline; none sleeps in place of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import SharedCluster, election_flags, failed, shared_cluster
from skiff.testing.processes import ControllerManager

#: How long a step may take on a slow shared machine.
DEADLINE = 30.0
LEASE_NAME, LEASE_NAMESPACE = "kube-controller-manager", "kube-system"
CLUSTER_CIDR = "10.244.0.0/16"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[SharedCluster]:
    """A store and an apiserver for this module alone."""
    with shared_cluster(tmp_path_factory.mktemp("ipam")) as started:
        yield started


@pytest.fixture
async def client(cluster: SharedCluster, request) -> AsyncIterator[Client]:
    """A client; every Node is deleted after the test (the next starts from none)."""
    async with Client(cluster.apiserver.address, retry_deadline=DEADLINE) as api:
        try:
            yield api
        finally:
            listed = await api.nodes.list()
            for node in listed.items:  # type: ignore[attr-defined]
                with contextlib.suppress(errors.NotFound):
                    await api.nodes.delete(node.metadata.name)
            if failed(request):
                print(cluster.apiserver.logs(80))


StartManager = Callable[..., ControllerManager]


@pytest.fixture
def start_manager(cluster: SharedCluster, client: Client, tmp_path,
                  request) -> Iterator[StartManager]:
    """``start_manager(*flags, identity=...)``: a controller-manager running nodeipam
    (allocation on); stopped after the test, its log shown if the test failed."""
    started: list[ControllerManager] = []

    def start(*flags: str, identity: str | None = None) -> ControllerManager:
        manager = ControllerManager(
            tmp_path / f"cm-{len(started)}", [cluster.apiserver.address],
            name=identity or f"cm-ipam-{secrets.token_hex(3)}", controllers=["nodeipam"],
            extra_args=["--allocate-node-cidrs", *flags])
        manager.start()
        started.append(manager)
        return manager

    try:
        yield start
    finally:
        for manager in started:
            manager.stop()
        if failed(request):
            for manager in started:
                print(manager.logs(80))


# ------------------------------------------------------------------ helpers


def node_manifest(name: str, pod_cidr: str = "") -> Any:
    spec = {"podCIDR": pod_cidr} if pod_cidr else {}
    return from_dict({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                      "spec": spec})


async def pod_cidrs(client: Client) -> dict[str, str]:
    """Every node's podCIDR ("" when it has none), by name."""
    listed = await client.nodes.list()
    return {n.metadata.name: n.spec.pod_cidr for n in listed.items}  # type: ignore[attr-defined]


async def wait_all_assigned(client: Client, names: set[str]) -> dict[str, str]:
    """Wait until every node in ``names`` has a podCIDR; all nodes' podCIDRs."""
    async def assigned() -> dict[str, str] | None:
        found = await pod_cidrs(client)
        return found if all(found.get(n) for n in names) else None
    return await wait_for(assigned, timeout=DEADLINE, interval=0.1,
                          what=f"podCIDRs for {len(names)} nodes")


async def wait_event(client: Client, node: str, reason: str) -> core_pb2.Event:
    """Wait for an Event of ``reason`` about Node ``node``."""
    async def found() -> core_pb2.Event | None:
        listed = await client.events.list("default")
        for event in listed.items:  # type: ignore[attr-defined]
            ref = event.involved_object
            if ref.kind == "Node" and ref.name == node and event.reason == reason:
                return event  # type: ignore[no-any-return]
        return None
    return await wait_for(found, timeout=DEADLINE, interval=0.1,
                          what=f"a {reason} event about node {node}")


def assert_distinct_blocks(cidrs: dict[str, str], cluster: str, prefix: int) -> None:
    network = ipaddress.ip_network(cluster)
    values = list(cidrs.values())
    assert len(set(values)) == len(values), cidrs
    for cidr in values:
        block = ipaddress.ip_network(cidr)
        assert block.subnet_of(network) and block.prefixlen == prefix, cidrs  # type: ignore[arg-type]


@dataclass
class NodeHistory:
    """Every podCIDR each node was seen with, from a watch begun before the first node."""

    seen: dict[str, set[str]] = field(default_factory=dict)

    async def follow(self, client: Client, resource_version: str) -> None:
        async for event in client.nodes.watch(resource_version=resource_version):
            node = event.object  # type: ignore[attr-defined]
            if node.spec.pod_cidr:
                self.seen.setdefault(node.metadata.name, set()).add(node.spec.pod_cidr)


@contextlib.asynccontextmanager
async def node_history(client: Client) -> AsyncIterator[NodeHistory]:
    listed = await client.nodes.list()
    history = NodeHistory()
    task = asyncio.create_task(
        history.follow(client, listed.metadata.resource_version),  # type: ignore[attr-defined]
        name="node history")
    try:
        yield history
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, errors.APIError):
            await task


async def holder(client: Client) -> str:
    try:
        lease = await client.leases.get(LEASE_NAME, LEASE_NAMESPACE)
    except errors.NotFound:
        return ""
    return lease.spec.holder_identity  # type: ignore[attr-defined,no-any-return]


async def wait_holder(client: Client, candidates: set[str], timeout: float = DEADLINE) -> str:
    async def held() -> str:
        found = await holder(client)
        return found if found in candidates else ""
    return await wait_for(held, timeout=timeout, interval=0.05,
                          what=f"one of {sorted(candidates)} holding the lease")


# -------------------------------------------------------------------- tests


async def test_nodes_get_distinct_blocks_and_a_preset_one_is_kept(
        client: Client, start_manager: StartManager) -> None:
    # Registered before the controller-manager starts: marked at its start.
    await client.nodes.create(node_manifest("pinned", "10.244.0.0/24"))
    start_manager("--leader-elect", "false", "--cluster-cidr", CLUSTER_CIDR)
    names = {f"node-{i}" for i in range(6)}
    for name in sorted(names):
        await client.nodes.create(node_manifest(name))
    cidrs = await wait_all_assigned(client, names)

    assert cidrs["pinned"] == "10.244.0.0/24"
    assert_distinct_blocks(cidrs, CLUSTER_CIDR, 24)
    listed = await client.nodes.list()
    for node in listed.items:  # type: ignore[attr-defined]
        assert list(node.spec.pod_cidrs) == [node.spec.pod_cidr], node.metadata.name
    # Registered with a podCIDR while the controller runs: kept, not replaced.
    await client.nodes.create(node_manifest("late-pinned", "10.244.200.0/24"))
    await client.nodes.create(node_manifest("late"))
    cidrs = await wait_all_assigned(client, {"late"})
    assert cidrs["late-pinned"] == "10.244.200.0/24"
    assert_distinct_blocks(cidrs, CLUSTER_CIDR, 24)


async def test_exhaustion_is_reported_and_a_deleted_nodes_block_is_given_again(
        client: Client, start_manager: StartManager) -> None:
    # Two /24s in all.
    start_manager("--leader-elect", "false", "--cluster-cidr", "10.244.0.0/23",
                  "--node-cidr-mask-size", "24")
    await client.nodes.create(node_manifest("outside", "10.99.0.0/24"))
    await client.nodes.create(node_manifest("first"))
    await client.nodes.create(node_manifest("second"))
    cidrs = await wait_all_assigned(client, {"first", "second"})
    assert sorted([cidrs["first"], cidrs["second"]]) == ["10.244.0.0/24", "10.244.1.0/24"]
    event = await wait_event(client, "outside", "CIDROutOfRange")
    assert event.type == "Warning" and "10.99.0.0/24" in event.message
    assert cidrs["outside"] == "10.99.0.0/24"

    await client.nodes.create(node_manifest("third"))
    event = await wait_event(client, "third", "CIDRNotAvailable")
    assert event.type == "Warning" and "10.244.0.0/23" in event.message
    assert (await pod_cidrs(client))["third"] == ""

    freed = cidrs["first"]
    await client.nodes.delete("first")
    cidrs = await wait_all_assigned(client, {"third"})
    assert cidrs["third"] == freed and "first" not in cidrs
    assert_distinct_blocks({n: c for n, c in cidrs.items() if n != "outside"},
                           "10.244.0.0/23", 24)


async def test_a_killed_leader_is_replaced_and_no_block_is_given_twice(
        client: Client, start_manager: StartManager) -> None:
    lease_duration, retry = 3.0, 0.5
    flags = [*election_flags(lease_duration, 2.0, retry), "--cluster-cidr", CLUSTER_CIDR]
    tag = secrets.token_hex(3)
    identities = {f"cm-a-{tag}", f"cm-b-{tag}"}
    managers = {i: start_manager(*flags, identity=i) for i in sorted(identities)}
    leader = await wait_holder(client, identities)
    total = 40
    # Created in descending name order: the successor lists nodes by name, so those
    # still waiting come before those the first leader served, and would be given
    # blocks first were the served ones not marked at the start.
    names = [f"fo-{i:02d}" for i in reversed(range(total))]

    async with node_history(client) as history:
        async def create_all() -> None:
            for name in names:
                await client.nodes.create(node_manifest(name))
                await asyncio.sleep(0.05)  # a steady trickle of registrations

        creating = asyncio.create_task(create_all(), name="create nodes")
        try:
            # Kill the leader once it has given some blocks, with more nodes coming.
            async def some_assigned() -> bool:
                return sum(1 for c in (await pod_cidrs(client)).values() if c) >= 5
            await wait_for(some_assigned, timeout=DEADLINE, what="the leader giving blocks")
            managers[leader].kill(signal.SIGKILL)
            (successor,) = identities - {leader}
            await wait_holder(client, {successor}, timeout=lease_duration + DEADLINE)
            await creating
        finally:
            creating.cancel()
        cidrs = await wait_all_assigned(client, set(names))

        assert_distinct_blocks(cidrs, CLUSTER_CIDR, 24)
        # Every node ever had exactly one podCIDR, its last: none changed hands.
        async def all_seen() -> bool:
            return all(n in history.seen for n in names)
        await wait_for(all_seen, timeout=DEADLINE, what="the watch seeing every podCIDR")
    for name in names:
        assert history.seen[name] == {cidrs[name]}, (name, history.seen[name])
    # Both leaders gave blocks: the kill fell while nodes were still coming.
    for identity in identities:
        assert "pod CIDR assigned" in log_events(managers[identity]), identity


def log_events(manager: ControllerManager) -> list[str]:
    """The ``event`` of every JSON line the manager logged."""
    events = []
    for line in manager.daemon.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                events.append(str(record.get("event", "")))
    return events


async def test_a_set_pod_cidr_cannot_be_changed(client: Client) -> None:
    created = await client.nodes.create(node_manifest("immutable", "10.244.9.0/24"))
    changed = core_pb2.Node()
    changed.CopyFrom(created)
    changed.spec.pod_cidr = "10.244.10.0/24"  # podCIDRs left as it was
    with pytest.raises(errors.BadRequest) as refused:
        await client.nodes.update(changed)
    assert "spec.podCIDR:" in str(refused.value)
    assert "may not change podCIDR" in str(refused.value)
    assert (await pod_cidrs(client))["immutable"] == "10.244.9.0/24"
