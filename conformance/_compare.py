"""The comparison core: is an implementation's output within the tolerance of the exact value?

An element passes when (spec/error-model.md#conformance)
  * the expectation is a class (nan, inf, -inf) and the output is of that class;
  * the expectation is 'any' (implementation-defined);
  * the expectation is finite, the output is finite, and |got - exact| <= N * ulp(sigma);
  * the expectation lists alternatives and the output passes for one of them.
Errors are reported in ulps of sigma and in plain ulps of the exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from adabelief_reference import Special, hexfloat

from ._errors import error_location
from ._protocol import NUMPY_DTYPES, Implementation, ParamResult, request_from_case, skip_request
from ._ulp import ulp
from ._vectors import (
    KIND_ALTERNATIVES,
    KIND_ANY,
    KIND_FINITE,
    KIND_NAN,
    KIND_NINF,
    KIND_PINF,
    ExpectedArray,
    VectorCase,
)

__all__ = [
    "ArrayComparison",
    "CaseOutcome",
    "ElementFailure",
    "check_results",
    "compare_array",
    "run_case",
]


@dataclass(frozen=True)
class ArrayComparison:
    ok: np.ndarray  # bool per element
    err_sigma: np.ndarray  # |got - exact| / ulp(sigma); 0 for a matching class; inf on mismatch
    err_ulp: np.ndarray  # |got - exact| / ulp(exact)


def _finite_errors(got: np.ndarray, value: np.ndarray, residual: np.ndarray, sigma: np.ndarray,
                   exp: ExpectedArray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        # got and value are values of the output format; their difference is exact in float64
        # when they are close (Sterbenz), which is where the comparison is delicate.
        d = np.abs((got - value) - residual)
        err_sigma = d / ulp(sigma, exp.fmt)
        err_ulp = d / ulp(value, exp.fmt)
        bad = ~np.isfinite(got)
    return np.where(bad, np.inf, err_sigma), np.where(bad, np.inf, err_ulp)


def compare_array(exp: ExpectedArray, got: np.ndarray, tolerance: float) -> ArrayComparison:
    """Compare one flattened output (float64 view of the implementation's values)."""
    got = np.asarray(got, dtype=np.float64)
    kind = exp.kind
    err_s, err_u = _finite_errors(got, exp.value, exp.residual, exp.sigma, exp)
    fin = kind == KIND_FINITE
    with np.errstate(invalid="ignore"):
        class_ok = np.select(
            [kind == KIND_NAN, kind == KIND_PINF, kind == KIND_NINF, kind == KIND_ANY],
            [np.isnan(got), got == np.inf, got == -np.inf, np.ones_like(fin)],
            default=False,
        )
    err_s = np.where(fin, err_s, np.where(class_ok, 0.0, np.inf))
    err_u = np.where(fin, err_u, np.where(class_ok, 0.0, np.inf))
    ok = np.where(fin, err_s <= tolerance, class_ok)
    for i, alts in exp.alternatives.items():
        best_s, best_u, any_ok = math.inf, math.inf, False
        g = got[i : i + 1]
        for a in alts:
            if isinstance(a, Special):
                hit = (a.kind == "any" or (a.kind == "nan" and bool(np.isnan(g[0])))
                       or (a.kind == "inf" and g[0] == np.inf) or (a.kind == "-inf" and g[0] == -np.inf))
                s_, u_ = (0.0, 0.0) if hit else (math.inf, math.inf)
            else:
                es, eu = _finite_errors(g, np.array([a.value]), np.array([a.residual]), np.array([a.sigma]), exp)
                s_, u_ = float(es[0]), float(eu[0])
                hit = s_ <= tolerance
            any_ok |= hit
            if s_ < best_s:
                best_s, best_u = s_, u_
        ok[i], err_s[i], err_u[i] = any_ok, best_s, best_u
    return ArrayComparison(ok, err_s, err_u)


@dataclass(frozen=True)
class ElementFailure:
    output: str
    step: int
    param: int
    element: int
    got: float
    expected: str
    err_sigma: float
    err_ulp: float
    tolerance: float

    def describe(self, case_id: str) -> str:
        return (f"{self.output}[{self.element}] = {hexfloat(self.got)} ({self.got!r}), expected {self.expected}: "
                f"{self.err_sigma:.3g} ulp(σ) > {self.tolerance:g} ({self.err_ulp:.3g} ulp) "
                f"[{case_id} step {self.step} param {self.param}]")


@dataclass
class CaseOutcome:
    id: str
    status: str  # passed | failed | errored | skipped
    message: str = ""
    n_elements: int = 0
    max_err_sigma: dict[str, float] = field(default_factory=dict)
    max_err_ulp: dict[str, float] = field(default_factory=dict)
    failures: list[ElementFailure] = field(default_factory=list)
    n_failed_elements: int = 0
    outputs: dict[str, np.ndarray] | None = None  # the implementation's flattened outputs

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _describe_expected(exp: ExpectedArray, i: int) -> str:
    k = int(exp.kind[i])
    if k == KIND_FINITE:
        v = float(exp.value[i])
        return f"{hexfloat(v)} ({v!r}) σ={float(exp.sigma[i]):.3g}"
    if k == KIND_ALTERNATIVES:
        parts = [a.kind if isinstance(a, Special) else hexfloat(a.value) for a in exp.alternatives[i]]
        return "one of " + ", ".join(parts)
    return {KIND_NAN: "nan", KIND_PINF: "inf", KIND_NINF: "-inf", KIND_ANY: "anything"}[k]


def flatten_results(vc: VectorCase, results: Sequence[Sequence[ParamResult]]) -> dict[str, np.ndarray]:
    """Check the shapes and dtypes of an implementation's results and flatten them per output."""
    case = vc.case
    g_dt, w_dt, s_dt = NUMPY_DTYPES[case.dtype]
    want = {"w": w_dt, "m": s_dt, "s": s_dt, "s_max": s_dt, "w16": g_dt}
    names = list(vc.expected)
    if len(results) != len(case.steps):
        raise ValueError(f"returned {len(results)} steps, expected {len(case.steps)}")
    cols: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for k, step in enumerate(results):
        if len(step) != len(case.params):
            raise ValueError(f"step {k}: returned {len(step)} parameters, expected {len(case.params)}")
        for i, (res, p) in enumerate(zip(step, case.params)):
            for n in names:
                arr = getattr(res, n, None)
                if arr is None:
                    raise ValueError(f"step {k} param {i}: missing output {n!r}")
                arr = np.asarray(arr)
                if arr.dtype != want[n]:
                    raise ValueError(f"step {k} param {i}: {n} has dtype {arr.dtype}, expected {want[n]}")
                if arr.shape != (len(p.w),):
                    raise ValueError(f"step {k} param {i}: {n} has shape {arr.shape}, expected ({len(p.w)},)")
                cols[n].append(arr.astype(np.float64))
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in cols.items()}


def check_results(vc: VectorCase, results: Sequence[Sequence[ParamResult]], max_failures: int = 10) -> CaseOutcome:
    """Compare an implementation's results for one case with the case's expectations."""
    try:
        flat = flatten_results(vc, results)
    except ValueError as e:
        return CaseOutcome(vc.id, "errored", f"malformed result: {e}")
    out = CaseOutcome(vc.id, "passed", n_elements=vc.n_elements, outputs=flat)
    for n, exp in vc.expected.items():
        tol = vc.tolerance.get(n, 2.0)
        cmp = compare_array(exp, flat[n], tol)
        out.max_err_sigma[n] = float(cmp.err_sigma.max()) if cmp.err_sigma.size else 0.0
        out.max_err_ulp[n] = float(cmp.err_ulp.max()) if cmp.err_ulp.size else 0.0
        bad = np.flatnonzero(~cmp.ok)
        if bad.size:
            out.status = "failed"
            out.n_failed_elements += int(bad.size)
            for i in bad[: max(0, max_failures - len(out.failures))]:
                step, param, el = vc.locate(int(i))
                out.failures.append(ElementFailure(n, step, param, el, float(flat[n][i]), _describe_expected(exp, int(i)),
                                                   float(cmp.err_sigma[i]), float(cmp.err_ulp[i]), tol))
    if out.failures:
        out.message = out.failures[0].describe(vc.id)
    return out


def run_case(impl: Implementation, vc: VectorCase, max_failures: int = 10) -> CaseOutcome:
    """Run one case through an implementation; its exceptions become an 'errored' outcome."""
    if vc.profile not in impl.profiles or vc.dtype not in impl.dtypes:
        return CaseOutcome(vc.id, "skipped", f"{impl.name} does not support profile {vc.profile} / dtype {vc.dtype}")
    request = request_from_case(vc.case, vc.id)
    try:
        # Special-value cases overflow and divide by zero on purpose: the implementation's NumPy
        # warnings would only clutter the report (the comparison judges the values).
        with np.errstate(all="ignore"):
            results = impl.run(request)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the implementation under test is not trusted (sys.exit too)
        skipped = skip_request(e)
        if skipped is not None:
            return CaseOutcome(vc.id, "skipped", str(skipped))
        return CaseOutcome(vc.id, "errored", f"{type(e).__name__}: {e}{error_location(e)}")
    return check_results(vc, results, max_failures)

