"""The cluster's DNS records: Services and Endpoints in, a record table out (pure).

What Kubernetes' DNS specification (kubernetes/dns docs/specification.md) asks, as
CoreDNS's kubernetes plugin gives it, in the zone ``cluster.local`` (configurable):

- a ClusterIP Service: A ``svc.ns.svc.zone`` -> the cluster IP; SRV
  ``_port._proto.svc.ns.svc.zone`` for each *named* port, target ``svc.ns.svc.zone``;
  PTR for the cluster IP;
- a headless Service (clusterIP None): A ``svc.ns.svc.zone`` -> every ready endpoint
  address (the name does not exist while there is none); for each ready address an A
  ``host.svc.ns.svc.zone`` where ``host`` is the address's hostname (a pod that set
  ``hostname`` and ``subdomain``: the endpoints controller publishes it) or else the
  address with dashes (``10-1-2-3``); SRV per named endpoint port with one target per
  address; PTR for each address to its ``host`` name;
- an ExternalName Service: CNAME ``svc.ns.svc.zone`` -> its external name;
- ``a-b-c-d.ns.pod.zone`` -> A a.b.c.d (CoreDNS's ``pods insecure``, computed, not
  stored), and ``dns-version.zone`` TXT, the schema version.

Every record has TTL 5 s (CoreDNS's default). A name that exists with other types, or
only as an ancestor of a name that exists (``ns.svc.zone``, an *empty non-terminal*),
answers NODATA; a missing name inside the zone answers NXDOMAIN, both with the zone's
SOA for negative caching. Names are compared case-insensitively. A name outside the
zone, and a reverse name the table does not hold, is not ours (:data:`NOT_OURS`): the
server forwards it.

:class:`RecordTable` is updated per Service: :meth:`RecordTable.set_service` takes the
Service and its Endpoints, works out that Service's records with the pure
:func:`service_records`, and applies only the difference, so an event costs what one
Service holds, not what the cluster holds.

Invariants, between two calls:

- ``_rrsets[name][type]`` counts, per rdata, how many Services contribute it (two
  headless Services may hold the same pod address, and so the same PTR); an rdata is
  there iff its count is positive, an rrset iff non-empty, a name iff it has an rrset;
- ``_ancestors[n]`` counts the names in ``_rrsets`` strictly below ``n`` (within the
  zone); an empty non-terminal is a name with a positive count and no rrset;
- ``_by_service[key]`` is the exact list of records service ``key`` contributes;
- ``generation`` grows with every change of the answers (caches of packed answers key
  on it).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from skiff.api.v1 import core_pb2

#: Seconds every answer may be cached (CoreDNS's default).
TTL: Final = 5
DEFAULT_ZONE: Final = "cluster.local."
HEADLESS: Final = "None"
EXTERNAL_NAME: Final = "ExternalName"
#: The version of Kubernetes' DNS schema these records follow (``dns-version`` TXT).
SCHEMA_VERSION: Final = "1.1.0"
#: The SOA's fields: where the zone's records come from, and how long a negative answer
#: may be cached (the SOA minimum: TTL too, so a Service created after a miss is seen).
SOA_MNAME: Final = "ns.dns"
SOA_RNAME: Final = "hostmaster"
SOA_TIMERS: Final = (7200, 1800, 86400, TTL)


class RType(enum.IntEnum):
    """The record types the table answers (RFC 1035 numbers)."""

    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    TXT = 16
    AAAA = 28
    SRV = 33
    ANY = 255


@dataclass(frozen=True, slots=True)
class Srv:
    """SRV rdata (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Soa:
    """SOA rdata (RFC 1035); ``serial`` is the table's generation."""

    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


#: An rdata: an address (A), a name (CNAME, PTR), text (TXT, in a 1-tuple), SRV or SOA.
Rdata = str | tuple[str] | Srv | Soa


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``name`` absolute, lower case, with the final dot."""

    name: str
    type: RType
    data: Rdata
    ttl: int = TTL


class Rcode(enum.IntEnum):
    NOERROR = 0
    NXDOMAIN = 3


@dataclass(frozen=True, slots=True)
class Answer:
    """What the zone says about (name, type): records, or none (NODATA / NXDOMAIN)."""

    rcode: Rcode
    answer: tuple[Record, ...] = ()
    #: The SOA, on negative answers.
    authority: tuple[Record, ...] = ()


#: :meth:`RecordTable.lookup`'s word for a name outside the zone: forward it.
NOT_OURS: Final = None


# ------------------------------------------------------------------ pure records


def normalize(name: str) -> str:
    """Lower case, absolute (one final dot)."""
    name = name.lower()
    return name if name.endswith(".") else f"{name}."


def reverse_name(ip: str) -> str:
    """``10.96.0.10`` -> ``10.0.96.10.in-addr.arpa.``"""
    return ipaddress.ip_address(ip).reverse_pointer + "."


def dashed(ip: str) -> str:
    """``10.1.2.3`` -> ``10-1-2-3``: the host label CoreDNS gives an address without a
    hostname (a system-assigned identifier, in the specification's words)."""
    return ip.replace(".", "-").replace(":", "-")


def service_name(namespace: str, name: str, zone: str) -> str:
    return f"{name}.{namespace}.svc.{zone}".lower()


def ready_addresses(service: core_pb2.Service,
                    endpoints: core_pb2.EndpointsObject | None
                    ) -> list[tuple[core_pb2.EndpointAddress, core_pb2.EndpointSubset]]:
    """The addresses DNS publishes, each with its subset: the ready ones, and the not
    ready ones too when the Service publishes them (the endpoints controller already
    moves them into ``addresses`` then; a hand-written Endpoints may not have)."""
    if endpoints is None:
        return []
    found = []
    for subset in endpoints.subsets:
        for address in subset.addresses:
            found.append((address, subset))
        if service.spec.publish_not_ready_addresses:
            for address in subset.not_ready_addresses:
                found.append((address, subset))
    return found


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def service_records(service: core_pb2.Service | None,
                    endpoints: core_pb2.EndpointsObject | None, *,
                    zone: str = DEFAULT_ZONE) -> list[Record]:
    """Every record one Service (with its Endpoints) contributes (pure; see module).

    None (the Service is gone) contributes nothing; so do Endpoints without a Service.
    """
    if service is None:
        return []
    spec = service.spec
    base = service_name(service.metadata.namespace, service.metadata.name, zone)
    if spec.type == EXTERNAL_NAME:
        target = spec.external_name
        return [Record(base, RType.CNAME, normalize(target))] if target else []
    if spec.cluster_ip == HEADLESS:
        return _headless_records(service, endpoints, base)
    if not _is_ipv4(spec.cluster_ip):
        return []  # not allocated yet (or a value DNS cannot serve)
    records = [Record(base, RType.A, spec.cluster_ip),
               Record(reverse_name(spec.cluster_ip), RType.PTR, base)]
    for port in spec.ports:
        if port.name:
            records.append(Record(_srv_name(port.name, port.protocol, base), RType.SRV,
                                  Srv(0, 100, port.port, base)))
    return records


def _srv_name(port_name: str, protocol: str, base: str) -> str:
    return f"_{port_name}._{(protocol or 'TCP').lower()}.{base}".lower()


def _headless_records(service: core_pb2.Service, endpoints: core_pb2.EndpointsObject | None,
                      base: str) -> list[Record]:
    records: list[Record] = []
    seen_ips: set[str] = set()
    # SRV name -> targets (port, host name), so weights can share 100 among them.
    srv: dict[str, list[tuple[int, str]]] = {}
    for address, subset in ready_addresses(service, endpoints):
        if not _is_ipv4(address.ip):
            continue
        host = f"{(address.hostname or dashed(address.ip)).lower()}.{base}"
        if address.ip not in seen_ips:
            seen_ips.add(address.ip)
            records.append(Record(base, RType.A, address.ip))
            records.append(Record(reverse_name(address.ip), RType.PTR, host))
        records.append(Record(host, RType.A, address.ip))
        for port in subset.ports:
            if port.name:
                srv.setdefault(_srv_name(port.name, port.protocol, base), []).append(
                    (port.port, host))
    for name, targets in srv.items():
        weight = max(1, 100 // len(targets))
        records += [Record(name, RType.SRV, Srv(0, weight, port, host))
                    for port, host in targets]
    return _unique(records)


def _unique(records: Iterable[Record]) -> list[Record]:
    """Drop repeats (a hostname on two addresses, one address in two subsets), in order."""
    return list(dict.fromkeys(records))


def pod_address(name: str, zone: str) -> str | None:
    """``a-b-c-d.ns.pod.zone.`` -> ``a.b.c.d`` (CoreDNS ``pods insecure``), else None."""
    suffix = f".pod.{zone}"
    if not name.endswith(suffix):
        return None
    labels = name[:-len(suffix)].split(".")
    if len(labels) != 2:
        return None
    candidate = labels[0].replace("-", ".")
    return candidate if _is_ipv4(candidate) else None


# ------------------------------------------------------------------- the table


class RecordTable:
    """The zone's records, kept per Service, answering lookups (see module docstring)."""

    def __init__(self, zone: str = DEFAULT_ZONE) -> None:
        self.zone = normalize(zone)
        self._zone_suffix = f".{self.zone}"
        self._rrsets: dict[str, dict[RType, Counter[Rdata]]] = {}
        self._ancestors: Counter[str] = Counter()
        self._by_service: dict[str, list[Record]] = {}
        self.generation = 0
        self._add(Record(f"dns-version.{self.zone}", RType.TXT, (SCHEMA_VERSION,)))

    # -------------------------------------------------------------- updating

    def set_service(self, key: str, service: core_pb2.Service | None,
                    endpoints: core_pb2.EndpointsObject | None) -> bool:
        """Make service ``key``'s records those of (service, endpoints); whether any changed."""
        new = service_records(service, endpoints, zone=self.zone)
        old = self._by_service.get(key, [])
        if new == old:
            return False
        new_set, old_set = set(new), set(old)
        for record in old:
            if record not in new_set:
                self._remove(record)
        for record in new:
            if record not in old_set:
                self._add(record)
        if new:
            self._by_service[key] = new
        else:
            self._by_service.pop(key, None)
        self.generation += 1
        return True

    def _add(self, record: Record) -> None:
        rrsets = self._rrsets.get(record.name)
        if rrsets is None:
            rrsets = self._rrsets[record.name] = {}
            for ancestor in self._ancestors_of(record.name):
                self._ancestors[ancestor] += 1
        rrsets.setdefault(record.type, Counter())[record.data] += 1

    def _remove(self, record: Record) -> None:
        rrsets = self._rrsets[record.name]
        rdatas = rrsets[record.type]
        rdatas[record.data] -= 1
        if rdatas[record.data] <= 0:
            del rdatas[record.data]
            if not rdatas:
                del rrsets[record.type]
                if not rrsets:
                    del self._rrsets[record.name]
                    for ancestor in self._ancestors_of(record.name):
                        self._ancestors[ancestor] -= 1
                        if self._ancestors[ancestor] <= 0:
                            del self._ancestors[ancestor]

    def _ancestors_of(self, name: str) -> list[str]:
        """The names strictly between ``name`` and the zone apex, apex included; none
        for a name outside the zone (reverse names)."""
        if not name.endswith(self._zone_suffix):
            return []
        found = []
        rest = name
        while rest != self.zone:
            rest = rest.split(".", 1)[1]
            found.append(rest)
        return found

    # -------------------------------------------------------------- reading

    @property
    def services(self) -> int:
        """How many Services contribute records now."""
        return len(self._by_service)

    def in_zone(self, name: str) -> bool:
        """Whether ``name`` (normalized) is the zone or below it."""
        return name == self.zone or name.endswith(self._zone_suffix)

    def lookup(self, qname: str, qtype: int) -> Answer | None:
        """The zone's answer to (qname, qtype); None (:data:`NOT_OURS`) to forward it.

        A CNAME answers every type but CNAME's own by itself (the client, or the
        server, follows its target); ANY gives every rrset at the name.
        """
        name = normalize(qname)
        rrsets = self._rrsets.get(name)
        if not self.in_zone(name):
            if rrsets is None:
                return NOT_OURS
            return self._from_rrsets(name, rrsets, qtype)
        if rrsets is not None:
            return self._from_rrsets(name, rrsets, qtype)
        if name == self.zone:
            if qtype in (RType.SOA, RType.ANY):
                return Answer(Rcode.NOERROR, (self.soa(),))
            return self._nodata()
        address = pod_address(name, self.zone)
        if address is not None:
            if qtype in (RType.A, RType.ANY):
                return Answer(Rcode.NOERROR, (Record(name, RType.A, address),))
            return self._nodata()
        if name in self._ancestors or self._is_pod_namespace(name):
            return self._nodata()
        return Answer(Rcode.NXDOMAIN, authority=(self.soa(),))

    def _is_pod_namespace(self, name: str) -> bool:
        """``pod.zone`` or ``ns.pod.zone``: ancestors of the computed pod records."""
        pods = f"pod.{self.zone}"
        return name == pods or (name.endswith(f".{pods}") and "." not in name[:-len(pods) - 1])

    def _from_rrsets(self, name: str, rrsets: dict[RType, Counter[Rdata]],
                     qtype: int) -> Answer:
        if qtype == RType.ANY:
            records = [Record(name, t, data) for t, rdatas in sorted(rrsets.items())
                       for data in _ordered(rdatas)]
            return Answer(Rcode.NOERROR, tuple(records))
        rdatas = rrsets.get(qtype)  # type: ignore[call-overload]
        if rdatas is None and qtype != RType.CNAME:
            rdatas = rrsets.get(RType.CNAME)
            qtype = RType.CNAME
        if not rdatas:
            return self._nodata()
        return Answer(Rcode.NOERROR,
                      tuple(Record(name, RType(qtype), data) for data in _ordered(rdatas)))

    def _nodata(self) -> Answer:
        return Answer(Rcode.NOERROR, authority=(self.soa(),))

    def soa(self) -> Record:
        """The zone's SOA (serial: the generation, so it moves when the zone does)."""
        refresh, retry, expire, minimum = SOA_TIMERS
        return Record(self.zone, RType.SOA, Soa(
            f"{SOA_MNAME}.{self.zone}", f"{SOA_RNAME}.{self.zone}",
            self.generation % 2**32, refresh, retry, expire, minimum))

    def records(self) -> list[Record]:
        """Every stored record (for tests and debugging), sorted."""
        return sorted((Record(name, t, data) for name, rrsets in self._rrsets.items()
                       for t, rdatas in rrsets.items() for data in rdatas),
                      key=lambda r: (r.name, r.type, repr(r.data)))


def _ordered(rdatas: Counter[Rdata]) -> Sequence[Rdata]:
    """An rrset's rdata in a stable order (answers cached as bytes stay the same)."""
    return sorted(rdatas, key=repr)


__all__ = ["DEFAULT_ZONE", "NOT_OURS", "TTL", "Answer", "RType", "Rcode", "Record",
           "RecordTable", "Soa", "Srv", "normalize", "pod_address", "reverse_name",
           "service_records"]
