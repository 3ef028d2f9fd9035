"""A skiff-dns instance's own entry in the cluster DNS Service's Endpoints.

``skiff-dns --register-endpoints kube-system/kube-dns``: the ``kube-dns`` Service has no
selector (its answering instances are not pods), so nothing else lists them; each
instance adds its listen addresses to that Endpoints object once it answers, and takes
them out again on a clean stop (SIGTERM), so the proxies send DNS queries only to
instances that are there. A killed instance leaves its address behind until it starts
again; the proxy tries the next endpoint when one refuses.

- The ports are Kubernetes' names for the cluster DNS: ``dns`` (UDP) and ``dns-tcp``
  (TCP), on the port the instance listens on (53 deployed), matching the Service's port
  names (``skiff up`` creates the Service).
- Every write is read-modify-write on the object's resourceVersion; a ``Conflict``
  (another instance wrote meanwhile) reads again and retries, so two instances starting
  or stopping at once both end as they meant. A missing object is created.
- An address that is not on this machine yet (the bridge gateway before the kubelet
  made the bridge: the listener binds it with IP_FREEBIND) is registered only once it
  appears (:func:`wait_local`), so no proxy sends queries to an address nobody has.
- Level-triggered while serving: every change of the object (another writer dropped
  the address, the endpoints controller deleted it when the Service was not there yet)
  puts the instance's addresses back (:meth:`EndpointsRegistration.on_change`).

The edits are pure (:func:`with_addresses`, :func:`without_addresses`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client, backoff
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("services.dns.registration")

#: The cluster DNS Service's port names (Kubernetes' kube-dns Service).
UDP_PORT_NAME, TCP_PORT_NAME = "dns", "dns-tcp"
#: Attempts of one read-modify-write before giving up (each Conflict reads again).
MAX_ATTEMPTS = 20
#: How often a missing listen address is looked for.
LOCAL_POLL_INTERVAL = 0.5

Address = tuple[str, int]


def parse_key(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); ValueError naming the flag."""
    namespace, sep, name = text.strip().partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"--register-endpoints {text!r}: expected NAMESPACE/NAME "
                         "(like kube-system/kube-dns)")
    return namespace, name


def dns_ports(port: int) -> list[core_pb2.EndpointPort]:
    """The endpoint ports of an instance listening on ``port`` (pure)."""
    return [core_pb2.EndpointPort(name=UDP_PORT_NAME, port=port, protocol="UDP"),
            core_pb2.EndpointPort(name=TCP_PORT_NAME, port=port, protocol="TCP")]


def _port_key(ports: Iterable[core_pb2.EndpointPort]) -> list[tuple[str, int, str]]:
    return sorted((p.name, p.port, p.protocol or "TCP") for p in ports)


def has_addresses(endpoints: core_pb2.EndpointsObject | None,
                  addresses: Iterable[Address]) -> bool:
    """Whether every (ip, port) is a ready address of a subset with the DNS ports (pure)."""
    if endpoints is None:
        return False
    for ip, port in addresses:
        want = _port_key(dns_ports(port))
        if not any(_port_key(s.ports) == want and any(a.ip == ip for a in s.addresses)
                   for s in endpoints.subsets):
            return False
    return True


def without_addresses(endpoints: core_pb2.EndpointsObject,
                      ips: Iterable[str]) -> core_pb2.EndpointsObject:
    """A copy without ``ips`` in any subset; subsets left empty dropped (pure)."""
    gone = set(ips)
    result = core_pb2.EndpointsObject()
    result.CopyFrom(endpoints)
    del result.subsets[:]
    for subset in endpoints.subsets:
        kept = core_pb2.EndpointSubset()
        kept.CopyFrom(subset)
        del kept.addresses[:]
        del kept.not_ready_addresses[:]
        kept.addresses.extend(a for a in subset.addresses if a.ip not in gone)
        kept.not_ready_addresses.extend(a for a in subset.not_ready_addresses
                                        if a.ip not in gone)
        if kept.addresses or kept.not_ready_addresses:
            result.subsets.append(kept)
    return result


def with_addresses(endpoints: core_pb2.EndpointsObject,
                   addresses: Iterable[Address]) -> core_pb2.EndpointsObject:
    """A copy listing each (ip, port) as a ready address in the subset with its DNS
    ports (made when missing), and nowhere else; addresses sorted (pure)."""
    addresses = list(addresses)
    result = without_addresses(endpoints, [ip for ip, _ in addresses])
    for ip, port in addresses:
        want = _port_key(dns_ports(port))
        subset = next((s for s in result.subsets if _port_key(s.ports) == want), None)
        if subset is None:
            subset = result.subsets.add()
            subset.ports.extend(dns_ports(port))
        subset.addresses.append(core_pb2.EndpointAddress(ip=ip))
        ordered = sorted(subset.addresses, key=lambda a: a.ip)
        del subset.addresses[:]
        subset.addresses.extend(ordered)
    return result


def is_local(ip: str) -> bool:
    """Whether ``ip`` is an address of this machine (a plain bind, without IP_FREEBIND,
    succeeds only then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True


async def wait_local(ips: Iterable[str], *, interval: float = LOCAL_POLL_INTERVAL) -> None:
    """Return once every ip is an address of this machine (polled)."""
    missing = [ip for ip in ips if not is_local(ip)]
    if missing:
        log.info("waiting for the listen addresses to appear before registering",
                 missing=missing)
    while missing:
        await asyncio.sleep(interval)
        missing = [ip for ip in missing if not is_local(ip)]


class EndpointsRegistration:
    """One instance's addresses in the Endpoints ``namespace/name`` (see the module)."""

    def __init__(self, client: Client, namespace: str, name: str,
                 addresses: Iterable[Address]) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.addresses = list(addresses)
        #: True between :meth:`register` and :meth:`deregister`: changes are put right.
        self.active = False
        self._lock = asyncio.Lock()
        self._log = log.bind(endpoints=f"{namespace}/{name}",
                             addresses=[f"{h}:{p}" for h, p in self.addresses])

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def register(self) -> None:
        """Add this instance's addresses (create the object when missing) once they are
        on this machine."""
        await wait_local(ip for ip, _ in self.addresses)
        self.active = True
        await self._edit(lambda ep: with_addresses(ep, self.addresses))
        self._log.info("registered in the DNS Service's endpoints")

    async def deregister(self) -> None:
        """Take this instance's addresses out (nothing to do when the object is gone)."""
        self.active = False
        await self._edit(lambda ep: without_addresses(ep, [ip for ip, _ in self.addresses]),
                         create=False)
        self._log.info("removed from the DNS Service's endpoints")

    def on_change(self, obj: Message | None) -> None:
        """An informer saw the object change (or go): register again if it lacks us."""
        if not self.active or has_addresses(obj, self.addresses):  # type: ignore[arg-type]
            return
        self._log.info("our addresses are missing from the endpoints; adding them back")
        spawn(self._register_again(), name="dns endpoints registration")

    async def _register_again(self) -> None:
        try:
            if self.active:
                await self._edit(lambda ep: with_addresses(ep, self.addresses))
        except errors.APIError as e:
            self._log.warning("could not register again", error=repr(e))

    async def _edit(self, change: Callable[[core_pb2.EndpointsObject],
                                           core_pb2.EndpointsObject], *,
                    create: bool = True) -> None:
        """Read, change, write; a Conflict or a lost create race reads again."""
        async with self._lock:
            for attempt in range(MAX_ATTEMPTS):
                try:
                    await self._edit_once(change, create=create)
                    return
                except (errors.Conflict, errors.AlreadyExists, errors.NotFound):
                    # Someone wrote (or made, or deleted) it meanwhile: read it again.
                    self._log.debug("endpoints changed under us; retrying", attempt=attempt)
                await asyncio.sleep(backoff(attempt))
            raise errors.Conflict(f"endpoints {self.key}: still conflicting after "
                                  f"{MAX_ATTEMPTS} attempts")

    async def _edit_once(self, change: Callable[[core_pb2.EndpointsObject],
                                                core_pb2.EndpointsObject], *,
                         create: bool) -> None:
        try:
            current: core_pb2.EndpointsObject = await self.client.endpoints.get(  # type: ignore[assignment]
                self.name, self.namespace)
        except errors.NotFound:
            if not create:
                return
            fresh = change(core_pb2.EndpointsObject(
                api_version="v1", kind="Endpoints",
                metadata=meta_pb2.ObjectMeta(name=self.name, namespace=self.namespace)))
            await self.client.endpoints.create(fresh)
            return
        updated = change(current)
        if list(updated.subsets) == list(current.subsets):
            return
        await self.client.endpoints.update(updated)


__all__ = ["TCP_PORT_NAME", "UDP_PORT_NAME", "EndpointsRegistration", "dns_ports",
           "has_addresses", "is_local", "parse_key", "wait_local", "with_addresses",
           "without_addresses"]
