"""The proxier: Services and Endpoints -> listeners on cluster IPs and NodePorts.

What it reconciles: for every TCP port of every Service, a listener on
``clusterIP:port`` and, for a NodePort service, one on ``nodeAddress:nodePort``; both
forward to the ready endpoints of that port (:mod:`services.proxy.forwarder`), through
one :class:`~services.proxy.loadbalancer.LoadBalancer` per service port.

What it watches: Services and Endpoints (both keyed ``namespace/name``: an Endpoints
object belongs to the Service of the same name), and this node's Node object, whose
InternalIP is where NodePorts listen unless ``--node-address`` says otherwise. Handlers
only enqueue the service key; a node change enqueues every service.

Invariants, between two awaits of ``sync``:

- ``_targets[p]`` exists iff service port ``p`` is in ``_ports_of[key]`` for its
  service ``key``;
- every listener in ``_listeners`` serves a port in ``_targets``; an address is
  listened on by at most one service port of this process (SO_REUSEPORT would let us
  bind it twice, and the kernel would then split connections between two services).

The service range is loopback (127.10.0.0/16), so binding a cluster IP needs no
address configuration and no root; every node's proxy on one machine binds the same
cluster IPs with SO_REUSEPORT and the kernel spreads connections among them.

A deleted service (or port) closes its listeners; connections already established
stay up until either end closes them (Kubernetes leaves conntrack flows alone too).
Endpoint changes replace the load balancer's backends in place: new connections see
them, established ones are untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from services.proxy.forwarder import Frontend, ServicePortTarget
from services.proxy.loadbalancer import (
    TCP,
    Backend,
    LoadBalancer,
    ServicePortName,
    affinity_timeout,
    backends_for_port,
)
from services.proxy.metrics import PortStats
from skiff.api.v1 import core_pb2
from skiff.client.controller import Controller
from skiff.client.informer import SharedInformerFactory
from skiff.logging import get_logger

log = get_logger("services.proxy.proxier")

#: Where NodePorts listen when neither the flag nor the Node object says.
DEFAULT_NODE_ADDRESS = "127.0.0.1"
HEADLESS = "None"
NODE_PORT = "NodePort"
#: Pending connections the kernel queues per listener before we accept them.
LISTEN_BACKLOG = 1024

Address = tuple[str, int]


@dataclass(frozen=True)
class PortPlan:
    """What one service port should look like: where it listens, where it forwards."""

    addresses: tuple[Address, ...]
    backends: tuple[Backend, ...]
    affinity_timeout: float | None


# ------------------------------------------------------------- pure planning


def node_internal_ip(node: core_pb2.Node | None) -> str | None:
    """The node's first InternalIP from status.addresses, if it has one (pure)."""
    if node is None:
        return None
    for address in node.status.addresses:
        if address.type == "InternalIP" and address.address:
            return address.address
    return None


def plan_service(service: core_pb2.Service | None,
                 endpoints: core_pb2.EndpointsObject | None, *,
                 node_address: str) -> dict[ServicePortName, PortPlan]:
    """The listeners and backends every TCP port of ``service`` should have (pure).

    None (the service is gone) plans nothing. A headless service (clusterIP None) has
    no cluster IP listener; a NodePort service also listens on ``node_address``.
    """
    if service is None:
        return {}
    spec = service.spec
    cluster_ip = spec.cluster_ip if spec.cluster_ip != HEADLESS else ""
    timeout = affinity_timeout(spec)
    plans: dict[ServicePortName, PortPlan] = {}
    for port in spec.ports:
        if (port.protocol or TCP) != TCP:
            continue  # only TCP is proxied
        addresses: list[Address] = []
        if cluster_ip:
            addresses.append((cluster_ip, port.port))
        if spec.type == NODE_PORT and port.node_port:
            addresses.append((node_address, port.node_port))
        if not addresses:
            continue
        name = ServicePortName(service.metadata.namespace, service.metadata.name, port.name)
        plans[name] = PortPlan(tuple(addresses), tuple(backends_for_port(endpoints, port.name)),
                               timeout)
    return plans


# ---------------------------------------------------------------- the proxier


class BindError(Exception):
    """Some listener of a service could not be opened (its address is taken)."""


class Proxier(Controller):
    """Keeps this process's listeners and load balancers in line with the API (see module)."""

    def __init__(self, factory: SharedInformerFactory, *, node_name: str,
                 node_address: str | None = None, connect_timeout: float = 1.0) -> None:
        # One worker: listeners are opened and closed in one sequence, so a NodePort
        # handed from one service to another is released before it is taken.
        super().__init__("proxy", workers=1)
        self.node_name = node_name
        self.node_address_flag = node_address
        self.connect_timeout = connect_timeout
        self.services = factory.informer("services")
        self.endpoints = factory.informer("endpoints")
        self.nodes = factory.informer("nodes", field_selector=f"metadata.name={node_name}")
        self._registrations = [
            self.services.add_handler(self.enqueue, lambda old, new: self.enqueue(new),
                                      self.enqueue, name="proxy services"),
            self.endpoints.add_handler(self.enqueue, self._endpoints_updated, self.enqueue,
                                       name="proxy endpoints"),
            self.nodes.add_handler(self._node_changed,
                                   lambda old, new: self._node_changed(new),
                                   self._node_changed, name="proxy node"),
        ]
        # Handler registrations, not just informers: a registration has synced once its
        # handlers were given the first list, so every service is queued by then.
        self.wait_for(*self._registrations)
        self._targets: dict[ServicePortName, ServicePortTarget] = {}
        self._ports_of: dict[str, set[ServicePortName]] = {}
        self._listeners: dict[Address, tuple[ServicePortName, asyncio.AbstractServer]] = {}
        self._node_address = node_address or DEFAULT_NODE_ADDRESS
        self._log = log.bind(node=node_name)

    # ----------------------------------------------------------------- handlers

    def _endpoints_updated(self, old: core_pb2.EndpointsObject,
                           new: core_pb2.EndpointsObject) -> None:
        # The endpoints controller rewrites objects whose subsets did not change (a
        # resync, an annotation): only a change of subsets matters here.
        if list(old.subsets) != list(new.subsets):
            self.enqueue(new)

    def _node_changed(self, node: core_pb2.Node) -> None:
        address = self.node_address_flag or node_internal_ip(
            self.nodes.store.get(self.node_name)) or DEFAULT_NODE_ADDRESS
        if address != self._node_address:
            self._log.info("node address changed", address=address,
                           previous=self._node_address)
            self._node_address = address
            for service in self.services.store.list():
                self.enqueue(service)

    # --------------------------------------------------------------------- sync

    @property
    def node_address(self) -> str:
        """Where NodePorts listen now: the flag, else the Node's InternalIP, else 127.0.0.1."""
        return self._node_address

    async def sync(self, key: str) -> None:
        """Make the listeners and backends of service ``key`` match the cache."""
        started = time.monotonic()
        service = self.services.store.get(key)
        endpoints = self.endpoints.store.get(key)
        plans = plan_service(service, endpoints, node_address=self._node_address)
        for name in sorted(self._ports_of.get(key, set()) - plans.keys()):
            self._remove_port(name)
        failed: list[str] = []
        for name, plan in plans.items():
            failed += await self._apply_port(name, plan)
        if plans:
            self._ports_of[key] = set(plans)
        else:
            self._ports_of.pop(key, None)
        self._log.debug("synced service", key=key, ports=len(plans),
                        seconds=round(time.monotonic() - started, 6))
        if failed:
            raise BindError(f"cannot listen on {', '.join(failed)}")

    async def _apply_port(self, name: ServicePortName, plan: PortPlan) -> list[str]:
        """Update one service port; the addresses it could not listen on."""
        target = self._targets.get(name)
        if target is None:
            balancer = LoadBalancer(plan.backends, affinity_timeout=plan.affinity_timeout,
                                    clock=time.monotonic)
            target = ServicePortTarget(name, balancer, PortStats(),
                                       connect_timeout=self.connect_timeout)
            self._targets[name] = target
            self._log.info("service port added", service=str(name),
                           backends=_show(plan.backends))
        elif (target.balancer.backends != plan.backends
              or target.balancer.affinity_timeout != plan.affinity_timeout):
            target.balancer.update(plan.backends, affinity_timeout=plan.affinity_timeout)
            self._log.info("backends changed", service=str(name),
                           backends=_show(plan.backends))
        wanted = set(plan.addresses)
        for address, (owner, _) in list(self._listeners.items()):
            if owner == name and address not in wanted:
                self._close_listener(address)
        failed: list[str] = []
        for address in plan.addresses:
            held = self._listeners.get(address)
            if held is not None:
                if held[0] != name:
                    failed.append(f"{address[0]}:{address[1]} (held by {held[0]})")
                continue
            try:
                await self._open_listener(address, target)
            except OSError as e:
                self._log.error("cannot listen", service=str(name),
                                address=f"{address[0]}:{address[1]}", error=str(e))
                failed.append(f"{address[0]}:{address[1]}")
        return failed

    async def _open_listener(self, address: Address, target: ServicePortTarget) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Frontend(target), host=address[0], port=address[1], reuse_port=True,
            backlog=LISTEN_BACKLOG)
        self._listeners[address] = (target.name, server)
        self._log.info("listening", service=str(target.name),
                       address=f"{address[0]}:{address[1]}")

    def _close_listener(self, address: Address) -> None:
        name, server = self._listeners.pop(address)
        # Only the listening socket closes: established connections carry on.
        server.close()
        self._log.info("stopped listening", service=str(name),
                       address=f"{address[0]}:{address[1]}")

    def _remove_port(self, name: ServicePortName) -> None:
        for address, (owner, _) in list(self._listeners.items()):
            if owner == name:
                self._close_listener(address)
        self._targets.pop(name, None)
        self._log.info("service port removed", service=str(name))

    # --------------------------------------------------------------- reporting

    def ports(self) -> Iterator[tuple[ServicePortName, PortStats]]:
        """Every service port served now, with its counters (what metrics report)."""
        for name, target in list(self._targets.items()):
            yield name, target.stats

    @property
    def listeners(self) -> list[Address]:
        """The addresses listened on now."""
        return sorted(self._listeners)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the caches synced and every service was synced once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            synced = all(r.has_synced for r in self._registrations)
            if synced and self.queue.len() == 0 and not self.queue.processing:
                return True
            await asyncio.sleep(0.05)
        return False

    def close_all(self) -> None:
        """Close every listener (at shutdown)."""
        for address in list(self._listeners):
            self._close_listener(address)


def _show(backends: tuple[Backend, ...]) -> list[str]:
    return [f"{ip}:{port}" for ip, port in backends]


__all__ = ["DEFAULT_NODE_ADDRESS", "PortPlan", "Proxier", "node_internal_ip", "plan_service"]
