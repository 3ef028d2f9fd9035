"""Service cluster IPs and NodePorts: allocated from their ranges, unique across apiservers.

Every address and port handed out is reserved under a key of its own
(``/registry/ranges/serviceips/10.96.3.7``, ``/registry/ranges/servicenodeports/30080``)
that must be absent in the same store transaction that writes the Service, as
Kubernetes' IPAddress objects do. Two apiservers picking the same address at once
therefore cannot both succeed: the loser's transaction fails on the reservation and
the registry retries its create with a fresh pick. A
deleted Service, or one that stops being a NodePort, frees its keys in its own
transaction.

Candidates are drawn at random among the values not already in use according to the
watch cache (a hint: the store decides). As Kubernetes' allocator does (its
ServiceIPStaticSubrange), a dynamically allocated cluster IP comes from the upper band
of the range while it has room, so the low addresses stay free for Services that ask
for them: ``.1`` is the ``kubernetes`` Service, ``.10`` the cluster DNS. The lower band
is ``size/16`` addresses, at least 16 and at most 256 (none for a range under 16).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.apiserver.admission import CREATE, DELETE, UPDATE, Attributes
from services.apiserver.strategies.service import WITH_NODE_PORTS
from skiff.api import errors
from skiff.api.addresses import SERVICE_CIDR
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2

IP_PREFIX = "/registry/ranges/serviceips/"
NODE_PORT_PREFIX = "/registry/ranges/servicenodeports/"
HEADLESS = "None"
EXTERNAL_NAME = "ExternalName"
DEFAULT_CLUSTER_IPS = ipaddress.IPv4Network(SERVICE_CIDR)
DEFAULT_NODE_PORTS = range(30000, 32768)


@dataclass(frozen=True)
class Ranges:
    """Where service addresses and node ports come from."""

    cluster_ips: ipaddress.IPv4Network = DEFAULT_CLUSTER_IPS
    node_ports: range = DEFAULT_NODE_PORTS

    @classmethod
    def parse(cls, cidr: str, ports: str) -> Ranges:
        """``10.96.0.0/12`` and ``30000-32767`` as given on the command line."""
        low, _, high = ports.partition("-")
        return cls(ipaddress.IPv4Network(cidr), range(int(low), int(high or low) + 1))


def static_band_size(size: int) -> int:
    """How many addresses at the bottom of a range of ``size`` dynamic allocation keeps
    off while the rest has room (Kubernetes' ``calculateRangeOffset``; pure)."""
    low, high, step = 16, 256, 16
    if size < low:
        return 0
    return max(low, min(size // step, high))


def first_address(network: ipaddress.IPv4Network) -> str:
    """The range's first usable address: the ``kubernetes`` Service's (pure)."""
    return str(network.network_address + 1)


def ip_key(ip: str) -> str:
    return IP_PREFIX + ip


def node_port_key(port: int) -> str:
    return f"{NODE_PORT_PREFIX}{port}"


def reserved_keys(service: core_pb2.Service) -> list[str]:
    """Every reservation key a stored Service holds (pure)."""
    keys = [ip_key(ip) for ip in _cluster_ips(service)]
    keys += [node_port_key(p.node_port) for p in service.spec.ports if p.node_port]
    return keys


def _cluster_ips(service: core_pb2.Service) -> list[str]:
    ip = service.spec.cluster_ip
    return [ip] if ip and ip != HEADLESS else []


class ServiceAllocation:
    """Admission plugin that fills spec.clusterIP and node ports and reserves them."""

    name = "ServiceAllocation"

    def __init__(self, ranges: Ranges, in_use: Callable[[], Iterable[core_pb2.Service]],
                 *, rng: random.Random | None = None) -> None:
        self.ranges = ranges
        self._in_use = in_use
        self._rng = rng or random.Random()

    async def admit(self, attrs: Attributes) -> None:
        if attrs.kind.kind != "Service":
            return
        service: core_pb2.Service = attrs.obj  # type: ignore[assignment]
        if attrs.operation == DELETE:
            attrs.deletes.extend(reserved_keys(service))
        elif attrs.operation == CREATE:
            self._allocate(attrs, service, old_keys=set())
        elif attrs.operation == UPDATE:
            old: core_pb2.Service = attrs.old  # type: ignore[assignment]
            held = set(reserved_keys(old))
            if service.spec.type not in WITH_NODE_PORTS:
                for port in service.spec.ports:
                    port.node_port = 0
            self._allocate(attrs, service, old_keys=held)
            attrs.deletes.extend(sorted(held - set(reserved_keys(service))))

    def _allocate(self, attrs: Attributes, service: core_pb2.Service, *,
                  old_keys: set[str]) -> None:
        problems: list[FieldError] = []
        spec = service.spec
        if spec.type == EXTERNAL_NAME:
            return  # an alias: no cluster IP, no nodePorts (validation refuses them)
        if not spec.cluster_ip:
            spec.cluster_ip = self._pick_ip()
        elif spec.cluster_ip != HEADLESS:
            attrs.taken[ip_key(spec.cluster_ip)] = FieldError(
                "spec.clusterIP", f"Invalid value: \"{spec.cluster_ip}\": provided IP is "
                "already allocated")
            # A value the service already holds is not checked again (the range may
            # have changed since it was allocated).
            if (ip_key(spec.cluster_ip) not in old_keys
                    and not self._in_ip_range(spec.cluster_ip)):
                problems.append(FieldError(
                    "spec.clusterIP", f"Invalid value: \"{spec.cluster_ip}\": provided IP is "
                    f"not in the valid range. The range of valid IPs is "
                    f"{self.ranges.cluster_ips}"))
        if spec.cluster_ip != HEADLESS:
            del spec.cluster_ips[:]
            spec.cluster_ips.append(spec.cluster_ip)
        if spec.type in WITH_NODE_PORTS:
            taken = {p.node_port for p in spec.ports if p.node_port}
            for i, port in enumerate(spec.ports):
                if not port.node_port:
                    port.node_port = self._pick_node_port(taken)
                    taken.add(port.node_port)
                    continue
                attrs.taken[node_port_key(port.node_port)] = FieldError(
                    f"spec.ports[{i}].nodePort", f"Invalid value: {port.node_port}: "
                    "provided port is already allocated")
                if (node_port_key(port.node_port) not in old_keys
                        and port.node_port not in self.ranges.node_ports):
                    problems.append(FieldError(
                        f"spec.ports[{i}].nodePort", f"Invalid value: {port.node_port}: "
                        f"provided port is not in the valid range. The range of valid ports "
                        f"is {self.ranges.node_ports.start}-{self.ranges.node_ports.stop - 1}"))
        if problems:
            raise errors.Invalid("Service", service.metadata.name, problems)
        owner = f"{service.metadata.namespace}/{service.metadata.name}".encode()
        for key in reserved_keys(service):
            if key not in old_keys:
                attrs.puts.append((key, owner))
                attrs.absent.append(key)

    def _in_ip_range(self, ip: str) -> bool:
        network = self.ranges.cluster_ips
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        # The network and broadcast addresses are never handed out (Kubernetes').
        return (address in network and address != network.network_address
                and (network.num_addresses < 4 or address != network.broadcast_address))

    def _pick_ip(self) -> str:
        network = self.ranges.cluster_ips
        used = {ip for s in self._in_use() for ip in _cluster_ips(s)}
        first, size = int(network.network_address), network.num_addresses
        # Skip the network and broadcast addresses, as Kubernetes' allocator does.
        offset = max(1, static_band_size(size))
        for low, high in ((offset, size - 1), (1, offset)):
            if high <= low:
                continue
            for _ in range(64):
                candidate = str(ipaddress.IPv4Address(first + self._rng.randrange(low, high)))
                if candidate not in used:
                    return candidate
            free = (str(ipaddress.IPv4Address(first + i)) for i in range(low, high))
            candidate = next((ip for ip in free if ip not in used), None)
            if candidate is not None:
                return candidate
        raise errors.Forbidden("Internal error: failed to allocate a serviceIP: "
                               "range is full")

    def _pick_node_port(self, taken: set[int]) -> int:
        used = {p.node_port for s in self._in_use() for p in s.spec.ports} | taken
        free = [p for p in self.ranges.node_ports if p not in used]
        if not free:
            raise errors.Forbidden("Internal error: failed to allocate a nodePort: "
                                   "range is full")
        return self._rng.choice(free)
