"""Node IPAM: every Node gets a pod CIDR of its own, carved out of the cluster CIDR.

Kubernetes' ``pkg/controller/nodeipam`` with its range allocator, on the flags
``--allocate-node-cidrs``, ``--cluster-cidr`` and ``--node-cidr-mask-size``. Reconciles
``Node.spec.podCIDR`` (and ``podCIDRs``) of every Node; watches Nodes.

- :class:`CIDRSet` is the pure allocator: the cluster CIDR cut into blocks of the mask
  size, each block free or held by one or more nodes. Allocation takes the next free
  block after the last one given (as Kubernetes' ``cidrset``), so a block just released
  is the last to be given again while others are free.
- On start (every leadership term) the controller marks every podCIDR the Nodes cache
  holds before any worker allocates: a new leader after failover never gives again a
  block the old one gave. A Node seen later with a podCIDR is marked by the informer
  handler at once, so an allocation never hands out a block the cache already shows.
- A Node without a podCIDR gets a block *reserved for it* before the write, and the
  reservation stays with that node until the node is deleted or shows another podCIDR:
  a write that failed, or whose outcome is unknown (a timeout, a retried call that came
  back Conflict), is retried with the same block through the work queue, so a block
  is never free while a write of it might still land. podCIDR is immutable once set
  (the apiserver refuses a change), which is what makes "the node shows another
  podCIDR" final.
- A Node created with a podCIDR keeps it: one outside the cluster CIDR or overlapping
  another node's is reported (a Warning Event on the Node, ``CIDROutOfRange`` /
  ``CIDRConflict``), never changed; the blocks it overlaps stay marked. A Node left
  without a block because all are taken gets ``CIDRNotAvailable`` and is looked at
  again whenever a block is released.

Invariant: two Nodes never hold the same block through this controller; a block is
free only when no Node in the cache and no pending write claims it. Not covered (as in
Kubernetes): a write a deposed leader sent before its lease expired and the apiserver
applied after the successor had listed.

The decisions are pure (:class:`CIDRSet`, :func:`claim_problem`, :func:`with_pod_cidr`).
Neighbours: the Node strategy in the apiserver (podCIDR set once), the kubelet (builds
its bridge on the podCIDR).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory

#: At most 2**16 blocks, as Kubernetes' cidrset allows (mask size - prefix <= 16).
MAX_BLOCK_BITS = 16
#: Event reasons (``CIDRNotAvailable`` is Kubernetes').
CIDR_NOT_AVAILABLE = "CIDRNotAvailable"
CIDR_OUT_OF_RANGE = "CIDROutOfRange"
CIDR_CONFLICT = "CIDRConflict"

__all__ = ["CIDR_CONFLICT", "CIDR_NOT_AVAILABLE", "CIDR_OUT_OF_RANGE", "CIDRSet", "Claim",
           "NodeIpamController", "claim_problem", "parse_cluster_cidr", "with_pod_cidr"]


# ----------------------------------------------------------------- pure allocation


def parse_cluster_cidr(cluster_cidr: str, mask_size: int) -> ipaddress.IPv4Network:
    """The cluster CIDR as a network, checked against the node mask size (pure).

    ValueError naming the problem: not an IPv4 network (or host bits set), a mask size
    shorter than the cluster's prefix or longer than 32, or more than 2**16 blocks.
    """
    if "/" not in cluster_cidr:
        raise ValueError(f"cluster CIDR {cluster_cidr!r} needs a prefix length "
                         "(like 10.244.0.0/16)")
    try:
        network = ipaddress.ip_network(cluster_cidr, strict=True)
    except ValueError as e:
        raise ValueError(f"cluster CIDR {cluster_cidr!r} is not a valid network: {e}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"cluster CIDR {cluster_cidr!r} must be an IPv4 network")
    if not network.prefixlen <= mask_size <= 32:
        raise ValueError(f"node CIDR mask size {mask_size} must be between the prefix "
                         f"length of the cluster CIDR {network} ({network.prefixlen}) and 32")
    if mask_size - network.prefixlen > MAX_BLOCK_BITS:
        raise ValueError(f"node CIDR mask size {mask_size} cuts {cluster_cidr} into "
                         f"2^{mask_size - network.prefixlen} node CIDRs; at most "
                         f"2^{MAX_BLOCK_BITS} (mask size at most prefix length + "
                         f"{MAX_BLOCK_BITS})")
    return network


@dataclass(frozen=True)
class Claim:
    """What marking a node's podCIDR found: whether it lies inside the cluster CIDR,
    which other nodes hold blocks it overlaps (sorted), and the blocks the node gave up
    by it (one reserved for it that it did not get) that became free."""

    cidr: str
    inside: bool
    conflicts: tuple[str, ...] = ()
    freed: tuple[str, ...] = ()


class CIDRSet:
    """The cluster CIDR's blocks of ``mask_size``, each free or held by nodes (pure).

    Invariants: ``_holders[i]`` is non-empty iff block ``i`` is taken, and ``owner`` is
    in ``_holders[i]`` iff ``i`` is in ``_held[owner]``; ``_next`` is where the search
    for a free block starts.
    """

    def __init__(self, cluster_cidr: str, mask_size: int) -> None:
        self.cluster = parse_cluster_cidr(cluster_cidr, mask_size)
        self.mask_size = mask_size
        self.size = 1 << (mask_size - self.cluster.prefixlen)
        self._shift = 32 - mask_size
        self._base = int(self.cluster.network_address)
        self._holders: dict[int, set[str]] = {}
        self._held: dict[str, set[int]] = {}
        self._next = 0

    # ------------------------------------------------------------------ reading

    @property
    def free(self) -> int:
        """How many blocks nobody holds."""
        return self.size - len(self._holders)

    def cidr(self, index: int) -> str:
        """Block ``index`` as a CIDR string."""
        return f"{ipaddress.IPv4Address(self._base + (index << self._shift))}/{self.mask_size}"

    def held(self, owner: str) -> list[str]:
        """The blocks ``owner`` holds, as CIDRs in order."""
        return [self.cidr(i) for i in sorted(self._held.get(owner, ()))]

    def blocks(self, cidr: str) -> range | None:
        """The blocks a network overlaps (all of them for one containing the cluster
        CIDR); None when it lies wholly outside, or does not parse as IPv4."""
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if not isinstance(network, ipaddress.IPv4Network) or not network.overlaps(self.cluster):
            return None
        if self.cluster.subnet_of(network):
            return range(self.size)
        first = (int(network.network_address) - self._base) >> self._shift
        last = (int(network.broadcast_address) - self._base) >> self._shift
        return range(first, last + 1)

    # ----------------------------------------------------------------- changing

    def claim(self, owner: str, cidr: str) -> Claim:
        """Mark the blocks ``cidr`` overlaps as ``owner``'s, and only those: blocks it
        held before and ``cidr`` does not cover are given up."""
        indices = self.blocks(cidr)
        wanted = set(indices) if indices is not None else set()
        conflicts = sorted({other for i in wanted for other in self._holders.get(i, ())
                            if other != owner})
        freed = self._set(owner, wanted)
        inside = indices is not None and ipaddress.ip_network(cidr, strict=False).subnet_of(
            self.cluster)  # type: ignore[arg-type]
        return Claim(cidr, inside, tuple(conflicts), tuple(freed))

    def reserve(self, owner: str) -> str | None:
        """The block held for ``owner`` (when it holds exactly one), else the next free
        block, now held by it; None when every block is taken."""
        mine = self._held.get(owner, set())
        if len(mine) == 1:
            return self.cidr(next(iter(mine)))
        self._set(owner, set())
        for step in range(self.size):
            index = (self._next + step) % self.size
            if index not in self._holders:
                self._next = (index + 1) % self.size
                self._set(owner, {index})
                return self.cidr(index)
        return None

    def release(self, owner: str) -> list[str]:
        """Give up everything ``owner`` holds; the blocks that became free, as CIDRs."""
        return self._set(owner, set())

    def _set(self, owner: str, indices: set[int]) -> list[str]:
        """Make ``owner`` hold exactly ``indices``; the blocks that became free."""
        before = self._held.pop(owner, set())
        freed = []
        for index in before - indices:
            holders = self._holders[index]
            holders.discard(owner)
            if not holders:
                del self._holders[index]
                freed.append(index)
        for index in indices - before:
            self._holders.setdefault(index, set()).add(owner)
        if indices:
            self._held[owner] = set(indices)
        return [self.cidr(i) for i in sorted(freed)]


# ------------------------------------------------------------------ pure decisions


def claim_problem(claim: Claim, cidrs: CIDRSet) -> tuple[str, str] | None:
    """The (reason, message) to report about a node's own podCIDR, or None (pure)."""
    if not claim.inside:
        return CIDR_OUT_OF_RANGE, (f"podCIDR {claim.cidr} is outside the cluster CIDR "
                                   f"{cidrs.cluster}; kept as it is")
    if claim.conflicts:
        return CIDR_CONFLICT, (f"podCIDR {claim.cidr} overlaps the podCIDR of "
                               f"{', '.join(claim.conflicts)}; kept as it is")
    return None


def not_available(cidrs: CIDRSet) -> tuple[str, str]:
    """What a node left without a block is told (pure)."""
    return CIDR_NOT_AVAILABLE, (f"no pod CIDR left: all {cidrs.size} /{cidrs.mask_size} "
                                f"of the cluster CIDR {cidrs.cluster} are taken")


def with_pod_cidr(node: core_pb2.Node, cidr: str) -> core_pb2.Node:
    """A copy of ``node`` (same resourceVersion) with podCIDR and podCIDRs set (pure)."""
    updated = core_pb2.Node()
    updated.CopyFrom(node)
    updated.spec.pod_cidr = cidr
    del updated.spec.pod_cidrs[:]
    updated.spec.pod_cidrs.append(cidr)
    return updated


# -------------------------------------------------------------------- controller


class NodeIpamController(Controller):
    """Gives each Node without a podCIDR a block of the cluster CIDR (see the module).

    Disabled (``run`` returns at once, no informer made) unless
    ``config.allocate_node_cidrs``.
    """

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 recorder: EventRecorder, config: Any) -> None:
        super().__init__("nodeipam", workers=max(1, int(config.concurrent_syncs)))
        self.client = client
        self.recorder = recorder
        self.enabled = bool(config.allocate_node_cidrs)
        self.cidrs = CIDRSet(config.cluster_cidr, int(config.node_cidr_mask_size))
        #: The problem last reported per node, so a repeat sync does not repeat it.
        self.reported: dict[str, tuple[str, str]] = {}
        if not self.enabled:
            return
        self.nodes = factory.informer("nodes")
        self.nodes.add_handler(self.on_node, lambda old, new: self.on_node(new),
                               self.enqueue, name="nodeipam")
        self.wait_for(self.nodes)

    # ------------------------------------------------------------ handlers

    def on_node(self, node: Message) -> None:
        """Mark a podCIDR the moment it is seen (bookkeeping only), then sync the node."""
        name = node.metadata.name  # type: ignore[attr-defined]
        if node.spec.pod_cidr:  # type: ignore[attr-defined]
            self._freed(name, self.cidrs.claim(name, node.spec.pod_cidr).freed)  # type: ignore[attr-defined]
        self.enqueue(node)

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        """Mark every podCIDR in the synced cache, then run the workers."""
        if not self.enabled:
            self._log.info("disabled (--allocate-node-cidrs is false)")
            return
        while not await self.nodes.wait_synced(30.0):
            self._log.warning("still waiting for the nodes cache")
        self.occupy_existing()
        await super().run()

    def occupy_existing(self) -> None:
        """Mark the podCIDR of every Node in the cache (before any allocation)."""
        marked = 0
        for node in self.nodes.store.list():
            if node.spec.pod_cidr:  # type: ignore[attr-defined]
                self.cidrs.claim(node.metadata.name, node.spec.pod_cidr)  # type: ignore[attr-defined]
                marked += 1
        self._log.info("pod CIDRs in use marked", nodes=marked,
                       cluster_cidr=str(self.cidrs.cluster), mask_size=self.cidrs.mask_size,
                       free=self.cidrs.free)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        """Release a deleted node's block, check a node's own podCIDR, or give one."""
        node = self.nodes.store.get(key)
        if node is None:
            self.reported.pop(key, None)
            self._freed(key, self.cidrs.release(key))
            return
        if node.spec.pod_cidr:  # type: ignore[attr-defined]
            claim = self.cidrs.claim(key, node.spec.pod_cidr)  # type: ignore[attr-defined]
            self._freed(key, claim.freed)
            self._report(node, claim_problem(claim, self.cidrs))  # type: ignore[arg-type]
            return
        cidr = self.cidrs.reserve(key)
        if cidr is None:
            self._report(node, not_available(self.cidrs))  # type: ignore[arg-type]
            return
        # Raises on failure: the key is retried after a back-off with the same block,
        # which stays reserved for this node until the node shows its podCIDR.
        await self.client.nodes.update(with_pod_cidr(node, cidr))  # type: ignore[arg-type]
        self._report(node, None)  # type: ignore[arg-type]
        self._log.info("pod CIDR assigned", node=key, pod_cidr=cidr, free=self.cidrs.free)

    def _freed(self, key: str, cidrs: Sequence[str]) -> None:
        """Blocks came free: look again at the nodes still waiting for one."""
        if not cidrs:
            return
        self._log.info("pod CIDRs released", node=key, pod_cidrs=cidrs, free=self.cidrs.free)
        for node in self.nodes.store.list():
            if not node.spec.pod_cidr:  # type: ignore[attr-defined]
                self.enqueue(node)

    def _report(self, node: core_pb2.Node, problem: tuple[str, str] | None) -> None:
        """Record a Warning Event for a new problem (not again for the same one)."""
        name = node.metadata.name
        if problem is None:
            self.reported.pop(name, None)
            return
        if self.reported.get(name) == problem:
            return
        self.reported[name] = problem
        reason, message = problem
        self._log.warning("pod CIDR problem", node=name, reason=reason, detail=message)
        self.recorder.event(node, WARNING, reason, message)
