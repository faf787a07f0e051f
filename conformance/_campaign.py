"""Certification campaigns: many random cases against the live reference, on every core or a
Dask cluster, deterministic per seed and shard whatever the number of workers.

A campaign of ``elements`` element-steps is cut into batches; batch ``k`` is one random case drawn
from ``numpy.random.default_rng([seed, k])`` for the (profile, dtype) pair ``k`` selects
round-robin among those asked for. Most batches are *regular*: ``batch_elements`` element-steps
of finite values over a wide range with every switch and hyperparameter drawn (their expectations
come from the fast reference path, reference/_fast.py, with mpmath for the elements it cannot
settle). Every ``EDGE_PERIOD``-th batch is an *edge* batch of ``EDGE_BATCH_ELEMENTS``: special
values (0, ±inf, NaN, the largest and the subnormal values), rescale_grad 0/NaN/inf and
clip_gradient 0/inf/negative drawn too, mostly evaluated by mpmath. Shard ``i/n`` runs the
batches with ``k % n == i``. A failing batch is shrunk to the single element and the fewest steps
that still fail, its expectations computed with mpmath, and written as a vector file that
``check --vectors FILE`` reruns. Results are merged in batch order, so the report (and its
``fingerprint``) is the same for any ``--jobs`` and any cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from adabelief_reference import (
    DTYPES,
    CaseInputs,
    Hyperparameters,
    ParamInput,
    StepInput,
    profile_named,
)

from ._compare import run_case
from ._errors import UsageError
from ._vectors import live_vector_case

__all__ = ["CAMPAIGN_FORMAT", "BatchResult", "CampaignReport", "random_case", "run_campaign"]

CAMPAIGN_FORMAT = "adabelief-conformance-campaign"
CAMPAIGN_FORMAT_VERSION = 1
DEFAULT_BATCH_ELEMENTS = 32768
EDGE_PERIOD = 4  # every 4th batch is an edge batch
EDGE_BATCH_ELEMENTS = 64


# ----- random cases (numpy only: reproducible from the seed alone) ------------------------------

def _values(rng: np.random.Generator, fmt: Any, n: int, *, nonnegative: bool, exotic: bool,
            wide: bool = False, top: Any = None) -> tuple[float, ...]:
    """n values of ``fmt``: log-uniform magnitudes in [2^-20, 2^6] mostly, or with ``wide`` from
    the least subnormal (2^-150 for float64) to 2^(emax/3) (whose squares still fit); with
    ``exotic``, one in eight an edge (0, ±inf, NaN, the largest value, a subnormal) or anything in
    the range. ``top``: a format whose range bounds the wide magnitudes too (float16-mp's master
    weights: their float16 copies stay finite)."""
    emax = fmt.emax if top is None else min(fmt.emax, top.emax)
    lo, hi = (max(fmt.emin - fmt.precision + 1, -150), min(emax / 3, 40.0)) if wide else (-20.0, 6.0)
    mags = np.exp2(rng.uniform(lo, hi, n))
    signs = np.ones(n) if nonnegative else rng.choice([-1.0, 1.0], n)
    x = mags * signs
    if exotic:
        big, tiny = float(fmt.max_finite), float(fmt.min_subnormal)
        edges = np.array([0.0, math.inf, math.nan, big, tiny, tiny * 3, 1.0] +
                         ([] if nonnegative else [-0.0, -math.inf, -big, -tiny]))
        pick = rng.random(n) < 0.125
        x = np.where(pick, rng.choice(edges, n), x)
        anywhere = rng.random(n) < 0.0625
        x = np.where(anywhere, np.exp2(rng.uniform(fmt.emin - fmt.precision, fmt.emax, n)) * signs, x)
    dt = np.dtype(fmt.name)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return tuple(float(v) for v in x.astype(dt).astype(np.float64))


def _hyperparameters(rng: np.random.Generator, profile: str, compute: Any, regular: bool = False) -> Hyperparameters:
    """Random hyperparameters; ``regular``: finite ones only, rescale_grad nonzero and clip_gradient
    None or positive (the special ones are the edge batches' business)."""
    prof = profile_named(profile)

    def log10(lo: float, hi: float) -> float:
        return float(10.0 ** rng.uniform(lo, hi))

    def pick(*options: Callable[[], float]) -> float:
        return options[int(rng.integers(len(options)))]()

    hp = Hyperparameters(
        learning_rate=pick(lambda: 1e-3, lambda: log10(-5, 0), lambda: log10(-5, 0), lambda: 0.0),
        beta1=pick(lambda: 0.9, lambda: float(rng.uniform(0, 1)), lambda: 0.0, lambda: 0.5),
        beta2=pick(lambda: 0.999, lambda: 1 - log10(-5, -0.5), lambda: float(rng.uniform(0, 1))),
        epsilon=pick(lambda: 1e-6, lambda: log10(-16, -2), lambda: 1e-8, lambda: 0.0),
        correct_bias=bool(rng.random() < 0.9),
        wd=pick(lambda: 0.0, lambda: log10(-6, 0), lambda: 0.0),
        rescale_grad=pick(lambda: 1.0, lambda: log10(-3, 3), lambda: 1.0,
                          (lambda: -log10(-3, 3)) if regular else
                          (lambda: float(rng.choice([0.0, math.nan, math.inf, -1.0])))),
        clip_gradient=None if rng.random() < 0.6 else (
            log10(-2, 1) if regular else pick(lambda: log10(-2, 1), lambda: 0.0, lambda: math.inf, lambda: -1.0)),
    )
    if prof.stored_epsilon == "eps_root":
        hp = replace(hp, eps_root=pick(lambda: 0.0, lambda: 1e-16, lambda: log10(-20, -4)))
    switches = {k: bool(rng.choice(list(v))) for k, v in sorted(prof.switches.items())}
    return replace(hp, **switches)


def random_case(rng: np.random.Generator, profile: str, dtype: str, elements: int,
                regular: bool = False) -> CaseInputs:
    """A random case of about ``elements`` element-steps (one or two parameters, one to three
    steps); in one case of four any element may be exotic. ``regular``: finite values and
    hyperparameters only (see :func:`_hyperparameters`); the per-step rescale_grad finite and
    nonzero."""
    spec = DTYPES[dtype]
    hp = _hyperparameters(rng, profile, spec.compute, regular)
    exotic = bool(rng.random() < 0.25) and not regular
    # one regular case in eight spans (nearly) the formats' whole range, subnormals included
    wide = regular and bool(rng.random() < 0.125)
    n_steps = int(rng.integers(1, 4))
    n_params = int(rng.integers(1, 3))
    per_param = max(1, elements // (n_steps * n_params))
    sizes = [per_param] * n_params
    t_choices = [0, 1, 5, 100, 10**6, 2**31 - 1]
    params = tuple(
        ParamInput(
            w=_values(rng, spec.master, n, nonnegative=False, exotic=exotic, wide=wide, top=spec.storage),
            m=_values(rng, spec.compute, n, nonnegative=False, exotic=exotic, wide=wide),
            s=_values(rng, spec.compute, n, nonnegative=True, exotic=exotic, wide=wide),
            t=int(rng.choice(t_choices)) if rng.random() < 0.5 else int(rng.integers(0, 20)),
            lr_mult=float(rng.choice([1.0, 1.0, 0.5, 2.0])), wd_mult=float(rng.choice([1.0, 1.0, 0.0, 3.0])),
            index=i, s_max=_values(rng, spec.compute, n, nonnegative=True, exotic=exotic, wide=wide) if hp.amsgrad else None)
        for i, n in enumerate(sizes))
    steps = tuple(
        StepInput(tuple(_values(rng, spec.storage, n, nonnegative=False, exotic=exotic, wide=wide) for n in sizes),
                  None if rng.random() < 0.8 else float(rng.choice([1.0, 0.5, 2.0, 4.0] if regular
                                                                   else [1.0, 0.5, 0.0, math.nan, 4.0])))
        for _ in range(n_steps))
    return CaseInputs(profile, dtype, hp, params, steps)


def _element_steps(case: CaseInputs) -> int:
    return sum(len(p.w) for p in case.params) * len(case.steps)


# ----- one batch ---------------------------------------------------------------------------------

@dataclass
class BatchResult:
    batch: int
    profile: str
    dtype: str
    elements: int
    status: str  # passed | failed | errored | skipped | reference-error
    message: str = ""
    counterexample: str | None = None  # the shrunk case as a vector file (failed batches)
    seconds: float = 0.0
    fast_elements: int = 0  # element-steps whose expectations the fast path settled
    mpmath_elements: int = 0  # element-steps mpmath evaluated
    edge: bool = False  # an edge batch (special values drawn)

    @property
    def fast(self) -> bool:
        """Every expectation from the fast reference path (no mpmath)."""
        return self.status != "reference-error" and self.mpmath_elements == 0


_TARGETS: dict[tuple[str | None, str | None], Any] = {}


def _target(spec: str | None, cmd: str | None) -> Any:
    """The implementation, built once per worker process."""
    key = (spec, cmd)
    if key not in _TARGETS:
        from ._targets import resolve_target

        _TARGETS[key] = resolve_target(spec, cmd)
    return _TARGETS[key]


def _vector_case(case: CaseInputs, comment: str) -> tuple[Any, str]:
    """The case with its mpmath-proven expectations, as a loaded vector case and its file text
    (the shrunk counterexamples)."""
    from ._fuzz import _load_document, dumps, vector_document

    text = dumps(vector_document(case, comment))
    return _load_document(text, "<campaign>"), text


def _sub_case(case: CaseInputs, param: int, element: int, n_steps: int) -> CaseInputs:
    p = case.params[param]
    one = ParamInput(w=(p.w[element],), m=(p.m[element],), s=(p.s[element],), t=p.t, lr_mult=p.lr_mult,
                     wd_mult=p.wd_mult, index=0, s_max=None if p.s_max is None else (p.s_max[element],))
    steps = tuple(StepInput(((st.grads[param][element],),), st.rescale_grad) for st in case.steps[:n_steps])
    return replace(case, params=(one,), steps=steps)


_SHRINK_TRIES = 64  # single elements tried before the whole case is kept


def _shrink(impl: Any, case: CaseInputs, comment: str,
            failing: Sequence[tuple[int, int, int]] = ()) -> tuple[str, str]:
    """The smallest failing sub-case: one element of one parameter, the fewest steps. The update
    is element-wise, so an element fails alone as it failed among the others. ``failing``: the
    (step, parameter, element) the comparison reported, tried first."""
    order = list(dict.fromkeys([(pi, j) for _, pi, j in failing] +
                               [(pi, j) for pi, p in enumerate(case.params) for j in range(len(p.w))]))
    order = order[:_SHRINK_TRIES]
    first_step = min((k for k, _, _ in failing), default=0)
    for n_steps in range(first_step + 1, len(case.steps) + 1):
        for pi, j in order:
            sub = _sub_case(case, pi, j, n_steps)
            try:
                vc, text = _vector_case(sub, comment)  # mpmath-proven, for the file
            except Exception:
                continue
            with np.errstate(all="ignore"):
                out = run_case(impl, vc, max_failures=3)
            if out.status in ("failed", "errored"):
                return text, out.message
    # nothing smaller fails on its own (a failure only in multi-parameter bookkeeping): keep all
    vc, text = _vector_case(case, comment)
    with np.errstate(all="ignore"):
        out = run_case(impl, vc, max_failures=3)
    return text, out.message


Batch = tuple[int, str, str, int, bool]  # number, profile, dtype, element-steps, edge batch


def run_batch(spec: str | None, cmd: str | None, seed: int, batch: int, profile: str, dtype: str,
              batch_elements: int, edge: bool = False) -> BatchResult:
    t0 = time.perf_counter()
    impl = _target(spec, cmd)
    rng = np.random.default_rng([seed, batch])
    case = random_case(rng, profile, dtype, batch_elements, regular=not edge)
    n = _element_steps(case)
    comment = f"found by adabelief-conformance campaign, seed {seed}, batch {batch}"
    try:
        vc, fast, slow = live_vector_case(case, f"campaign-{seed}-{batch}", "campaign")
    except Exception as e:  # the reference is at fault, not the implementation
        return BatchResult(batch, profile, dtype, n, "reference-error", f"{type(e).__name__}: {e}",
                           seconds=time.perf_counter() - t0)
    with np.errstate(all="ignore"):
        out = run_case(impl, vc, max_failures=3)
    result = BatchResult(batch, profile, dtype, n, out.status, out.message, fast_elements=fast,
                         mpmath_elements=slow, edge=edge)
    if out.status in ("failed", "errored"):
        result.counterexample, result.message = _shrink(
            impl, case, comment, [(f.step, f.param, f.element) for f in out.failures])
    result.seconds = time.perf_counter() - t0
    return result


_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """In a worker process: keep glibc from returning freed memory to the system after every
    temporary. The fast reference path allocates many arrays of a few hundred KiB; with glibc's
    thresholds as Dask's nanny sets them (MALLOC_TRIM_THRESHOLD_=65536, which also freezes the
    mmap threshold at 128 KiB) each one costs fresh page faults, and a Dask worker ran campaigns
    at half the speed of a pool process (1.8x the time, 12x the page faults). Raising the trim and
    mmap thresholds (mallopt) removes that; elsewhere than glibc this does nothing."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        libc.mallopt(m_trim_threshold, 256 << 20)
        libc.mallopt(m_mmap_threshold, 32 << 20)
    except (OSError, AttributeError):
        pass


def _run_chunk(args: tuple[str | None, str | None, int, list[Batch], bool]) -> list[BatchResult]:
    spec, cmd, seed, batches, worker = args
    if worker:
        _tune_malloc()
    return [run_batch(spec, cmd, seed, k, p, d, size, edge) for k, p, d, size, edge in batches]


# ----- the campaign ------------------------------------------------------------------------------

@dataclass
class CampaignReport:
    target: str
    implementation: str
    version: str
    seed: int
    shard: tuple[int, int]
    elements_asked: int
    batch_elements: int
    pairs: list[tuple[str, str]]
    results: list[BatchResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: str = "1 process"
    incomplete: str | None = None
    counterexample_files: dict[int, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("passed", "failed", "errored", "skipped", "reference-error"), 0)
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def elements(self) -> int:
        return sum(r.elements for r in self.results if r.status in ("passed", "failed"))

    @property
    def fingerprint(self) -> str:
        """sha256 over every batch's number, pair, size and status: equal for equal campaigns."""
        h = hashlib.sha256()
        for r in sorted(self.results, key=lambda r: r.batch):
            h.update(f"{r.batch}|{r.profile}|{r.dtype}|{r.elements}|{r.status}\n".encode())
        return h.hexdigest()

    @property
    def exit_code(self) -> int:
        if self.incomplete:
            return 130
        c = self.counts
        return 1 if c["failed"] or c["errored"] else 0

    def to_json(self) -> dict[str, Any]:
        rate = self.elements / self.seconds if self.seconds > 0 else None
        return {
            "format": CAMPAIGN_FORMAT, "formatVersion": CAMPAIGN_FORMAT_VERSION,
            "target": self.target, "implementation": {"name": self.implementation, "version": self.version},
            "seed": self.seed, "shard": f"{self.shard[0]}/{self.shard[1]}",
            "elementsAsked": self.elements_asked, "batchElements": self.batch_elements,
            "pairs": [f"{p}/{d}" for p, d in self.pairs],
            "batches": len(self.results), "counts": self.counts, "elementsChecked": self.elements,
            "fastPathBatches": sum(r.fast for r in self.results),
            "fastPathElements": sum(r.fast_elements for r in self.results),
            "mpmathElements": sum(r.mpmath_elements for r in self.results),
            "edgeBatches": sum(r.edge for r in self.results),
            "seconds": self.seconds, "elementsPerSecond": rate, "workers": self.workers,
            "incomplete": self.incomplete, "exitCode": self.exit_code, "fingerprint": self.fingerprint,
            "problems": [{"batch": r.batch, "profile": r.profile, "dtype": r.dtype, "status": r.status,
                          "message": r.message, "file": self.counterexample_files.get(r.batch)}
                         for r in self.results if r.status in ("failed", "errored", "reference-error")],
        }


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text!r}: expected 0 <= i < n")
    return i, n


def plan_batches(elements: int, batch_elements: int, pairs: Sequence[tuple[str, str]],
                 shard: tuple[int, int]) -> list[Batch]:
    """The batches of a campaign (module doc) that shard ``i/n`` runs: (number, profile, dtype,
    element-steps, edge)."""
    out: list[Batch] = []
    k = done = 0
    i, n = shard
    edge_size = min(EDGE_BATCH_ELEMENTS, batch_elements)
    while done < elements:
        edge = k % EDGE_PERIOD == EDGE_PERIOD - 1
        size = min(edge_size if edge else batch_elements, elements - done)
        pair = pairs[(k // EDGE_PERIOD) % len(pairs)] if edge else pairs[k % len(pairs)]
        if k % n == i:
            out.append((k, *pair, size, edge))
        done += size
        k += 1
    return out


def _chunks(batches: list[Batch], size: int) -> Iterator[list[Batch]]:
    for a in range(0, len(batches), size):
        yield batches[a:a + size]


def run_campaign(spec: str | None, cmd: str | None, *, elements: int, seed: int = 0,
                 pairs: Sequence[tuple[str, str]], shard: tuple[int, int] = (0, 1), jobs: int | None = None,
                 dask: str | None = None, batch_elements: int = DEFAULT_BATCH_ELEMENTS,
                 out_dir: Path | None = None,
                 progress: Callable[[int, int, int], None] | None = None) -> CampaignReport:
    """Run a campaign (module doc); ``progress(done_batches, total_batches, elements)``."""
    if elements < 1:
        raise UsageError(f"--elements must be >= 1, got {elements}")
    if not pairs:
        raise UsageError("no profile/dtype pair to run (the target declares none of those asked for)")
    impl = _target(spec, cmd)
    batches = plan_batches(elements, batch_elements, pairs, shard)
    jobs = jobs or os.cpu_count() or 1
    report = CampaignReport(target=spec or f"--cmd {cmd}", implementation=str(impl.name),
                            version=str(impl.version), seed=seed, shard=shard, elements_asked=elements,
                            batch_elements=batch_elements, pairs=list(pairs))
    t0 = time.perf_counter()
    chunk = max(1, min(16, len(batches) // (4 * jobs) or 1))
    in_workers = dask is not None or (jobs > 1 and len(batches) > chunk)
    work = [(spec, cmd, seed, c, in_workers) for c in _chunks(batches, chunk)]
    done = 0
    elements_done = 0

    def collect(results: list[BatchResult]) -> None:
        nonlocal done, elements_done
        report.results.extend(results)
        done += len(results)
        elements_done += sum(r.elements for r in results)
        if progress is not None:
            progress(done, len(batches), elements_done)

    try:
        if dask is not None:
            report.workers = _run_dask(dask, jobs, work, collect)
        elif jobs > 1 and len(work) > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver" if "forkserver" in
                                              multiprocessing.get_all_start_methods() else "spawn")
            with ctx.Pool(jobs) as pool:
                for results in pool.imap_unordered(_run_chunk, work):
                    collect(results)
            report.workers = f"{jobs} processes"
        else:
            for w in work:
                collect(_run_chunk(w))
    except KeyboardInterrupt:
        report.incomplete = f"interrupted after {done} of {len(batches)} batches"
    report.results.sort(key=lambda r: r.batch)
    report.seconds = time.perf_counter() - t0
    for r in report.results:
        if r.counterexample is not None:
            folder = out_dir or Path(".")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"campaign-seed{seed}-batch{r.batch}.json"
            path.write_text(r.counterexample, encoding="utf-8")
            report.counterexample_files[r.batch] = str(path)
    return report


def _run_dask(address: str, jobs: int, work: list[Any], collect: Callable[[list[BatchResult]], None]) -> str:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise UsageError(f"--dask needs dask.distributed ({e}); install it: "
                         "pip install 'adabelief-conformance[dask]'") from None
    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        where = f"Dask LocalCluster, {jobs} worker processes"
    else:
        try:
            client = Client(address, timeout=30)
        except OSError as e:
            raise UsageError(f"--dask {address}: cannot connect to the scheduler: {e}") from None
        where = f"Dask cluster at {address}, {len(client.scheduler_info().get('workers', {}))} workers"
    try:
        futures = client.map(_run_chunk, work, pure=False)
        for fut in as_completed(futures):
            collect(fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return where


# ----- reports -----------------------------------------------------------------------------------

def summary_lines(report: CampaignReport) -> list[str]:
    c = report.counts
    rate = report.elements / report.seconds if report.seconds > 0 else float("inf")
    head = (f"INCOMPLETE ({report.incomplete})" if report.incomplete else
            "CONFORMING" if report.exit_code == 0 else "NOT CONFORMING")
    lines = [f"{head}: {report.implementation} {report.version}: campaign seed {report.seed}, shard "
             f"{report.shard[0]}/{report.shard[1]}: {len(report.results)} batches, {report.elements} "
             f"element-steps checked ({c['passed']} passed, {c['failed']} failed, {c['errored']} errored, "
             f"{c['skipped']} skipped, {c['reference-error']} reference errors) in {report.seconds:.1f} s, "
             f"{rate:.3g} element-steps/s on {report.workers} ({sum(r.fast for r in report.results)} "
             f"batches on the fast reference path); fingerprint {report.fingerprint[:16]}"]
    for r in report.results:
        if r.status in ("failed", "errored"):
            f = report.counterexample_files.get(r.batch)
            lines.append(f"  batch {r.batch} ({r.profile}/{r.dtype}) {r.status}: {r.message}")
            if f:
                lines.append(f"    shrunk to {f}; rerun: adabelief-conformance check {shlex.quote(report.target)} "
                             f"--vectors {f}")
        elif r.status == "reference-error":
            lines.append(f"  batch {r.batch}: the reference failed ({r.message}): please report it")
    return lines


def write_json(report: CampaignReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")


def write_junit(report: CampaignReport, path: Path) -> None:
    import xml.etree.ElementTree as ET

    c = report.counts
    root = ET.Element("testsuites", name="adabelief-conformance campaign", tests=str(len(report.results)),
                      failures=str(c["failed"]), errors=str(c["errored"] + c["reference-error"]),
                      skipped=str(c["skipped"]), time=f"{report.seconds:.3f}")
    suite = ET.SubElement(root, "testsuite", name="campaign", tests=str(len(report.results)),
                          failures=str(c["failed"]), errors=str(c["errored"] + c["reference-error"]),
                          skipped=str(c["skipped"]), time=f"{report.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for k, v in (("seed", str(report.seed)), ("shard", f"{report.shard[0]}/{report.shard[1]}"),
                 ("fingerprint", report.fingerprint), ("incomplete", report.incomplete or "")):
        ET.SubElement(props, "property", name=k, value=v)
    for r in report.results:
        tc = ET.SubElement(suite, "testcase", classname=f"adabelief.campaign.{r.profile}.{r.dtype}",
                           name=f"batch-{r.batch}", time=f"{r.seconds:.6f}")
        if r.status == "failed":
            ET.SubElement(tc, "failure", message=r.message[:2000], type="NonConforming").text = \
                report.counterexample_files.get(r.batch, "")
        elif r.status in ("errored", "reference-error"):
            ET.SubElement(tc, "error", message=r.message[:2000], type=r.status)
        elif r.status == "skipped":
            ET.SubElement(tc, "skipped", message=r.message[:2000])
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_markdown(report: CampaignReport, path: Path) -> None:
    lines = ["## AdaBelief certification campaign", ""] + [
        f"- {ln.strip()}" for ln in summary_lines(report)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
