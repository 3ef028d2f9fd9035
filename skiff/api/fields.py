"""Kubernetes field selectors: ``metadata.name=web,status.phase!=Running``.

A field selector is a conjunction of terms ``field=value``, ``field==value`` (the same)
or ``field!=value`` over a small, per-kind set of *selectable fields*: every kind has
``metadata.name`` and ``metadata.namespace``; a Pod adds ``spec.nodeName``,
``status.phase`` and a few more (see :func:`object_fields`). The apiserver rejects a
selector naming any other field (:func:`validate_field_selector`), exactly as
Kubernetes answers ``field label not supported: spec.foo``.

As apimachinery's ``pkg/fields``: terms are split on unescaped commas, each at its first
``!=``, ``==`` or ``=``; in values, ``\\,``, ``\\=`` and ``\\\\`` stand for ``,``, ``=`` and
``\\`` (any other escape, or a bare ``,``/``=``, is an error); a missing field reads as
``""``. One difference, for the command line's sake: whitespace around a field name or a
value is ignored (Kubernetes would look for a field called ``"status.phase "``).

Pure functions, no I/O; objects are read through their protobuf messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from google.protobuf.message import Message

from skiff.api import kinds
from skiff.api.errors import BadRequest


class FieldOperator(StrEnum):
    EQUALS = "="  # "==" parses to this too: Kubernetes has one "has" term for both
    NOT_EQUALS = "!="


_ESCAPES = {"\\": "\\", ",": ",", "=": "="}
_WHITESPACE = " \t\r\n"  # what the label selector lexer skips; nothing Unicode


def escape_value(value: str) -> str:
    """``value`` as written in a selector: ``\\``, ``,`` and ``=`` escaped with ``\\``."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(text: str) -> str:
    """The value a selector's ``text`` stands for; BadRequest on a bad escape or a bare
    ``,`` / ``=``."""
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt not in _ESCAPES:
                sequence = "\\" + (nxt or "")
                raise BadRequest(f"invalid field selector: invalid escape sequence: {sequence}")
            out.append(nxt)
        elif ch in ",=":
            raise BadRequest(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class FieldRequirement:
    """One term: ``field`` must (``=``) or must not (``!=``) have ``value``."""

    field: str
    operator: FieldOperator
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        have = fields.get(self.field, "")
        return have == self.value if self.operator is FieldOperator.EQUALS else (
            have != self.value)

    def __str__(self) -> str:
        return f"{self.field}{self.operator.value}{escape_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of terms; no terms matches everything.

    Invariant: ``requirements`` is sorted, so equal selectors compare and print equal.
    """

    requirements: tuple[FieldRequirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(sorted(
            self.requirements, key=lambda r: (r.field, r.operator.value, r.value))))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must have if a term pins it (``spec.nodeName=n1``); else
        None. The apiserver uses this to narrow a list (one namespace, one node)."""
        for r in self.requirements:
            if r.field == field and r.operator is FieldOperator.EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_terms(text: str) -> list[str]:
    """``text`` split on commas not escaped by a backslash."""
    terms, start, escaped = [], 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def parse_field_selector(text: str) -> FieldSelector:
    """The field selector written as ``text``; the empty string matches everything.

    BadRequest for a term without an operator or a value with a bad escape. Whether the
    fields exist for a kind is :func:`validate_field_selector`'s business.
    """
    requirements = []
    for term in _split_terms(text):
        if not term.strip(_WHITESPACE):
            continue  # "a=b,,c=d" and a trailing comma are accepted, as in Kubernetes
        # The first operator wins, trying "!=" and "==" before "=" at each position.
        for i in range(len(term)):
            op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
            if op is not None:
                break
        else:
            raise BadRequest(f"invalid selector: '{text}'; can't understand '{term}'")
        field = term[:i].strip(_WHITESPACE)
        value = unescape_value(term[i + len(op):].strip(_WHITESPACE))
        operator = FieldOperator.NOT_EQUALS if op == "!=" else FieldOperator.EQUALS
        requirements.append(FieldRequirement(field, operator, value))
    return FieldSelector(tuple(requirements))


# ---- the selectable fields of each kind ----


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _pod_fields(pod: Message) -> dict[str, str]:
    return {
        "spec.nodeName": pod.spec.node_name,
        "spec.restartPolicy": pod.spec.restart_policy,
        "spec.schedulerName": pod.spec.scheduler_name,
        "spec.hostNetwork": _bool(pod.spec.host_network),
        "status.phase": pod.status.phase,
        "status.podIP": pod.status.pod_ip,
        "status.nominatedNodeName": pod.status.nominated_node_name,
    }


def _event_fields(event: Message) -> dict[str, str]:
    ref = event.involved_object
    return {
        "involvedObject.kind": ref.kind,
        "involvedObject.namespace": ref.namespace,
        "involvedObject.name": ref.name,
        "involvedObject.uid": ref.uid,
        "involvedObject.apiVersion": ref.api_version,
        "involvedObject.resourceVersion": ref.resource_version,
        "involvedObject.fieldPath": ref.field_path,
        "reason": event.reason,
        "reportingComponent": event.reporting_component,
        "source": event.source.component,
        "type": event.type,
    }


def _replicas_fields(obj: Message) -> dict[str, str]:
    return {"status.replicas": str(obj.status.replicas)}


# Kubernetes' per-kind SelectableFields, beyond metadata.name and metadata.namespace.
_KIND_FIELDS: dict[str, Callable[[Message], dict[str, str]]] = {
    "Pod": _pod_fields,
    "Node": lambda node: {"spec.unschedulable": _bool(node.spec.unschedulable)},
    "Event": _event_fields,
    "Namespace": lambda ns: {"status.phase": ns.status.phase},
    "Secret": lambda secret: {"type": secret.type},
    "ReplicationController": _replicas_fields,
    "ReplicaSet": _replicas_fields,
}


def object_fields(kind_name: str, obj: Message) -> dict[str, str]:
    """The selectable fields of ``obj`` (a ``kind_name``: ``Pod``, ``pods``, ``po``...).

    Every kind has ``metadata.name`` and ``metadata.namespace`` (``""`` for cluster-scoped
    kinds); the rest are Kubernetes' for that kind. Booleans read ``"true"``/``"false"``.
    """
    kind = kinds.lookup(kind_name)
    fields = {"metadata.name": obj.metadata.name, "metadata.namespace": obj.metadata.namespace}
    extra = _KIND_FIELDS.get(kind.kind)
    if extra is not None:
        fields.update(extra(obj))
    return fields


def supported_fields(kind_name: str) -> frozenset[str]:
    """The field labels a selector on ``kind_name`` may use."""
    kind = kinds.lookup(kind_name)
    return frozenset(object_fields(kind.kind, kind.message()))


def validate_field_selector(kind_name: str, selector: FieldSelector | str) -> FieldSelector:
    """``selector`` (parsed if text) if every field it names is selectable on the kind;
    BadRequest ``field label not supported: spec.foo`` otherwise."""
    if isinstance(selector, str):
        selector = parse_field_selector(selector)
    supported = supported_fields(kind_name)
    for r in selector.requirements:
        if r.field not in supported:
            raise BadRequest(f"field label not supported: {r.field}")
    return selector
