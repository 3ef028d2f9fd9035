"""Kubernetes label selectors: parsing, matching and the rules for label keys and values.

A selector is a conjunction of requirements, each on one label key:

- equality: ``app=web``, ``app==web``, ``app!=web`` (``!=`` also matches a missing label);
- set-based: ``env in (prod, qa)``, ``tier notin (fe)`` (also matches a missing label),
  ``partition`` (the label exists), ``!partition`` (it does not);
- numeric: ``replicas>3``, ``replicas<10`` (the label must exist and be an integer).

This is apimachinery's ``pkg/labels`` rewritten: the same lexer (any run of characters
that is neither whitespace nor one of ``=!(),<>`` is an identifier; ``in`` and ``notin``
are keywords only where an operator is expected), the same grammar, the same
canonical string form (requirements sorted, each set's values sorted and written
without spaces), and the same matching. A :class:`Requirement` is valid by
construction: it checks its key and values when it is made.

Two selectors are special, as in Kubernetes: :func:`everything` (no requirements,
what the empty string parses to) and :func:`nothing` (matches no object; what a nil
``LabelSelector`` means). ``str(nothing())`` is ``""`` as in Kubernetes, so it does not
survive a round trip through text; callers keep it as a value.

The string rules for label keys and values (Kubernetes' qualified names and DNS-1123
subdomains) live here because label keys are built from them; ``skiff.api.validation``
wraps them into field errors for objects. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from skiff.api.errors import BadRequest
from skiff.api.v1 import meta_pb2

# ---- the string rules (apimachinery's util/validation) ----

DNS1123_SUBDOMAIN_MAX_LENGTH = 253
QUALIFIED_NAME_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*", re.ASCII)
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", re.ASCII)
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", re.ASCII)

DNS1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character")
QUALIFIED_NAME_MESSAGE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character")
LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character")


def max_length_message(limit: int) -> str:
    return f"must be no more than {limit} characters"


def validate_dns1123_subdomain(value: str) -> list[str]:
    """What is wrong with ``value`` as a DNS-1123 subdomain (``example.com``); [] if fine."""
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errors.append(max_length_message(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errors.append(DNS1123_SUBDOMAIN_MESSAGE)
    return errors


def validate_label_key(key: str) -> list[str]:
    """What is wrong with ``key`` as a label key (a qualified name); [] if fine.

    A qualified name is an optional DNS-1123 subdomain prefix (at most 253 characters)
    and ``/``, then a name of at most 63 characters, alphanumeric at both ends with
    ``-``, ``_`` and ``.`` inside: ``app``, ``app.kubernetes.io/name``. Annotation keys
    follow the same rule.
    """
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
        errors: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors = ["prefix part must be non-empty"]
        else:
            errors = [f"prefix part {m}" for m in validate_dns1123_subdomain(prefix)]
    else:
        return [f"a qualified name {QUALIFIED_NAME_MESSAGE} with an optional DNS subdomain "
                "prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errors.append(f"name part {max_length_message(QUALIFIED_NAME_MAX_LENGTH)}")
    if name and not _QUALIFIED_NAME_RE.fullmatch(name):
        errors.append(f"name part {QUALIFIED_NAME_MESSAGE}")
    return errors


def validate_label_value(value: str) -> list[str]:
    """What is wrong with ``value`` as a label value; [] if fine (the empty value is)."""
    errors = []
    if len(value) > LABEL_VALUE_MAX_LENGTH:
        errors.append(max_length_message(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errors.append(LABEL_VALUE_MESSAGE)
    return errors


# ---- requirements and selectors ----


class Operator(StrEnum):
    """A requirement's operator; the values are apimachinery's ``selection.Operator``."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_EXACT = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS})
_SETS = frozenset({Operator.IN, Operator.NOT_IN})
_PRESENCE = frozenset({Operator.EXISTS, Operator.DOES_NOT_EXIST})
_NUMERIC = frozenset({Operator.GREATER_THAN, Operator.LESS_THAN})
_INTEGER_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(text: str) -> int | None:
    """``text`` as Go's ``strconv.ParseInt(text, 10, 64)`` reads it, or None."""
    if not _INTEGER_RE.fullmatch(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def requirement_errors(key: str, operator: Operator,
                       values: Iterable[str]) -> list[tuple[str, str]]:
    """What is wrong with a requirement, as (sub-field, message) pairs; [] if it is valid.

    The sub-fields are ``key``, ``values`` and ``values[i]``, so a caller can place
    them under its own path (``matchExpressions[0].values[1]``).
    """
    values = list(values)
    errors = [("key", f'invalid label key "{key}": {m}') for m in validate_label_key(key)]
    if operator in _SETS and not values:
        errors.append(("values", "for 'in', 'notin' operators, values set can't be empty"))
    elif operator in _EXACT and len(values) != 1:
        errors.append(("values", "exact-match compatibility requires one single value"))
    elif operator in _PRESENCE and values:
        errors.append(("values", "values set must be empty for exists and does not exist"))
    elif operator in _NUMERIC:
        if len(values) != 1:
            errors.append(("values", "for 'Gt', 'Lt' operators, exactly one value is required"))
        for i, value in enumerate(values):
            if _int64(value) is None:
                errors.append((f"values[{i}]",
                               "for 'Gt', 'Lt' operators, the value must be an integer"))
    for i, value in enumerate(values):
        errors.extend((f"values[{i}]", f'invalid label value: "{value}": {m}')
                      for m in validate_label_value(value))
    return errors


@dataclass(frozen=True)
class Requirement:
    """One condition on one label key. Valid by construction (BadRequest otherwise).

    ``values`` is normalised to a sorted tuple without duplicates: a requirement's
    values are a set, and a canonical order makes equal requirements compare equal.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "operator", Operator(self.operator))
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))
        errors = requirement_errors(self.key, self.operator, self.values)
        if errors:
            raise BadRequest("; ".join(message for _, message in errors))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a set of labels satisfies this requirement (Kubernetes' ``Matches``)."""
        op = self.operator
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            # A missing label is "not equal" to anything: k8s' notin/!= semantics.
            return self.key not in labels or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        # Gt / Lt: a missing or non-integer label never matches.
        if self.key not in labels:
            return False
        have, want = _int64(labels[self.key]), _int64(self.values[0])
        if have is None or want is None:
            return False
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        joined = ",".join(self.values)
        if op in _SETS:
            return f"{self.key} {op.value} ({joined})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{joined}"

    def _sort_key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.key, self.operator.value, self.values)


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements (sorted by key), or the selector matching nothing.

    Invariant: ``requirements`` is sorted, so selectors that differ only in the order
    their requirements were written compare (and print) equal.
    """

    requirements: tuple[Requirement, ...] = ()
    # True only for nothing(): what a nil LabelSelector means. Has no requirements.
    matches_nothing: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements",
                           tuple(sorted(self.requirements, key=Requirement._sort_key)))

    @property
    def empty(self) -> bool:
        """True for the selector that matches everything (no requirements)."""
        return not self.requirements and not self.matches_nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.matches_nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def add(self, *requirements: Requirement) -> Selector:
        """This selector with more requirements (ANDed). ``nothing()`` stays nothing."""
        if self.matches_nothing:
            return self
        return Selector((*self.requirements, *requirements))

    def requires_exact_match(self, key: str) -> str | None:
        """The value ``key`` must have, if a requirement pins it to one; else None.

        Kubernetes uses this to serve a list from an index (pods by node, say).
        """
        for r in self.requirements:
            if r.key == key and len(r.values) == 1 and r.operator in (
                    Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN):
                return r.values[0]
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def everything() -> Selector:
    """The selector that matches every object (an empty ``LabelSelector``, ``""``)."""
    return Selector()


def nothing() -> Selector:
    """The selector that matches no object (a nil ``LabelSelector``)."""
    return Selector(matches_nothing=True)


def selector_from_map(match_labels: Mapping[str, str]) -> Selector:
    """Every pair must match: a ReplicationController's or Service's ``selector``.

    An empty map matches everything (as Kubernetes' ``SelectorFromSet``); invalid keys or
    values raise BadRequest (as ``ValidatedSelectorFromSet``).
    """
    return Selector(tuple(Requirement(k, Operator.EQUALS, (v,)) for k, v in match_labels.items()))


_LABEL_SELECTOR_OPERATORS = {
    "In": Operator.IN, "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS, "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def selector_from_label_selector(sel: meta_pb2.LabelSelector | None) -> Selector:
    """The selector a ``LabelSelector`` (ReplicaSet, Deployment) stands for.

    ``None`` (the field unset: pass ``spec.selector if spec.HasField("selector") else
    None``) matches nothing; an empty one matches everything. Problems raise BadRequest
    naming the field: ``matchExpressions[0].operator: "Gt" is not a valid label selector
    operator``.
    """
    if sel is None:
        return nothing()
    problems: list[str] = []
    requirements: list[Requirement] = []
    for key, value in sel.match_labels.items():
        errors = requirement_errors(key, Operator.EQUALS, (value,))
        problems.extend(f"matchLabels[{key}]: {message}" for _, message in errors)
        if not errors:
            requirements.append(Requirement(key, Operator.EQUALS, (value,)))
    for i, expr in enumerate(sel.match_expressions):
        path = f"matchExpressions[{i}]"
        operator = _LABEL_SELECTOR_OPERATORS.get(expr.operator)
        if operator is None:
            problems.append(f'{path}.operator: "{expr.operator}" is not a valid label selector '
                            f'operator (one of "In", "NotIn", "Exists", "DoesNotExist")')
            continue
        errors = requirement_errors(expr.key, operator, expr.values)
        problems.extend(f"{path}.{sub}: {message}" for sub, message in errors)
        if not errors:
            requirements.append(Requirement(expr.key, operator, tuple(expr.values)))
    if problems:
        raise BadRequest("invalid label selector: " + "; ".join(problems))
    return Selector(tuple(requirements))


# ---- the string syntax ----

_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),<>"
_END = "end of string"


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "keyword" (in / notin), one of the symbols, or _END
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    """Kubernetes' lexer: symbols (longest of ``==``/``!=`` first), identifiers, keywords."""
    tokens = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in _SPECIAL:
            symbol = text[i:i + 2] if text[i:i + 2] in ("==", "!=") else ch
            tokens.append(_Token(symbol, symbol, i))
            i += len(symbol)
        else:
            start = i
            while i < len(text) and text[i] not in _WHITESPACE and text[i] not in _SPECIAL:
                i += 1
            word = text[start:i]
            tokens.append(_Token("keyword" if word in ("in", "notin") else "ident", word, start))
    tokens.append(_Token(_END, "", len(text)))
    return tokens


_BINARY_OPERATORS = {"=": Operator.EQUALS, "==": Operator.DOUBLE_EQUALS,
                     "!=": Operator.NOT_EQUALS, "in": Operator.IN, "notin": Operator.NOT_IN,
                     ">": Operator.GREATER_THAN, "<": Operator.LESS_THAN}


class _Parser:
    """Recursive descent over the tokens, one method per rule of Kubernetes' grammar.

    ``values=True`` in :meth:`peek` / :meth:`take` is the lexer's "Values" context, where
    ``in`` and ``notin`` are ordinary identifiers (``in in (in)`` is a valid selector).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def fail(self, expected: str, token: _Token) -> BadRequest:
        found = _END if token.kind == _END else f'"{token.text}"'
        return BadRequest(f'unable to parse requirement: "{self.text}": expected {expected}, '
                          f"found {found} at position {token.position}")

    def peek(self, values: bool = True) -> _Token:
        token = self.tokens[self.at]
        return _Token("ident", token.text, token.position) if (
            values and token.kind == "keyword") else token

    def take(self, values: bool = True) -> _Token:
        token = self.peek(values)
        self.at += 1
        return token

    def selector(self) -> Selector:
        requirements: list[Requirement] = []
        if self.peek().kind == _END:
            return Selector()
        while True:
            token = self.peek()
            if token.kind not in ("ident", "!"):
                raise self.fail('"!" or a label key', token)
            requirements.append(self.requirement())
            token = self.take()
            if token.kind == _END:
                return Selector(tuple(requirements))
            if token.kind != ",":
                raise self.fail(f'"," or {_END}', token)

    def requirement(self) -> Requirement:
        start = self.peek()
        operator = None
        token = self.take()
        if token.kind == "!":
            operator = Operator.DOES_NOT_EXIST
            token = self.take()
        if token.kind != "ident":
            raise self.fail("a label key", token)
        key = token.text
        if self.peek().kind in (_END, ","):
            values: tuple[str, ...] = ()
            operator = operator or Operator.EXISTS
        elif operator is Operator.DOES_NOT_EXIST:
            raise self.fail(f'"," or {_END} after "!{key}"', self.peek())
        else:
            op_token = self.take(values=False)
            operator = _BINARY_OPERATORS.get(op_token.text) if op_token.kind != "ident" else None
            if operator is None:
                raise self.fail("an operator (=, ==, !=, in, notin, >, <)", op_token)
            values = self.set_values() if operator in _SETS else self.exact_value()
        errors = requirement_errors(key, operator, values)
        if errors:
            raise BadRequest(f'unable to parse requirement: "{self.text}": {errors[0][1]} '
                             f"(requirement at position {start.position})")
        return Requirement(key, operator, values)

    def exact_value(self) -> tuple[str, ...]:
        if self.peek().kind in (_END, ","):
            return ("",)  # "a=" selects the empty value, as in Kubernetes
        token = self.take()
        if token.kind != "ident":
            raise self.fail("a label value", token)
        return (token.text,)

    def set_values(self) -> tuple[str, ...]:
        token = self.take()
        if token.kind != "(":
            raise self.fail('"("', token)
        token = self.peek()
        if token.kind == ")":
            self.take()
            return ("",)  # "a in ()" is the set holding the empty value, as in Kubernetes
        if token.kind not in ("ident", ","):
            raise self.fail('",", ")" or a label value', token)
        values = self.value_list()
        token = self.take()
        if token.kind != ")":
            raise self.fail('")"', token)
        return values

    def value_list(self) -> tuple[str, ...]:
        """Comma-separated values up to (not taking) ``)``; empty slots are the empty value."""
        values: list[str] = []
        while True:
            token = self.take()
            if token.kind == "ident":
                values.append(token.text)
                after = self.peek()
                if after.kind == ")":
                    return tuple(values)
                if after.kind != ",":
                    raise self.fail('"," or ")"', after)
            elif token.kind == ",":
                if not values:
                    values.append("")  # "(,a)"
                after = self.peek()
                if after.kind == ")":
                    values.append("")  # "(a,)"
                    return tuple(values)
                if after.kind == ",":
                    self.take()
                    values.append("")  # "(a,,b)"
            else:
                raise self.fail('"," or a label value', token)


def parse_selector(text: str) -> Selector:
    """The selector written as ``text`` (``app=web,env in (prod,qa),!canary``).

    The empty string (or only whitespace) matches everything. Syntax errors and invalid
    keys or values raise BadRequest naming the selector, what was expected and where.
    """
    return _Parser(text).selector()
