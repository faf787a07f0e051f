"""The runner: select cases, run them through an implementation, compare, aggregate per suite.

The comparison is batched: the implementation runs a chunk of cases, then every output of the
chunk is compared in one vectorised :func:`~adabelief_conformance._compare.compare_array` call
per (output, format, tolerance); per-case maxima come from ``reduceat`` over the case segments,
and element details are built only for failing elements. The outcomes equal those of
:func:`~adabelief_conformance._compare.run_case` case by case (tests/test_runner.py checks it),
but comparing case by case costs ~30 µs per array, which caps a 60-element case at ~1e5
elements/s; batching reaches >1e6.
"""

from __future__ import annotations

import fnmatch
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._compare import (
    ArrayComparison,
    CaseOutcome,
    ElementFailure,
    _describe_expected,
    compare_array,
    flatten_results,
)
from ._deviation import Entry
from ._errors import UsageError, error_location
from ._protocol import NUMPY_DTYPES, Implementation, ParamResult, request_from_case, skip_request
from ._vectors import ExpectedArray, VectorCase, load_vectors

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NONCONFORMING",
    "EXIT_OK",
    "EXIT_USAGE",
    "OUTPUTS",
    "STATUSES",
    "CaseResult",
    "ImplementationInfo",
    "RunReport",
    "SuiteSummary",
    "check",
    "exit_code",
    "load_cases",
    "select_cases",
]

EXIT_OK = 0  # conforming: no failed or errored case left after the expectations
EXIT_NONCONFORMING = 1  # a failed or errored case, or a stale expectation entry
EXIT_USAGE = 2  # bad command line, vector file, target or expectation file
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): the reports cover the cases that ran, marked incomplete

OUTPUTS = ("w", "m", "s", "s_max", "w16")
# Final statuses: xfailed = fails as an expectation entry says; xpassed = passes although a strict
# entry lists it (the entry is stale).
STATUSES = ("passed", "failed", "errored", "skipped", "xfailed", "xpassed")

# A chunk is compared when it holds this many cases or has been running this long, so that the
# progress bar moves at least a few times per second even for a slow implementation.
_CHUNK_CASES = 256
_CHUNK_SECONDS = 0.25

Progress = Callable[["CaseResult", int, int], None]


# ----- loading and selecting ---------------------------------------------------------------------

def load_cases(paths: Sequence[Path] | None = None, suites: Collection[str] | None = None,
               validate: bool = True) -> list[VectorCase]:
    """Load vector files and folders (default: the bundled vectors), checking manifests; with
    ``suites``, parse only those suites' files (see :func:`load_vectors`)."""
    return load_vectors(paths, validate=validate, suites=suites)


def select_cases(cases: Iterable[VectorCase], profiles: Collection[str] | None = None,
                 dtypes: Collection[str] | None = None, suites: Collection[str] | None = None,
                 flags: Collection[str] | None = None, ids: Collection[str] | None = None,
                 ) -> list[VectorCase]:
    """The cases that pass every given filter; values within one filter are alternatives.

    ``ids`` are shell globs (``clipping-*``), matched case-sensitively; ``flags`` selects cases
    carrying any of the flags.
    """
    out = []
    for c in cases:
        if profiles and c.profile not in profiles:
            continue
        if dtypes and c.dtype not in dtypes:
            continue
        if suites and c.suite not in suites:
            continue
        if flags and not set(flags) & set(c.flags):
            continue
        if ids and not any(fnmatch.fnmatchcase(c.id, pat) for pat in ids):
            continue
        out.append(c)
    return out


# ----- results -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImplementationInfo:
    name: str
    version: str
    profiles: tuple[str, ...]
    dtypes: tuple[str, ...]
    description: str = ""  # e.g. a device, a compiler, a language

    @classmethod
    def of(cls, impl: Implementation) -> ImplementationInfo:
        extra = [str(getattr(impl, a)) for a in ("description", "device", "language")
                 if isinstance(getattr(impl, a, None), str) and getattr(impl, a)]
        return cls(str(impl.name), str(impl.version), tuple(sorted(impl.profiles)),
                   tuple(sorted(impl.dtypes)), "; ".join(extra))


@dataclass
class CaseResult:
    case: VectorCase
    outcome: CaseOutcome
    seconds: float = 0.0  # wall time of the implementation's run
    expectation: Entry | None = None  # the expectation entry listing this case, if any

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def status(self) -> str:
        """The outcome's status, turned to xfailed / xpassed by an expectation entry."""
        st = self.outcome.status
        if self.expectation is None:
            return st
        if st in ("failed", "errored"):
            return "xfailed"
        if st == "passed" and self.expectation.strict:
            return "xpassed"
        return st


@dataclass
class SuiteSummary:
    name: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    elements: int = 0
    max_err_sigma: dict[str, float] = field(default_factory=dict)
    max_err_ulp: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    def add(self, r: CaseResult) -> None:
        self.counts[r.status] += 1
        self.seconds += r.seconds
        o = r.outcome
        if o.status in ("passed", "failed"):
            self.elements += o.n_elements
            for n, v in o.max_err_sigma.items():
                self.max_err_sigma[n] = max(self.max_err_sigma.get(n, 0.0), v)
            for n, v in o.max_err_ulp.items():
                self.max_err_ulp[n] = max(self.max_err_ulp.get(n, 0.0), v)


@dataclass
class RunReport:
    implementation: ImplementationInfo
    results: list[CaseResult]
    elapsed: float = 0.0  # seconds for the whole run
    compare_seconds: float = 0.0  # seconds spent comparing (the throughput figure)
    target: str = ""  # the target as the user gave it, for rerun commands
    rerun_args: tuple[str, ...] = ()  # check's arguments that select the target and the vectors
    vectors: tuple[str, ...] = ()  # the vector paths ('' for the bundled set)
    selection: dict[str, list[str]] = field(default_factory=dict)
    expectations_file: str | None = None
    expectation_entries: list[Entry] = field(default_factory=list)
    stale_entries: list[tuple[Entry, str]] = field(default_factory=list)  # entry, why stale
    unused_entries: list[Entry] = field(default_factory=list)  # matched no loaded case
    warnings: list[str] = field(default_factory=list)
    # why the run stopped early ("interrupted after 120 of 3201 cases"); None for a whole run
    incomplete: str | None = None
    # vector files no manifest vouches for (a single file given with --vectors)
    unverified_files: list[str] = field(default_factory=list)
    load_seconds: float = 0.0  # reading, validating and parsing the vectors (set by the CLI)

    @property
    def suites(self) -> dict[str, SuiteSummary]:
        out: dict[str, SuiteSummary] = {}
        for r in self.results:
            out.setdefault(r.case.suite, SuiteSummary(r.case.suite)).add(r)
        return out

    @property
    def totals(self) -> SuiteSummary:
        tot = SuiteSummary("total")
        for r in self.results:
            tot.add(r)
        return tot

    @property
    def checked_elements(self) -> int:
        return sum(r.outcome.n_elements for r in self.results if r.outcome.status in ("passed", "failed"))

    @property
    def throughput(self) -> float:
        """Checked elements per second of comparison."""
        return self.checked_elements / self.compare_seconds if self.compare_seconds > 0 else math.inf

    @property
    def end_to_end_seconds(self) -> float:
        """Loading the vectors (when the caller measured it) plus the whole run."""
        return self.load_seconds + self.elapsed

    @property
    def end_to_end_throughput(self) -> float:
        """Checked elements per second of loading, running and comparing together."""
        t = self.end_to_end_seconds
        return self.checked_elements / t if t > 0 else math.inf

    @property
    def conforming(self) -> bool:
        return exit_code(self) == EXIT_OK

    def problems(self) -> list[CaseResult]:
        """Cases that make the run non-conforming, in run order."""
        return [r for r in self.results if r.status in ("failed", "errored", "xpassed")]


class Applies(Protocol):
    """What :func:`check` needs of an expectation set (``_expectations.Expectations``): it marks
    the listed cases of a report. A protocol, so that the runner does not import the module that
    reads expectation files (which imports the runner's report)."""

    def apply(self, report: RunReport) -> None: ...


def exit_code(report: RunReport) -> int:
    """0 when no failed, errored or xpassed case and no stale entry remain, else 1; 130 for a
    run that was interrupted (its report covers the cases that ran)."""
    if report.incomplete is not None:
        return EXIT_INTERRUPTED
    if report.problems() or report.stale_entries:
        return EXIT_NONCONFORMING
    return EXIT_OK


# ----- running -----------------------------------------------------------------------------------

Results = Sequence[Sequence[ParamResult]]


def _skip_reason(e: BaseException) -> str | None:
    skip = skip_request(e)
    return None if skip is None else str(skip)


def _run_one(impl: Implementation, vc: VectorCase) -> tuple[Results | CaseOutcome, float]:
    """The implementation's results for a case, or the outcome that replaces them."""
    if vc.profile not in impl.profiles or vc.dtype not in impl.dtypes:
        return CaseOutcome(vc.id, "skipped", f"{impl.name} does not support profile {vc.profile} "
                                             f"/ dtype {vc.dtype}"), 0.0
    request = request_from_case(vc.case, vc.id)
    t0 = time.perf_counter()
    try:
        # Special-value cases overflow and divide by zero on purpose: the implementation's NumPy
        # warnings would only clutter the report (the comparison judges the values).
        with np.errstate(all="ignore"):
            results = impl.run(request)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the implementation under test is not trusted (sys.exit too)
        dt = time.perf_counter() - t0
        reason = _skip_reason(e)
        if reason is not None:
            return CaseOutcome(vc.id, "skipped", reason), dt
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        return CaseOutcome(vc.id, "errored", f"{msg}{error_location(e)}"), dt
    return results, time.perf_counter() - t0


def _flatten(vc: VectorCase, results: Results) -> dict[str, np.ndarray]:
    """:func:`flatten_results` with a fast path for well-formed results (the common case):
    the checks are comprehensions over all arrays and one converting concatenate per output.
    Anything unusual goes to :func:`flatten_results`, which raises ValueError with the message."""
    case = vc.case
    shapes = [(len(p.w),) for p in case.params] * len(case.steps)
    want = _WANT[case.dtype]
    out: dict[str, np.ndarray] = {}
    try:
        if len(results) != len(case.steps) or any(len(st) != len(case.params) for st in results):
            raise _Malformed
        for n in vc.expected:
            arrs: list[Any] = [getattr(res, n, None) for st in results for res in st]
            if (not all(type(a) is np.ndarray for a in arrs) or {a.dtype for a in arrs} != {want[n]}
                    or [a.shape for a in arrs] != shapes):
                raise _Malformed
            out[n] = np.concatenate(arrs, dtype=np.float64) if arrs else np.zeros(0)
    except (_Malformed, TypeError, AttributeError):
        return flatten_results(vc, results)
    return out


class _Malformed(Exception):
    pass


# the dtype of each output: w in the master dtype, m and s in the state dtype, w16 float16
_WANT = {name: {"w": w, "m": s, "s": s, "s_max": s, "w16": g} for name, (g, w, s) in NUMPY_DTYPES.items()}


def _compare_chunk(chunk: list[tuple[VectorCase, Results, float]], max_failures: int,
                   ) -> list[CaseOutcome]:
    """Outcomes of a chunk of cases whose implementation returned results, equal to what
    :func:`check_results` gives case by case."""
    outcomes: list[CaseOutcome | None] = [None] * len(chunk)
    flats: dict[int, dict[str, np.ndarray]] = {}
    for k, (vc, results, _) in enumerate(chunk):
        try:
            flats[k] = _flatten(vc, results)
        except (ValueError, TypeError) as e:
            outcomes[k] = CaseOutcome(vc.id, "errored", f"malformed result: {e}")
            continue
        outcomes[k] = CaseOutcome(vc.id, "passed", n_elements=vc.n_elements, outputs=flats[k])
    # group every (case, output) by what the comparison depends on besides the values
    groups: dict[tuple[str, str, float], list[tuple[int, ExpectedArray, np.ndarray]]] = {}
    for k, flat in flats.items():
        vc = chunk[k][0]
        for n, exp in vc.expected.items():
            groups.setdefault((n, exp.fmt.name, vc.tolerance.get(n, 2.0)), []).append((k, exp, flat[n]))
    # (case, output) -> (bad flat indices, the comparison, offset of the case in it)
    bad: dict[tuple[int, str], tuple[np.ndarray, ArrayComparison, int]] = {}
    for (n, _, tol), members in groups.items():
        for k, _, _ in members:
            o = outcomes[k]
            assert o is not None
            o.max_err_sigma[n] = o.max_err_ulp[n] = 0.0
        members = [m for m in members if len(m[1].kind)]
        if not members:
            continue
        sizes = np.array([len(e.kind) for _, e, _ in members])
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        alts: dict[int, Any] = {}
        for (_, ea, _), s0 in zip(members, starts.tolist()):
            for i, a in ea.alternatives.items():
                alts[s0 + i] = a
        exp = ExpectedArray(
            members[0][1].fmt,
            np.concatenate([e.kind for _, e, _ in members]),
            np.concatenate([e.value for _, e, _ in members]),
            np.concatenate([e.residual for _, e, _ in members]),
            np.concatenate([e.sigma for _, e, _ in members]),
            alts,
        )
        cmp = compare_array(exp, np.concatenate([g for _, _, g in members]), tol)
        seg_s = np.maximum.reduceat(cmp.err_sigma, starts).tolist()
        seg_u = np.maximum.reduceat(cmp.err_ulp, starts).tolist()
        seg_bad = np.add.reduceat((~cmp.ok).astype(np.int64), starts).tolist()
        for j, (k, _, _) in enumerate(members):
            o = outcomes[k]
            assert o is not None
            o.max_err_sigma[n] = seg_s[j]
            o.max_err_ulp[n] = seg_u[j]
            if seg_bad[j]:
                s0 = int(starts[j])
                where = np.flatnonzero(~cmp.ok[s0 : s0 + int(sizes[j])])
                bad[(k, n)] = (where, cmp, s0)
    for k in sorted({k for k, _ in bad}):
        vc = chunk[k][0]
        o = outcomes[k]
        assert o is not None
        o.status = "failed"
        for n, exp_n in vc.expected.items():
            if (k, n) not in bad:
                continue
            where, cmp, s0 = bad[(k, n)]
            o.n_failed_elements += int(where.size)
            tol = vc.tolerance.get(n, 2.0)
            for i in where[: max(0, max_failures - len(o.failures))].tolist():
                step, param, el = vc.locate(i)
                o.failures.append(ElementFailure(
                    n, step, param, el, float(flats[k][n][i]), _describe_expected(exp_n, i),
                    float(cmp.err_sigma[s0 + i]), float(cmp.err_ulp[s0 + i]), tol))
        if o.failures:
            o.message = o.failures[0].describe(vc.id)
    return [o for o in outcomes if o is not None]


def _runs(impl: Implementation, cases: Sequence[VectorCase], jobs: int,
          ) -> Iterator[tuple[VectorCase, Results | CaseOutcome, float]]:
    if jobs <= 1:
        for vc in cases:
            yield (vc, *_run_one(impl, vc))
        return
    # Threads overlap an implementation's waiting (a subprocess, a device). Its ``run`` is
    # serialised unless it declares ``thread_safe = True``.
    lock = None if getattr(impl, "thread_safe", False) else threading.Lock()

    def one(vc: VectorCase) -> tuple[VectorCase, Results | CaseOutcome, float]:
        if lock is None:
            return (vc, *_run_one(impl, vc))
        with lock:
            return (vc, *_run_one(impl, vc))

    pool = ThreadPoolExecutor(jobs)
    try:
        yield from pool.map(one, cases)
    finally:  # on an interrupt, cases not started yet are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def check(impl: Implementation, cases: Sequence[VectorCase], *, jobs: int = 1, max_failures: int = 10,
          progress: Progress | None = None, expectations: Applies | None = None,
          ) -> RunReport:
    """Run every case through ``impl`` and compare; never stops on a failing or errored case.

    ``max_failures`` bounds the failing elements detailed per case. ``progress(result, done,
    total)`` is called once per case, in order. ``expectations`` turn listed failures into
    xfailed cases and record stale and unused entries (see :mod:`._expectations`).
    """
    if jobs < 1:
        raise UsageError(f"jobs must be >= 1, got {jobs}")
    t_start = time.perf_counter()
    compare_time = 0.0
    results: list[CaseResult] = []
    total = len(cases)
    pending: list[tuple[VectorCase, Results | CaseOutcome, float]] = []
    chunk_start = time.perf_counter()

    def flush() -> None:
        nonlocal compare_time
        ran: list[tuple[VectorCase, Results, float]] = [
            (vc, r, dt) for vc, r, dt in pending if not isinstance(r, CaseOutcome)]
        t0 = time.perf_counter()
        compared = iter(_compare_chunk(ran, max_failures))
        compare_time += time.perf_counter() - t0
        for vc, r, dt in pending:
            outcome = r if isinstance(r, CaseOutcome) else next(compared)
            results.append(CaseResult(vc, outcome, dt))
            if progress is not None:
                progress(results[-1], len(results), total)
        pending.clear()

    interrupted = False
    runs = iter(_runs(impl, cases, jobs))
    try:
        for item in runs:
            pending.append(item)
            if len(pending) >= _CHUNK_CASES or time.perf_counter() - chunk_start >= _CHUNK_SECONDS:
                flush()
                chunk_start = time.perf_counter()
    except KeyboardInterrupt:  # keep what ran: the caller writes it, marked incomplete
        interrupted = True
        close = getattr(runs, "close", None)
        if callable(close):
            close()  # a generator: ends a thread pool without starting the cases left
    flush()
    report = RunReport(ImplementationInfo.of(impl), results, time.perf_counter() - t_start, compare_time,
                       target=str(impl.name))
    if interrupted:
        report.incomplete = f"interrupted after {len(results)} of {total} cases"
    report.unverified_files = sorted({vc.file for vc in cases if not vc.verified})
    for f in report.unverified_files:
        report.warnings.append(f"{f}: unverified: no manifest.json vouches for this file (its sha256), "
                               "so its expected values are taken as they are")
    if expectations is not None:
        expectations.apply(report)
    return report
