"""Forwarding names outside the cluster zone to upstream resolvers.

The client's query goes upstream as it came (same bytes, same ID), over UDP; the reply
comes back as it came. A client on TCP whose UDP reply was truncated is asked again
over TCP, so it gets the whole answer. Upstreams are tried in order, each for at most
``timeout`` seconds; the first that answers wins. None answering is the caller's to
turn into SERVFAIL.

Upstreams default to the host's resolvers (``nameserver`` lines of /etc/resolv.conf),
as CoreDNS's ``forward . /etc/resolv.conf``; an upstream that is one of this server's
own listening addresses is left out (it would forward to itself forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable
from pathlib import Path

Address = tuple[str, int]

#: DNS's port, for an upstream given without one.
DNS_PORT = 53
#: The TC bit in the second byte of the header's flags.
_TC = 0x02


def parse_upstream(text: str) -> Address:
    """``1.2.3.4`` or ``1.2.3.4:5300`` -> (host, port); a clear ValueError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(DNS_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not an upstream resolver (HOST or HOST:PORT)")
    return host, int(port)


def resolv_conf_upstreams(path: Path = Path("/etc/resolv.conf")) -> list[Address]:
    """The ``nameserver`` addresses of a resolv.conf, port 53; none if it is unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append((fields[1], DNS_PORT))
    return found


def without_self(upstreams: Iterable[Address], own: Iterable[Address]) -> list[Address]:
    """``upstreams`` less this server's own addresses (and 0.0.0.0 listeners' ports on
    loopback), in order."""
    own = set(own)
    wildcard_ports = {port for host, port in own if host in ("0.0.0.0", "")}
    return [(h, p) for h, p in upstreams
            if (h, p) not in own and not (p in wildcard_ports and h.startswith("127."))]


class _OneReply(asyncio.DatagramProtocol):
    """Receives the first datagram whose ID matches the query's."""

    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[:2] == self.query_id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: nothing listens upstream.
        if not self.reply.done():
            self.reply.set_exception(exc)


class Forwarder:
    """Sends queries to the upstreams in order (see module docstring)."""

    def __init__(self, upstreams: list[Address], *, timeout: float) -> None:
        self.upstreams = upstreams
        self.timeout = timeout
        #: Queries no upstream answered (counted here; the server counts the SERVFAILs).
        self.failures = 0

    async def forward(self, query: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream's reply to ``query`` (wire bytes); None if none replied."""
        for upstream in self.upstreams:
            try:
                reply = await asyncio.wait_for(self._udp(upstream, query), self.timeout)
                if tcp and len(reply) > 2 and reply[2] & _TC:
                    reply = await asyncio.wait_for(self._tcp(upstream, query), self.timeout)
                return reply
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                continue
        self.failures += 1
        return None

    async def _udp(self, upstream: Address, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _OneReply(query[:2]), remote_addr=upstream)
        try:
            transport.sendto(query)
            return await protocol.reply
        finally:
            transport.close()

    async def _tcp(self, upstream: Address, query: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


__all__ = ["DNS_PORT", "Forwarder", "parse_upstream", "resolv_conf_upstreams", "without_self"]
