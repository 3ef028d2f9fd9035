"""Resource quantities: exact parsing, Kubernetes' rounding, and the canonical form."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiff.api.quantity import (
    FORMAT_MESSAGE,
    QUANTITY_PATTERN,
    SUFFIX_MESSAGE,
    format_quantity,
    milli_value,
    parse_quantity,
    value,
)

F = Fraction


@pytest.mark.parametrize(("text", "expected"), [
    ("0", F(0)),
    ("0m", F(0)),
    ("-0", F(0)),
    ("1", F(1)),
    ("00010", F(10)),
    ("+2", F(2)),
    ("-2", F(-2)),
    ("1.5", F(3, 2)),
    (".5", F(1, 2)),
    ("1.", F(1)),
    ("0.1", F(1, 10)),  # exactly a tenth: no float anywhere
    ("100m", F(1, 10)),
    ("1500m", F(3, 2)),
    ("250u", F(1, 4000)),
    ("5n", F(5, 10**9)),
    ("1k", F(1000)),
    ("1M", F(10**6)),
    ("1G", F(10**9)),
    ("1T", F(10**12)),
    ("1P", F(10**15)),
    ("1E", F(10**18)),
    ("1Ki", F(1024)),
    ("128Mi", F(128 * 2**20)),
    ("1.5Gi", F(3 * 2**29)),
    ("0.5Ki", F(512)),
    ("1Ti", F(2**40)),
    ("1Pi", F(2**50)),
    ("1Ei", F(2**60)),
    ("-1.5Gi", F(-3 * 2**29)),
    ("1e3", F(1000)),
    ("1E3", F(1000)),
    ("1e+3", F(1000)),
    ("5e-3", F(5, 1000)),
    ("1.5e2", F(150)),
    ("12E-1", F(6, 5)),
    ("1e0", F(1)),
    ("1e18", F(10**18)),
    ("1e100", F(10**100)),  # decimal values are not capped
])
def test_parse(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


def test_rounds_up_to_a_nano_away_from_zero_like_kubernetes() -> None:
    assert parse_quantity("0.1n") == F(1, 10**9)
    assert parse_quantity("1.0000000001") == 1 + F(1, 10**9)
    assert parse_quantity("-0.1n") == F(-1, 10**9)
    assert parse_quantity("1e-20") == F(1, 10**9)


def test_binary_values_are_capped_at_int64_max() -> None:
    assert parse_quantity("8Ei") == 2**63 - 1
    assert parse_quantity("7Ei") == 7 * 2**60
    assert parse_quantity("1e19") == 10**19  # decimal: no cap


@pytest.mark.parametrize("text", [
    "", " 1", "1 ", "abc", "1.2.3", "+", "-", ".", "1Kb", "1 Gi", "1,000", "0x10", "Mi",
    "1e1.5", "1e3e3", "1MB", "1.5.Gi", "\u0661",  # Arabic-Indic 1: int() takes it
])
def test_malformed(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_quantity(text)
    assert str(caught.value) == f'invalid quantity "{text}": {FORMAT_MESSAGE}'
    assert QUANTITY_PATTERN in str(caught.value)


@pytest.mark.parametrize("text", ["1ki", "1K", "1e", "1i", "1mi", "1Kii", "1Gim", "1n3"])
def test_bad_suffix(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_quantity(text)
    assert SUFFIX_MESSAGE in str(caught.value)


def test_absurd_exponents_are_refused_not_computed() -> None:
    with pytest.raises(ValueError, match="exponent out of range"):
        parse_quantity("1e999999999")
    with pytest.raises(ValueError, match="exponent out of range"):
        parse_quantity("1e-999999999")


@pytest.mark.parametrize(("text", "millis", "units"), [
    ("100m", 100, 1),
    ("1", 1000, 1),
    ("1.5", 1500, 2),
    ("0.1", 100, 1),
    ("1n", 1, 1),  # rounds up: some cpu is not no cpu
    ("250u", 1, 1),
    ("2k", 2_000_000, 2000),
    ("128Mi", 128 * 2**20 * 1000, 128 * 2**20),
    ("1e9", 10**12, 10**9),
    ("0", 0, 0),
    ("-1.5", -1500, -2),  # away from zero, as Kubernetes' MilliValue/Value
    ("-100m", -100, -1),
])
def test_milli_value_and_value(text: str, millis: int, units: int) -> None:
    assert milli_value(text) == millis
    assert value(text) == units


def test_helpers_take_numbers_too() -> None:
    assert milli_value(F(1, 3)) == 334
    assert value(F(5, 2)) == 3
    assert milli_value(2) == 2000


@pytest.mark.parametrize(("text", "decimal", "binary"), [
    ("0", "0", "0"),
    ("1", "1", "1"),
    ("1.5", "1500m", "1500m"),
    ("0.1", "100m", "100m"),
    ("100m", "100m", "100m"),
    ("1000m", "1", "1"),
    ("1500", "1500", "1500"),
    ("2000", "2k", "2000"),  # binary: a plain integer where no power of 1024 divides
    ("1000", "1k", "1k"),  # below 1Ki binary falls back to decimal
    ("1Ki", "1024", "1Ki"),
    ("1536", "1536", "1536"),  # not a multiple of 1Ki: decimal
    ("1.5Gi", "1610612736", "1536Mi"),
    ("128Mi", "134217728", "128Mi"),
    ("1e9", "1G", "1000000000"),
    ("1e21", "1000E", "1000E"),  # binary suffixes would be capped when read back
    ("8Ei", "9223372036854775807", "9223372036854775807"),
    ("4Ei", "4611686018427387904", "4Ei"),
    ("5n", "5n", "5n"),
    ("1.5n", "2n", "2n"),
    ("-1.5Gi", "-1610612736", "-1536Mi"),
    ("-100m", "-100m", "-100m"),
    ("1.000001", "1000001u", "1000001u"),
])
def test_format(text: str, decimal: str, binary: str) -> None:
    assert format_quantity(parse_quantity(text)) == decimal
    assert format_quantity(text, binary=True) == binary


quantities = st.builds(
    lambda sign, whole, frac, suffix: f"{sign}{whole}{'.' + frac if frac else ''}{suffix}",
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 10**12).map(str),
    st.one_of(st.just(""), st.integers(0, 999999).map(str)),
    st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti",
                     "Pi", "Ei", "e3", "E-2", "e+6", "e-9"]),
)


@given(quantities)
def test_format_parses_back_to_the_same_value(text: str) -> None:
    q = parse_quantity(text)
    assert parse_quantity(format_quantity(q)) == q
    assert parse_quantity(format_quantity(q, binary=True)) == q


@given(quantities)
def test_value_bounds_the_quantity(text: str) -> None:
    q = parse_quantity(text)
    assert abs(value(text)) >= abs(q) and abs(value(text)) - abs(q) < 1
    assert abs(milli_value(text)) >= abs(q * 1000)
    assert (q * 10**9).denominator == 1  # a whole number of nanos


@given(st.integers(-(10**15), 10**15))
def test_integers_are_exact(n: int) -> None:
    assert parse_quantity(str(n)) == n
    assert milli_value(str(n)) == n * 1000
    assert parse_quantity(f"{n}m") * 1000 == n
