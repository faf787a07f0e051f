"""The runner: selection, the batched comparison (equal to run_case), aggregation, exit codes, and
an untrusted implementation (raising, malformed, NaN) that never stops the run."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from adabelief_reference import profile_names

from adabelief_conformance import ParamResult, RunRequest
from adabelief_conformance._catalogue import MUTANTS, VARIANTS, CatalogueImplementation
from adabelief_conformance._compare import run_case
from adabelief_conformance._errors import UsageError
from adabelief_conformance._runner import (
    EXIT_NONCONFORMING,
    EXIT_OK,
    check,
    exit_code,
    load_cases,
    select_cases,
)

SPEC = "spec formula in the compute dtype"

# the defaults suite: 5 cases per dtype and profile
N_DEFAULTS = 15 * len(profile_names())


@pytest.fixture(scope="module")
def defaults():
    return load_cases(suites=["defaults"])


@pytest.fixture(scope="module")
def some_cases():
    """Three small suites with special values, clipping and several parameters."""
    return load_cases(suites=["defaults", "special-values", "multi-parameter"])


def _impl(name: str) -> CatalogueImplementation:
    return CatalogueImplementation(name, {**MUTANTS, **VARIANTS}[name])


def test_load_cases_with_suites_parses_only_those_files(defaults) -> None:
    assert {c.suite for c in defaults} == {"defaults"}
    assert len(defaults) == N_DEFAULTS


def test_select_cases_filters_combine(defaults) -> None:
    assert len(select_cases(defaults)) == N_DEFAULTS
    f32 = select_cases(defaults, dtypes=["float32"])
    assert f32 and all(c.dtype == "float32" for c in f32)
    both = select_cases(defaults, dtypes=["float32", "float64"], profiles=["mxnet"])
    assert both and all(c.dtype in ("float32", "float64") and c.profile == "mxnet" for c in both)
    flagged = select_cases(defaults, flags=["ClipOrder"])
    assert flagged and all("ClipOrder" in c.flags for c in flagged)
    one = defaults[3].id
    assert [c.id for c in select_cases(defaults, ids=[one])] == [one]
    assert len(select_cases(defaults, ids=["defaults-*"])) == N_DEFAULTS
    assert select_cases(defaults, ids=["DEFAULTS-*"]) == []  # case-sensitive
    assert select_cases(defaults, suites=["clipping"]) == []


@pytest.mark.parametrize("name", [SPEC, "clip ignored", "t off by one (t+1)", "epsilon not added to s"])
def test_batched_comparison_equals_run_case(name, some_cases) -> None:
    impl = _impl(name)
    report = check(impl, some_cases, max_failures=3)
    assert [r.id for r in report.results] == [c.id for c in some_cases]
    for r, vc in zip(report.results, some_cases):
        ref = run_case(impl, vc, max_failures=3)
        o = r.outcome
        assert (o.status, o.message, o.n_failed_elements) == (ref.status, ref.message, ref.n_failed_elements)
        assert o.max_err_sigma == ref.max_err_sigma
        assert o.max_err_ulp == ref.max_err_ulp
        assert repr(o.failures) == repr(ref.failures)  # repr: NaN outputs compare unequal


def test_conforming_variant_passes_and_aggregates(defaults) -> None:
    seen = []
    report = check(_impl(SPEC), defaults, progress=lambda r, done, total: seen.append((r.id, done, total)))
    assert exit_code(report) == EXIT_OK and report.conforming
    assert seen == [(c.id, i + 1, N_DEFAULTS) for i, c in enumerate(defaults)]
    (suite,) = report.suites.values()
    assert suite.name == "defaults" and suite.cases == N_DEFAULTS and suite.counts["passed"] == N_DEFAULTS
    assert set(suite.max_err_sigma) == {"w", "m", "s", "s_max", "w16"}  # s_max: amsgrad cases
    assert all(0 <= v <= 2 for v in suite.max_err_sigma.values())
    assert all(v >= 0 for v in suite.max_err_ulp.values())
    assert report.checked_elements == sum(c.n_elements for c in defaults) == suite.elements


def test_mutant_fails_with_exit_code_1(defaults) -> None:
    report = check(_impl("clip ignored"), defaults)
    assert exit_code(report) == EXIT_NONCONFORMING
    failed = [r for r in report.results if r.status == "failed"]
    assert failed and all("ClipOrder" in r.case.flags for r in failed)
    assert report.totals.counts["failed"] == len(failed)
    assert report.totals.max_err_sigma["w"] > 2


class _Untrusted:
    """Conforming except on chosen cases: raise, wrong shape, wrong dtype, NaN, wrong step count."""

    name = "untrusted"
    version = "1"
    profiles = frozenset(profile_names())
    dtypes = frozenset({"float32", "float64", "float16-mp"})

    def __init__(self, plan: dict[str, str]) -> None:
        self.plan = plan
        self.inner = _impl(SPEC)

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        what = self.plan.get(request.case_id)
        if what == "raise":
            raise RuntimeError("kernel launch failed\nsecond line")
        out = self.inner.run(request)
        if what == "skip":
            e = RuntimeError("no")
            e.skip_reason = "not today"  # type: ignore[attr-defined]
            raise e
        r = out[0][0]
        if what == "shape":
            out[0][0] = ParamResult(np.append(r.w, r.w[:1]), r.m, r.s, r.w16)
        elif what == "dtype":
            out[0][0] = ParamResult(r.w.astype(np.float16), r.m, r.s, r.w16)
        elif what == "nan":
            out[0][0] = ParamResult(np.full_like(r.w, np.nan), r.m, r.s, r.w16)
        elif what == "steps":
            out = out[:0]
        return out


def test_untrusted_implementation_never_stops_the_run(defaults) -> None:
    ids = [c.id for c in defaults if c.dtype == "float32"]
    plan = dict(zip(ids, ["raise", "shape", "dtype", "nan", "steps", "skip"]))
    report = check(_Untrusted(plan), defaults)
    by_id = {r.id: r for r in report.results}
    assert len(by_id) == N_DEFAULTS
    raised = by_id[ids[0]].outcome
    assert raised.status == "errored" and "RuntimeError: kernel launch failed second line at " in raised.message
    assert "\n" not in raised.message
    assert by_id[ids[1]].status == "errored" and "shape" in by_id[ids[1]].outcome.message
    assert by_id[ids[2]].status == "errored" and "dtype" in by_id[ids[2]].outcome.message
    nan = by_id[ids[3]].outcome
    assert nan.status == "failed" and math.isinf(nan.max_err_sigma["w"])
    assert by_id[ids[4]].status == "errored" and "steps" in by_id[ids[4]].outcome.message
    assert by_id[ids[5]].status == "skipped" and by_id[ids[5]].outcome.message == "not today"
    others = [r for r in report.results if r.id not in plan]
    assert others and all(r.status == "passed" for r in others)
    assert exit_code(report) == EXIT_NONCONFORMING


def test_unsupported_dtype_is_skipped(defaults) -> None:
    impl = _impl(SPEC)
    impl.dtypes = frozenset({"float64"})
    report = check(impl, defaults)
    assert {r.status for r in report.results if r.case.dtype == "float64"} == {"passed"}
    skipped = [r for r in report.results if r.case.dtype != "float64"]
    assert skipped and {r.status for r in skipped} == {"skipped"}
    assert exit_code(report) == EXIT_OK


def test_jobs_give_the_same_results_in_order(defaults) -> None:
    one = check(_impl("clip ignored"), defaults)
    four = check(_impl("clip ignored"), defaults, jobs=4)
    assert [(r.id, r.status, r.outcome.message) for r in one.results] == [
        (r.id, r.status, r.outcome.message) for r in four.results]
    with pytest.raises(UsageError):
        check(_impl(SPEC), defaults, jobs=0)


def test_comparison_throughput_is_printed(bundled_cases) -> None:
    """Not a timing assertion: prints the comparison's throughput (the target is >= 1e6
    elements/s for a conforming run; see `pytest -s`)."""
    impl = _impl(SPEC)
    t0 = time.perf_counter()
    report = check(impl, bundled_cases)
    total = time.perf_counter() - t0
    assert report.conforming
    print(f"\ncomparison: {report.checked_elements} elements in {report.compare_seconds * 1e3:.1f} ms = "
          f"{report.throughput:.3g} elements/s (whole run incl. the implementation: {total:.2f} s)")
