"""reference/_dd.py: double-double operations against exact rational arithmetic. Every result is
within the module's relative bound of the exact value; the observed maximum stays below half the
bound (the margin the module doc states)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from adabelief_reference import _dd as D


def _operands(rng: np.random.Generator, n: int, lo: float = -60, hi: float = 60) -> D.DD:
    hi_part = rng.standard_normal(n) * np.exp2(rng.uniform(lo, hi, n))
    lo_part = hi_part * rng.uniform(-1, 1, n) * 2.0**-54
    h, low = D.two_sum(hi_part, lo_part)
    return D.DD(h, low)


def _exact(x: D.DD) -> list[Fraction]:
    return [Fraction(float(a)) + Fraction(float(b)) for a, b in zip(x.hi, x.lo)]


def _worst(got: D.DD, want: list[Fraction]) -> float:
    worst = 0.0
    for a, b, w in zip(got.hi, got.lo, want):
        if w == 0:
            assert a == 0 and b == 0
            continue
        rel = abs((Fraction(float(a)) + Fraction(float(b)) - w) / w)
        worst = max(worst, float(rel))
    return worst


N = 4000


@pytest.mark.parametrize("op, bound", [("add", D.ADD_BOUND), ("sub", D.ADD_BOUND), ("mul", D.MUL_BOUND),
                                       ("div", D.DIV_BOUND)])
def test_binary_operations_stay_within_their_bounds(op, bound) -> None:
    rng = np.random.default_rng({"add": 1, "sub": 2, "mul": 3, "div": 4}[op])
    x, y = _operands(rng, N), _operands(rng, N)
    if op in ("add", "sub"):  # cancellation too: y close to -x or x
        close = rng.random(N) < 0.3
        sign = -1.0 if op == "add" else 1.0
        yh = np.where(close, sign * x.hi * (1 + rng.uniform(-1e-10, 1e-10, N)), y.hi)
        y = D.DD(yh, np.where(close, 0.0, y.lo))
    got = getattr(D, op)(x, y)
    ex, ey = _exact(x), _exact(y)
    want = [{"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op] for a, b in zip(ex, ey)]
    worst = _worst(got, want)
    assert worst <= bound / 2, f"{op}: {worst / D.U**2:.3f} u^2 (bound {bound / D.U**2:.3f} u^2)"


def test_sqrt_stays_within_its_bound() -> None:
    rng = np.random.default_rng(5)
    x = _operands(rng, N)
    x = D.DD(np.abs(x.hi), np.where(x.hi < 0, -x.lo, x.lo))
    got = D.sqrt(x)
    worst = 0.0
    for a, b, (h, lo) in zip(got.hi, got.lo, zip(x.hi, x.lo)):
        s = Fraction(float(a)) + Fraction(float(b))
        v = Fraction(float(h)) + Fraction(float(lo))
        worst = max(worst, float(abs(s * s - v) / v) / 2)  # |sqrt error| ~ |s^2 - v| / (2v)
    assert worst <= D.SQRT_BOUND / 2


def test_two_sum_and_two_prod_are_exact() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(N) * 1e5, rng.standard_normal(N) * 1e-7
    s, e = D.two_sum(a, b)
    p, f = D.two_prod(a, b)
    for i in range(0, N, 7):
        assert Fraction(float(s[i])) + Fraction(float(e[i])) == Fraction(float(a[i])) + Fraction(float(b[i]))
        assert Fraction(float(p[i])) + Fraction(float(f[i])) == Fraction(float(a[i])) * Fraction(float(b[i]))


def test_safe_marks_what_the_bounds_do_not_cover() -> None:
    x = np.array([0.0, 1.0, 2.0**-500, 2.0**500, np.inf, np.nan, 1e-310, -3.0])
    assert D.safe(x).tolist() == [True, True, False, False, False, False, False, True]
