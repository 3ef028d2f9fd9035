"""Clearing the kernel's UDP flows to endpoints that left (nftables mode).

conntrack keeps a UDP flow's DNAT for as long as datagrams keep coming (30 s after the
last, 120 s for a stream), so a client that keeps its source port would keep talking
to an endpoint that is no longer ready, rules or no rules. After a write that removed
UDP endpoints, the proxy deletes the flows whose reply comes from one of them, as
kube-proxy does with ``conntrack -D``; the client's next datagram is then a new flow
and the rules choose again. TCP needs none of this: a connection to a removed endpoint
is kept on purpose (established connections are never cut).

:func:`stale_udp_flows` is pure; :func:`clear_udp_flows` talks netlink (pyroute2)
and blocks: run it in a worker thread.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

# Imported with the module, not at the first use: the import takes a good part of a
# second, which the first clearing after an Endpoints change must not wait for.
from pyroute2 import Conntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from services.proxy.nftables_rules import UDP, Endpoint, ServicePort


@dataclass(frozen=True)
class StaleFlows:
    """Flows to clear: sent to one of ``destinations`` (address, port) or to
    ``node_port`` on any address, and answered by ``endpoint``."""

    destinations: frozenset[tuple[str, int]]
    node_port: int
    endpoint: Endpoint

    def matches(self, orig_daddr: str, orig_dport: int, reply_saddr: str,
                reply_sport: int) -> bool:
        if (reply_saddr, reply_sport) != (self.endpoint.ip, self.endpoint.port):
            return False
        return ((orig_daddr, orig_dport) in self.destinations
                or (self.node_port != 0 and orig_dport == self.node_port))


def udp_endpoints(ports: Iterable[ServicePort]) -> dict[str, ServicePort]:
    """The UDP service ports, by key (pure)."""
    return {p.key: p for p in ports if p.protocol == UDP}


def stale_udp_flows(before: dict[str, ServicePort], after: dict[str, ServicePort]
                    ) -> list[StaleFlows]:
    """The flows of each UDP service port to the endpoints it no longer has (pure).

    Matched by the service's own addresses, as kube-proxy does: the same endpoint may
    still serve another Service, whose flows are current.
    """
    out = []
    for key, old in before.items():
        new = after.get(key)
        kept = set(new.endpoints) if new is not None else set()
        destinations = frozenset((ip, old.port) for ip in (old.cluster_ip, *old.external_ips))
        out += [StaleFlows(destinations, old.node_port, e) for e in old.endpoints
                if e not in kept]
    return out


def clear_udp_flows(stale: list[StaleFlows]) -> int:
    """Delete the UDP conntrack entries ``stale`` describes (blocking); how many."""
    deleted = 0
    with Conntrack() as ct:
        matching = [entry for entry in ct.dump_entries(
            tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP))
            if any(s.matches(entry.tuple_orig.daddr, entry.tuple_orig.dport,
                             entry.tuple_reply.saddr, entry.tuple_reply.sport)
                   for s in stale)]
        for entry in matching:
            try:
                ct.delete(entry)
                deleted += 1
            except OSError:  # gone meanwhile (it expired, or its flow ended)
                continue
    return deleted


__all__ = ["StaleFlows", "clear_udp_flows", "stale_udp_flows", "udp_endpoints"]
