"""Rounding to IEEE formats, ulp and ulp distance: the arithmetic everything else stands on."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from adabelief_reference import FLOAT16, FLOAT32, FLOAT64, hexfloat, parse_hexfloat
from adabelief_reference._golden import round_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from adabelief_conformance._ulp import ulp, ulp_distance

doubles = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(doubles)
@settings(max_examples=300, deadline=None)
def test_round_to_float32_matches_numpy_cast(x: float) -> None:
    # NumPy's double -> float cast is a correctly rounded IEEE conversion.
    with np.errstate(over="ignore"):
        want = float(np.float32(x))
    assert FLOAT32.round_fraction(Fraction(x)) == want or (x == 0)


@given(doubles)
@settings(max_examples=300, deadline=None)
def test_round_to_float16_matches_numpy_cast(x: float) -> None:
    with np.errstate(over="ignore"):
        want = float(np.float16(x))
    got = FLOAT16.round_fraction(Fraction(x))
    assert got == want or x == 0


def test_round_no_double_rounding() -> None:
    # 1 + 2^-24 + 2^-60 is just above a float32 midpoint: a detour through float64 would round it
    # to the midpoint and then to even (1.0); the exact rounding goes up.
    x = Fraction(1) + Fraction(1, 2**24) + Fraction(1, 2**60)
    assert FLOAT32.round_fraction(x) == 1 + 2**-23
    assert FLOAT32.round_fraction(Fraction(1) + Fraction(1, 2**24)) == 1.0  # tie to even
    assert FLOAT32.round_fraction(Fraction(1) + Fraction(3, 2**24)) == 1 + 2**-22  # tie to even, up


def test_round_subnormals_and_overflow() -> None:
    tiny = Fraction(1, 2**149)
    assert FLOAT32.round_fraction(tiny) == 2.0**-149
    assert FLOAT32.round_fraction(tiny / 2) == 0.0  # tie between 0 and the least subnormal: even is 0
    assert FLOAT32.round_fraction(tiny * 3 / 4) == 2.0**-149
    assert FLOAT32.round_fraction(FLOAT32.overflow_threshold) == math.inf
    assert FLOAT32.round_fraction(FLOAT32.overflow_threshold - Fraction(1, 10**9)) == float(FLOAT32.max_finite)
    assert FLOAT16.round_fraction(Fraction(65520)) == math.inf
    assert FLOAT16.round_fraction(Fraction(65519)) == 65504.0


def test_round_raw_matches_fraction_rounding() -> None:
    from mpmath import mpf

    for x in (0.1, 1 / 3, 2.0**-140, 3.4e38, 1e-300, -7.5):
        raw = mpf(x)._mpf_
        for fmt in (FLOAT16, FLOAT32, FLOAT64):
            assert round_raw(fmt, raw) == fmt.round_fraction(Fraction(x))


@pytest.mark.parametrize("fmt", [FLOAT16, FLOAT32, FLOAT64])
def test_ulp_definition(fmt) -> None:
    minsub = float(fmt.min_subnormal)
    assert ulp(0.0, fmt) == minsub
    assert ulp(minsub, fmt) == minsub
    assert ulp(1.0, fmt) == 2.0 ** (1 - fmt.precision)  # the gap above a power of two
    assert ulp(-1.5, fmt) == 2.0 ** (1 - fmt.precision)
    assert ulp(math.ldexp(1.0, fmt.emin), fmt) == minsub
    assert ulp(math.inf, fmt) == math.inf and np.isinf(ulp(math.nan, fmt))
    assert fmt.ulp(1.0) == float(ulp(1.0, fmt))


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=True)


@given(finite32, finite32)
@settings(max_examples=300, deadline=None)
def test_ulp_distance_symmetric_and_zero_iff_same_value(a: float, b: float) -> None:
    d_ab = ulp_distance(np.array([a]), np.array([b]), FLOAT32)[0]
    d_ba = ulp_distance(np.array([b]), np.array([a]), FLOAT32)[0]
    assert d_ab == d_ba
    assert (d_ab == 0) == (a == b)


def test_ulp_distance_no_overflow() -> None:
    d = ulp_distance(np.array([np.inf]), np.array([-np.inf]), FLOAT64)[0]
    assert d == 2 * 0x7FF0000000000000
    assert ulp_distance(np.array([0.0]), np.array([-0.0]), FLOAT64)[0] == 0
    assert ulp_distance(np.array([2.0**-149]), np.array([-(2.0**-149)]), FLOAT32)[0] == 2
    assert ulp_distance(np.array([1.0]), np.array([np.nextafter(np.float32(1), np.float32(2))]), FLOAT32)[0] == 1


@given(st.floats(width=64))
def test_hexfloat_round_trip(x: float) -> None:
    text = hexfloat(x)
    back = parse_hexfloat(text)
    assert (math.isnan(x) and math.isnan(back)) or (back == x and math.copysign(1, back) == math.copysign(1, x))
    assert text == "nan" or "p" in text or "inf" in text
