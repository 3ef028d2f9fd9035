"""The DNS server: UDP and TCP listeners on asyncio, answering through a Responder.

One :class:`DnsServer` listens on one or more addresses, each over UDP
(a :class:`asyncio.DatagramProtocol`) and TCP (:func:`asyncio.start_server`, messages
framed by a two-byte length, several per connection, answered in order).

A query is answered at once, on the loop, when its reply is cached or comes from the
zone; only forwarded queries (and chased ExternalName targets) become tasks, so a slow
upstream never delays the cluster's own names. Per-connection invariant (TCP): replies
are written in the order their queries came.

Listening sockets use SO_REUSEPORT, so several instances on one machine may share an
address (the kernel spreads queries among them), and IP_FREEBIND, so an instance may
bind an address that is not there yet: ``skiff up`` starts one on its node's bridge
gateway (10.244.N.1), which appears only once that node's kubelet made the bridge, and
start-up must not race it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from services.dns.answers import Chase, Forward, Reply, Responder
from services.dns.forwarder import Forwarder
from services.dns.metrics import DnsStats
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("services.dns.server")

Address = tuple[str, int]

#: A TCP connection idle this long is closed (CoreDNS: 10 s).
TCP_IDLE_TIMEOUT = 10.0
#: Receive buffer asked for the UDP socket, so a burst waits in the kernel, not dropped.
UDP_RCVBUF = 4 * 1024 * 1024
#: Forwarded queries in flight at once; past this a query gets SERVFAIL at once rather
#: than a task (a dead upstream must not grow the process without bound).
MAX_IN_FLIGHT = 1000

_now = time.perf_counter


class DnsServer:
    """The daemon's listeners and the one path every query takes (see module)."""

    def __init__(self, responder: Responder, forwarder: Forwarder, stats: DnsStats) -> None:
        self.responder = responder
        self.forwarder = forwarder
        self.stats = stats
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._in_flight = 0

    async def listen(self, address: Address) -> Address:
        """Serve UDP and TCP on ``address``; the bound address (port 0 picks one)."""
        loop = asyncio.get_running_loop()
        family, sockaddr = await _resolve(address)
        tcp_sock = listening_socket(family, socket.SOCK_STREAM, sockaddr)
        try:
            tcp_sock.listen(socket.SOMAXCONN)
            tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        except BaseException:
            tcp_sock.close()
            raise
        bound = tcp.sockets[0].getsockname()[:2]
        try:
            udp_sock = listening_socket(family, socket.SOCK_DGRAM, (sockaddr[0], bound[1]))
            with contextlib.suppress(OSError):
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self),
                                                         sock=udp_sock)
        except BaseException:
            tcp.close()
            raise
        self._tcp.append(tcp)
        self._udp.append(udp)
        log.info("listening", address=f"{bound[0]}:{bound[1]}")
        return bound[0], bound[1]

    def close(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        self._udp.clear()
        self._tcp.clear()

    # ------------------------------------------------------------- answering

    def answer_now(self, data: bytes, *, tcp: bool) -> Reply | Forward | Chase | None:
        """The reply to ``data`` if the zone (or the cache) has it; else what to await."""
        cached = self.responder.cached(data, tcp=tcp)
        if cached is not None:
            return Reply(data[:2] + cached.wire, cached.rcode)
        return self.responder.decide(data, tcp=tcp)

    async def answer_later(self, data: bytes, decision: Forward | Chase, *,
                           tcp: bool) -> Reply:
        """The reply to a query that needs upstream."""
        if isinstance(decision, Chase):
            self.stats.forwarded += 1
            upstream = await self.forwarder.forward(self.responder.chase_query(decision),
                                                    tcp=tcp)
            return self.responder.add_chased(decision, upstream, tcp=tcp)
        self.stats.forwarded += 1
        reply = await self.forwarder.forward(data, tcp=tcp)
        if reply is None:
            return self.responder.servfail(decision.query, tcp=tcp)
        return Reply(reply, reply[3] & 0x0F if len(reply) > 3 else 0)

    # ------------------------------------------------------------------- UDP

    def _udp_query(self, transport: asyncio.DatagramTransport, data: bytes,
                   addr: Address) -> None:
        started = _now()
        self.stats.requests["udp"] += 1
        cached = self.responder.cached(data, tcp=False)
        if cached is not None:  # the hot path: nothing parsed, nothing built
            transport.sendto(data[:2] + cached.wire, addr)
            self.stats.observe(cached.rcode, _now() - started)
            return
        try:
            decision = self.responder.decide(data, tcp=False)
        except Exception:
            log.exception("query failed", client=f"{addr[0]}:{addr[1]}")
            return
        if decision is None:
            return
        if isinstance(decision, Reply):
            transport.sendto(decision.wire, addr)
            self.stats.observe(decision.rcode, _now() - started)
            return
        if self._in_flight >= MAX_IN_FLIGHT:
            reply = self.responder.servfail(decision.query, tcp=False)
            transport.sendto(reply.wire, addr)
            self.stats.observe(reply.rcode, _now() - started)
            return
        self._in_flight += 1
        spawn(self._udp_later(transport, data, addr, decision, started),
              name="dns forward")

    async def _udp_later(self, transport: asyncio.DatagramTransport, data: bytes,
                         addr: Address, decision: Forward | Chase, started: float) -> None:
        try:
            reply = await self.answer_later(data, decision, tcp=False)
        finally:
            self._in_flight -= 1
        if not transport.is_closing():
            transport.sendto(reply.wire, addr)
        self.stats.observe(reply.rcode, _now() - started)

    # ------------------------------------------------------------------- TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    (size,) = struct.unpack("!H", header)
                    data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return  # idle, or the client closed: either way, done
                started = _now()
                self.stats.requests["tcp"] += 1
                try:
                    decision = self.answer_now(data, tcp=True)
                except Exception:
                    log.exception("query failed", transport="tcp")
                    return
                if decision is None:
                    continue
                if not isinstance(decision, Reply):
                    decision = await self.answer_later(data, decision, tcp=True)
                writer.write(struct.pack("!H", len(decision.wire)) + decision.wire)
                await writer.drain()
                self.stats.observe(decision.rcode, _now() - started)
        except ConnectionError:
            return
        finally:
            writer.close()


#: Linux's IP_FREEBIND and IPV6_FREEBIND (Python's socket module names neither).
IP_FREEBIND = 15
IPV6_FREEBIND = 78


def listening_socket(family: int, kind: int, sockaddr: tuple[str, int]) -> socket.socket:
    """A non-blocking socket bound to ``sockaddr`` with SO_REUSEADDR (TCP),
    SO_REUSEPORT and IP_FREEBIND (see the module); closed again if binding fails."""
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _resolve(address: Address) -> tuple[int, tuple[str, int]]:
    """The family and socket address of ``HOST:PORT`` (a name is looked up once)."""
    host, port = address
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, (sockaddr[0], sockaddr[1])


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        assert self.transport is not None
        self.server._udp_query(self.transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier reply (the client went away): nothing to do.
        log.debug("udp error", error=str(exc))


__all__ = ["DnsServer"]
