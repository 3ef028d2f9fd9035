"""Reusable validation helpers: each checks one value and returns a list of FieldErrors.

The apiserver's per-kind validation is built from these the way Kubernetes' is built
from ``apimachinery/pkg/util/validation`` and ``field.ErrorList``: every helper takes the
field's path and the value, returns ``[]`` when the value is fine, and never raises, so
a caller collects every problem of an object in one pass and raises one
``skiff.api.errors.Invalid`` naming them all::

    errors = object_name(Path("metadata", "name"), pod.metadata.name)
    for i, c in enumerate(pod.spec.containers):
        errors += dns1123_label(Path("spec", "containers").index(i).child("name"), c.name)
    if errors:
        raise Invalid("Pod", pod.metadata.name, errors)

Messages are Kubernetes' own, short (``required``, ``must be no more than 63
characters``, ``Unsupported value: "X": supported values: "A", "B"``); the field path
says where. Paths are built with :class:`Path`. The string rules for label keys and
values are in ``skiff.api.labels`` (label keys are built from them); quantities are
parsed by ``skiff.api.quantity``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from google.protobuf.message import Message

from skiff.api import labels as _labels
from skiff.api import quantity as _quantity
from skiff.api.errors import FieldError

DNS1123_LABEL_MAX_LENGTH = 63
DNS1035_LABEL_MAX_LENGTH = 63
ANNOTATIONS_MAX_BYTES = 256 * 1024

REQUIRED = "required"
DNS1123_SUBDOMAIN_MESSAGE = _labels.DNS1123_SUBDOMAIN_MESSAGE
DNS1123_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character")
DNS1035_LABEL_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character")
NON_NEGATIVE_MESSAGE = "must be greater than or equal to 0"

_DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_DNS1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?", re.ASCII)


@dataclass(frozen=True, init=False)
class Path:
    """A field path, built one step at a time: ``spec.containers[0].image``.

    ``Path("spec", "containers")`` is ``spec.containers``; :meth:`child` adds a field,
    :meth:`index` a list position and :meth:`key` a map key (``resources.limits[cpu]``).
    Anywhere a helper takes a field, a Path or a plain string will do.
    """

    text: str

    def __init__(self, *names: str) -> None:
        object.__setattr__(self, "text", ".".join(n for n in names if n))

    @classmethod
    def _of(cls, text: str) -> Path:
        path = cls()
        object.__setattr__(path, "text", text)
        return path

    def child(self, name: str, *more: str) -> Path:
        return Path._of(".".join(p for p in (self.text, name, *more) if p))

    def index(self, i: int) -> Path:
        return Path._of(f"{self.text}[{i}]")

    def key(self, key: str) -> Path:
        return Path._of(f"{self.text}[{key}]")

    def __str__(self) -> str:
        return self.text


FieldPath = Path | str


def _error(path: FieldPath, detail: str) -> FieldError:
    return FieldError(str(path), detail)


def quote(value: Any) -> str:
    """A value as Kubernetes quotes it in messages (Go's ``%q``: double quotes, escapes)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def _is_unset(value: Any) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, Message):
        return value.ByteSize() == 0
    return isinstance(value, Sized) and not isinstance(value, str) and len(value) == 0


def required(path: FieldPath, value: Any) -> list[FieldError]:
    """``required`` if ``value`` is None, ``""``, an empty collection or an empty message.

    Zero numbers count as set: protobuf cannot tell 0 from unset for plain scalars, so
    callers check numeric fields with :func:`in_range` or the like instead.
    """
    return [_error(path, REQUIRED)] if _is_unset(value) else []


def _name_errors(path: FieldPath, value: str, *, pattern: re.Pattern[str], limit: int,
                 message: str) -> list[FieldError]:
    if not value:
        return [_error(path, REQUIRED)]
    errors = []
    if len(value) > limit:
        errors.append(_error(path, _labels.max_length_message(limit)))
    if not pattern.fullmatch(value):
        errors.append(_error(path, message))
    return errors


def dns1123_label(path: FieldPath, value: str) -> list[FieldError]:
    """An RFC 1123 label (``my-name``): a namespace's or a container's name."""
    return _name_errors(path, value, pattern=_DNS1123_LABEL_RE, limit=DNS1123_LABEL_MAX_LENGTH,
                        message=DNS1123_LABEL_MESSAGE)


def dns1035_label(path: FieldPath, value: str) -> list[FieldError]:
    """An RFC 1035 label (starts with a letter): a Service's name, a port's name."""
    return _name_errors(path, value, pattern=_DNS1035_LABEL_RE, limit=DNS1035_LABEL_MAX_LENGTH,
                        message=DNS1035_LABEL_MESSAGE)


def dns1123_subdomain(path: FieldPath, value: str) -> list[FieldError]:
    """An RFC 1123 subdomain (``example.com``): most objects' names."""
    if not value:
        return [_error(path, REQUIRED)]
    return [_error(path, m) for m in _labels.validate_dns1123_subdomain(value)]


# Kubernetes' per-kind name rules: most kinds are subdomains, these are stricter.
_NAME_RULES = {"Namespace": dns1123_label, "Service": dns1035_label}


def object_name(path: FieldPath, value: str, *, kind: str = "",
                prefix: bool = False) -> list[FieldError]:
    """An object's ``metadata.name`` (or, with ``prefix=True``, its ``generateName``).

    The rule is the kind's: a DNS-1123 label for Namespaces, a DNS-1035 label for
    Services, a DNS-1123 subdomain for everything else. A generateName may end in ``-``
    (random characters follow it), so a trailing dash is ignored, as in Kubernetes.
    """
    if prefix and value.endswith("-"):
        value = value[:-1]
    return _NAME_RULES.get(kind, dns1123_subdomain)(path, value)


def labels(path: FieldPath, mapping: Mapping[str, str]) -> list[FieldError]:
    """``metadata.labels`` (or any label map): every key a qualified name, every value a
    label value. Errors name the entry: ``metadata.labels[app]``."""
    base = path if isinstance(path, Path) else Path._of(path)
    errors = []
    for key, value in mapping.items():
        errors += [_error(base.key(key), m) for m in _labels.validate_label_key(key)]
        errors += [_error(base.key(key), m) for m in _labels.validate_label_value(value)]
    return errors


def annotations(path: FieldPath, mapping: Mapping[str, str]) -> list[FieldError]:
    """``metadata.annotations``: keys are qualified names (any case), and keys plus values
    hold at most 256 KiB in all (UTF-8 bytes)."""
    base = path if isinstance(path, Path) else Path._of(path)
    errors = []
    total = 0
    for key, value in mapping.items():
        # Kubernetes lowercases annotation keys before checking them.
        errors += [_error(base.key(key), m) for m in _labels.validate_label_key(key.lower())]
        total += len(key.encode()) + len(value.encode())
    if total > ANNOTATIONS_MAX_BYTES:
        errors.append(_error(path, f"must have at most {ANNOTATIONS_MAX_BYTES} bytes"))
    return errors


def in_range(path: FieldPath, n: int, low: int, high: int) -> list[FieldError]:
    """``n`` within ``[low, high]``: ``must be between 1 and 65535, inclusive``."""
    return [] if low <= n <= high else [
        _error(path, f"must be between {low} and {high}, inclusive")]


def port_number(path: FieldPath, n: int) -> list[FieldError]:
    """A TCP/UDP port: 1 to 65535."""
    return in_range(path, n, 1, 65535)


def non_negative(path: FieldPath, n: int | float | Fraction) -> list[FieldError]:
    return [_error(path, NON_NEGATIVE_MESSAGE)] if n < 0 else []


def quantity(path: FieldPath, text: str, *, allow_negative: bool = False) -> list[FieldError]:
    """A resource quantity (``100m``, ``128Mi``); negative ones only if allowed (resource
    requests and limits never are)."""
    try:
        value = _quantity.parse_quantity(text)
    except ValueError as e:
        return [_error(path, str(e))]
    return [] if allow_negative else non_negative(path, value)


def one_of(path: FieldPath, value: Any, allowed: Iterable[Any]) -> list[FieldError]:
    """``value`` is one of ``allowed``: ``Unsupported value: "X": supported values: "A"``."""
    # A set has no order of its own: sort it so the message is the same every time.
    allowed = sorted(allowed) if isinstance(allowed, (set, frozenset)) else list(allowed)
    if value in allowed:
        return []
    supported = ", ".join(quote(a) for a in allowed)
    return [_error(path, f"Unsupported value: {quote(value)}: supported values: {supported}")]
