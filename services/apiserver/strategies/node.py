"""Nodes: registered by their kubelet (with status), tainted by users and controllers.

Create keeps the status a kubelet registers with (``keep_status_on_create``). The
spec rules are Kubernetes': taints unique by key and effect, pod CIDRs that are CIDRs
and, like the provider ID, set once. Capacity and allocatable are checked on create
and on every status update. The node's name (a DNS-1123 subdomain) is the registry's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

from services.apiserver.strategies.pod import TAINT_EFFECTS
from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.labels import validate_label_key, validate_label_value
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path

#: Resource names a node may report without a domain prefix.
STANDARD_NODE_RESOURCES = ("cpu", "memory", "pods", "ephemeral-storage", "storage")
SET_ONCE = 'node updates may not change {} except from "" to valid'

_SPEC = Path("spec")


def _err(path: Path, detail: str) -> list[FieldError]:
    return [FieldError(str(path), detail)]


def _joined(path: Path, problems: list[str]) -> list[FieldError]:
    return _err(path, "; ".join(problems)) if problems else []


def default_node_spec(spec: core_pb2.NodeSpec) -> None:
    """Fill whichever of podCIDR and podCIDRs[0] is missing from the other (Kubernetes'
    v1 conversion does). Both given and different is left for validation to refuse,
    never settled by dropping one: a client changing only podCIDR must hear "no"."""
    if spec.pod_cidr and not spec.pod_cidrs:
        spec.pod_cidrs.append(spec.pod_cidr)
    elif spec.pod_cidrs and not spec.pod_cidr:
        spec.pod_cidr = spec.pod_cidrs[0]


def validate_node_spec(spec: core_pb2.NodeSpec) -> list[FieldError]:
    """Taints, and pod CIDRs that parse (at most one per IP family)."""
    errors = validate_taints(spec.taints, _SPEC.child("taints"))
    if spec.pod_cidr:
        errors += _validate_cidr(_SPEC.child("podCIDR"), spec.pod_cidr)
    if spec.pod_cidr and spec.pod_cidrs and spec.pod_cidr != spec.pod_cidrs[0]:
        errors += _err(_SPEC.child("podCIDR"),
                       f"must be the first of spec.podCIDRs ({spec.pod_cidrs[0]})")
    for i, cidr in enumerate(spec.pod_cidrs[1:], start=1):
        errors += _validate_cidr(_SPEC.child("podCIDRs").index(i), cidr)
    if len(spec.pod_cidrs) > 2 or (len(spec.pod_cidrs) == 2 and _same_family(spec.pod_cidrs)):
        errors += _err(_SPEC.child("podCIDRs"), "may specify no more than one CIDR for each IP "
                       "family")
    return errors


def _validate_cidr(field: Path, value: str) -> list[FieldError]:
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
            return []
        except ValueError:
            pass
    return _err(field, "must be a valid CIDR (e.g. 10.244.1.0/24)")


def _same_family(cidrs: Iterable[str]) -> bool:
    versions = set()
    for cidr in cidrs:
        try:
            versions.add(ipaddress.ip_network(cidr, strict=False).version)
        except ValueError:
            return False  # reported on its own
    return len(versions) == 1


def validate_taints(taints: Iterable[core_pb2.Taint], p: Path) -> list[FieldError]:
    """Kubernetes' ``validateNodeTaints``: key, value, a required effect, no duplicates."""
    errors: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        tp = p.index(i)
        errors += validation.required(tp.child("key"), taint.key)
        if taint.key:
            errors += _joined(tp.child("key"), validate_label_key(taint.key))
        errors += _joined(tp.child("value"), validate_label_value(taint.value))
        errors += validation.required(tp.child("effect"), taint.effect)
        if taint.effect:
            errors += validation.one_of(tp.child("effect"), taint.effect, TAINT_EFFECTS)
        if (taint.key, taint.effect) in seen:
            errors += _err(tp, "taints must be unique by key and effect pair")
        seen.add((taint.key, taint.effect))
    return errors


def validate_node_status(status: core_pb2.NodeStatus) -> list[FieldError]:
    """Capacity and allocatable: resource names and non-negative quantities."""
    status_path = Path("status")
    return (_validate_resources(status.capacity, status_path.child("capacity"))
            + _validate_resources(status.allocatable, status_path.child("allocatable")))


def _validate_resources(resources: Mapping[str, str], p: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    for name in sorted(resources):
        field = p.key(name)
        problems = validate_label_key(name)
        if not problems and "/" not in name and name not in STANDARD_NODE_RESOURCES \
                and not name.startswith("hugepages-"):
            problems = ["must be a standard resource type or fully qualified"]
        errors += _joined(field, problems)
        errors += validation.quantity(field, resources[name])
    return errors


def validate_node_update(new: core_pb2.NodeSpec, old: core_pb2.NodeSpec) -> list[FieldError]:
    """podCIDR(s) and providerID may be set once, from empty, and never changed (the
    node IPAM controller relies on it: a podCIDR it saw stays that node's)."""
    errors: list[FieldError] = []
    if old.pod_cidr and new.pod_cidr != old.pod_cidr:
        errors += _err(_SPEC.child("podCIDR"), SET_ONCE.format("podCIDR"))
    if old.pod_cidrs and list(new.pod_cidrs) != list(old.pod_cidrs):
        errors += _err(_SPEC.child("podCIDRs"), SET_ONCE.format("podCIDRs"))
    if old.provider_id and new.provider_id != old.provider_id:
        errors += _err(_SPEC.child("providerID"), SET_ONCE.format("providerID"))
    return errors


class NodeStrategy(Strategy):
    """Nodes: created with the kubelet's status; spec rules and set-once fields."""

    keep_status_on_create = True

    def default(self, obj: Message) -> None:
        default_node_spec(obj.spec)  # type: ignore[attr-defined]

    def validate(self, obj: Message) -> list[FieldError]:
        return (validate_node_spec(obj.spec)  # type: ignore[attr-defined]
                + validate_node_status(obj.status))  # type: ignore[attr-defined]

    def validate_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_node_update(new.spec, old.spec)  # type: ignore[attr-defined]

    def validate_status_update(self, new: Message, old: Message) -> list[FieldError]:
        return validate_node_status(new.status)  # type: ignore[attr-defined]
