"""Services: Kubernetes' defaults and validation, and keeping allocated addresses.

A Service's clusterIP and nodePorts are allocated once (by the registry, not here) and
then belong to the object: an update that leaves them empty keeps the old ones
(:meth:`ServiceStrategy.prepare_for_update`, Kubernetes' ``patchAllocatedValues``), and
an update that changes a set clusterIP is refused. Skiff serves IPv4 only, and the
types ClusterIP, NodePort, LoadBalancer (its address, ``status.loadBalancer.ingress``,
comes from the controller-manager's load-balancer provider through UpdateStatus; no
nodePorts are given to it) and ExternalName (only a CNAME in the cluster DNS, with no
cluster IP).
"""

from __future__ import annotations

import ipaddress

from google.protobuf.message import Message

from services.apiserver.strategies.pod import PROTOCOLS, validate_port_num_or_name
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.api.validation import Path

EXTERNAL_NAME = "ExternalName"
LOAD_BALANCER = "LoadBalancer"
SERVICE_TYPES = ("ClusterIP", "NodePort", LOAD_BALANCER, EXTERNAL_NAME)
SESSION_AFFINITIES = ("None", "ClientIP")
EXTERNAL_TRAFFIC_POLICIES = ("Cluster", "Local")
NODE_PORT_RANGE = (30000, 32767)
#: The types whose ports get node ports (a LoadBalancer's too, as in Kubernetes).
WITH_NODE_PORTS = ("NodePort", LOAD_BALANCER)
DEFAULT_CLIENT_IP_TIMEOUT = 10800  # three hours, as Kubernetes
MAX_CLIENT_IP_TIMEOUT = 86400
HEADLESS = "None"

_SPEC = Path("spec")


def _err(path: Path | str, detail: str) -> list[FieldError]:
    return [FieldError(str(path), detail)]


# ---- defaults ----

def default_service_spec(spec: core_pb2.ServiceSpec) -> None:
    """Kubernetes' ``SetDefaults_Service`` for the fields Skiff has; idempotent."""
    spec.type = spec.type or "ClusterIP"
    spec.session_affinity = spec.session_affinity or "None"
    if spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        if not client_ip.HasField("timeout_seconds"):
            client_ip.timeout_seconds = DEFAULT_CLIENT_IP_TIMEOUT
    if spec.type in WITH_NODE_PORTS and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    if spec.cluster_ip and not spec.cluster_ips:
        spec.cluster_ips.append(spec.cluster_ip)
    for port in spec.ports:
        port.protocol = port.protocol or "TCP"
        if _unset(port.target_port):
            port.target_port.CopyFrom(meta_pb2.IntOrString(int_val=port.port))


def _unset(value: meta_pb2.IntOrString) -> bool:
    if value.type == meta_pb2.IntOrString.STRING:
        return not value.str_val
    return value.int_val == 0


# ---- validation ----

def validate_service_spec(spec: core_pb2.ServiceSpec) -> list[FieldError]:
    """Kubernetes' ``ValidateService`` rules for the fields Skiff has."""
    errors = validation.one_of(_SPEC.child("type"), spec.type, SERVICE_TYPES)
    if not spec.ports and spec.cluster_ip != HEADLESS and spec.type != EXTERNAL_NAME:
        errors += _err(_SPEC.child("ports"), "required")
    errors += _validate_ports(spec)
    errors += _validate_cluster_ip(spec)
    errors += _validate_external_name(spec)
    errors += validation.labels(_SPEC.child("selector"), spec.selector)
    errors += _validate_session_affinity(spec)
    errors += _validate_traffic_policy(spec)
    return errors


def _validate_ports(spec: core_pb2.ServiceSpec) -> list[FieldError]:
    errors: list[FieldError] = []
    names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    seen_node_ports: set[tuple[int, str]] = set()
    for i, port in enumerate(spec.ports):
        p = _SPEC.child("ports").index(i)
        errors += _validate_port_name(port.name, p.child("name"), names=names,
                                      several=len(spec.ports) > 1)
        errors += validation.port_number(p.child("port"), port.port)
        errors += validation.one_of(p.child("protocol"), port.protocol, PROTOCOLS)
        errors += validate_port_num_or_name(port.target_port, p.child("targetPort"))
        if (port.port, port.protocol) in seen_ports:
            errors += _err(p, f'Duplicate value: "{port.port}/{port.protocol}"')
        seen_ports.add((port.port, port.protocol))
        if port.node_port:
            errors += _validate_node_port(port, p.child("nodePort"), spec.type,
                                          seen=seen_node_ports)
    return errors


def _validate_port_name(name: str, field: Path, *, names: set[str],
                        several: bool) -> list[FieldError]:
    """Required when there are several ports; a unique DNS-1123 label when set."""
    if not name:
        return _err(field, "required") if several else []
    if name in names:
        return _err(field, f'Duplicate value: "{name}"')
    names.add(name)
    return validation.dns1123_label(field, name)


def _validate_node_port(port: core_pb2.ServicePort, field: Path, service_type: str, *,
                        seen: set[tuple[int, str]]) -> list[FieldError]:
    if service_type not in WITH_NODE_PORTS:
        return _err(field, f"may not be used when `type` is '{service_type}'")
    low, high = NODE_PORT_RANGE
    if not low <= port.node_port <= high:
        return _err(field, "provided port is not in the valid range. "
                    f"The range of valid ports is {low}-{high}")
    key = (port.node_port, port.protocol)
    if key in seen:
        return _err(field, f'Duplicate value: "{port.node_port}"')
    seen.add(key)
    return []


def _validate_cluster_ip(spec: core_pb2.ServiceSpec) -> list[FieldError]:
    """clusterIP: empty (to be allocated), "None" (headless) or an IPv4 address."""
    errors = _cluster_ip_errors(_SPEC.child("clusterIP"), spec.cluster_ip)
    if spec.cluster_ip == HEADLESS and spec.type in WITH_NODE_PORTS:
        errors += _err(_SPEC.child("clusterIP"),
                       f"may not be set to 'None' for {spec.type} services")
    ips = _SPEC.child("clusterIPs")
    if len(spec.cluster_ips) > 1:
        errors += _err(ips, "must have at most 1 items (IPv4 only)")
    elif spec.cluster_ips and spec.cluster_ips[0] != spec.cluster_ip:
        errors += _err(ips.index(0), "must match `clusterIP` when provided")
    return errors


def _validate_external_name(spec: core_pb2.ServiceSpec) -> list[FieldError]:
    """ExternalName: a DNS name to alias, and no cluster IP (nothing proxies it)."""
    field = _SPEC.child("externalName")
    if spec.type != EXTERNAL_NAME:
        return []
    if not spec.external_name:
        return _err(field, "required")
    errors = validation.dns1123_subdomain(field, spec.external_name.rstrip("."))
    if spec.cluster_ip:
        errors += _err(_SPEC.child("clusterIP"), "may not be set for ExternalName services")
    return errors


def _cluster_ip_errors(field: Path, value: str) -> list[FieldError]:
    if value in ("", HEADLESS):
        return []
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return _err(field, "must be a valid IPv4 address (e.g. 10.9.8.7) or 'None'")
    return []


def _validate_session_affinity(spec: core_pb2.ServiceSpec) -> list[FieldError]:
    errors = validation.one_of(_SPEC.child("sessionAffinity"), spec.session_affinity,
                               SESSION_AFFINITIES)
    config = _SPEC.child("sessionAffinityConfig")
    if spec.session_affinity == "ClientIP":
        timeout = spec.session_affinity_config.client_ip.timeout_seconds
        if not 0 < timeout <= MAX_CLIENT_IP_TIMEOUT:
            errors += _err(config.child("clientIP").child("timeoutSeconds"),
                           f"must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}")
    elif spec.HasField("session_affinity_config"):
        errors += _err(config, f"must not be set when session affinity is "
                       f"{spec.session_affinity or 'None'}")
    return errors


def _validate_traffic_policy(spec: core_pb2.ServiceSpec) -> list[FieldError]:
    field = _SPEC.child("externalTrafficPolicy")
    if not spec.external_traffic_policy:
        return []
    if spec.type not in WITH_NODE_PORTS:
        return _err(field, "may only be set for externally-accessible services")
    return validation.one_of(field, spec.external_traffic_policy,
                             EXTERNAL_TRAFFIC_POLICIES)


# ---- updates ----

def keep_allocated(new: core_pb2.ServiceSpec, old: core_pb2.ServiceSpec) -> None:
    """Give ``new`` the clusterIP(s) and nodePorts ``old`` had where ``new`` left them empty.

    NodePorts are matched by port name (Kubernetes' rule), and only kept when the
    service is still of type NodePort and the port is not already used by another port
    of ``new``.
    """
    if new.type == EXTERNAL_NAME:
        return  # an alias holds no cluster IP and no nodePorts
    if not new.cluster_ip:
        new.cluster_ip = old.cluster_ip
    if not new.cluster_ips:
        new.cluster_ips.extend(old.cluster_ips)
    if new.type != "NodePort" or old.type != "NodePort":
        return
    old_by_name = {port.name: port.node_port for port in old.ports}
    used = {port.node_port for port in new.ports if port.node_port}
    for port in new.ports:
        previous = old_by_name.get(port.name, 0)
        if not port.node_port and previous and previous not in used:
            port.node_port = previous
            used.add(previous)


def drop_type_dependent_fields(new: core_pb2.ServiceSpec, old: core_pb2.ServiceSpec) -> None:
    """A service that stops being a NodePort one loses its nodePorts and
    externalTrafficPolicy, unless the update itself set them (Kubernetes'
    ``dropTypeDependentFields``): an edit of the type alone is then valid."""
    if new.type == old.type or new.type == "NodePort":
        return
    if ({p.node_port for p in new.ports if p.node_port}
            == {p.node_port for p in old.ports if p.node_port}):
        for port in new.ports:
            port.node_port = 0
    if new.external_traffic_policy == old.external_traffic_policy:
        new.external_traffic_policy = ""


def validate_service_update(new: core_pb2.ServiceSpec,
                            old: core_pb2.ServiceSpec) -> list[FieldError]:
    """A set clusterIP never changes (unless the Service becomes an ExternalName one,
    which gives it up); the type may."""
    if old.cluster_ip and new.cluster_ip != old.cluster_ip and new.type != EXTERNAL_NAME:
        return _err(_SPEC.child("clusterIP"), "field is immutable")
    return []


class ServiceStrategy(Strategy):
    """Services: defaults, validation, allocated addresses kept across updates."""

    def default(self, obj: Message) -> None:
        default_service_spec(obj.spec)  # type: ignore[attr-defined]

    def prepare_for_update(self, new: Message, old: Message) -> None:
        super().prepare_for_update(new, old)
        drop_type_dependent_fields(new.spec, old.spec)  # type: ignore[attr-defined]
        keep_allocated(new.spec, old.spec)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_service_spec(obj.spec)  # type: ignore[attr-defined]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_service_update(new.spec, old.spec)  # type: ignore[attr-defined]
