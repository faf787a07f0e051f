"""Double-double arithmetic on NumPy arrays, with relative error bounds: the building
block of the fast reference path (issue 9): the exact value of each element to about 106 bits,
vectorised, where mpmath needs a Python call per operation.

A double-double x is an unevaluated sum hi + lo of two binary64 arrays with |lo| <= ulp(hi)/2.
Each operation below returns such a pair and is known to stay within a relative error bound of
its exact result, *provided no intermediate overflows, underflows or becomes subnormal*: the
caller checks that with :func:`safe` and sends the other elements to mpmath. Bounds, in units of
u^2 with u = 2^-53 (binary64's unit roundoff):

| operation | algorithm | bound | largest seen (2·10^4 random pairs) |
| --- | --- | --- | --- |
| :func:`add` | AccurateDWPlusDW (Joldes, Muller, Popescu, ACM TOMS 44(2), 2017, Alg. 6) | 3 (proven: 3u^2/(1-4u)) | 1.39 |
| :func:`mul` | Dekker's double-word product, no FMA | 9 (derived below: 8 + O(u)) | 2.33 |
| :func:`div` | a binary64 quotient refined twice on exact double-word residuals | 24 (derived below: 15 + O(u)) | 1.58 |
| :func:`sqrt` | Karp and Markstein's correction | 8 (derived below: 2 + O(u)) | below 1 |

:func:`add`'s bound is the published proof. The others, first order in u (|eps| <= u for each
rounding, |xl| <= u|xh|, |yl| <= u|yh|), each rounded up past its O(u^3) terms:

* mul: xy = xh*yh + xh*yl + xl*yh + xl*yl, with xh*yh exact (two_prod). Dropped: xl*yl (u^2);
  rounded: xh*yl and xl*yh (u^2 each), their sum (2u^2), and its sum with two_prod's low part
  (at most 3u|xh*yh| before rounding: 3u^2). In all 8u^2|xh*yh| <= 8u^2|xy|(1 + 2u + ...).
* div: the first residual x - y*q1 is computed by mul and sub (9u^2 and 3u^2 of |x|); q2 and q3
  only correct what is left (its own error u^3 relative); the last add 3u^2: 15u^2.
* sqrt: s = fl(sqrt(xh)); the Newton correction (x - s^2)/(2s) leaves (x - s^2)^2/(8s^3), at most
  u^2/2 relative; its rounding u*|corr| <= u^2; the residual's low part and subtraction: u^2/2.

tests/test_dd.py keeps checking every result against exact rational arithmetic within half its
bound, and the fast path is held to mpmath's verdicts on every element of the vector set.

NumPy has no fused multiply-add, so exact products use Veltkamp's splitting (Dekker), exact
for |x| < 2^996 (the split multiplies by 2^27 + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ADD_BOUND",
    "DD",
    "DIV_BOUND",
    "MUL_BOUND",
    "SAFE_MAX",
    "SAFE_MIN",
    "SQRT_BOUND",
    "U",
    "add",
    "div",
    "from_float",
    "mul",
    "neg",
    "safe",
    "sqrt",
    "sub",
    "two_prod",
    "two_sum",
]

U = 2.0**-53
# Relative error bounds, in multiples of U**2, rounded up with margin (module doc).
ADD_BOUND = 3.0001 * U * U
MUL_BOUND = 9.0 * U * U
DIV_BOUND = 24.0 * U * U
SQRT_BOUND = 8.0 * U * U
_SPLITTER = 2.0**27 + 1.0
# Magnitudes within which every intermediate of the operations stays normal and finite: far from
# binary64's subnormal range (2^-1022) and overflow (2^1024), with room for the products.
SAFE_MIN = 2.0**-400
SAFE_MAX = 2.0**400


@dataclass(frozen=True)
class DD:
    """hi + lo, elementwise (arrays of the same shape)."""

    hi: np.ndarray
    lo: np.ndarray

    def to_float(self) -> np.ndarray:
        return self.hi + self.lo


def from_float(x: np.ndarray) -> DD:
    x = np.asarray(x, dtype=np.float64)
    return DD(x, np.zeros_like(x))


def safe(*xs: DD | np.ndarray) -> np.ndarray:
    """Elements where every operand is finite and its magnitude is 0 or within
    [2^-400, 2^400]: there the bounds of this module hold for a few dozen operations."""
    ok: np.ndarray | None = None
    for x in xs:
        h = x.hi if isinstance(x, DD) else np.asarray(x, dtype=np.float64)
        a = np.abs(h)
        good = np.isfinite(h) & ((a == 0) | ((a >= SAFE_MIN) & (a <= SAFE_MAX)))
        ok = good if ok is None else ok & good
    assert ok is not None
    return ok


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e = a + b exactly, s = fl(a + b) (Knuth; no condition on |a|, |b|)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _fast_two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e = a + b exactly when |a| >= |b| (or a == 0) (Dekker)."""
    s = a + b
    e = b - (s - a)
    return s, e


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a = hi + lo with hi and lo of at most 26 significant bits (Veltkamp)."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p + e = a * b exactly, p = fl(a * b) (Dekker; no FMA)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def neg(x: DD) -> DD:
    return DD(-x.hi, -x.lo)


def add(x: DD, y: DD) -> DD:
    """AccurateDWPlusDW (Joldes, Muller, Popescu 2017, Algorithm 6)."""
    sh, sl = two_sum(x.hi, y.hi)
    th, tl = two_sum(x.lo, y.lo)
    c = sl + th
    vh, vl = _fast_two_sum(sh, c)
    w = tl + vl
    zh, zl = _fast_two_sum(vh, w)
    return DD(zh, zl)


def sub(x: DD, y: DD) -> DD:
    return add(x, neg(y))


def mul(x: DD, y: DD) -> DD:
    """DWTimesDW (Dekker's product, no FMA)."""
    ch, cl1 = two_prod(x.hi, y.hi)
    tl1 = x.hi * y.lo
    tl2 = x.lo * y.hi
    cl2 = tl1 + tl2
    cl3 = cl1 + cl2
    zh, zl = _fast_two_sum(ch, cl3)
    return DD(zh, zl)


def div(x: DD, y: DD) -> DD:
    """x / y: a binary64 quotient refined twice with exact residuals (Newton on the remainder)."""
    q1 = x.hi / y.hi
    r = sub(x, mul(y, from_float(q1)))
    q2 = r.hi / y.hi
    r = sub(r, mul(y, from_float(q2)))
    q3 = r.hi / y.hi
    qh, ql = _fast_two_sum(q1, q2)
    return add(DD(qh, ql), from_float(q3))


def sqrt(x: DD) -> DD:
    """sqrt(x) for x >= 0 (Karp and Markstein): s = fl(sqrt(hi)), then s + (x - s^2) / (2s)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(x.hi)
        p, e = two_prod(s, s)
        r = sub(x, DD(p, e))
        corr = r.hi / (2.0 * s)
        corr = np.where(s == 0, 0.0, corr)
    zh, zl = _fast_two_sum(s, corr)
    return DD(zh, zl)
