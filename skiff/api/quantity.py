"""Kubernetes resource quantities (``100m``, ``1.5``, ``128Mi``, ``1e9``) as exact numbers.

A quantity is a signed decimal number and a suffix, exactly as apimachinery's
``resource.ParseQuantity`` reads them:

- decimal SI: ``n`` (1e-9), ``u``, ``m``, none, ``k``, ``M``, ``G``, ``T``, ``P``, ``E`` (1e18);
- binary SI: ``Ki`` (2**10), ``Mi``, ``Gi``, ``Ti``, ``Pi``, ``Ei`` (2**60);
- a decimal exponent: ``1e3``, ``1E3``, ``5e-3`` (``E`` alone is exa, ``1E`` is 1e18).

Values are :class:`fractions.Fraction`, so arithmetic on them is exact (no float ever
rounds ``0.1`` cpu). As in Kubernetes, a parsed value is rounded up (away from zero) to
a multiple of 1n, "so that if you ask for some resources you get some"; and a
binary-suffixed value is capped at 2**63-1. :func:`milli_value` (cpu in millicores) and
:func:`value` (bytes, pods) round up the same way. :func:`format_quantity` writes a
number back in Kubernetes' canonical form (``1500m``, ``2k``, ``128Mi``).

Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
FORMAT_MESSAGE = f"quantities must match the regular expression '{QUANTITY_PATTERN}'"
SUFFIX_MESSAGE = "unable to parse quantity's suffix"

_SHAPE_RE = re.compile(QUANTITY_PATTERN, re.ASCII)
# The number part proper: at most one '.', at least one digit.
_NUMBER_RE = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?", re.ASCII)
_EXPONENT_RE = re.compile(r"[eE]([+-]?[0-9]+)", re.ASCII)

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                     "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_NANO = Fraction(1, 10**9)
_MAX_BINARY = 2**63 - 1
# Python materialises 10**exponent, Go's inf.Dec does not: refuse absurd exponents
# rather than hang. No real resource comes near 1e1000.
_MAX_EXPONENT = 1000


def _round_away_from_zero(value: Fraction) -> int:
    return math.ceil(value) if value >= 0 else math.floor(value)


# Pods repeat the same few quantities ("100m", "128Mi"); a Fraction is immutable.
@lru_cache(maxsize=4096)
def parse_quantity(text: str) -> Fraction:
    """The exact value of quantity ``text``; ValueError naming the problem otherwise."""
    shape = _SHAPE_RE.match(text)
    number = _NUMBER_RE.fullmatch(shape.group(1)) if shape else None
    if shape is None or number is None or not (number.group(2) or number.group(3)):
        raise ValueError(f'invalid quantity "{text}": {FORMAT_MESSAGE}')
    sign, whole, fraction = number.group(1), number.group(2), number.group(3) or ""
    amount = Fraction(int(whole + fraction or "0"), 10 ** len(fraction))
    suffix = shape.group(2)
    binary = suffix in _BINARY_SUFFIXES
    if binary:
        amount *= 2 ** _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        amount *= Fraction(10) ** _DECIMAL_SUFFIXES[suffix]
    elif exponent := _EXPONENT_RE.fullmatch(suffix):
        power = int(exponent.group(1))
        if abs(power) > _MAX_EXPONENT:
            raise ValueError(f'invalid quantity "{text}": exponent out of range '
                             f"(at most {_MAX_EXPONENT} either way)")
        amount *= Fraction(10) ** power
    else:
        raise ValueError(f'invalid quantity "{text}": {SUFFIX_MESSAGE}')
    amount = Fraction(_round_away_from_zero(amount / _NANO)) * _NANO
    if binary:
        amount = min(amount, Fraction(_MAX_BINARY))
    return -amount if sign == "-" else amount


def _as_fraction(quantity: str | Fraction | int) -> Fraction:
    return parse_quantity(quantity) if isinstance(quantity, str) else Fraction(quantity)


def milli_value(quantity: str | Fraction | int) -> int:
    """The quantity in thousandths, rounded up away from zero: cpu ``"100m"`` -> 100."""
    return _round_away_from_zero(_as_fraction(quantity) * 1000)


def value(quantity: str | Fraction | int) -> int:
    """The quantity as an integer, rounded up away from zero: ``"1Ki"`` -> 1024."""
    return _round_away_from_zero(_as_fraction(quantity))


_DECIMAL_BY_EXPONENT = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_SHIFT = sorted(((shift, s) for s, shift in _BINARY_SUFFIXES.items()), reverse=True)


def format_quantity(quantity: str | Fraction | int, *, binary: bool = False) -> str:
    """Kubernetes' canonical text for a value: ``1500m``, ``2k``, ``100m``; with
    ``binary=True``, powers of 1024 where exact (``128Mi``, ``1536`` stays decimal).

    Rounds up to 1n like parsing, so ``parse_quantity(format_quantity(q)) == q`` for any
    parsed ``q``.
    """
    number = _as_fraction(quantity)
    nanos = _round_away_from_zero(number / _NANO)
    if nanos == 0:
        return "0"
    sign, nanos = ("-" if nanos < 0 else ""), abs(nanos)
    # Binary only for integers from 1Ki (Kubernetes writes smaller ones and fractions in
    # decimal) up to the cap a binary suffix is parsed with (beyond it the text would
    # not read back as the same value); a plain integer where no power of 1024 divides.
    if binary and nanos % 10**9 == 0 and 1024 <= nanos // 10**9 <= _MAX_BINARY:
        whole = nanos // 10**9
        for shift, suffix in _BINARY_BY_SHIFT:
            if whole % (1 << shift) == 0:
                return f"{sign}{whole >> shift}{suffix}"
        return f"{sign}{whole}"
    # Decimal: the largest exponent (a multiple of 3, at most 18) leaving an integer.
    exponent = -9
    while nanos % 10 == 0:
        nanos //= 10
        exponent += 1
    while exponent % 3:
        nanos *= 10
        exponent -= 1
    if exponent > 18:
        nanos *= 10 ** (exponent - 18)
        exponent = 18
    return f"{sign}{nanos}{_DECIMAL_BY_EXPONENT[exponent]}"
