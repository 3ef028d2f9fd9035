"""Node IPAM (services/controller_manager/nodeipam.py): the CIDR set's allocation,
release and marking, the flags' checks, and the controller's sync against a filled
cache with a fake client (no sockets)."""

from __future__ import annotations

import ipaddress

import pytest

from services.controller_manager.config import parse_args
from services.controller_manager.nodeipam import (
    CIDR_CONFLICT,
    CIDR_NOT_AVAILABLE,
    CIDR_OUT_OF_RANGE,
    CIDRSet,
    NodeIpamController,
    claim_problem,
    parse_cluster_cidr,
    with_pod_cidr,
)
from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.informer import SharedInformerFactory

# ------------------------------------------------------------------ the CIDR set


def test_blocks_are_given_in_order_distinct_and_inside_the_cluster_cidr():
    cidrs = CIDRSet("10.244.0.0/16", 24)
    assert cidrs.size == cidrs.free == 256
    given = [cidrs.reserve(f"n{i}") for i in range(256)]
    assert given[:3] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert given[-1] == "10.244.255.0/24"
    assert len(set(given)) == 256
    cluster = ipaddress.ip_network("10.244.0.0/16")
    assert all(ipaddress.ip_network(c).subnet_of(cluster) for c in given)  # type: ignore[arg-type]
    assert cidrs.free == 0


def test_exhaustion_gives_nothing_and_a_release_makes_room():
    cidrs = CIDRSet("10.244.0.0/23", 24)
    assert (cidrs.reserve("a"), cidrs.reserve("b")) == ("10.244.0.0/24", "10.244.1.0/24")
    assert cidrs.reserve("c") is None
    assert cidrs.held("c") == []
    assert cidrs.release("a") == ["10.244.0.0/24"]
    assert cidrs.reserve("c") == "10.244.0.0/24"
    assert cidrs.release("nobody") == []


def test_a_released_block_is_given_again_only_after_the_others():
    # As Kubernetes' cidrset: the search goes on after the last block given, so a
    # block just freed (whose routes other nodes may still hold) waits its turn.
    cidrs = CIDRSet("10.244.0.0/22", 24)
    assert cidrs.reserve("a") == "10.244.0.0/24"
    cidrs.release("a")
    assert [cidrs.reserve(n) for n in "bcd"] == [
        "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert cidrs.reserve("e") == "10.244.0.0/24"


def test_a_reservation_sticks_to_its_node():
    # A retried write (its outcome unknown) must carry the same block, never a second.
    cidrs = CIDRSet("10.244.0.0/22", 24)
    first = cidrs.reserve("a")
    assert cidrs.reserve("a") == first
    assert cidrs.free == 3


def test_marking_pre_existing_cidrs_keeps_them_from_allocation():
    cidrs = CIDRSet("10.244.0.0/22", 24)
    assert cidrs.claim("pinned", "10.244.0.0/24").inside
    # A wider CIDR marks every block it covers; a narrower one its block.
    assert cidrs.claim("wide", "10.244.2.0/23").inside
    assert cidrs.held("wide") == ["10.244.2.0/24", "10.244.3.0/24"]
    assert cidrs.reserve("new") == "10.244.1.0/24"
    assert cidrs.reserve("newer") is None
    assert cidrs.claim("narrow", "10.244.1.128/25").conflicts == ("new",)


def test_a_cidr_outside_the_cluster_cidr_marks_nothing_and_says_so():
    cidrs = CIDRSet("10.244.0.0/16", 24)
    claim = cidrs.claim("odd", "10.99.0.0/24")
    assert not claim.inside and claim.conflicts == ()
    assert cidrs.held("odd") == [] and cidrs.free == 256
    # Straddling the edge: outside, but the blocks it overlaps are marked all the same.
    straddle = cidrs.claim("edge", "10.244.0.0/15")
    assert not straddle.inside and cidrs.free == 0
    assert not cidrs.claim("v6", "fd00::/64").inside


def test_two_nodes_on_one_block_free_it_only_when_both_are_gone():
    cidrs = CIDRSet("10.244.0.0/16", 24)
    cidrs.claim("a", "10.244.7.0/24")
    assert cidrs.claim("b", "10.244.7.0/24").conflicts == ("a",)
    assert cidrs.release("a") == []
    assert cidrs.release("b") == ["10.244.7.0/24"]


def test_a_node_showing_another_cidr_gives_up_the_one_reserved_for_it():
    cidrs = CIDRSet("10.244.0.0/16", 24)
    assert cidrs.reserve("a") == "10.244.0.0/24"
    claim = cidrs.claim("a", "10.244.9.0/24")  # someone else's write won
    assert claim.freed == ("10.244.0.0/24",)
    assert cidrs.held("a") == ["10.244.9.0/24"]


@pytest.mark.parametrize(("cidr", "mask", "text"), [
    ("10.244.0.0", 24, "needs a prefix length"),
    ("banana/16", 24, "not a valid network"),
    ("10.244.1.0/16", 24, "host bits set"),
    ("fd00::/48", 64, "must be an IPv4 network"),
    ("10.244.0.0/16", 8, "between the prefix length of the cluster CIDR 10.244.0.0/16 (16) "
                         "and 32"),
    ("10.244.0.0/16", 33, "between"),
    ("10.0.0.0/8", 28, "at most 2^16"),
])
def test_bad_cluster_cidr_and_mask_are_refused_with_the_reason(cidr, mask, text):
    with pytest.raises(ValueError) as raised:
        parse_cluster_cidr(cidr, mask)
    assert text in str(raised.value)
    with pytest.raises(SystemExit):
        parse_args(["--cluster-cidr", cidr, "--node-cidr-mask-size", str(mask)])


def test_flags_default_to_off_and_kubernetes_ranges():
    config = parse_args([])
    assert (config.allocate_node_cidrs, config.cluster_cidr,
            config.node_cidr_mask_size) == (False, "10.244.0.0/16", 24)
    assert parse_args(["--allocate-node-cidrs"]).allocate_node_cidrs
    assert not parse_args(["--allocate-node-cidrs", "false"]).allocate_node_cidrs
    assert "nodeipam" in config.controllers


# --------------------------------------------------------------- pure decisions


def test_problems_reported_about_a_nodes_own_cidr():
    cidrs = CIDRSet("10.244.0.0/16", 24)
    assert claim_problem(cidrs.claim("a", "10.244.1.0/24"), cidrs) is None
    reason, message = claim_problem(cidrs.claim("b", "10.244.1.0/24"), cidrs)  # type: ignore[misc]
    assert reason == CIDR_CONFLICT and "overlaps the podCIDR of a" in message
    reason, message = claim_problem(cidrs.claim("c", "10.1.0.0/24"), cidrs)  # type: ignore[misc]
    assert reason == CIDR_OUT_OF_RANGE and "outside the cluster CIDR 10.244.0.0/16" in message


def test_with_pod_cidr_sets_both_fields_on_a_copy():
    n = node("a", rv="7")
    updated = with_pod_cidr(n, "10.244.3.0/24")
    assert (updated.spec.pod_cidr, list(updated.spec.pod_cidrs)) == (
        "10.244.3.0/24", ["10.244.3.0/24"])
    assert updated.metadata.resource_version == "7" and not n.spec.pod_cidr


# ------------------------------------------------------- the controller's syncs


def node(name: str, cidr: str = "", *, rv: str = "1") -> core_pb2.Node:
    n = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name, uid=f"uid-{name}",
                                                   resource_version=rv))
    if cidr:
        n.spec.pod_cidr = cidr
        n.spec.pod_cidrs.append(cidr)
    return n


class FakeNodes:
    """The nodes client: records updates; fails them while ``failure`` is set."""

    def __init__(self) -> None:
        self.updates: list[core_pb2.Node] = []
        self.failure: Exception | None = None

    async def update(self, obj: core_pb2.Node) -> core_pb2.Node:
        self.updates.append(obj)
        if self.failure is not None:
            raise self.failure
        return obj


class FakeClient:
    def __init__(self) -> None:
        self.nodes = FakeNodes()

    def resource(self, kind: object) -> object:
        return object()


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj: core_pb2.Node, type_: str, reason: str, message: str) -> None:
        self.events.append((obj.metadata.name, type_, reason))


def controller(*flags: str) -> tuple[NodeIpamController, FakeClient, FakeRecorder]:
    client, recorder = FakeClient(), FakeRecorder()
    config = parse_args(["--allocate-node-cidrs", *flags])
    built = NodeIpamController(client, SharedInformerFactory(client), recorder,  # type: ignore[arg-type]
                               config)
    return built, client, recorder


def cache(built: NodeIpamController, *nodes: core_pb2.Node) -> None:
    for n in nodes:
        built.nodes.store.put(n)


def test_disabled_unless_asked_for():
    client = FakeClient()
    built = NodeIpamController(client, SharedInformerFactory(client), FakeRecorder(),  # type: ignore[arg-type]
                               parse_args([]))
    assert not built.enabled and not hasattr(built, "nodes")


async def test_existing_cidrs_are_marked_before_anything_is_given():
    built, client, _ = controller("--cluster-cidr", "10.244.0.0/23")
    cache(built, node("old", "10.244.0.0/24"), node("new"))
    built.occupy_existing()
    await built.sync("new")
    assert [u.spec.pod_cidr for u in client.nodes.updates] == ["10.244.1.0/24"]
    await built.sync("old")  # its own podCIDR: nothing written
    assert len(client.nodes.updates) == 1


async def test_a_failed_write_is_retried_with_the_same_block():
    built, client, _ = controller()
    cache(built, node("a"))
    client.nodes.failure = errors.Unavailable("timed out")
    with pytest.raises(errors.Unavailable):
        await built.sync("a")
    client.nodes.failure = errors.Conflict("stale")  # a retry of a write that landed?
    with pytest.raises(errors.Conflict):
        await built.sync("a")
    client.nodes.failure = None
    await built.sync("a")
    assert {u.spec.pod_cidr for u in client.nodes.updates} == {"10.244.0.0/24"}
    assert built.cidrs.free == 255


async def test_exhaustion_is_reported_once_and_a_deletion_gives_the_waiting_node_a_block():
    built, client, recorder = controller("--cluster-cidr", "10.244.0.0/24")
    cache(built, node("a", "10.244.0.0/24"), node("b"))
    built.occupy_existing()
    await built.sync("b")
    await built.sync("b")
    assert recorder.events == [("b", "Warning", CIDR_NOT_AVAILABLE)]
    assert client.nodes.updates == []
    built.nodes.store.delete("a")
    await built.sync("a")
    assert built.queue.len() >= 1  # "b" was queued again
    await built.sync("b")
    assert [u.spec.pod_cidr for u in client.nodes.updates] == ["10.244.0.0/24"]


async def test_out_of_range_and_conflicting_cidrs_are_reported_and_kept():
    built, client, recorder = controller()
    cache(built, node("a", "10.244.1.0/24"), node("b", "10.244.1.0/24"),
          node("c", "192.168.0.0/24"))
    built.occupy_existing()
    for name in "abc":
        await built.sync(name)
        await built.sync(name)
    # Both holders of the block hear of it (each names the other); once each.
    assert recorder.events == [("a", "Warning", CIDR_CONFLICT), ("b", "Warning", CIDR_CONFLICT),
                               ("c", "Warning", CIDR_OUT_OF_RANGE)]
    assert client.nodes.updates == []
