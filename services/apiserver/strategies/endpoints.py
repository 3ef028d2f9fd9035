"""Endpoints: the addresses behind a Service, written by the endpoints controller.

Endpoints have no spec and no status: the object is its ``subsets``, so the field
paths here start at ``subsets`` (``subsets[0].addresses[1].ip``). Addresses are IPv4
(loopback included: Skiff's local pods and nodes live there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from google.protobuf.message import Message

from services.apiserver.strategies.pod import PROTOCOLS
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path


def _err(path: Path, detail: str) -> list[FieldError]:
    return [FieldError(str(path), detail)]


def default_subsets(subsets: Iterable[core_pb2.EndpointSubset]) -> None:
    """Ports without a protocol are TCP."""
    for subset in subsets:
        for port in subset.ports:
            port.protocol = port.protocol or "TCP"


def validate_subsets(subsets: Iterable[core_pb2.EndpointSubset]) -> list[FieldError]:
    """Kubernetes' ``ValidateEndpoints`` rules for the fields Skiff has."""
    errors: list[FieldError] = []
    for i, subset in enumerate(subsets):
        p = Path("subsets").index(i)
        errors += _validate_addresses(subset.addresses, p.child("addresses"))
        errors += _validate_addresses(subset.not_ready_addresses, p.child("notReadyAddresses"))
        errors += _validate_ports(subset.ports, p.child("ports"))
    return errors


def _validate_addresses(addresses: Iterable[core_pb2.EndpointAddress],
                        p: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, address in enumerate(addresses):
        ap = p.index(i)
        try:
            ipaddress.IPv4Address(address.ip)
        except ValueError:
            errors += _err(ap.child("ip"), "must be a valid IPv4 address")
        if address.hostname:
            errors += validation.dns1123_label(ap.child("hostname"), address.hostname)
        if address.HasField("node_name"):
            errors += validation.dns1123_subdomain(ap.child("nodeName"), address.node_name)
    return errors


def _validate_ports(ports: Iterable[core_pb2.EndpointPort], p: Path) -> list[FieldError]:
    ports = list(ports)
    errors: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        pp = p.index(i)
        if len(ports) > 1 and not port.name:
            errors += _err(pp.child("name"), "required")
        elif port.name in names:
            errors += _err(pp.child("name"), f'Duplicate value: "{port.name}"')
        elif port.name:
            errors += validation.dns1123_label(pp.child("name"), port.name)
        names.add(port.name)
        errors += validation.port_number(pp.child("port"), port.port)
        errors += validation.one_of(pp.child("protocol"), port.protocol, PROTOCOLS)
    return errors


class EndpointsStrategy(Strategy):
    """Endpoints: ports default to TCP; addresses and ports are checked."""

    def default(self, obj: Message) -> None:
        default_subsets(obj.subsets)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_subsets(obj.subsets)  # type: ignore[attr-defined]
