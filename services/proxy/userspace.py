"""One service port's userspace data path: its load balancer and its listeners.

A :class:`PortProxy` holds what the proxier keeps per service port when this process
forwards its traffic:

- the :class:`~services.proxy.forwarder.ServicePortTarget` (load balancer and counters),
  shared by every listener of the port;
- the *frontend* (userspace mode): a listener on ``0.0.0.0:<ephemeral port>``, TCP
  (:class:`~services.proxy.forwarder.Frontend` per connection) or UDP
  (:class:`~services.proxy.udp.UdpListener`), which the kernel rules ``redirect``
  the port's cluster IP, external IPs and NodePorts to. Its port is chosen by the
  kernel once and kept for the life of the service port, so an Endpoints change never
  touches the rules' redirect maps;
- a *direct* listener on ``nodeAddress:nodePort`` when the node address is loopback (a
  one-machine cluster's nodes are 127.0.0.1, 127.0.1.2, ...), in both modes: the kernel
  cannot send loopback traffic on to a pod (that needs ``route_localnet``), so NodePorts
  on a loopback node address are served by this process directly.

Endpoint changes update the load balancer in place: established TCP connections are
untouched, new ones (and new UDP sessions) see the new backends at once; UDP sessions
whose backend left are ended.
"""

from __future__ import annotations

import asyncio
import time

from services.proxy.forwarder import Frontend, ServicePortTarget
from services.proxy.loadbalancer import Backend, LoadBalancer, ServicePortName
from services.proxy.metrics import PortStats
from services.proxy.udp import UdpListener

#: Pending connections the kernel queues per listener before we accept them.
LISTEN_BACKLOG = 1024
TCP = "TCP"
WILDCARD = "0.0.0.0"

Address = tuple[str, int]
Listener = asyncio.AbstractServer | UdpListener


class PortProxy:
    """The userspace side of one service port (see the module docstring).

    Invariants: ``frontend`` is None or listening; ``direct`` is None or listening on
    ``direct_address``; both forward through ``target``.
    """

    def __init__(self, name: ServicePortName, protocol: str, *, backends: tuple[Backend, ...],
                 affinity_timeout: float | None, connect_timeout: float,
                 udp_timeout: float) -> None:
        self.name = name
        self.protocol = protocol
        self.udp_timeout = udp_timeout
        balancer = LoadBalancer(backends, affinity_timeout=affinity_timeout,
                                clock=time.monotonic)
        self.target = ServicePortTarget(name, balancer, PortStats(),
                                        connect_timeout=connect_timeout)
        self.frontend: Listener | None = None
        self.frontend_port = 0
        self.direct: Listener | None = None
        self.direct_address: Address | None = None

    @property
    def stats(self) -> PortStats:
        return self.target.stats

    def update(self, backends: tuple[Backend, ...], affinity_timeout: float | None) -> bool:
        """New ready backends; whether anything changed."""
        balancer = self.target.balancer
        if balancer.backends == backends and balancer.affinity_timeout == affinity_timeout:
            return False
        balancer.update(backends, affinity_timeout=affinity_timeout)
        for listener in (self.frontend, self.direct):
            if isinstance(listener, UdpListener):
                listener.prune()
        return True

    async def open_frontend(self) -> int:
        """Listen on an ephemeral port of 0.0.0.0 (once); the port."""
        if self.frontend is None:
            self.frontend = await self._listen(WILDCARD, 0, reuse_port=False)
            self.frontend_port = _port_of(self.frontend)
        return self.frontend_port

    async def set_direct(self, address: Address | None) -> None:
        """Listen directly on ``address`` (None: nowhere); OSError when it is taken."""
        if address == self.direct_address:
            return
        self._close_direct()
        if address is not None:
            # Several proxies on one machine may be given one loopback node address:
            # they share the port (each serves every Service the same way).
            self.direct = await self._listen(address[0], address[1], reuse_port=True)
            self.direct_address = address

    def close(self) -> None:
        """Close the listeners; established TCP connections carry on."""
        if self.frontend is not None:
            self.frontend.close()
            self.frontend = None
        self._close_direct()

    def _close_direct(self) -> None:
        if self.direct is not None:
            self.direct.close()
        self.direct = None
        self.direct_address = None

    async def _listen(self, host: str, port: int, *, reuse_port: bool) -> Listener:
        if self.protocol != TCP:
            udp = UdpListener(self.target, timeout=self.udp_timeout, host=host, port=port)
            udp.start()
            return udp
        target = self.target
        return await asyncio.get_running_loop().create_server(
            lambda: Frontend(target), host=host, port=port, reuse_port=reuse_port,
            backlog=LISTEN_BACKLOG)


def _port_of(listener: Listener) -> int:
    if isinstance(listener, UdpListener):
        return listener.port
    sockets = listener.sockets
    return int(sockets[0].getsockname()[1]) if sockets else 0


__all__ = ["PortProxy"]
