"""The service load-balancer controller: ``type: LoadBalancer`` Services get an address.

Kubernetes' service controller (``k8s.io/cloud-provider/controllers/service``), with the
cloud provider replaced by a small local seam, as k3s's ServiceLB and MetalLB do it.
Reconciles ``status.loadBalancer.ingress`` of every Service; watches Services.

- :class:`LoadBalancerProvider` is the seam (the seed's cloud-provider plugins):
  ``ensure`` gives a Service its load balancer and says its ingress, ``delete`` takes it
  away, ``recover`` learns what a Service's status says it holds. The built-in
  :class:`PoolProvider` hands out IPv4 addresses of ``--load-balancer-ip-range``
  (default 10.112.0.0/24, a cluster range every kubelet routes onto its bridge, where
  the proxy treats an ingress IP as it treats an external IP).
- A LoadBalancer Service gets an address and keeps it: the one its status shows, when
  that lies in the range and nobody else holds it; otherwise the next free one. It is
  released when the Service is deleted or stops being a LoadBalancer (its status is
  then cleared), and is the last to be given again while others are free.
- Failover: at the start of every leadership term, before any worker allocates, every
  address the Services' statuses show is marked held (:meth:`ServiceLBController.run`),
  and a status seen later is marked by the informer handler at once; so a new leader
  never hands out an address the old one gave and wrote. (As with node IPAM, a write a
  deposed leader sent before its lease ran out and that landed after the successor
  listed is not covered.)
- A Service left without an address because the range is used up gets a Warning Event
  (``AllocationFailed``, MetalLB's reason) and is looked at again when one is released.

Invariant: two Services never hold the same address through this controller. Status is
written through the status subresource, on the cached resourceVersion (a stale cache
is a Conflict, retried by the work queue), and only when it changes.

The decisions are pure (:class:`IPPool`, :func:`wants_load_balancer`, :func:`ingress_ips`).
Neighbours: :mod:`services.controller_manager.nodeipam` (the same shape for podCIDRs),
the proxy (serves ingress IPs), the kubelet's bridge plugin (routes the range).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Protocol

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.addresses import LOAD_BALANCER_CIDR
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.client.controller import Controller
from skiff.client.events import NORMAL, WARNING, EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.client.store import key_of

LOAD_BALANCER = "LoadBalancer"
#: The range addresses come from by default (DESIGN.md's default addresses).
DEFAULT_LOAD_BALANCER_IP_RANGE = LOAD_BALANCER_CIDR
#: Event reasons (MetalLB's ``IPAllocated`` / ``AllocationFailed``).
IP_ALLOCATED = "IPAllocated"
ALLOCATION_FAILED = "AllocationFailed"

__all__ = ["ALLOCATION_FAILED", "DEFAULT_LOAD_BALANCER_IP_RANGE", "IP_ALLOCATED", "IPPool",
           "LoadBalancerProvider", "PoolExhausted", "PoolProvider", "ServiceLBController",
           "ingress_ips", "parse_ip_range", "wants_load_balancer"]


# ----------------------------------------------------------------- pure decisions


def parse_ip_range(text: str) -> ipaddress.IPv4Network:
    """``--load-balancer-ip-range`` as a network (ValueError naming the flag; pure)."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"--load-balancer-ip-range {text!r} is not a valid network: "
                         f"{e}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"--load-balancer-ip-range {text!r} must be an IPv4 network")
    if network.num_addresses < 4:
        raise ValueError(f"--load-balancer-ip-range {text!r} holds no usable address "
                         "(a /30 at the smallest)")
    return network


def wants_load_balancer(service: core_pb2.Service) -> bool:
    """Whether the Service should have a load balancer (pure)."""
    return service.spec.type == LOAD_BALANCER


def ingress_ips(status: core_pb2.LoadBalancerStatus) -> list[str]:
    """The ingress IPs a status shows (pure)."""
    return [ingress.ip for ingress in status.ingress if ingress.ip]


def status_of(ips: Iterable[str]) -> core_pb2.LoadBalancerStatus:
    """A load-balancer status listing ``ips`` (pure)."""
    return core_pb2.LoadBalancerStatus(
        ingress=[core_pb2.LoadBalancerIngress(ip=ip) for ip in ips])


class PoolExhausted(Exception):
    """Every address of the range is held."""


class IPPool:
    """The usable addresses of a range, each free or held by one Service key (pure).

    The network and broadcast addresses are never given (as Kubernetes' allocators).
    Invariants: ``_holder[ip] == key`` iff ``_held[key] == ip``; ``_next`` is where the
    search for a free address starts (after the last one given, so an address just
    released is the last to come back while others are free).
    """

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._first = int(network.network_address) + 1
        self.size = network.num_addresses - 2
        self._holder: dict[str, str] = {}
        self._held: dict[str, str] = {}
        self._next = 0

    @property
    def free(self) -> int:
        return self.size - len(self._holder)

    def held(self, key: str) -> str | None:
        return self._held.get(key)

    def holder(self, ip: str) -> str | None:
        return self._holder.get(ip)

    def usable(self, ip: str) -> bool:
        """Whether ``ip`` is one of the range's addresses that are given."""
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        return self._first <= value < self._first + self.size

    def claim(self, key: str, ip: str) -> bool:
        """Make ``ip`` ``key``'s (giving up what it held) if it is usable and free or
        already its own; whether it is ``key``'s now."""
        if not self.usable(ip) or self._holder.get(ip, key) != key:
            return False
        if self._held.get(key) != ip:
            self.release(key)
        self._holder[ip] = key
        self._held[key] = ip
        return True

    def allocate(self, key: str) -> str:
        """The address ``key`` holds, else the next free one, now ``key``'s.
        PoolExhausted when every address is held."""
        mine = self._held.get(key)
        if mine is not None:
            return mine
        for step in range(self.size):
            index = (self._next + step) % self.size
            ip = str(ipaddress.IPv4Address(self._first + index))
            if ip not in self._holder:
                self._next = (index + 1) % self.size
                self._holder[ip] = key
                self._held[key] = ip
                return ip
        raise PoolExhausted(f"all {self.size} addresses of {self.network} are in use")

    def release(self, key: str) -> str | None:
        """Give up what ``key`` holds; the address freed, if any."""
        ip = self._held.pop(key, None)
        if ip is not None:
            del self._holder[ip]
        return ip


# ------------------------------------------------------------------ the seam


class LoadBalancerProvider(Protocol):
    """Who makes load balancers (the seed's cloud-provider plugins; Kubernetes'
    ``cloudprovider.LoadBalancer``)."""

    #: The provider's name, in logs and Events.
    name: str

    def recover(self, key: str, status: core_pb2.LoadBalancerStatus) -> None:
        """Learn that Service ``key``'s status shows ``status`` (a new term's start,
        or an informer notification): what it holds must not be given to another."""

    async def ensure(self, key: str, service: core_pb2.Service
                     ) -> core_pb2.LoadBalancerStatus:
        """Make (or keep) the Service's load balancer; its status. Raises
        :class:`PoolExhausted` when there is no capacity left."""

    async def delete(self, key: str) -> bool:
        """Remove Service ``key``'s load balancer (nothing if it has none); whether
        capacity came free."""


class PoolProvider:
    """Load balancers that are addresses of a local range (see the module)."""

    name = "pool"

    def __init__(self, ip_range: str = DEFAULT_LOAD_BALANCER_IP_RANGE) -> None:
        self.pool = IPPool(parse_ip_range(ip_range))

    def recover(self, key: str, status: core_pb2.LoadBalancerStatus) -> None:
        for ip in ingress_ips(status)[:1]:  # one address per Service (IPv4 only)
            self.pool.claim(key, ip)

    async def ensure(self, key: str, service: core_pb2.Service
                     ) -> core_pb2.LoadBalancerStatus:
        if self.pool.held(key) is None:
            for ip in ingress_ips(service.status.load_balancer):
                if self.pool.claim(key, ip):
                    break
        return status_of([self.pool.allocate(key)])

    async def delete(self, key: str) -> bool:
        return self.pool.release(key) is not None


def make_provider(config: Any) -> LoadBalancerProvider:
    """The provider the configuration names (only the built-in pool today)."""
    return PoolProvider(getattr(config, "load_balancer_ip_range",
                                DEFAULT_LOAD_BALANCER_IP_RANGE))


# -------------------------------------------------------------------- controller


class ServiceLBController(Controller):
    """Keeps each LoadBalancer Service's ``status.loadBalancer`` (see the module)."""

    def __init__(self, client: Client, factory: SharedInformerFactory,
                 recorder: EventRecorder, config: Any,
                 provider: LoadBalancerProvider | None = None) -> None:
        super().__init__("servicelb", workers=max(1, int(config.concurrent_syncs)))
        self.client = client
        self.recorder = recorder
        self.provider = provider if provider is not None else make_provider(config)
        #: Services waiting for capacity (looked at again when some comes free).
        self.waiting: set[str] = set()
        self.services = factory.informer("services")
        self.services.add_handler(self.on_service, lambda old, new: self.on_service(new),
                                  self.enqueue, name="servicelb")
        self.wait_for(self.services)

    # ------------------------------------------------------------ handlers

    def on_service(self, service: Message) -> None:
        """Mark what a LoadBalancer Service's status holds at once, then sync it."""
        if wants_load_balancer(service):  # type: ignore[arg-type]
            self.provider.recover(key_of(service), service.status.load_balancer)  # type: ignore[attr-defined]
        self.enqueue(service)

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        """Mark every address the cached statuses show, then run the workers."""
        while not await self.services.wait_synced(30.0):
            self._log.warning("still waiting for the services cache")
        recovered = 0
        for service in self.services.store.list():
            if wants_load_balancer(service):  # type: ignore[arg-type]
                self.provider.recover(key_of(service), service.status.load_balancer)  # type: ignore[attr-defined]
                recovered += 1
        self._log.info("load balancers recovered", services=recovered,
                       provider=self.provider.name)
        await super().run()

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        """Give, keep or take away the Service's load balancer; write its status."""
        service: core_pb2.Service | None = self.services.store.get(key)  # type: ignore[assignment]
        if service is None or not wants_load_balancer(service):
            self.waiting.discard(key)
            if await self.provider.delete(key):
                self._log.info("load balancer released", service=key)
                self._wake_waiting()
            if service is not None and service.status.load_balancer.ingress:
                await self._write(service, core_pb2.LoadBalancerStatus())
            return
        try:
            status = await self.provider.ensure(key, service)
        except PoolExhausted as e:
            if key not in self.waiting:
                self.waiting.add(key)
                self._log.warning("no load-balancer address left", service=key,
                                  detail=str(e))
                self.recorder.event(service, WARNING, ALLOCATION_FAILED,
                                    f"Failed to allocate IP for \"{key}\": {e}")
            return
        self.waiting.discard(key)
        if status == service.status.load_balancer:
            return
        await self._write(service, status)
        ips = ingress_ips(status)
        self._log.info("load balancer ready", service=key, ingress=ips)
        self.recorder.event(service, NORMAL, IP_ALLOCATED,
                            f"Assigned IP {ips} ({self.provider.name})")

    async def _write(self, service: core_pb2.Service,
                     status: core_pb2.LoadBalancerStatus) -> None:
        """The status through the status subresource, on the cached version."""
        updated = core_pb2.Service()
        updated.CopyFrom(service)
        updated.status.load_balancer.CopyFrom(status)
        try:
            await self.client.services.update_status(updated)
        except errors.NotFound:
            return  # deleted meanwhile: the delete event syncs it again

    def _wake_waiting(self) -> None:
        for key in sorted(self.waiting):
            self.enqueue(key)
