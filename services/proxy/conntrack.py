"""Clearing the kernel's UDP flows to endpoints that left (nftables mode).

conntrack keeps a UDP flow's DNAT for as long as datagrams keep coming (30 s after the
last, 120 s for a stream), so a client that keeps its source port would keep talking
to an endpoint that is no longer ready, rules or no rules. After a write that removed
UDP endpoints, the proxy deletes the flows whose reply comes from one of them, as
kube-proxy does with ``conntrack -D``; the client's next datagram is then a new flow
and the rules choose again. TCP needs none of this: a connection to a removed endpoint
is kept on purpose (established connections are never cut).

:func:`stale_udp_endpoints` is pure; :func:`clear_udp_flows` talks netlink (pyroute2)
and blocks: run it in a worker thread.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

# Imported with the module, not at the first use: the import takes a good part of a
# second, which the first clearing after an Endpoints change must not wait for.
from pyroute2 import Conntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from services.proxy.nftables_rules import UDP, Endpoint, ServicePort


def udp_endpoints(ports: Iterable[ServicePort]) -> dict[str, frozenset[Endpoint]]:
    """Each UDP service port's ready endpoints, by service port key (pure)."""
    return {p.key: frozenset(p.endpoints) for p in ports if p.protocol == UDP}


def stale_udp_endpoints(before: dict[str, frozenset[Endpoint]],
                        after: dict[str, frozenset[Endpoint]]) -> set[Endpoint]:
    """Endpoints some UDP service port had and no longer has (pure).

    An endpoint still serving another UDP service port stays out of it: its flows
    there are current ones.
    """
    still = set().union(*after.values()) if after else set()
    gone: set[Endpoint] = set()
    for key, endpoints in before.items():
        gone |= endpoints - after.get(key, frozenset())
    return gone - still


def clear_udp_flows(endpoints: set[Endpoint]) -> int:
    """Delete the UDP conntrack entries whose reply comes from one of ``endpoints``
    (blocking); how many were deleted."""
    wanted = {(e.ip, e.port) for e in endpoints}
    deleted = 0
    with Conntrack() as ct:
        matching = [entry for entry in ct.dump_entries(
            tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP))
            if (entry.tuple_reply.saddr, entry.tuple_reply.sport) in wanted]
        for entry in matching:
            try:
                ct.delete(entry)
                deleted += 1
            except OSError:  # gone meanwhile (it expired, or its flow ended)
                continue
    return deleted


__all__ = ["clear_udp_flows", "stale_udp_endpoints", "udp_endpoints"]
