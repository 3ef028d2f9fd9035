"""The proxier: Services and Endpoints -> kernel rules and userspace listeners.

What it reconciles, per service port (TCP or UDP) of every Service with a cluster IP:

- the kernel rules (:mod:`services.proxy.nftables_rules`), in this node's own table
  ``ip skiff-proxy-<node>``, written in batches by :class:`~services.proxy.rulesync.
  RulesSyncer`. In userspace mode (the default) they ``redirect`` the cluster IP,
  external and load-balancer IPs and NodePorts (on non-loopback local addresses) to
  this process's listener for the port; in nftables mode they DNAT to the ready
  endpoints themselves;
- in userspace mode, a listener on ``0.0.0.0:<ephemeral port>`` per service port
  (:class:`~services.proxy.userspace.PortProxy`), forwarding to the ready endpoints
  through the port's load balancer (round robin or ClientIP affinity);
- in both modes, for a NodePort on a *loopback* node address, a listener on
  ``nodeAddress:nodePort``: the kernel cannot DNAT loopback traffic to a pod without
  ``route_localnet``, so those NodePorts are served by this process directly.

What it watches: Services and Endpoints (both keyed ``namespace/name``) and this node's
Node object, whose InternalIP is the node address unless ``--node-address`` says
otherwise. Handlers only enqueue the service key; a node change enqueues every service.
``sync(key)`` plans with the pure :func:`plan_service`, updates the port proxies,
records the service's rule ports and asks the syncer for a write.

Invariants, between two awaits of ``sync``: ``_proxies[p]`` exists only for a service
port ``p`` in ``_ports_of[key]`` of its service; ``_rule_ports[key]`` holds the rule
values of exactly the valid ports of service ``key`` (with their listener ports).

A deleted service port closes its listeners; established connections stay up until
either end closes them. Endpoint changes update the load balancers in place and reach
the kernel within the syncer's bounded delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from services.proxy.loadbalancer import Backend, ServicePortName
from services.proxy.metrics import PortStats
from services.proxy.nftables_rules import (
    CLIENT_IP,
    USERSPACE,
    ServicePort,
    Settings,
    service_ports_of,
    validate_port,
)
from services.proxy.rulesync import RulesSyncer
from services.proxy.userspace import PortProxy
from skiff.api.v1 import core_pb2
from skiff.client.controller import Controller
from skiff.client.informer import SharedInformerFactory
from skiff.logging import get_logger

log = get_logger("services.proxy.proxier")

#: Where NodePorts listen when neither the flag nor the Node object says.
DEFAULT_NODE_ADDRESS = "127.0.0.1"
#: A listener port that passes validation while the real one is not known yet.
_SOME_PORT = 1

Address = tuple[str, int]


@dataclass(frozen=True)
class PortPlan:
    """What one service port should look like.

    ``rule`` is its kernel-rule value (``proxy_port`` 0 until the listener is open);
    ``frontend``: userspace mode listens for it on an ephemeral port; ``direct``: the
    loopback ``nodeAddress:nodePort`` to listen on, if any.
    """

    rule: ServicePort
    backends: tuple[Backend, ...]
    affinity_timeout: float | None
    frontend: bool
    direct: Address | None


# ------------------------------------------------------------- pure planning


def node_internal_ip(node: core_pb2.Node | None) -> str | None:
    """The node's first InternalIP from status.addresses, if it has one (pure)."""
    if node is None:
        return None
    for address in node.status.addresses:
        if address.type == "InternalIP" and address.address:
            return address.address
    return None


def is_loopback(address: str) -> bool:
    """Whether ``address`` is in 127.0.0.0/8 (pure)."""
    try:
        return ipaddress.IPv4Address(address).is_loopback
    except ValueError:
        return False


def plan_service(service: core_pb2.Service | None,
                 endpoints: core_pb2.EndpointsObject | None, *, node_address: str,
                 settings: Settings) -> tuple[dict[ServicePortName, PortPlan], list[str]]:
    """The plan of every TCP and UDP port of ``service``, and why ports were left out
    (pure).

    None (the service is gone), headless and ExternalName services plan nothing. A
    port the kernel rules cannot take (a cluster IP outside the service range, a
    NodePort outside the range, a bad address) is left out with its reason.
    """
    if service is None:
        return {}, []
    userspace = settings.mode == USERSPACE
    loopback_node = is_loopback(node_address)
    plans: dict[ServicePortName, PortPlan] = {}
    problems: list[str] = []
    for port in service_ports_of(service, endpoints):
        try:
            validate_port(replace(port, proxy_port=_SOME_PORT), settings)
        except ValueError as err:
            problems.append(str(err))
            continue
        name = ServicePortName(port.namespace, port.name, port.port_name)
        affinity = float(port.affinity_timeout) if port.session_affinity == CLIENT_IP \
            else None
        direct = (node_address, port.node_port) if port.node_port and loopback_node else None
        plans[name] = PortPlan(
            rule=port, backends=tuple((e.ip, e.port) for e in port.endpoints),
            affinity_timeout=affinity, frontend=userspace, direct=direct)
    return plans, problems


# ---------------------------------------------------------------- the proxier


class BindError(Exception):
    """Some listener of a service could not be opened (its address is taken)."""


class Proxier(Controller):
    """Keeps the kernel rules and this process's listeners in line with the API (see
    module)."""

    def __init__(self, factory: SharedInformerFactory, *, node_name: str,
                 settings: Settings, syncer_factory: SyncerFactory,
                 node_address: str | None = None, connect_timeout: float = 1.0,
                 udp_timeout: float = 30.0) -> None:
        # One worker: listeners are opened and closed in one sequence, so a NodePort
        # handed from one service to another is released before it is taken.
        super().__init__("proxy", workers=1)
        self.node_name = node_name
        self.settings = settings
        self.node_address_flag = node_address
        self.connect_timeout = connect_timeout
        self.udp_timeout = udp_timeout
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
        self._proxies: dict[ServicePortName, PortProxy] = {}
        self._ports_of: dict[str, set[ServicePortName]] = {}
        self._rule_ports: dict[str, tuple[ServicePort, ...]] = {}
        self._node_address = node_address or DEFAULT_NODE_ADDRESS
        self._log = log.bind(node=node_name)
        self.rules = syncer_factory(self.rule_ports)

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
        """The node's address: the flag, else the Node's InternalIP, else 127.0.0.1."""
        return self._node_address

    async def run_all(self) -> None:
        """Run the controller and the rules' writer until cancelled."""
        writer = asyncio.ensure_future(self.rules.run(self._caches_ready()))
        try:
            await self.run()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def sync(self, key: str) -> None:
        """Make the rules and listeners of service ``key`` match the cache."""
        started = time.monotonic()
        service = self.services.store.get(key)
        endpoints = self.endpoints.store.get(key)
        plans, problems = plan_service(service, endpoints, node_address=self._node_address,
                                       settings=self.settings)
        for problem in problems:
            self._log.warning("service port left out", service=key, reason=problem)
        for name in sorted(self._ports_of.get(key, set()) - plans.keys()):
            self._remove_port(name)
        failed: list[str] = []
        rules: list[ServicePort] = []
        for name, plan in plans.items():
            proxy_port, errors = await self._apply_port(name, plan)
            failed += errors
            if not plan.frontend or proxy_port:
                rules.append(replace(plan.rule, proxy_port=proxy_port))
        self._ports_of[key] = set(plans)
        if not plans:
            del self._ports_of[key]
        before = self._rule_ports.pop(key, ())
        if rules:
            self._rule_ports[key] = tuple(rules)
        if tuple(rules) != before:
            self.rules.request()
        self._log.debug("synced service", key=key, ports=len(plans),
                        seconds=round(time.monotonic() - started, 6))
        if failed:
            raise BindError(f"cannot listen on {', '.join(failed)}")

    async def _apply_port(self, name: ServicePortName, plan: PortPlan
                          ) -> tuple[int, list[str]]:
        """Update one service port's userspace side; its listener port (0: none) and
        the addresses it could not listen on."""
        proxy = self._proxies.get(name)
        if proxy is not None and proxy.protocol != plan.rule.protocol:
            self._remove_port(name)
            proxy = None
        if proxy is None:
            if not plan.frontend and plan.direct is None:
                return 0, []
            proxy = PortProxy(name, plan.rule.protocol, backends=plan.backends,
                              affinity_timeout=plan.affinity_timeout,
                              connect_timeout=self.connect_timeout,
                              udp_timeout=self.udp_timeout)
            self._proxies[name] = proxy
            self._log.info("service port added", service=str(name),
                           protocol=plan.rule.protocol, backends=_show(plan.backends))
        elif proxy.update(plan.backends, plan.affinity_timeout):
            self._log.info("backends changed", service=str(name),
                           backends=_show(plan.backends))
        failed: list[str] = []
        if plan.frontend:
            try:
                await proxy.open_frontend()
            except OSError as e:
                failed.append(f"0.0.0.0 ({e})")
        try:
            await proxy.set_direct(plan.direct)
        except OSError as e:
            assert plan.direct is not None
            self._log.error("cannot listen", service=str(name),
                            address=f"{plan.direct[0]}:{plan.direct[1]}", error=str(e))
            failed.append(f"{plan.direct[0]}:{plan.direct[1]}")
        if proxy.frontend is None and proxy.direct is None:
            self._proxies.pop(name).close()
            return 0, failed
        return proxy.frontend_port, failed

    def _remove_port(self, name: ServicePortName) -> None:
        proxy = self._proxies.pop(name, None)
        if proxy is not None:
            proxy.close()
            self._log.info("service port removed", service=str(name))

    # --------------------------------------------------------------- reporting

    def rule_ports(self) -> Iterator[ServicePort]:
        """Every service port the kernel rules should hold now."""
        for ports in list(self._rule_ports.values()):
            yield from ports

    def ports(self) -> Iterator[tuple[ServicePortName, PortStats]]:
        """Every service port this process forwards, with its counters (for metrics)."""
        for name, proxy in list(self._proxies.items()):
            yield name, proxy.stats

    @property
    def listeners(self) -> list[tuple[str, str, int]]:
        """(protocol, host, port) of every listener open now."""
        out = []
        for proxy in self._proxies.values():
            if proxy.frontend is not None:
                out.append((proxy.protocol, "0.0.0.0", proxy.frontend_port))
            if proxy.direct_address is not None:
                out.append((proxy.protocol, *proxy.direct_address))
        return sorted(out)

    def _synced(self) -> bool:
        return (all(r.has_synced for r in self._registrations)
                and self.queue.len() == 0 and not self.queue.processing)

    async def _caches_ready(self) -> None:
        # Polled: the work queue offers no event for "drained".
        while not self._synced():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the caches synced, every service was synced once and the kernel
        rules were written once."""
        try:
            await asyncio.wait_for(self._caches_ready(), timeout)
            await asyncio.wait_for(self.rules.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close_all(self) -> None:
        """Close every listener (at shutdown)."""
        for name in list(self._proxies):
            self._remove_port(name)


def _show(backends: tuple[Backend, ...]) -> list[str]:
    return [f"{ip}:{port}" for ip, port in backends]


#: Makes the rules' writer, given what to read the service ports from.
SyncerFactory = Callable[[Callable[[], Iterable[ServicePort]]], RulesSyncer]

__all__ = ["DEFAULT_NODE_ADDRESS", "PortPlan", "Proxier", "is_loopback", "node_internal_ip",
           "plan_service"]
