"""Kernel rules for Services: service ports and their endpoints in, nftables commands out.

Pure functions, no I/O: :func:`service_ports_of` reads a Service and its Endpoints into
:class:`ServicePort` values; :func:`build_ruleset` turns the service ports a proxy
serves into a :class:`Ruleset` (the whole of one proxy's table, ``table ip
skiff-proxy-<node>`` by :func:`table_name`, as values);
:func:`render` writes a ruleset as one ``nft -f`` transaction that replaces the table
(atomic: the kernel swaps old for new or keeps the old); :func:`plan_update` writes the
smaller transaction that turns one ruleset into another, so that an Endpoints change
touches the few chains and map elements it concerns. The applier
(:mod:`services.proxy.nftables`) runs them.

Two modes, as kube-proxy had (its ``pkg/proxy/nftables`` is the model for the second):

- ``userspace``: the proxy's own listener does the balancing. Traffic to
  ``clusterIP:port`` (and external IPs) and to a NodePort on a local address is
  redirected to the listener port of its service port, in ``prerouting`` (pods, other
  hosts) and ``output`` (host processes), through maps keyed by address and port.
- ``nftables``: the data path is in the kernel. A verdict map keyed by
  ``daddr . proto . dport`` sends each service port to its chain; that chain picks an
  endpoint with ``numgen random mod N`` into per-endpoint chains that DNAT. ClientIP
  affinity keeps one dynamic set (with the timeout) per endpoint: the endpoint chain
  records the client, the service chain sends a known client back to its endpoint before
  the random choice. Packets that need masquerading get mark 0x4000 (off-cluster sources
  to a cluster IP, anything arriving through a NodePort or external IP, and hairpin: an
  endpoint reaching its own service); ``postrouting`` masquerades only marked packets. A
  service port with no ready endpoint is rejected (TCP reset, ICMP port unreachable for
  UDP) in filter chains, as kube-proxy does.

What is matched: only the exact service addresses and ports in the maps, and NodePorts
(within the NodePort range) on this node's addresses (``fib daddr type local`` and not
127.0.0.0/8 unless node addresses are given). No chain outside Skiff's table is touched,
and every chain of ours has policy ``accept``.

One table per proxy: a machine running several nodes shares one kernel, so each
node's proxy owns ``table ip skiff-proxy-<node>`` (:attr:`Settings.table`). With a pod
bridge (:attr:`Settings.pod_bridge`), ``prerouting`` sends pod traffic to the service
rules only when it comes in on this node's bridge (this node's pods go through this
node's proxy); pod traffic from another node's bridge on the same machine (a name with
the same prefix, ``skb-*``) is left to that node's table. Traffic from elsewhere (other
hosts) and host processes (``output``) are matched by every proxy's table. When several
nat chains sit on one hook, the first that sets up NAT for a connection wins (the
kernel's ``nf_nat_inet_fn`` stops at the first binding), so a host process reaches a
cluster IP through whichever node's table comes first: correct, since every proxy holds
the same view of Services and Endpoints. Masquerading is done once too: the first
table's ``postrouting`` clears the mark it masquerades.

Names: a service port's chain is ``svc-<ns>/<name>/<proto>/<port>``, an endpoint's
``ep-<ns>/<name>/<proto>/<port>/<ip>/<port>`` and its affinity set ``aff-`` the same:
Kubernetes names are DNS labels, so these are unique and readable in ``nft list``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property, lru_cache

from skiff.api.addresses import CLUSTER_CIDR, SERVICE_CIDR
from skiff.api.v1 import core_pb2

TABLE = "skiff"
#: Every proxy's table starts so (``skiff down`` deletes every ``skiff*`` table).
TABLE_PREFIX = "skiff-proxy-"
#: nft's NFT_NAME_MAXLEN less the terminating NUL.
TABLE_NAME_MAX = 255
FAMILY = "ip"
USERSPACE = "userspace"
NFTABLES = "nftables"
MODES = (USERSPACE, NFTABLES)
TCP = "TCP"
UDP = "UDP"
CLIENT_IP = "ClientIP"
HEADLESS = "None"
EXTERNAL_NAME = "ExternalName"
NODE_PORT = "NodePort"
LOAD_BALANCER = "LoadBalancer"
#: Kubernetes' default ClientIP affinity timeout: three hours.
DEFAULT_AFFINITY_TIMEOUT = 10800
#: The packet mark meaning "masquerade me in postrouting" (kube-proxy's bit).
MASQUERADE_MARK = 0x4000
#: Map elements per ``add element`` command: large enough to be fast, small enough
#: that one command line stays modest.
ELEMENTS_PER_COMMAND = 500
#: Service ports whose validation and rules are remembered between rebuilds.
CACHED_PORTS = 65536


@dataclass(frozen=True, order=True)
class Endpoint:
    """A ready endpoint of a service port."""

    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with what the rules need to know about it.

    ``external_ips`` holds the Service's externalIPs and its load-balancer ingress
    IPs (both are reached like the cluster IP, but from outside: always masqueraded);
    ``proxy_port`` is the proxy's listener for this service port (userspace mode);
    ``endpoints`` are the ready ones only (nftables mode); ``affinity_timeout`` counts
    only with ``session_affinity`` ClientIP.
    """

    namespace: str
    name: str
    protocol: str
    cluster_ip: str
    port: int
    port_name: str = ""
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    session_affinity: str = "None"
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    endpoints: tuple[Endpoint, ...] = ()
    proxy_port: int = 0

    @cached_property
    def key(self) -> str:
        """``ns/name/proto/port``: unique per service port, and valid in nft names."""
        return f"{self.namespace}/{self.name}/{self.protocol.lower()}/{self.port}"

    def __hash__(self) -> int:
        # Remembered: the rule caches hash every port on every rebuild, and hashing the
        # fields (endpoints included) each time was most of a rebuild's cost.
        try:
            return self.__dict__["_hash"]  # type: ignore[no-any-return]
        except KeyError:
            value = hash(tuple(getattr(self, f.name) for f in fields(self)))
            self.__dict__["_hash"] = value
            return value


@dataclass(frozen=True)
class Settings:
    """The node's and the cluster's side of the rules."""

    mode: str = USERSPACE
    service_cidr: str = SERVICE_CIDR
    cluster_cidr: str = CLUSTER_CIDR
    node_port_range: tuple[int, int] = (30000, 32767)
    #: Where NodePorts are served; empty: every local address but 127.0.0.0/8.
    node_addresses: tuple[str, ...] = ()
    #: The nftables table (``ip`` family) these rules live in.
    table: str = TABLE
    #: This node's pod bridge: pod traffic is taken only from it (empty: from anywhere).
    pod_bridge: str = ""


@dataclass(frozen=True)
class Chain:
    """A chain: ``hook`` is its base-chain spec (empty for a regular chain)."""

    rules: tuple[str, ...]
    hook: str = ""


@dataclass(frozen=True)
class Collection:
    """A set (``elements`` values None) or a map (values are what keys map to)."""

    kind: str  # "set" or "map"
    spec: str
    elements: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Ruleset:
    """The whole of Skiff's table, as values; what :func:`render` writes."""

    chains: Mapping[str, Chain]
    collections: Mapping[str, Collection]
    table: str = TABLE


# ------------------------------------------------------------------ names


def table_name(node_name: str) -> str:
    """The table of the proxy of ``node_name``: ``skiff-proxy-<node>`` (pure).

    Node names are DNS subdomains (up to 253 characters); one too long for nft's
    255-character names is cut and ends in a hash of the whole name, so that two long
    names never share a table.
    """
    if not node_name or any(c in node_name for c in " \t\n\"'{};"):
        raise ValueError(f"node name {node_name!r}: not usable in an nftables table name")
    name = TABLE_PREFIX + node_name
    if len(name) <= TABLE_NAME_MAX:
        return name
    digest = hashlib.sha256(node_name.encode()).hexdigest()[:16]
    return name[:TABLE_NAME_MAX - 17] + "-" + digest


def bridge_prefix(bridge: str) -> str:
    """The part of a pod bridge's name that every node's bridge shares (``skb-``)."""
    head, dash, _ = bridge.partition("-")
    return head + dash if dash else bridge


# ------------------------------------------------------------------ from the API


def service_ports_of(service: core_pb2.Service, endpoints: core_pb2.EndpointsObject | None,
                     *, proxy_ports: Mapping[str, int] | None = None
                     ) -> list[ServicePort]:
    """The :class:`ServicePort` values of one Service and its Endpoints (pure).

    Headless Services (no cluster IP) and ExternalName Services have none; SCTP ports
    are left out. Endpoints are the ready addresses of the endpoint port with the
    service port's name and protocol (or the subset's only port of that protocol when
    the service port is unnamed), sorted and without duplicates. NodePorts count for
    NodePort and LoadBalancer Services; load-balancer ingress IPs join the external
    addresses. ``proxy_ports`` maps a :attr:`ServicePort.key` to the proxy's listener
    (userspace mode).
    """
    spec = service.spec
    if spec.cluster_ip in ("", HEADLESS) or spec.type == EXTERNAL_NAME:
        return []
    external = tuple(i.ip for i in service.status.load_balancer.ingress if i.ip)
    affinity = spec.session_affinity == CLIENT_IP
    timeout = spec.session_affinity_config.client_ip.timeout_seconds or \
        DEFAULT_AFFINITY_TIMEOUT
    out = []
    for port in spec.ports:
        protocol = port.protocol or TCP
        if protocol not in (TCP, UDP):
            continue
        value = ServicePort(
            namespace=service.metadata.namespace, name=service.metadata.name,
            protocol=protocol, cluster_ip=spec.cluster_ip, port=port.port,
            port_name=port.name,
            node_port=port.node_port if spec.type in (NODE_PORT, LOAD_BALANCER) else 0,
            external_ips=external,
            session_affinity=CLIENT_IP if affinity else "None",
            affinity_timeout=timeout,
            endpoints=_ready_endpoints(endpoints, port.name, protocol))
        if proxy_ports:
            value = replace(value, proxy_port=proxy_ports.get(value.key, 0))
        out.append(value)
    return out


def _ready_endpoints(endpoints: core_pb2.EndpointsObject | None, port_name: str,
                     protocol: str) -> tuple[Endpoint, ...]:
    if endpoints is None:
        return ()
    found: set[Endpoint] = set()
    for subset in endpoints.subsets:
        same = [p for p in subset.ports if (p.protocol or TCP) == protocol and p.port > 0]
        named = [p for p in same if p.name == port_name]
        chosen = named[0] if named else (same[0] if not port_name and len(same) == 1
                                         else None)
        if chosen is None:
            continue
        found.update(Endpoint(a.ip, chosen.port) for a in subset.addresses if a.ip)
    return tuple(sorted(found))


# ------------------------------------------------------------------ building


def build_ruleset(ports: Iterable[ServicePort], settings: Settings) -> Ruleset:
    """The ruleset for ``ports`` under ``settings`` (pure).

    Raises ValueError naming the service port when its input is not usable (a
    protocol other than TCP/UDP, a cluster IP outside the service CIDR, a NodePort
    outside the range, no listener port in userspace mode, an unknown mode).
    """
    if settings.mode not in MODES:
        raise ValueError(f"proxy mode {settings.mode!r}: must be one of {', '.join(MODES)}")
    if not settings.table or len(settings.table) > TABLE_NAME_MAX:
        raise ValueError(f"table {settings.table!r}: 1-{TABLE_NAME_MAX} characters")
    if settings.pod_bridge and not _IFNAME.match(settings.pod_bridge):
        raise ValueError(f"pod bridge {settings.pod_bridge!r}: not an interface name")
    checked = sorted(_validated(ports, settings), key=lambda p: p.key)
    builder = _Builder(settings)
    if settings.mode == USERSPACE:
        builder.userspace(checked)
    else:
        builder.nftables(checked)
    return Ruleset(chains=builder.chains, collections=builder.collections,
                   table=settings.table)


#: What Linux accepts as an interface name (IFNAMSIZ less the NUL), quoted safely.
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def _ipv4(address: str, what: str) -> int:
    """``address`` as an integer; ValueError naming ``what`` unless dotted-quad IPv4."""
    try:
        # inet_pton is strict (no "10.1" shorthand) and much cheaper than ipaddress,
        # which matters at thousands of endpoints per sync.
        return int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    except (OSError, TypeError):
        raise ValueError(f"{what}: {address!r} is not an IPv4 address") from None


def _validated(ports: Iterable[ServicePort], settings: Settings) -> Iterable[ServicePort]:
    seen: set[str] = set()
    for port in ports:
        _validate(port, settings)
        if port.key in seen:
            raise ValueError(f"service port {port.key}: given twice")
        seen.add(port.key)
        yield port


def validate_port(port: ServicePort, settings: Settings) -> None:
    """Raise ValueError naming ``port`` when the rules cannot be built from it."""
    _validate(port, settings)


@lru_cache(maxsize=CACHED_PORTS)
def _validate(port: ServicePort, settings: Settings) -> None:
    """Raise ValueError naming ``port`` when the rules cannot be built from it.

    Cached: a proxy rebuilds the ruleset for every change, and most ports are the same
    values as last time.
    """
    service_net = ipaddress.IPv4Network(settings.service_cidr)
    net, mask = int(service_net.network_address), int(service_net.netmask)
    low, high = settings.node_port_range
    where = f"service port {port.key}"
    if port.protocol not in (TCP, UDP):
        raise ValueError(f"{where}: protocol {port.protocol!r} is not TCP or UDP")
    if _ipv4(port.cluster_ip, f"{where}: cluster IP") & mask != net:
        raise ValueError(f"{where}: cluster IP {port.cluster_ip} is outside the "
                         f"service CIDR {settings.service_cidr}")
    if not 0 < port.port < 65536:
        raise ValueError(f"{where}: port {port.port} is not in 1-65535")
    if port.node_port and not low <= port.node_port <= high:
        raise ValueError(f"{where}: nodePort {port.node_port} is outside {low}-{high}")
    if settings.mode == USERSPACE and not 0 < port.proxy_port < 65536:
        raise ValueError(f"{where}: userspace mode needs the proxy's listener port")
    for ip in port.external_ips:
        _ipv4(ip, f"{where}: external IP")
    for endpoint in port.endpoints:
        _ipv4(endpoint.ip, f"{where}: endpoint")
        if not 0 < endpoint.port < 65536:
            raise ValueError(f"{where}: endpoint port {endpoint.port} is not in 1-65535")


def _proto(port: ServicePort) -> str:
    return port.protocol.lower()


def _addresses(port: ServicePort) -> tuple[str, ...]:
    """The addresses a service port is reached at besides NodePorts."""
    return (port.cluster_ip, *port.external_ips)


class _Builder:
    """Accumulates chains and collections; one per :func:`build_ruleset` call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.chains: dict[str, Chain] = {}
        self.collections: dict[str, Collection] = {}

    def _nodeport_match(self) -> str:
        low, high = self.settings.node_port_range
        if self.settings.node_addresses:
            self.collections["nodeport-ips"] = Collection(
                "set", "type ipv4_addr ;",
                {ip: None for ip in sorted(self.settings.node_addresses)})
            return f"ip daddr @nodeport-ips th dport {low}-{high}"
        return f"fib daddr type local ip daddr != 127.0.0.0/8 th dport {low}-{high}"

    def _prerouting(self) -> tuple[str, ...]:
        """What ``prerouting`` sends to the service rules (see the module docstring)."""
        bridge = self.settings.pod_bridge
        if not bridge:
            return ("jump services",)
        return (f'iifname "{bridge}" jump services',
                f'iifname "{bridge_prefix(bridge)}*" return',
                "jump services")

    def _hooks(self, *, filters: bool) -> None:
        self.chains["nat-prerouting"] = Chain(
            self._prerouting(), "type nat hook prerouting priority dstnat ; policy accept ;")
        self.chains["nat-output"] = Chain(
            ("jump services",), "type nat hook output priority -100 ; policy accept ;")
        if not filters:
            return
        # A service port with no endpoint has no DNAT, so its packets keep the service
        # address: reject them where they would be delivered (input: a NodePort or an
        # external IP of this node), routed on (forward) or sent (output, before the
        # output NAT at -100), as kube-proxy does; new connections only.
        check = ("ct state new jump service-endpoints-check",)
        self.chains["filter-input"] = Chain(
            (*check, "ct state new jump nodeport-endpoints-check"),
            "type filter hook input priority -110 ; policy accept ;")
        self.chains["filter-forward"] = Chain(
            check, "type filter hook forward priority -110 ; policy accept ;")
        self.chains["filter-output"] = Chain(
            check, "type filter hook output priority -110 ; policy accept ;")
        self.chains["nat-postrouting"] = Chain(
            (f"meta mark & {MASQUERADE_MARK:#x} == 0 return",
             f"meta mark set meta mark ^ {MASQUERADE_MARK:#x}",
             "masquerade fully-random"),
            "type nat hook postrouting priority srcnat ; policy accept ;")

    # ------------------------------------------------------------- userspace

    def userspace(self, ports: Sequence[ServicePort]) -> None:
        self._hooks(filters=False)
        rules = []
        nodeport_match = self._nodeport_match()
        for proto in ("tcp", "udp"):
            by_address = {f"{address} . {p.port}": str(p.proxy_port)
                          for p in ports if _proto(p) == proto for address in _addresses(p)}
            by_node_port = {str(p.node_port): str(p.proxy_port)
                            for p in ports if _proto(p) == proto and p.node_port}
            self.collections[f"userspace-{proto}"] = Collection(
                "map", "type ipv4_addr . inet_service : inet_service ;", by_address)
            self.collections[f"userspace-nodeports-{proto}"] = Collection(
                "map", "type inet_service : inet_service ;", by_node_port)
            rules.append(f"meta l4proto {proto} redirect to : "
                         f"ip daddr . {proto} dport map @userspace-{proto}")
            rules.append(f"{nodeport_match} meta l4proto {proto} redirect to : "
                         f"{proto} dport map @userspace-nodeports-{proto}")
        self.chains["services"] = Chain(tuple(rules))

    # -------------------------------------------------------------- nftables

    def nftables(self, ports: Sequence[ServicePort]) -> None:
        self._hooks(filters=True)
        verdict_by_address = "type ipv4_addr . inet_proto . inet_service : verdict ;"
        verdict_by_port = "type inet_proto . inet_service : verdict ;"
        service_ips: dict[str, str | None] = {}
        service_nodeports: dict[str, str | None] = {}
        no_endpoint_ips: dict[str, str | None] = {}
        no_endpoint_nodeports: dict[str, str | None] = {}
        for port in ports:
            proto = _proto(port)
            external = [f"{ip} . {proto} . {port.port}" for ip in port.external_ips]
            cluster = f"{port.cluster_ip} . {proto} . {port.port}"
            node = f"{proto} . {port.node_port}" if port.node_port else ""
            if not port.endpoints:
                for key in (cluster, *external):
                    no_endpoint_ips[key] = "goto reject-chain"
                if node:
                    no_endpoint_nodeports[node] = "goto reject-chain"
                continue
            service = self._service_chain(port)
            service_ips[cluster] = f"goto {service}"
            if external or node:
                # Traffic from outside the cluster's addresses: always masqueraded, so
                # that replies come back through this node (externalTrafficPolicy Cluster).
                outer = f"ext-{port.key}"
                self.chains[outer] = Chain(("jump mark-for-masquerade", f"goto {service}"))
                for key in external:
                    service_ips[key] = f"goto {outer}"
                if node:
                    service_nodeports[node] = f"goto {outer}"
        self.collections["service-ips"] = Collection("map", verdict_by_address, service_ips)
        self.collections["service-nodeports"] = Collection(
            "map", verdict_by_port, service_nodeports)
        self.collections["no-endpoint-services"] = Collection(
            "map", verdict_by_address, no_endpoint_ips)
        self.collections["no-endpoint-nodeports"] = Collection(
            "map", verdict_by_port, no_endpoint_nodeports)
        nodeport_match = self._nodeport_match()
        self.chains["services"] = Chain((
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            f"{nodeport_match} meta l4proto . th dport vmap @service-nodeports"))
        self.chains["service-endpoints-check"] = Chain(
            ("ip daddr . meta l4proto . th dport vmap @no-endpoint-services",))
        self.chains["nodeport-endpoints-check"] = Chain(
            (f"{nodeport_match} meta l4proto . th dport vmap @no-endpoint-nodeports",))
        self.chains["mark-for-masquerade"] = Chain(
            (f"meta mark set meta mark | {MASQUERADE_MARK:#x}",))
        self.chains["reject-chain"] = Chain(("meta l4proto tcp reject with tcp reset",
                                             "reject"))

    def _service_chain(self, port: ServicePort) -> str:
        """Add the service port's chain, its endpoints' chains and affinity sets;
        returns the service chain's name."""
        chains, collections = _service_port_objects(port, self.settings.cluster_cidr)
        self.chains.update(chains)
        self.collections.update(collections)
        return chains[-1][0]


@lru_cache(maxsize=CACHED_PORTS)
def _service_port_objects(port: ServicePort, cluster_cidr: str
                          ) -> tuple[tuple[tuple[str, Chain], ...],
                                     tuple[tuple[str, Collection], ...]]:
    """The chains (the service chain last) and sets of one service port with endpoints.

    Cached, so that a rebuild after one Endpoints change redoes one port's work and
    hands back the very same objects for the others (which makes comparing old and new
    rulesets cheap too). Callers must not mutate what it returns.
    """
    proto = _proto(port)
    affinity = port.session_affinity == CLIENT_IP
    rules = [f"ip daddr {port.cluster_ip} {proto} dport {port.port} "
             f"ip saddr != {cluster_cidr} jump mark-for-masquerade"]
    chains: list[tuple[str, Chain]] = []
    collections: list[tuple[str, Collection]] = []
    targets = []
    for endpoint in sorted(set(port.endpoints)):
        target = f"ep-{port.key}/{endpoint.ip}/{endpoint.port}"
        targets.append(target)
        ep_rules = [f"ip saddr {endpoint.ip} jump mark-for-masquerade"]
        if affinity:
            recent = f"aff-{port.key}/{endpoint.ip}/{endpoint.port}"
            collections.append((recent, Collection(
                "set", f"type ipv4_addr ; flags dynamic,timeout ; "
                       f"timeout {port.affinity_timeout}s ;")))
            rules.append(f"ip saddr @{recent} goto {target}")
            ep_rules.append(f"update @{recent} {{ ip saddr }}")
        ep_rules.append(f"meta l4proto {proto} dnat to {endpoint.ip}:{endpoint.port}")
        chains.append((target, Chain(tuple(ep_rules))))
    choices = ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets))
    rules.append(f"numgen random mod {len(targets)} vmap {{ {choices} }}")
    chains.append((f"svc-{port.key}", Chain(tuple(rules))))
    return tuple(chains), tuple(collections)


# ------------------------------------------------------------------ rendering


def render(ruleset: Ruleset) -> str:
    """One ``nft -f`` transaction that replaces Skiff's table with ``ruleset`` (pure).

    ``add table`` first makes ``delete table`` succeed on a machine without it; the
    kernel applies the whole input or none of it. Established connections survive it
    (their NAT lives in conntrack), but ClientIP affinity entries start over, which is
    why updates go through :func:`plan_update`.
    """
    t = ruleset.table
    out = [f"add table {FAMILY} {t}", f"delete table {FAMILY} {t}",
           f"add table {FAMILY} {t}"]
    for name, collection in ruleset.collections.items():
        out.append(_add_collection(t, name, collection))
    for name, chain in ruleset.chains.items():
        out.append(_add_chain(t, name, chain))
    for name, chain in ruleset.chains.items():
        out.extend(_add_rules(t, name, chain.rules))
    for name, collection in ruleset.collections.items():
        out.extend(_add_elements(t, name, collection.elements))
    return "\n".join(out) + "\n"


def plan_update(old: Ruleset | None, new: Ruleset) -> str:
    """The ``nft -f`` transaction turning the installed ``old`` into ``new`` (pure).

    Only what differs is written: changed chains are flushed and refilled, map and set
    elements are deleted and added one by one, chains and sets that went away are
    deleted last (once nothing refers to them). Affinity sets that stay keep their
    entries. With no ``old``, or when a base chain or a collection's type changed
    (the kernel cannot alter those in place), the whole table is replaced.
    An empty string means nothing to do.
    """
    if old is None or old.table != new.table or _shape_changed(old, new):
        return render(new)
    t = new.table
    out: list[str] = []
    added_collections = [n for n in new.collections if n not in old.collections]
    added_chains = [n for n in new.chains if n not in old.chains]
    removed_chains = [n for n in old.chains if n not in new.chains]
    removed_collections = [n for n in old.collections if n not in new.collections]
    changed_chains = [n for n, c in new.chains.items()
                      if n in old.chains and old.chains[n].rules != c.rules]
    for name in added_collections:
        out.append(_add_collection(t, name, new.collections[name]))
    for name in added_chains:
        out.append(_add_chain(t, name, new.chains[name]))
    # Rules that may refer to what goes away are emptied before anything is deleted.
    for name in (*changed_chains, *removed_chains):
        out.append(f"flush chain {FAMILY} {t} {name}")
    for name, collection in new.collections.items():
        before = old.collections[name].elements if name in old.collections else {}
        gone = [k for k, v in before.items()
                if k not in collection.elements or collection.elements[k] != v]
        out.extend(_elements(t, "delete", name, {k: None for k in gone}))
    for name in (*changed_chains, *added_chains):
        out.extend(_add_rules(t, name, new.chains[name].rules))
    for name, collection in new.collections.items():
        before = old.collections[name].elements if name in old.collections else {}
        fresh = {k: v for k, v in collection.elements.items()
                 if k not in before or before[k] != v}
        out.extend(_add_elements(t, name, fresh))
    for name in removed_chains:
        out.append(f"delete chain {FAMILY} {t} {name}")
    for name in removed_collections:
        out.append(f"delete {old.collections[name].kind} {FAMILY} {t} {name}")
    return "\n".join(out) + "\n" if out else ""


def _shape_changed(old: Ruleset, new: Ruleset) -> bool:
    for name, chain in new.chains.items():
        if name in old.chains and old.chains[name].hook != chain.hook:
            return True
    for name, collection in new.collections.items():
        before = old.collections.get(name)
        if before is not None and (before.kind, before.spec) != (collection.kind,
                                                                 collection.spec):
            return True
    return False


def _add_collection(t: str, name: str, collection: Collection) -> str:
    return f"add {collection.kind} {FAMILY} {t} {name} {{ {collection.spec} }}"


def _add_chain(t: str, name: str, chain: Chain) -> str:
    spec = f" {{ {chain.hook} }}" if chain.hook else ""
    return f"add chain {FAMILY} {t} {name}{spec}"


def _add_rules(t: str, name: str, rules: Iterable[str]) -> list[str]:
    return [f"add rule {FAMILY} {t} {name} {rule}" for rule in rules]


def _add_elements(t: str, name: str, elements: Mapping[str, str | None]) -> list[str]:
    return _elements(t, "add", name, elements)


def _elements(t: str, verb: str, name: str, elements: Mapping[str, str | None]
              ) -> list[str]:
    items = [k if v is None else f"{k} : {v}" for k, v in elements.items()]
    return [f"{verb} element {FAMILY} {t} {name} {{ "
            + ", ".join(items[i:i + ELEMENTS_PER_COMMAND]) + " }"
            for i in range(0, len(items), ELEMENTS_PER_COMMAND)]
