"""Forwarding UDP for one service port in userspace mode: sessions per client address.

The kernel rules (:mod:`services.proxy.nftables_rules`, userspace mode) ``redirect``
datagrams for ``clusterIP:port`` (and external IPs, NodePorts) to this listener's port
on the address they came in on: the pod bridge's gateway for a pod, 127.0.0.1 for a
host process. conntrack un-NATs the replies, but only if they leave from the very
address the redirect chose; a socket bound to 0.0.0.0 would send from whatever address
routing prefers. So the listener reads each datagram with ``IP_PKTINFO`` (the address
it was sent to after the redirect) and answers with that address as the source. That
ancillary data is why the listening side is a non-blocking socket with ``add_reader``
rather than an asyncio ``DatagramProtocol`` (whose transports give no ancillary data).

A :class:`Session` per client address (Kubernetes' userspace proxier did the same):
the first datagram picks a backend from the service port's
:class:`~services.proxy.loadbalancer.LoadBalancer` (round robin, or the client's
affinity) and opens a connected socket to it; later datagrams of that client go to the
same backend, and what the backend sends back is relayed to the client. A session ends
after ``timeout`` seconds without traffic (``--udp-timeout``), when its backend refuses
(an ICMP port unreachable: the next datagram picks again), or when its backend leaves
the Endpoints (:meth:`UdpListener.prune`). Datagrams are never queued: a send that would
block is dropped, as the network itself may drop it.

Invariants: every session in ``_sessions`` has an open socket registered with the
loop's reader; ``stats.active`` is the number of sessions.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from services.proxy.forwarder import ServicePortTarget
from services.proxy.loadbalancer import Backend
from skiff.logging import get_logger

log = get_logger("services.proxy.udp")

#: Linux's IP_PKTINFO (the socket module lacks the constant) and ``struct in_pktinfo``.
IP_PKTINFO = 8
_PKTINFO = struct.Struct("=I4s4s")
#: Largest datagram read (the IPv4 maximum payload).
MAX_DATAGRAM = 65535
#: Datagrams read per wakeup before giving the loop back.
READ_BATCH = 64

Address = tuple[str, int]


class Session:
    """One client's traffic to one backend through a connected socket."""

    __slots__ = ("backend", "client", "last_used", "local", "sock")

    def __init__(self, client: Address, local: bytes, backend: Backend,
                 sock: socket.socket, now: float) -> None:
        self.client = client
        self.local = local  # the address the client sent to, packed: our reply's source
        self.backend = backend
        self.sock = sock
        self.last_used = now


class UdpListener:
    """A service port's UDP frontend (see the module docstring)."""

    def __init__(self, target: ServicePortTarget, *, timeout: float,
                 host: str = "0.0.0.0", port: int = 0) -> None:
        self.target = target
        self.timeout = timeout
        self._host, self._port = host, port
        self._sock: socket.socket | None = None
        self._sessions: dict[Address, Session] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """The port listened on (0 before :meth:`start`)."""
        return self._sock.getsockname()[1] if self._sock is not None else 0

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def start(self) -> None:
        """Bind and start reading (raises OSError when the address is taken)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._client_readable)
        self._sweeper = self._loop.call_later(self._sweep_every(), self._sweep)

    def close(self) -> None:
        """Stop listening and end every session."""
        for client in list(self._sessions):
            self._end(client)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def prune(self) -> int:
        """End the sessions whose backend is no longer ready (after an Endpoints
        change), so that the client's next datagram picks a current one; how many."""
        present = set(self.target.balancer.backends)
        gone = [c for c, s in self._sessions.items() if s.backend not in present]
        for client in gone:
            self._end(client)
        return len(gone)

    # --------------------------------------------------------------- client side

    def _client_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _, client = sock.recvmsg(
                    MAX_DATAGRAM, socket.CMSG_SPACE(_PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # an ICMP error queued on the listener: ignore it
                log.debug("udp listener error", service=str(self.target.name), error=str(err))
                continue
            self._from_client(data, _destination(ancillary), client)

    def _from_client(self, data: bytes, local: bytes, client: Address) -> None:
        stats = self.target.stats
        session = self._sessions.get(client)
        now = time.monotonic()
        if session is None:
            session = self._open(client, local, now)
            if session is None:
                return
        session.last_used = now
        try:
            session.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return  # dropped, as a full queue on the wire would
        except OSError:
            stats.backend_errors += 1
            self._end(client)
            return
        stats.bytes_to_backend += len(data)

    def _open(self, client: Address, local: bytes, now: float) -> Session | None:
        stats = self.target.stats
        balancer = self.target.balancer
        client_ip = client[0] if balancer.affinity_timeout is not None else None
        backend = balancer.pick(client_ip)
        stats.connections += 1
        if backend is None:
            stats.rejected += 1
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(backend)  # a UDP connect only sets the peer: it does not block
        except OSError as err:
            sock.close()
            stats.backend_errors += 1
            log.debug("udp backend unusable", service=str(self.target.name),
                      backend=f"{backend[0]}:{backend[1]}", error=str(err))
            return None
        session = Session(client, local, backend, sock, now)
        self._sessions[client] = session
        stats.active += 1
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._backend_readable, session)
        return session

    # -------------------------------------------------------------- backend side

    def _backend_readable(self, session: Session) -> None:
        listener = self._sock
        stats = self.target.stats
        for _ in range(READ_BATCH):
            try:
                data = session.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # refused (ICMP port unreachable): pick again next time
                stats.backend_errors += 1
                self._end(session.client)
                return
            if listener is None:
                return
            session.last_used = time.monotonic()
            try:
                listener.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO,
                                           _PKTINFO.pack(0, session.local, bytes(4)))],
                                 0, session.client)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as err:
                log.debug("udp reply failed", service=str(self.target.name), error=str(err))
                continue
            stats.bytes_to_client += len(data)

    # ------------------------------------------------------------------ sessions

    def _end(self, client: Address) -> None:
        session = self._sessions.pop(client, None)
        if session is None:
            return
        self.target.stats.active -= 1
        if self._loop is not None:
            self._loop.remove_reader(session.sock.fileno())
        session.sock.close()

    def _sweep_every(self) -> float:
        return min(max(self.timeout / 2, 0.05), 5.0)

    def _sweep(self) -> None:
        now = time.monotonic()
        for client, session in list(self._sessions.items()):
            if now - session.last_used > self.timeout:
                self._end(client)
        if self._loop is not None and self._sock is not None:
            self._sweeper = self._loop.call_later(self._sweep_every(), self._sweep)


def _destination(ancillary: list[tuple[int, int, bytes]]) -> bytes:
    """The datagram's destination address (packed) from its IP_PKTINFO, else 0.0.0.0
    (the kernel then picks the reply's source)."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            return _PKTINFO.unpack(data[:_PKTINFO.size])[2]
    return bytes(4)


__all__ = ["UdpListener"]
