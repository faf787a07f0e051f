"""Extended-real interval arithmetic for the exact AdaBelief evaluation.

Each scalar is an :class:`X`: an IEEE class (finite, +inf, -inf, NaN), for finite values an
mpmath *interval* that encloses the exact real value, and ``e``, a first-order bound on the
absolute error that any conforming float evaluation of the spec's operation graph may have at
that point (see spec/error-model.md). The intervals make every golden value provably correctly
rounded: when an interval is too wide to decide a rounding, :class:`NeedPrecision` is raised and
the caller recomputes the whole case at a higher precision.

The operation graph and node names follow spec/algorithm.md; each node's error formula is the one
stated in spec/error-model.md.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from typing import Any

from mpmath import MPContext
from mpmath.ctx_iv import MPIntervalContext
from mpmath.libmp import mpf_abs, mpf_cmp

from ._formats import Format

__all__ = ["FIN", "FORMS", "NAN", "NINF", "PINF", "POW_WEIGHT", "Evaluator", "NeedPrecision", "X"]

FIN, PINF, NINF, NAN = 0, 1, 2, 3

# A pow() in a math library is allowed 2 ulp of error (CUDA's powf), i.e. 4 unit roundoffs.
POW_WEIGHT = 4

# Whole-implementation evaluation orders that are admissible (spec/error-model.md#forms):
#   canonical: b1*m + (1-b1)*g, b2*s + (1-b2)*r^2 + eps, eta * (m / (sqrt(s) + eps))
#   fused:     b1*(m-g) + g,   b2*(s-r^2) + r^2 + eps  (MXNet's fused kernels)
#   step:      canonical moments, (eta*m) / (sqrt(s) + eps)  (MXNet's step())
#   hat:       canonical moments, lr*(m/bc1) / (sqrt(s/bc2) + eps/sqrt(bc2))
#   plain:     m + (1-b1)*(g-m): torch.lerp with weight 1-b1 < 0.5, and Keras-style code
#   lerp-high: g - (g-m)*(1-(1-b1)): torch.lerp with weight 1-b1 >= 0.5
# Under epsilon_denominator = after-bias-correction the update's forms are named by the same
# modes (reference/_exact.py, _A_FORM). Each mode also exists with a weight decay of exactly zero
# left out (implementations that skip the term when the decay is 0: 0*inf would be NaN).
FORMS = ("canonical", "fused", "step", "hat", "plain", "lerp-high")


class NeedPrecision(Exception):
    """An interval straddles a rounding or decision boundary: recompute at higher precision."""


@cache
def _contexts(prec: int) -> tuple[MPIntervalContext, MPContext]:
    iv = MPIntervalContext()
    iv.prec = prec
    # Error bounds need only a few correct digits; 53 bits never overflow (mpf exponents are
    # unbounded), unlike Python floats for float64 inputs near the top of the range.
    pl = MPContext()
    pl.prec = 53
    return iv, pl


class X:
    """An extended real: class, enclosing interval (finite only) and first-order error bound."""

    __slots__ = ("e", "k", "v")

    def __init__(self, k: int, v: Any = None, e: Any = 0) -> None:
        self.k = k
        self.v = v
        self.e = e

    @property
    def finite(self) -> bool:
        return self.k == FIN


class Evaluator:
    """One evaluation of a case at a given interval precision and in one mode.

    mode None: the exact value, with each node's local error taken as the maximum over all
    admissible forms. mode (form, ovf, omit_zero_decay): the values that the named whole form
    produces; with ovf, an intermediate whose exact value exceeds the compute format's range
    becomes infinite; with omit_zero_decay, a weight-decay term whose coefficient is exactly zero
    is left out instead of computed (0*inf = NaN).
    """

    def __init__(self, prec: int, fmt: Format, mode: tuple[str, bool, bool] | None) -> None:
        self.iv, self.pl = _contexts(prec)
        self.fmt = fmt
        pl = self.pl
        self.u = pl.ldexp(1, -fmt.precision)
        self.half_eta = pl.ldexp(1, fmt.emin - fmt.precision)  # half the least subnormal
        self.threshold = self.iv.mpf(2 ** (fmt.precision + 1) - 1) * self.iv.mpf(2) ** (fmt.emax - fmt.precision)
        self.mode = mode
        self.ovf = bool(mode and mode[1])
        self.omit_zero_decay = bool(mode and mode[2])
        self.overflowed = False
        self.zero = pl.mpf(0)

    # ----- helpers on values -------------------------------------------------------------
    def const(self, x: float) -> X:
        """A leaf: an exact float; ``e`` is its exact rounding error in the compute format."""
        if x != x:
            return X(NAN)
        if x in (float("inf"), float("-inf")):
            return X(PINF if x > 0 else NINF)
        r = self.fmt.round_fraction(_fraction(x))
        err = self.pl.mpf(abs(r - x)) if r == r and abs(r) != float("inf") else self.pl.mpf(abs(x))
        return X(FIN, self.iv.mpf(x), err)

    def mag(self, x: X) -> Any:
        """Upper bound of |x| as a plain mpf (0 for non-finite values)."""
        if x.k != FIN:
            return self.zero
        a, b = x.v._mpi_
        a, b = mpf_abs(a), mpf_abs(b)
        return self.pl.make_mpf(b if mpf_cmp(a, b) < 0 else a)

    def sign(self, x: X) -> int:
        if x.k == PINF:
            return 1
        if x.k == NINF:
            return -1
        a, b = x.v._mpi_
        if mpf_cmp(a, _ZERO) > 0:
            return 1
        if mpf_cmp(b, _ZERO) < 0:
            return -1
        if mpf_cmp(a, _ZERO) == 0 and mpf_cmp(b, _ZERO) == 0:
            return 0
        raise NeedPrecision("sign")

    def E(self, x: X, weight: int = 1) -> Any:
        """Rounding error bound of one operation whose exact result is x (a rounding site)."""
        if x.k != FIN:
            return self.zero
        m = self.mag(x)
        if not self.overflowed and m >= self.threshold.a:
            self.overflowed = True
        return weight * max(m * self.u, self.half_eta)

    def fin(self, v: Any) -> X:
        """A finite exact result; in overflow mode it becomes infinite past the format's range."""
        if self.ovf:
            a, b = v._mpi_
            ta = self.threshold._mpi_[0]
            hi = mpf_abs(b) if mpf_cmp(mpf_abs(b), mpf_abs(a)) > 0 else mpf_abs(a)
            lo = _ZERO if (mpf_cmp(a, _ZERO) <= 0 <= mpf_cmp(b, _ZERO)) else (
                mpf_abs(a) if mpf_cmp(mpf_abs(a), mpf_abs(b)) < 0 else mpf_abs(b))
            if mpf_cmp(lo, ta) >= 0:
                return X(PINF if mpf_cmp(a, _ZERO) > 0 else NINF)
            if mpf_cmp(hi, ta) >= 0:
                raise NeedPrecision("overflow threshold")
        return X(FIN, v)

    # ----- IEEE operations on extended reals (value only; errors are set by the nodes) ----------
    def add(self, a: X, b: X) -> X:
        if a.k == FIN and b.k == FIN:
            return self.fin(a.v + b.v)
        if NAN in (a.k, b.k) or {a.k, b.k} == {PINF, NINF}:
            return X(NAN)
        return X(a.k if a.k != FIN else b.k)

    def neg(self, a: X) -> X:
        if a.k == FIN:
            return X(FIN, -a.v, a.e)
        return X({PINF: NINF, NINF: PINF}.get(a.k, a.k))

    def sub(self, a: X, b: X) -> X:
        return self.add(a, self.neg(b))

    def mul(self, a: X, b: X) -> X:
        if a.k == FIN and b.k == FIN:
            return self.fin(a.v * b.v)
        if NAN in (a.k, b.k):
            return X(NAN)
        sa, sb = self.sign(a), self.sign(b)
        if sa == 0 or sb == 0:
            return X(NAN)
        return X(PINF if sa * sb > 0 else NINF)

    def square(self, a: X) -> X:
        """a*a. Where a's interval straddles zero (the alternative forms' r = g - m', whose exact
        value may be 0), the product of two independent intervals would straddle zero too and a
        square root of it could never be decided: the square's own enclosure, [0, max^2], is used
        there; elsewhere the product, as before."""
        if a.k == FIN:
            lo, hi = a.v._mpi_
            if mpf_cmp(lo, _ZERO) < 0 < mpf_cmp(hi, _ZERO):
                return self.fin(a.v**2)
        return self.mul(a, a)

    def div(self, a: X, b: X) -> X:
        if NAN in (a.k, b.k):
            return X(NAN)
        if b.k != FIN:
            if a.k != FIN:
                return X(NAN)
            return X(FIN, self.iv.mpf(0))
        sb = self.sign(b)
        if sb == 0:  # division by (+)zero
            sa = self.sign(a)
            return X(NAN) if sa == 0 else X(PINF if sa > 0 else NINF)
        if a.k != FIN:
            return X(PINF if self.sign(a) * sb > 0 else NINF)
        return self.fin(a.v / b.v)

    def sqrt(self, a: X) -> X:
        if a.k in (NAN, NINF):
            return X(NAN)
        if a.k == PINF:
            return X(PINF)
        if mpf_cmp(a.v._mpi_[0], _ZERO) >= 0:  # [0, x] (a square that may be 0) too
            return X(FIN, self.iv.sqrt(a.v))
        if self.sign(a) < 0:
            return X(NAN)
        return X(FIN, self.iv.sqrt(a.v))

    def clip(self, a: X, c: X) -> X:
        """clamp(a, -c, c) for c > 0: NaN stays NaN, as in MXNet's kernels and numpy.clip."""
        if a.k == NAN:
            return X(NAN)
        if a.k == PINF:
            return X(c.k, c.v)
        if a.k == NINF:
            return self.neg(c)
        if c.k == PINF:
            return X(FIN, a.v)
        av, cv = a.v, c.v
        if av > cv:
            return X(FIN, cv)
        if av < -cv:
            return X(FIN, -cv)
        if av <= cv and av >= -cv:
            return X(FIN, av)
        # The interval straddles +-c: clamp is monotone, so clamp each endpoint (c is a point).
        c_raw = cv._mpi_[1]
        nc_raw = (-cv)._mpi_[0]

        def clamp(r: tuple[Any, ...]) -> tuple[Any, ...]:
            r = c_raw if mpf_cmp(r, c_raw) > 0 else r
            return nc_raw if mpf_cmp(r, nc_raw) < 0 else r

        lo, hi = av._mpi_
        mk = self.pl.make_mpf
        return X(FIN, self.iv.mpf((mk(clamp(lo)), mk(clamp(hi)))))

    def pow_int(self, b: X, t: int) -> X:
        if b.k != FIN:
            return X(NAN)
        return self.fin(b.v**t) if t > 0 else X(FIN, self.iv.mpf(1))

    # ----- nodes -------------------------------------------------------------------------
    def forms(self, table: dict[str, str]) -> list[str]:
        if self.mode is None:
            return sorted(set(table.values()))
        return [table[self.mode[0]]]


_ZERO = (0, 0, 0, 0)


def _fraction(x: float) -> Fraction:
    return Fraction(x)
