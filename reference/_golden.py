"""Golden values: provably correctly rounded expected outputs, residuals and error scales.

``golden(case)`` evaluates a case with interval arithmetic at ``START_PRECISION`` bits and rounds
both ends of every output interval to the output format. If any pair disagrees, the rounding is
not yet certain and the whole case is recomputed at twice the precision, up to
``MAX_PRECISION``. An interval that has collapsed to a point is exact, and an exact value halfway
between two format values is a tie, rounded to even (and counted).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from adabelief_spec import load_json
from mpmath import MPContext

from ._arith import NAN, NINF, PINF, NeedPrecision, X
from ._exact import ALTERNATIVE_MODES, CaseEvaluation, evaluate_mode, has_zero_decay, outputs_of
from ._formats import FLOAT16, FLOAT64, Format
from ._model import CaseInputs

__all__ = [
    "MAX_PRECISION",
    "START_PRECISION",
    "Expectation",
    "Finite",
    "GoldenCase",
    "Special",
    "golden",
    "tolerances",
]

# 128 bits decide the rounding of almost every value: an output's exact value is a short chain of
# operations on 53-bit inputs, so it agrees with its enclosure to ~128 - 20 bits unless it lies
# within ~2^-100 relative of a rounding boundary, which the enclosure then detects.
START_PRECISION = 128
MAX_PRECISION = 4096


@dataclass(frozen=True)
class Finite:
    """A finite expected value: correctly rounded ``value``, ``residual`` = exact - value (to
    float64), and ``sigma``, the error scale (spec/error-model.md) in the units of the value."""

    value: float
    residual: float
    sigma: float


@dataclass(frozen=True)
class Special:
    """A non-finite expected class: 'nan', 'inf' or '-inf'; 'any' means implementation-defined."""

    kind: str


Alternative = Finite | Special
Expectation = tuple[Alternative, ...]  # any one alternative is acceptable


@dataclass
class GoldenCase:
    # steps[k][i][name] = list of expectations for parameter i after step k
    steps: list[list[dict[str, list[Expectation]]]]
    precision: int
    ties: int = 0
    stats: dict[str, int] = field(default_factory=dict)


@cache
def tolerances() -> dict[str, dict[str, int]]:
    """Per dtype and output, the tolerance N in ulps of sigma (spec/tolerances.json)."""
    table = load_json("tolerances.json")
    return {k: v for k, v in table.items() if not k.startswith("$")}


@cache
def _plain(prec: int) -> MPContext:
    ctx = MPContext()
    ctx.prec = prec
    return ctx


def round_raw(fmt: Format, raw: tuple[Any, ...]) -> float:
    """Correctly round an mpmath raw mpf tuple (sign, man, exp, bc) to ``fmt``, ties to even."""
    sign, man, exp, _ = raw
    if not man:
        if exp:  # mpmath's special values (inf, nan) have man == 0 and exp != 0
            raise ValueError(f"cannot round special mpf {raw}")
        return 0.0
    r = fmt.round_man_exp(man, exp)
    if r is None:
        v = float("inf")
    else:
        n, q = r
        v = math.ldexp(float(n), q)  # exact: n has at most 53 bits and q >= -1074
    return -v if sign else v


def _is_tie(fmt: Format, raw: tuple[Any, ...]) -> bool:
    _, man, exp, _ = raw
    if not man:
        return False
    e = exp + man.bit_length() - 1
    shift = fmt.quantum_exponent(e) - exp
    return shift > 0 and (man & ((1 << shift) - 1)) == 1 << (shift - 1)


class _Rounder:
    def __init__(self, prec: int) -> None:
        self.prec = prec
        self.ties = 0

    def alternative(self, x: X, fmt: Format) -> Alternative:
        if x.k == NAN:
            return Special("nan")
        if x.k == PINF:
            return Special("inf")
        if x.k == NINF:
            return Special("-inf")
        lo, hi = x.v._mpi_
        a, b = round_raw(fmt, lo), round_raw(fmt, hi)
        if a != b:
            raise NeedPrecision(f"rounding to {fmt.name}")
        if lo == hi and _is_tie(fmt, lo):
            self.ties += 1
        if a in (float("inf"), float("-inf")):
            return Special("inf" if a > 0 else "-inf")
        ctx = _plain(self.prec + 8)
        mid = (ctx.make_mpf(lo) + ctx.make_mpf(hi)) / 2 - ctx.mpf(a)
        residual = round_raw(FLOAT64, mid._mpf_) if mid else 0.0
        u = ctx.ldexp(1, -fmt.precision)
        sig = x.e / u if x.e else ctx.mpf(0)
        sig_f = round_raw(FLOAT64, ctx.mpf(sig)._mpf_) if sig else 0.0
        return Finite(a, residual, sig_f)


def _combine(rounder: _Rounder, fmt: Format, candidates: list[X]) -> Expectation:
    """The acceptable results of one element: the exact one, then those of the other forms."""
    alts: list[Alternative] = []
    for x in candidates:
        alt = rounder.alternative(x, fmt)
        if isinstance(alt, Finite):
            if any(isinstance(a, Finite) and a.value == alt.value for a in alts):
                continue
        elif alt in alts:
            continue
        alts.append(alt)
    return tuple(alts)


def _admissible(e: Expectation, fmt: Format, overflowed: bool) -> Expectation:
    """Where the analysis cannot vouch for a result, accept anything (spec/error-model.md#limits).

    * The case overflowed an intermediate and the admissible forms disagree: which infinities
      and NaNs arise then depends on the exact operation order (an FMA changes it too).
    * The first-order bound is as large as the value itself (a normal-range bound): the sign is
      not certain, and a division by an underflowed zero is within the analysis.
    """
    if overflowed and len(e) > 1:
        return (Special("any"),)
    if len(e) == 1 and isinstance(e[0], Finite):
        a = e[0]
        bound = a.sigma * math.ldexp(1.0, -fmt.precision)
        if bound >= abs(a.value) and bound > math.ldexp(1.0, fmt.emin):
            return (Special("any"),)
    return e


def _golden_at(case: CaseInputs, prec: int) -> GoldenCase:
    exact = evaluate_mode(case, prec, None)
    names = outputs_of(case)
    spec = case.dtype_spec
    fmts = {"w": spec.master, "m": spec.compute, "s": spec.compute, "s_max": spec.compute, "w16": FLOAT16}
    if exact.implementation_defined:
        anything: Expectation = (Special("any"),)
        steps = [[{n: [anything] * len(p.w) for n in names} for p in case.params] for _ in case.steps]
        return GoldenCase(steps, prec)
    others: list[CaseEvaluation] = []
    if exact.overflowed or exact.saw_nonfinite:
        zero_decay = has_zero_decay(case)
        others = [evaluate_mode(case, prec, mode) for mode in ALTERNATIVE_MODES
                  if zero_decay or not mode[2]]
    rounder = _Rounder(prec)
    steps = []
    for k, step in enumerate(exact.steps):
        out_step = []
        for i, outs in enumerate(step):
            out_step.append({
                n: [
                    (Special("any"),) if exact.any_mask[k][i][n][j] else
                    _admissible(_combine(rounder, fmts[n], [x] + [o.steps[k][i][n][j] for o in others]),
                                fmts[n], exact.overflowed)
                    for j, x in enumerate(outs[n])
                ]
                for n in names
            })
        steps.append(out_step)
    return GoldenCase(steps, prec, rounder.ties)


def golden(case: CaseInputs, start: int = START_PRECISION) -> GoldenCase:
    """Correctly rounded expectations for every output of every step of ``case``."""
    prec = start
    while True:
        try:
            return _golden_at(case, prec)
        except NeedPrecision:
            if prec >= MAX_PRECISION:
                raise
            prec *= 2


def expectation_to_json(e: Expectation) -> Any:
    """Serialise one element's expectation (see spec/vector-format.md)."""
    from ._formats import hexfloat

    def one(a: Alternative) -> Any:
        if isinstance(a, Special):
            return a.kind
        return {"value": hexfloat(a.value), "residual": hexfloat(a.residual), "sigma": hexfloat(a.sigma)}

    return json.dumps([one(a) for a in e])
