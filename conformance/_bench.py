"""Benchmark: AdaBelief step time as a multiple of a memory-bandwidth probe.

An optimizer step reads w, m, s and g and writes w, m and s: 7 arrays' worth of traffic, so no
implementation can beat the time NumPy needs to merely stream 4 arrays in and 3 out. That
*probe* (``w += g; m = -m; s = -s``, in place: 4 reads, 3 writes) is timed side by side with
every backend in the same run, and results are reported as ratios to it, which carry over
between machines far better than milliseconds do.

Timing: each backend gets its own copy of the state. A first step warms it up (and compiles,
for Numba) and sizes the inner loop so that one sample lasts at least ``min_sample_s``; then
the repeats go round-robin over the backends, in an order rotated every round, so that machine
noise hits all of them alike. Every cell (backend x problem) reports the minimum, the median and
the maximum of its samples, and its ratios to the probe at the minimum and at the median. The
goals are judged on per-round ratios: each sample over the probe's sample of the same round.
The minor page faults taken during the samples are counted (``getrusage``) and reported per
step: a backend that allocates fresh memory every step (``naive``) pays for page faults, not
for arithmetic, and is labelled allocation-bound.

numba-parallel runs on an explicit number of threads (``--threads``, every usable core by
default). Its *load sensitivity* is measured too: the CPU backends are timed again while a
background process keeps one core busy, and the ratio loaded/unloaded is reported.

A second table gives the throughput of the exact reference (the fast path and mpmath, one core)
and of a campaign on one and two worker processes, in element-steps per second; a last block
states each goal of the project, the measured figure and whether it is met. All runs use
float32, profile mxnet and MXNet's default hyperparameters unless told otherwise.

Run ``python -m adabelief_conformance._bench --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import mmap
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from adabelief_reference import DEFAULT_HYPERPARAMETERS, Hyperparameters

from .backends._naive import NaiveParam, naive_step
from .backends._native import FlatPlan
from .backends._numpy import DEFAULT_CHUNK, FusedAdaBelief

__all__ = [
    "BUILTIN_BACKENDS",
    "DEFAULT_SIZES",
    "PLOT_RANGE",
    "QUICK_SIZES",
    "RESNET50_SHAPES",
    "BenchProblem",
    "BenchResults",
    "GoalResult",
    "LoadResult",
    "Spread",
    "StepFactory",
    "ThroughputCell",
    "busy_core",
    "clip_to_range",
    "main",
    "measure_load",
    "measure_throughput",
    "run_bench",
]


def _resnet50_shapes() -> tuple[tuple[int, ...], ...]:
    """torchvision.models.resnet50's parameters, in ``named_parameters()`` order.

    Bottleneck blocks [3, 4, 6, 3] with widths 64, 128, 256, 512 (expansion 4); each block has
    conv1 1x1, conv2 3x3 and conv3 1x1, each followed by a BatchNorm, and the first block of
    every stage has a 1x1 downsample conv + BatchNorm. Convolutions have no bias.
    """
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]  # conv1, bn1 gamma and beta

    def conv_bn(out: int, inp: int, k: int) -> None:
        shapes.extend([(out, inp, k, k), (out,), (out,)])

    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            conv_bn(planes, inplanes, 1)
            conv_bn(planes, planes, 3)
            conv_bn(planes * 4, planes, 1)
            if b == 0:
                conv_bn(planes * 4, inplanes, 1)  # downsample
            inplanes = planes * 4
    shapes.extend([(1000, 2048), (1000,)])  # fc weight, fc bias
    return tuple(shapes)


# The 161 parameter tensors of torchvision's ResNet-50 (25,557,032 elements): 53 convolution
# weights (the stem, 16 bottleneck blocks x 3, and 4 downsample convolutions), a BatchNorm
# gamma and beta after each of them (106), and the classifier's weight and bias (2).
RESNET50_SHAPES: tuple[tuple[int, ...], ...] = _resnet50_shapes()

DEFAULT_SIZES: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000, 30_000_000)
QUICK_SIZES: tuple[int, ...] = (1_000, 20_000)
BYTES_PER_ELEMENT = 7 * 4  # float32: read w, m, s, g; write w, m, s
BUILTIN_BACKENDS: tuple[str, ...] = ("naive", "numpy", "numba", "numba-parallel", "cupy", "cupy-probe")
# The device counterpart of the probe: one kernel that reads w, g, m, s and writes w, m, s.
GPU_PROBE = "cupy-probe"
PROBE = "probe"

# The problems of the goal "numpy's ratio does not depend on per-tensor multipliers": the same
# 10,000 tensors of 100 elements, once with wd_mult alternating 1 and 0 between neighbours (as
# when biases and normalisation parameters do not decay) and once with every wd_mult equal.
MULT_PROBLEM = "1e4 tensors, wd_mult 1/0"
EQUAL_MULT_PROBLEM = "1e4 tensors, wd_mult 1"
MULT_TOLERANCE = 0.10  # "independent": the two ratios within 10% of each other
# The y-axis of the plot: the ratios where decisions are made. Points beyond it are drawn at the
# edge with a marker that points off the scale and their value written next to them.
PLOT_RANGE: tuple[float, float] = (0.5, 20.0)
# A backend whose minor page faults per step amount to at least this share of the pages of one
# float32 state array is labelled allocation-bound: it touches fresh memory every step, and its
# time measures the kernel's page-fault handling more than its arithmetic.
ALLOCATION_BOUND_SHARE = 0.1
# Load sensitivity: these backends are timed with and without one core kept busy, on LOAD_SIZE
# elements (the largest quick size with --quick --load).
LOAD_BACKENDS: tuple[str, ...] = (PROBE, "numpy", "numba", "numba-parallel")
LOAD_SIZE = 1_000_000
# Reference throughput: (cases, element-steps per case) of random mxnet/float32 cases, full run
# and --quick; repeats of each cell; a time budget after which a cell stops repeating.
FAST_CASES = (18, 32768)  # one regular campaign case per profile/dtype pair
FAST_CASES_QUICK = (6, 2048)
MPMATH_CASES = (6, 64)
MPMATH_CASES_QUICK = (2, 16)
THROUGHPUT_REPEATS = 3
THROUGHPUT_BUDGET_S = 20.0
THROUGHPUT_BUDGET_S_QUICK = 3.0
# Campaign throughput: a first campaign of CAMPAIGN_CALIBRATION element-steps measures the rate
# (and warms up imports); the timed campaigns are sized to last about CAMPAIGN_SECONDS each.
CAMPAIGN_CALIBRATION = 4096
CAMPAIGN_SECONDS = 1.5
CAMPAIGN_MAX_ELEMENTS = 4_000_000
CAMPAIGN_JOBS: tuple[int, ...] = (1, 2)
# The goals' thresholds (README, Benchmarks).
NUMBA_OVERHEAD_GOAL = (100_000, 1.5)  # numba <= 1.5x the probe at 1e5 elements
FAST_PATH_GOAL = 1e6  # fast reference path: element-steps per second per core
LARGE = 10_000_000  # "large" problems: >= 1e7 elements
NUMPY_LARGE_GOAL = 3.0  # numpy <= 3x the probe at >= 1e7 elements
NUMBA_LARGE_GOAL = 1.15  # numba <= 1.15x the probe at >= 1e7 elements
NAIVE_SPEEDUP_GOAL = 2.0  # numpy >= 2x faster than naive at >= 1e7 elements


@dataclass
class BenchProblem:
    """One benchmark input: float32 flat buffers for parameters of the given sizes."""

    name: str
    sizes: tuple[int, ...]
    w: np.ndarray
    m: np.ndarray
    s: np.ndarray
    g: np.ndarray
    hyperparameters: Hyperparameters = DEFAULT_HYPERPARAMETERS
    wd_mults: tuple[float, ...] | None = None  # per tensor (None: all 1)

    @property
    def n_elements(self) -> int:
        return int(self.w.shape[0])

    def plan(self) -> FlatPlan:
        """A fresh plan: float32, profile mxnet, all parameters at t = 0."""
        return FlatPlan(self.sizes, "float32", "mxnet", self.hyperparameters, wd_mults=self.wd_mults)

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Private copies of w, m, s for one backend (the gradient ``g`` is shared, read only)."""
        return self.w.copy(), self.m.copy(), self.s.copy()


# A backend for the benchmark: given the problem, set up (allocate, copy to a device, compile)
# and return a callable that performs one step, in place, on the backend's own copy of the
# state and the problem's gradient ``g``, and returns once the step is complete.
StepFactory = Callable[[BenchProblem], Callable[[], object]]


def make_problem(name: str, sizes: Sequence[int], hp: Hyperparameters = DEFAULT_HYPERPARAMETERS,
                 seed: int = 0, wd_mults: Sequence[float] | None = None) -> BenchProblem:
    n = int(sum(sizes))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n, dtype=np.float32)
    m = rng.standard_normal(n, dtype=np.float32)
    m *= np.float32(0.01)
    s = rng.random(n, dtype=np.float32)
    s *= np.float32(1e-4)
    g = rng.standard_normal(n, dtype=np.float32)
    return BenchProblem(name, tuple(int(x) for x in sizes), w, m, s, g, hp,
                        None if wd_mults is None else tuple(float(x) for x in wd_mults))


# ----- the backends ------------------------------------------------------------------------------

def probe_factory(p: BenchProblem) -> Callable[[], object]:
    w, m, s = p.state()
    g = p.g

    def step() -> None:  # 4 arrays in, 3 out, as an optimizer step
        np.add(w, g, out=w)
        np.negative(m, out=m)
        np.negative(s, out=s)

    return step


def naive_factory(p: BenchProblem) -> Callable[[], object]:
    w, m, s = p.state()
    bounds = list(itertools.pairwise(np.concatenate(([0], np.cumsum(p.sizes))).tolist()))
    mults = p.wd_mults or (1.0,) * len(bounds)
    params = [NaiveParam(w[a:b], m[a:b], s[a:b], wd_mult=k) for (a, b), k in zip(bounds, mults)]
    grads = [p.g[a:b] for a, b in bounds]
    hp = p.hyperparameters
    return lambda: naive_step(params, grads, hp)


def numpy_factory(chunk_size: int = DEFAULT_CHUNK) -> StepFactory:
    def make(p: BenchProblem) -> Callable[[], object]:
        opt = FusedAdaBelief.from_plan(p.plan(), *p.state(), chunk_size=chunk_size)
        g = p.g
        return lambda: opt.step(g)

    return make


def numba_factory(parallel: bool) -> StepFactory:
    from .backends._numba import NumbaFlatStepper

    # Import numba and compile the float32 kernel now, on a one-element problem (Numba compiles
    # on the first call, not at njit): a failure skips the backend, and the compile (or the
    # load from Numba's disk cache) is neither timed nor used to size the samples.
    one = np.ones(1, dtype=np.float32)
    NumbaFlatStepper(FlatPlan([1]), one.copy(), one.copy(), one.copy(), parallel=parallel).step(one)

    def make(p: BenchProblem) -> Callable[[], object]:
        st = NumbaFlatStepper(p.plan(), *p.state(), parallel=parallel)
        g = p.g
        return lambda: st.step(g)

    return make


def cupy_factory() -> StepFactory:
    from .backends._cupy import CupyFlatStepper, device_available

    ok, reason = device_available()
    if not ok:
        raise RuntimeError(reason)
    import cupy

    def make(p: BenchProblem) -> Callable[[], object]:
        w, m, s = (cupy.asarray(x) for x in p.state())
        g = cupy.asarray(p.g)
        st = CupyFlatStepper(p.plan(), w, m, s)

        def step() -> None:
            st.step(g)
            st.synchronize()

        return step

    return make


def cupy_probe_factory() -> StepFactory:
    """A device-to-device 4-read/3-write stream: the bandwidth a fused step can at best reach."""
    from .backends._cupy import device_available

    ok, reason = device_available()
    if not ok:
        raise RuntimeError(reason)
    import cupy

    kernel = cupy.ElementwiseKernel("float32 g", "float32 w, float32 m, float32 s",
                                    "w = w + g; m = -m; s = -s;", "adabelief_bandwidth_probe")

    def make(p: BenchProblem) -> Callable[[], object]:
        w, m, s = (cupy.asarray(x) for x in p.state())
        g = cupy.asarray(p.g)
        stream = cupy.cuda.get_current_stream()

        def step() -> None:
            kernel(g, w, m, s)
            stream.synchronize()

        return step

    return make


def gpu_bandwidth_fractions(res: BenchResults) -> dict[str, float]:
    """Per problem, the CuPy step's share of the device probe's bandwidth (1.0 = as fast)."""
    out = {}
    for p in res.problems:
        if "cupy" in p.timings and GPU_PROBE in p.timings:
            out[p.name] = p.timings[GPU_PROBE].best / p.timings["cupy"].best
    return out


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def numba_parallel_factory(threads: int | None = None) -> StepFactory:
    """numba's parallel kernel pinned to ``threads`` threads (default: every usable core, at most
    numba's NUMBA_NUM_THREADS) with ``numba.set_num_threads``; raises when numba is missing or
    the count is out of numba's range."""
    import numba

    config: Any = numba.config
    limit = int(config.NUMBA_NUM_THREADS)
    n = min(usable_cpus(), limit) if threads is None else threads
    if not 1 <= n <= limit:
        raise RuntimeError(f"{n} threads asked for; numba runs 1 to {limit} (NUMBA_NUM_THREADS)")
    numba.set_num_threads(n)
    inner = numba_factory(parallel=True)

    def make(p: BenchProblem) -> Callable[[], object]:
        numba.set_num_threads(n)  # the count is per calling thread: set it where steps run
        return inner(p)

    return make


def _builtin_factory(name: str, threads: int | None = None) -> StepFactory:
    """The factory of a bundled backend; raises (ImportError, RuntimeError...) when unavailable.
    ``threads``: numba-parallel's thread count (None: every usable core)."""
    if name == "naive":
        return naive_factory
    if name == "numpy":
        return numpy_factory()
    if name == "numba":
        return numba_factory(parallel=False)
    if name == "numba-parallel":
        return numba_parallel_factory(threads)
    if name == "cupy":
        return cupy_factory()
    if name == GPU_PROBE:
        return cupy_probe_factory()
    raise ValueError(f"unknown backend {name!r}; built in: {', '.join(BUILTIN_BACKENDS)}")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


# ----- timing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """The minimum, median and maximum of a few measurements."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))

    def to_json(self) -> dict[str, float]:
        return {"min": self.min, "median": self.median, "max": self.max}


@dataclass
class Timing:
    number: int  # steps per sample
    samples: list[float] = field(default_factory=list)  # seconds per step
    faults: list[int] = field(default_factory=list)  # minor page faults during each sample

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def min(self) -> float:
        return self.best

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> Spread:
        return Spread.of(self.samples)

    @property
    def faults_per_step(self) -> float | None:
        """Minor page faults per step over all samples (None where they cannot be counted)."""
        if not self.faults:
            return None
        return sum(self.faults) / (self.number * len(self.faults))

    def allocation_bound(self, elements: int) -> bool:
        """Whether the step faults in at least ALLOCATION_BOUND_SHARE of one state array's pages."""
        f = self.faults_per_step
        return f is not None and f * mmap.PAGESIZE >= ALLOCATION_BOUND_SHARE * 4 * elements


def _minor_faults() -> int | None:
    """This process's minor page faults so far, all its threads (None without getrusage)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _sample(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _time_round_robin(steps: Mapping[str, Callable[[], object]], repeats: int,
                      min_sample_s: float) -> dict[str, Timing]:
    timings = {}
    for name, fn in steps.items():
        first = _sample(fn, 1)  # warm-up (and JIT): not kept
        first = min(first, _sample(fn, 1))
        timings[name] = Timing(max(1, math.ceil(min_sample_s / max(first, 1e-9))))
    names = list(steps)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = timings[name]
            f0 = _minor_faults()
            t.samples.append(_sample(steps[name], t.number))
            f1 = _minor_faults()
            if f0 is not None and f1 is not None:
                t.faults.append(f1 - f0)
    return timings


# ----- load sensitivity --------------------------------------------------------------------------

def _spin(ready: Any) -> None:
    """The background load: say so, then keep one core busy until terminated."""
    ready.set()
    x = 0
    while True:
        x += 1


@contextlib.contextmanager
def busy_core(start_timeout_s: float = 60.0) -> Iterator[Any]:
    """A process (multiprocessing, spawned) that spins in a Python loop, keeping one core busy,
    for the duration of the ``with`` block; yields the process. It is running when the block
    starts and terminated (and joined) when the block ends, however it ends."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs numba's threads
    ready = ctx.Event()
    proc = ctx.Process(target=_spin, args=(ready,), name="adabelief-bench-busy-core", daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not ready.wait(0.05):
            if not proc.is_alive():
                raise RuntimeError(f"the busy-loop process exited with code {proc.exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the busy-loop process did not start in {start_timeout_s:g} s")
        yield proc
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


@dataclass
class LoadResult:
    """The CPU backends on one problem, timed unloaded and then with one core kept busy."""

    problem: str
    elements: int
    unloaded: dict[str, Timing]
    loaded: dict[str, Timing]
    busy_processes: int = 1

    def slowdown(self, backend: str, stat: str = "median") -> float:
        """Loaded time over unloaded time (``stat``: min, median or max)."""
        return float(getattr(self.loaded[backend], stat) / getattr(self.unloaded[backend], stat))

    def to_json(self) -> dict[str, Any]:
        def timing(t: Timing) -> dict[str, Any]:
            return {"min_s": t.min, "median_s": t.median, "max_s": t.max,
                    "steps_per_sample": t.number, "samples_s": t.samples}

        return {"problem": self.problem, "elements": self.elements,
                "busy_processes": self.busy_processes,
                "backends": {name: {"unloaded": timing(self.unloaded[name]),
                                    "loaded": timing(self.loaded[name]),
                                    "loaded_over_unloaded": self.slowdown(name),
                                    "loaded_over_unloaded_min": self.slowdown(name, "min")}
                             for name in self.loaded}}


def measure_load(factories: Mapping[str, StepFactory], problem: BenchProblem, repeats: int,
                 min_sample_s: float,
                 busy: Callable[[], contextlib.AbstractContextManager[Any]] | None = None) -> LoadResult:
    """Time the LOAD_BACKENDS among ``factories`` on ``problem`` round-robin, then again while
    ``busy()`` (default :func:`busy_core`) keeps one core busy: a spinning process started and
    stopped around the second measurement."""
    steps = {name: factories[name](problem) for name in LOAD_BACKENDS if name in factories}
    unloaded = _time_round_robin(steps, repeats, min_sample_s)
    with (busy or busy_core)():
        loaded = _time_round_robin(steps, repeats, min_sample_s)
    return LoadResult(problem.name, problem.n_elements, unloaded, loaded)


# ----- reference and campaign throughput ---------------------------------------------------------

# One repeat of a throughput cell: the element-steps it did, the seconds they took, and notes.
ThroughputRun = Callable[[], tuple[int, float, dict[str, Any]]]


@dataclass
class ThroughputCell:
    """Element-steps per second of one reference or campaign configuration, over a few repeats."""

    key: str
    label: str
    processes: int
    setup: str  # what one repeat does
    rates: list[float] = field(default_factory=list)  # element-steps per second, one per repeat
    element_steps: int = 0  # of one repeat
    info: dict[str, Any] = field(default_factory=dict)  # the last repeat's notes
    error: str | None = None  # a failed cell: the error, on one line
    skipped: str | None = None

    @property
    def spread(self) -> Spread | None:
        return Spread.of(self.rates) if self.rates and self.error is None else None

    def to_json(self) -> dict[str, Any]:
        s = self.spread
        return {"key": self.key, "label": self.label, "processes": self.processes,
                "setup": self.setup, "element_steps_per_repeat": self.element_steps,
                "rates_per_s": self.rates,
                "min_per_s": s.min if s else None, "median_per_s": s.median if s else None,
                "max_per_s": s.max if s else None,
                "median_per_process_per_s": s.median / self.processes if s else None,
                "info": self.info, "error": self.error, "skipped": self.skipped}


def measure_throughput(key: str, label: str, setup: str, run: ThroughputRun, repeats: int,
                       processes: int = 1, budget_s: float | None = None) -> ThroughputCell:
    """Call ``run`` ``repeats`` times (fewer once ``budget_s`` seconds are spent, at least once).
    A call that raises fails the cell, with the error on one line; the benchmark carries on."""
    cell = ThroughputCell(key, label, processes, setup)
    start = time.perf_counter()
    for _ in range(repeats):
        try:
            n, seconds, info = run()
        except Exception as e:  # the reference and the campaign change under our feet
            cell.error = _one_line(e)
            break
        cell.rates.append(n / seconds if seconds > 0 else math.inf)
        cell.element_steps, cell.info = n, info
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return cell


def _element_steps(case: Any) -> int:
    return sum(len(p.w) for p in case.params) * len(case.steps)


def _reference_run(which: str, count: int, elements: int, seed: int = 0) -> ThroughputRun:
    """Evaluate ``count`` regular campaign cases (``random_case(..., regular=True)``) of about
    ``elements`` element-steps, the profile/dtype pairs round-robin, with the fast path
    (``which`` = "fast", adabelief_reference.fast_expected, the campaign's: its time includes
    mpmath for the elements it leaves undecided) or with mpmath ("mpmath",
    adabelief_reference.golden). Only the evaluations are timed."""
    cases: list[Any] = []

    def run() -> tuple[int, float, dict[str, Any]]:
        if not cases:
            from adabelief_reference import DTYPES, profile_names

            from ._campaign import random_case

            pairs = [(p, d) for p in profile_names() for d in sorted(DTYPES)]
            cases.extend(random_case(np.random.default_rng([seed, k]), *pairs[k % len(pairs)], elements,
                                     regular=True) for k in range(count))
        if which == "fast":
            from adabelief_reference import fast_expected as evaluate
        else:
            from adabelief_reference import golden as evaluate
        done, seconds, per_case, by_mpmath = 0, 0.0, [], 0
        for case in cases:
            t0 = time.perf_counter()
            out = evaluate(case)
            dt = time.perf_counter() - t0
            by_mpmath += getattr(out, "mpmath_elements", 0)  # fast_expected's fallback
            n = _element_steps(case)
            done, seconds = done + n, seconds + dt
            per_case.append((n, dt))
        rates = [n / max(dt, 1e-12) for n, dt in per_case]
        info: dict[str, Any] = {
            "cases": len(cases), "mpmath_share": by_mpmath / max(done, 1),
            "median_case_per_s": statistics.median(rates),
            "slowest_case_share": max(dt for _, dt in per_case) / max(seconds, 1e-12)}
        return done, seconds, info

    return run


def _campaign_run(jobs: int, elements: int) -> ThroughputRun:
    """A campaign of the numpy backend on mxnet/float32 with ``jobs`` worker processes; its own
    ``seconds`` (process start included) and element-steps checked."""

    def run() -> tuple[int, float, dict[str, Any]]:
        from ._campaign import run_campaign

        with tempfile.TemporaryDirectory(prefix="adabelief-bench-") as tmp:
            # counterexample files, should there be any, go to a scratch folder
            report = run_campaign("numpy", None, elements=elements, seed=0, pairs=[("mxnet", "float32")],
                                  jobs=jobs, out_dir=Path(tmp))
        if report.incomplete:
            raise RuntimeError(f"campaign incomplete: {report.incomplete}")
        info = {"elements_asked": elements, "workers": report.workers, "counts": report.counts}
        return int(report.elements), float(report.seconds), info

    return run


def reference_throughput(quick: bool = False, campaign: bool | None = None,
                         repeats: int = THROUGHPUT_REPEATS) -> list[ThroughputCell]:
    """The cells of the "reference and campaign throughput" table (module doc). ``campaign``:
    time campaigns on 1 and 2 processes (default: not with ``quick``)."""
    budget = THROUGHPUT_BUDGET_S_QUICK if quick else THROUGHPUT_BUDGET_S
    cells = []
    for key, label, (count, elements) in (
            ("fast", "reference fast path (fast_expected)", FAST_CASES_QUICK if quick else FAST_CASES),
            ("mpmath", "reference mpmath (golden)", MPMATH_CASES_QUICK if quick else MPMATH_CASES)):
        setup = f"{count} regular campaign cases x ~{elements} element-steps (every profile and dtype)"
        cells.append(measure_throughput(key, label, setup, _reference_run(key, count, elements),
                                        repeats, budget_s=budget))
    if campaign is None:
        campaign = not quick
    campaign_cells = [ThroughputCell(f"campaign-{j}", f"campaign numpy, {j} process{'es' if j > 1 else ''}",
                                     j, "run_campaign('numpy', mxnet/float32)") for j in CAMPAIGN_JOBS]
    if not campaign:
        for c in campaign_cells:
            c.skipped = "not with --quick" if quick else "off (--no-campaign)"
        return cells + campaign_cells
    try:  # size the campaigns from a small first one (it also pays the imports)
        n, seconds, _ = _campaign_run(1, CAMPAIGN_CALIBRATION)()
        rate = n / seconds if seconds > 0 and n > 0 else CAMPAIGN_CALIBRATION
        elements = int(min(max(rate * CAMPAIGN_SECONDS, CAMPAIGN_CALIBRATION), CAMPAIGN_MAX_ELEMENTS))
        elements = max(1024, elements // 1024 * 1024)
    except Exception as e:
        for c in campaign_cells:
            c.error = _one_line(e)
        return cells + campaign_cells
    for c, j in zip(campaign_cells, CAMPAIGN_JOBS):
        done = measure_throughput(c.key, c.label, f"{elements:,} element-steps, {c.setup}",
                                  _campaign_run(j, elements), repeats, processes=j,
                                  budget_s=budget)
        cells.append(done)
    return cells


# ----- results -----------------------------------------------------------------------------------

def _note(name: str, t: Timing, elements: int, threads: int | None) -> str:
    """The table's and the JSON's label of a cell."""
    notes = []
    if t.allocation_bound(elements):
        notes.append("allocation-bound")
    if name == "naive":
        notes.append("fresh temporaries every step")
    if name == "numba-parallel" and threads is not None:
        notes.append(f"{threads} thread{'s' if threads > 1 else ''}")
    return "; ".join(notes)


@dataclass
class ProblemResult:
    name: str
    elements: int
    tensors: int
    timings: dict[str, Timing]

    @property
    def n_elements(self) -> int:
        return self.elements

    def ratio(self, backend: str, stat: str = "best") -> float:
        """Time of ``backend`` over the probe's (``stat``: best, min, median or max)."""
        t, p = self.timings[backend], self.timings[PROBE]
        return float(getattr(t, stat) / getattr(p, stat))

    def round_ratios(self, backend: str) -> list[float]:
        """Each of the backend's samples over the probe's sample of the same round."""
        return [a / b for a, b in zip(self.timings[backend].samples, self.timings[PROBE].samples)]

    def to_json(self, threads: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, t in self.timings.items():
            out[name] = {
                "best_s": t.best,
                "median_s": t.median,
                "min_s": t.min,
                "max_s": t.max,
                "steps_per_sample": t.number,
                "samples_s": t.samples,
                "ratio_to_probe": self.ratio(name),
                "median_ratio_to_probe": self.ratio(name, "median"),
                "max_ratio_to_probe": self.ratio(name, "max"),
                "round_ratios_to_probe": Spread.of(self.round_ratios(name)).to_json(),
                "effective_gb_per_s": BYTES_PER_ELEMENT * self.elements / t.best / 1e9,
                "minor_faults_per_step": t.faults_per_step,
                "allocation_bound": t.allocation_bound(self.elements),
                "note": _note(name, t, self.elements, threads),
            }
            if "naive" in self.timings and name != "naive":
                out[name]["speedup_over_naive"] = self.timings["naive"].best / t.best
        return {"problem": self.name, "elements": self.elements, "tensors": self.tensors,
                "backends": out}


@dataclass
class GoalResult:
    """One goal of the project, the figure measured for it (median with min and max; None when
    this run did not measure it) and whether it is met."""

    goal: str
    figure: Spread | None
    unit: str  # "ratio" (x the probe, or a quotient of ratios) or "per_s" (element-steps/s)
    met: bool | None
    detail: str = ""  # where it was measured, or why not

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "not met"

    def measured(self) -> str:
        s = self.figure
        if s is None:
            return self.detail
        if self.unit == "per_s":
            text = f"{_rate(s.median)}/s ({_rate(s.min)}-{_rate(s.max)})"
        else:
            text = f"x{s.median:.2f} (x{s.min:.2f}-x{s.max:.2f})"
        return f"{text} {self.detail}".rstrip()

    def to_json(self) -> dict[str, Any]:
        s = self.figure
        return {"goal": self.goal, "unit": self.unit, "median": s.median if s else None,
                "min": s.min if s else None, "max": s.max if s else None, "met": self.met,
                "verdict": self.verdict, "detail": self.detail}


@dataclass
class BenchResults:
    problems: list[ProblemResult]
    machine: dict[str, Any]
    config: dict[str, Any]
    skipped: dict[str, str]
    load: LoadResult | None = None
    load_skipped: str | None = None  # why there is no load-sensitivity measurement
    throughput: list[ThroughputCell] = field(default_factory=list)
    goals: list[GoalResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        threads = self.config.get("threads")
        load: dict[str, Any] | None = None
        if self.load is not None:
            load = self.load.to_json()
            load["numba_threads"] = threads
            load["usable_cpus"] = self.machine.get("usable_cpus")
        elif self.load_skipped:
            load = {"skipped": self.load_skipped}
        return {"machine": self.machine, "config": self.config, "skipped": self.skipped,
                "results": [p.to_json(threads) for p in self.problems],
                "load_sensitivity": load,
                "throughput": [c.to_json() for c in self.throughput],
                "goals": [g.to_json() for g in self.goals]}

    def backends(self) -> list[str]:
        names: list[str] = []
        for p in self.problems:
            names += [n for n in p.timings if n not in names]
        return names

    def table(self) -> Any:
        """A rich Table: a row per problem and backend, with the min / median / max time per step,
        the ratios to the probe at the min and at the median, the bandwidth, page faults."""
        from rich.table import Table

        threads = self.config.get("threads")
        table = Table(title=f"AdaBelief step, float32: time per step, min / median / max of "
                            f"{self.config['repeats']} samples; x probe = time / probe time "
                            "(probe = 4-read/3-write stream)")
        table.add_column("problem")
        table.add_column("elements", justify="right")
        table.add_column("tensors", justify="right")
        table.add_column("backend")
        for col in ("min", "median", "max", "x probe (min)", "x probe (median)", "GB/s (min)",
                    "faults/step"):
            table.add_column(col, justify="right")
        table.add_column("note")
        for p in self.problems:
            names = list(p.timings)
            for i, name in enumerate(names):
                t = p.timings[name]
                first = i == 0
                gbps = BYTES_PER_ELEMENT * p.elements / t.best / 1e9
                table.add_row(p.name if first else "", f"{p.elements:,}" if first else "",
                              str(p.tensors) if first else "", name,
                              _ms(t.min), _ms(t.median), _ms(t.max),
                              f"x{p.ratio(name):.2f}", f"x{p.ratio(name, 'median'):.2f}",
                              f"{gbps:.1f}", _faults(t.faults_per_step),
                              _note(name, t, p.elements, threads),
                              end_section=i == len(names) - 1)
        return table

    def load_table(self) -> Any:
        """The load-sensitivity table: each backend unloaded, loaded, and loaded / unloaded."""
        from rich.table import Table

        ld = self.load
        if ld is None:
            return None
        threads = self.config.get("threads")
        title = (f"load sensitivity, {ld.problem} elements: one core kept busy by a spinning process "
                 f"({self.machine.get('usable_cpus')} usable cores"
                 + (f"; numba-parallel: {threads} threads)" if threads else ")"))
        table = Table(title=title)
        table.add_column("backend")
        table.add_column("unloaded min / median / max", justify="right")
        table.add_column("loaded min / median / max", justify="right")
        table.add_column("loaded / unloaded (median)", justify="right")
        table.add_column("loaded / unloaded (min)", justify="right")
        for name in ld.loaded:
            table.add_row(name, _ms3(ld.unloaded[name].spread), _ms3(ld.loaded[name].spread),
                          f"x{ld.slowdown(name):.2f}", f"x{ld.slowdown(name, 'min'):.2f}")
        return table

    def throughput_table(self) -> Any:
        """The reference and campaign throughput table (element-steps per second)."""
        from rich.table import Table

        table = Table(title="reference and campaign throughput: element-steps per second, "
                            f"min / median / max of up to {THROUGHPUT_REPEATS} repeats")
        table.add_column("what")
        table.add_column("processes", justify="right")
        for col in ("min", "median", "max", "median per process"):
            table.add_column(col, justify="right")
        table.add_column("setup and notes")
        for c in self.throughput:
            s = c.spread
            if s is None:
                why = f"failed: {c.error}" if c.error else f"skipped: {c.skipped}" if c.skipped else "-"
                table.add_row(c.label, str(c.processes), "-", "-", "-", "-", why)
                continue
            table.add_row(c.label, str(c.processes), _rate(s.min), _rate(s.median), _rate(s.max),
                          _rate(s.median / c.processes), _throughput_note(c))
        return table

    def goals_table(self) -> Any:
        from rich.table import Table

        table = Table(title="goals: x the probe = median of the per-round ratios (min-max in "
                            "brackets); rates: median of the repeats")
        table.add_column("goal")
        table.add_column("measured")
        table.add_column("verdict")
        for g in self.goals:
            style = {"met": "green", "not met": "red"}.get(g.verdict, "yellow")
            table.add_row(g.goal, g.measured(), f"[{style}]{g.verdict}[/]")
        return table


def _throughput_note(c: ThroughputCell) -> str:
    parts = [c.setup]
    info = c.info
    if c.key == "fast" and info:
        parts.append(f"{100 * info.get('mpmath_share', 0.0):.2g}% of them by mpmath; median case "
                     f"{_rate(info.get('median_case_per_s', 0.0))}/s; slowest case "
                     f"{100 * info.get('slowest_case_share', 0.0):.0f}% of the time")
    if c.key.startswith("campaign") and info:
        counts = info.get("counts") or {}
        batches = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        parts.append(f"batches: {batches or 'none'}; process start included")
    if len(c.rates) < THROUGHPUT_REPEATS:
        parts.append(f"{len(c.rates)} repeat{'s' if len(c.rates) > 1 else ''} (time budget)")
    return "; ".join(parts)


# ----- goals -------------------------------------------------------------------------------------

def _ratio_goal(res: BenchResults, goal: str, backend: str, limit: float,
                pick: Callable[[ProblemResult], bool], where: str) -> GoalResult:
    """``backend`` <= ``limit`` x the probe on every problem ``pick`` selects (the worst counts)."""
    chosen = [p for p in res.problems if pick(p)]
    if not chosen:
        return GoalResult(goal, None, "ratio", None, f"no problem {where} in this run")
    timed = [p for p in chosen if backend in p.timings]
    if not timed:
        return GoalResult(goal, None, "ratio", None, f"{backend} not run")
    s, p = max(((Spread.of(p.round_ratios(backend)), p) for p in timed), key=lambda sp: sp[0].median)
    detail = f"on {p.name}" + (f" (the worst of {len(timed)})" if len(timed) > 1 else "")
    return GoalResult(goal, s, "ratio", s.median <= limit, detail)


def _speedup_goal(res: BenchResults) -> GoalResult:
    """numpy at least NAIVE_SPEEDUP_GOAL x faster than naive on the large single-tensor problems
    (naive's time over numpy's in each round; the worst problem counts)."""
    goal = f"numpy >= {NAIVE_SPEEDUP_GOAL:g}x faster than naive at >= {_size_name(LARGE)} elements"
    chosen = [p for p in res.problems if p.elements >= LARGE and p.tensors == 1]
    timed = [p for p in chosen if "numpy" in p.timings and "naive" in p.timings]
    if not timed:
        why = (f"no problem of >= {_size_name(LARGE)} elements in this run" if not chosen
               else "naive or numpy not run")
        return GoalResult(goal, None, "ratio", None, why)

    def speedups(p: ProblemResult) -> Spread:
        return Spread.of([a / b for a, b in zip(p.timings["naive"].samples, p.timings["numpy"].samples)])

    s, p = min(((speedups(p), p) for p in timed), key=lambda sp: sp[0].median)
    detail = f"on {p.name}" + (f" (the worst of {len(timed)})" if len(timed) > 1 else "")
    return GoalResult(goal, s, "ratio", s.median >= NAIVE_SPEEDUP_GOAL, detail)


def _multiplier_goal(res: BenchResults) -> GoalResult:
    """numpy on 10,000 tensors with alternating multipliers against the same tensors with equal
    ones. The two problems move the same bytes, so the quotient of numpy's times is the quotient
    of its ratios, without the probe's own noise between the two problems' rounds."""
    goal = (f"numpy's ratio independent of per-tensor multipliers (1e4 tensors: wd_mult 1/0 "
            f"over all 1, within {100 * MULT_TOLERANCE:.0f}%)")
    by_name = {p.name: p for p in res.problems}
    mixed, equal = by_name.get(MULT_PROBLEM), by_name.get(EQUAL_MULT_PROBLEM)
    if mixed is None or equal is None:
        return GoalResult(goal, None, "ratio", None, "needs the full run's 1e4-tensor problems")
    if "numpy" not in mixed.timings or "numpy" not in equal.timings:
        return GoalResult(goal, None, "ratio", None, "numpy not run")
    a, b = mixed.timings["numpy"], equal.timings["numpy"]
    q = Spread(a.min / b.max, a.median / b.median, a.max / b.min)
    met = 1 / (1 + MULT_TOLERANCE) <= q.median <= 1 + MULT_TOLERANCE
    return GoalResult(goal, q, "ratio", met, "(numpy's time, 1/0 over all 1; range: extreme samples)")


def _fast_path_goal(res: BenchResults) -> GoalResult:
    goal = f"reference fast path >= {_rate(FAST_PATH_GOAL)} element-steps/s per core"
    cell = next((c for c in res.throughput if c.key == "fast"), None)
    if cell is None:
        return GoalResult(goal, None, "per_s", None, "reference throughput not run")
    s = cell.spread
    if s is None:
        return GoalResult(goal, None, "per_s", None, f"failed: {cell.error}" if cell.error else "no figure")
    return GoalResult(goal, s, "per_s", s.median >= FAST_PATH_GOAL, "(fast_expected on regular campaign cases, 1 process)")


def evaluate_goals(res: BenchResults) -> list[GoalResult]:
    """Each goal of the project (README, Benchmarks) against this run's figures."""
    n, limit = NUMBA_OVERHEAD_GOAL
    return [
        _ratio_goal(res, f"numba <= {limit:g}x the probe at {_size_name(n)} elements (per-step overhead)",
                    "numba", limit, lambda p: p.elements == n and p.tensors == 1,
                    f"of {_size_name(n)} elements"),
        _multiplier_goal(res),
        _fast_path_goal(res),
        _ratio_goal(res, f"numpy <= {NUMPY_LARGE_GOAL:g}x the probe at >= {_size_name(LARGE)} elements",
                    "numpy", NUMPY_LARGE_GOAL, lambda p: p.elements >= LARGE and p.tensors == 1,
                    f"of >= {_size_name(LARGE)} elements"),
        _speedup_goal(res),
        _ratio_goal(res, f"numba <= {NUMBA_LARGE_GOAL:g}x the probe at >= {_size_name(LARGE)} elements",
                    "numba", NUMBA_LARGE_GOAL, lambda p: p.elements >= LARGE and p.tensors == 1,
                    f"of >= {_size_name(LARGE)} elements"),
    ]


# ----- formatting --------------------------------------------------------------------------------

def _console() -> Any:
    """Rich's console for the table. Off a terminal (a pipe, a CI log) rich assumes 80 columns
    and squeezes every cell into several lines; give it room for one row of text per line."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(220, console.width))
    return console


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _ms3(s: Spread) -> str:
    """min / median / max in one unit: the median's."""
    ms = s.median * 1e3
    digits = 3 if ms < 1 else 1 if ms < 100 else 0
    return " / ".join(f"{v * 1e3:.{digits}f}" for v in (s.min, s.median, s.max)) + " ms"


def _faults(per_step: float | None) -> str:
    if per_step is None:
        return "-"
    return f"{per_step:,.0f}" if per_step >= 10 else f"{per_step:.2f}"


def _rate(v: float) -> str:
    """A rate as mantissa and power of ten: 5.12e5."""
    if not math.isfinite(v) or v <= 0:
        return f"{v:g}"
    e = math.floor(math.log10(v))
    mant = v / 10**e
    if round(mant, 2) >= 10:
        mant, e = mant / 10, e + 1
    return f"{mant:.2f}e{e}"


def _size_name(n: int) -> str:
    e = math.floor(math.log10(n)) if n > 0 else 0
    mant = n / 10**e
    return f"{mant:g}e{e}" if mant != int(mant) or n >= 10_000 else str(n)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _numba_threads() -> int | None:
    """numba's thread count for this thread now (None when numba is not installed)."""
    try:
        import numba
    except ImportError:
        return None
    return int(numba.get_num_threads())


def _numba_info() -> dict[str, Any]:
    """numba's version, thread count now, its limit and threading layer (after a parallel run)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return {}
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    return {"numba": numba.__version__, "numba_threads": int(numba.get_num_threads()),
            "numba_max_threads": int(numba.config.NUMBA_NUM_THREADS),
            "numba_threading_layer": layer}


# ----- the run -----------------------------------------------------------------------------------

def run_bench(
    sizes: Sequence[int] | None = None,
    resnet50: bool = True,
    backends: Sequence[str] = BUILTIN_BACKENDS,
    repeats: int | None = None,
    json_path: str | Path | None = None,
    png_path: str | Path | None = None,
    *,
    extra: Mapping[str, StepFactory] | None = None,
    chunk_sizes: Sequence[int] | None = None,
    hyperparameters: Hyperparameters = DEFAULT_HYPERPARAMETERS,
    quick: bool = False,
    min_sample_s: float | None = None,
    console: Any = None,
    threads: int | None = None,
    load: bool | None = None,
    load_size: int | None = None,
    reference: bool = True,
    campaign: bool | None = None,
) -> BenchResults:
    """Time the probe, the named built-in ``backends`` and the ``extra`` factories on each size
    (a single tensor) and on ResNet-50's 161 tensors (and, in the full run, on 10,000 tensors
    with alternating and with equal multipliers); print the tables and the goals; write JSON and
    a PNG.

    ``chunk_sizes``: time the numpy backend once per chunk size (columns ``numpy@16K``...).
    ``quick``: tiny sizes (and ResNet-50's shapes scaled down 1000x), 3 repeats: a smoke run.
    ``threads``: numba-parallel's thread count (default: every usable core).
    ``load``: measure the load sensitivity (default: on, off with ``quick``) on ``load_size``
    elements. ``reference``: the reference and campaign throughput table; ``campaign``: its
    campaign rows (default: not with ``quick``).
    Unavailable backends are skipped with the reason printed and recorded. The load measurement
    starts a process: a script that calls this needs the ``if __name__ == "__main__":`` guard.
    """
    out = console if console is not None else _console()
    if sizes is None:
        sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    if min_sample_s is None:
        min_sample_s = 0.001 if quick else 0.01
    if repeats is None:
        repeats = 3 if quick else 7
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if load is None:
        load = not quick
    factories: dict[str, StepFactory] = {PROBE: probe_factory}
    skipped: dict[str, str] = {}
    numba_before: int | None = None  # numba's thread count before we pinned it, to restore
    for name in backends:
        if name == "numpy" and chunk_sizes:
            for c in chunk_sizes:
                factories[f"numpy@{c // 1024}K" if c % 1024 == 0 else f"numpy@{c}"] = numpy_factory(c)
            continue
        try:
            if name == "numba-parallel":
                numba_before = _numba_threads()
            factories[name] = _builtin_factory(name, threads)
        except ValueError:
            raise
        except Exception as e:  # ImportError, no device, a compile failure
            skipped[name] = _one_line(e)
            out.print(f"[yellow]skipping {name}[/]: {skipped[name]}")
    for name, f in (extra or {}).items():
        if name in factories:
            raise ValueError(f"backend name {name!r} is taken")
        factories[name] = f
    pinned = _numba_threads() if "numba-parallel" in factories else None

    try:
        res = _run(out, factories, skipped, sizes, resnet50, repeats, min_sample_s, quick,
                   hyperparameters, chunk_sizes, pinned, load, load_size, reference, campaign)
    finally:
        if numba_before is not None and "numba" in sys.modules:
            with contextlib.suppress(Exception):
                sys.modules["numba"].set_num_threads(numba_before)

    out.print(res.table())
    fractions = gpu_bandwidth_fractions(res)
    if fractions:
        res.config["cupy_fraction_of_device_probe"] = fractions
        out.print("cupy vs the device 4-read/3-write probe (goal >= 85% at >= 2^24 elements, "
                  ">= 70% for resnet50): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in fractions.items()))
    if res.load is not None:
        out.print(res.load_table())
    elif res.load_skipped:
        out.print(f"load sensitivity: {res.load_skipped}")
    if res.throughput:
        out.print(res.throughput_table())
    out.print(res.goals_table())
    if json_path is not None:
        Path(json_path).write_text(json.dumps(res.to_json(), indent=2) + "\n")
        out.print(f"wrote {json_path}")
    if png_path is not None:
        _plot(res, Path(png_path), out)
    return res


def bench_problems(sizes: Sequence[int], resnet50: bool = True, quick: bool = False,
                   ) -> list[tuple[str, tuple[int, ...], tuple[float, ...] | None]]:
    """The problems of a run: (name, tensor sizes, per-tensor wd_mult or None for all 1)."""
    problems: list[tuple[str, tuple[int, ...], tuple[float, ...] | None]] = [
        (_size_name(n), (int(n),), None) for n in sizes]
    if resnet50:
        rn = [math.prod(sh) for sh in RESNET50_SHAPES]
        if quick:  # same 161 tensors, 1000x fewer elements
            problems.append(("resnet50/1000", tuple(max(1, n // 1000) for n in rn), None))
        else:
            problems.append(("resnet50", tuple(rn), None))
            # Per-tensor multipliers that differ between neighbours (weights decay, biases and
            # normalisation parameters do not), and the same tensors with equal multipliers:
            # the same step cost is the goal.
            problems.append((MULT_PROBLEM, (100,) * 10_000, (1.0, 0.0) * 5_000))
            problems.append((EQUAL_MULT_PROBLEM, (100,) * 10_000, (1.0,) * 10_000))
    return problems


def _run(out: Any, factories: dict[str, StepFactory], skipped: dict[str, str], sizes: Sequence[int],
         resnet50: bool, repeats: int, min_sample_s: float, quick: bool, hp: Hyperparameters,
         chunk_sizes: Sequence[int] | None, threads: int | None, load: bool, load_size: int | None,
         reference: bool, campaign: bool | None) -> BenchResults:
    """run_bench's measurements, once the factories are set up and numba's threads pinned."""
    results = []
    for pname, psizes, wd_mults in bench_problems(sizes, resnet50, quick):
        problem = make_problem(pname, psizes, hp, wd_mults=wd_mults)
        steps: dict[str, Callable[[], object]] = {}
        for name, factory in factories.items():
            try:
                steps[name] = factory(problem)
            except Exception as e:
                if name == PROBE:
                    raise
                skipped[name] = _one_line(e)
                out.print(f"[yellow]skipping {name} on {pname}[/]: {skipped[name]}")
        timings = _time_round_robin(steps, repeats, min_sample_s)
        results.append(ProblemResult(pname, problem.n_elements, len(psizes), timings))
        del problem, steps

    machine = machine_info()
    if "numba-parallel" in factories or "numba" in factories:
        machine.update(_numba_info())
    size = load_size or (QUICK_SIZES[-1] if quick else LOAD_SIZE)
    load_result: LoadResult | None = None
    load_skipped: str | None = None
    if not load:
        load_skipped = "off (--quick; --load turns it on)" if quick else "off (--no-load)"
    elif "numba-parallel" not in factories:
        load_skipped = "numba-parallel not run"
    else:
        try:
            load_result = measure_load(factories, make_problem(_size_name(size), (size,), hp),
                                       repeats, min_sample_s)
        except Exception as e:
            load_skipped = f"failed: {_one_line(e)}"
    cells = reference_throughput(quick, campaign) if reference else []

    config = {
        "repeats": repeats,
        "statistic": "min, median and max of the samples (best_s is the min); ratio_to_probe is min "
                     "over min, median_ratio_to_probe median over median; goals use the per-round "
                     "ratios (round_ratios_to_probe)",
        "min_sample_s": min_sample_s,
        "dtype": "float32",
        "profile": "mxnet",
        "hyperparameters": {k: getattr(hp, k) for k in hp.__dataclass_fields__},
        "bytes_per_element": BYTES_PER_ELEMENT,
        "numpy_chunk_size": list(chunk_sizes) if chunk_sizes else DEFAULT_CHUNK,
        "probe": "np.add(w, g, out=w); np.negative(m, out=m); np.negative(s, out=s)",
        "quick": quick,
        "threads": threads,
        "load": bool(load),
        "load_size": size if load else None,
        "allocation_bound_share_of_array_pages": ALLOCATION_BOUND_SHARE,
        "page_size": mmap.PAGESIZE,
        "reference": reference,
        "plot_range": list(PLOT_RANGE),
    }
    res = BenchResults(results, machine, config, skipped, load_result, load_skipped, cells)
    res.goals = evaluate_goals(res)
    return res


# ----- the plot ----------------------------------------------------------------------------------

def clip_to_range(values: Sequence[float], lo: float = PLOT_RANGE[0],
                  hi: float = PLOT_RANGE[1]) -> list[tuple[float, int]]:
    """Each value clipped into [lo, hi], with where it lay: -1 below, 0 inside, 1 above. A NaN
    stays NaN (inside: matplotlib leaves it out); infinities are off the scale like any other."""
    out = []
    for v in values:
        if v > hi:
            out.append((hi, 1))
        elif v < lo:
            out.append((lo, -1))
        else:
            out.append((v, 0))
    return out


def _plot(res: BenchResults, path: Path, out: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        out.print(f"[yellow]no plot[/]: matplotlib is not installed ({e}); "
                  "pip install adabelief-conformance[plot]")
        return
    lo, hi = PLOT_RANGE
    fig, ax = plt.subplots(figsize=(7, 4.5))
    single = [p for p in res.problems if p.tensors == 1]
    multi = [p for p in res.problems if p.tensors > 1]
    stacked: dict[tuple[int, int], int] = {}
    for i, name in enumerate(n for n in res.backends() if n != PROBE):
        color = f"C{i}"
        label: str | None = name
        for group, marker, size, style in ((single, "o", 5, "-"), (multi, "*", 11, "none")):
            pts = [(p.elements, Spread.of(p.round_ratios(name))) for p in group if name in p.timings]
            if not pts:
                continue
            xs = [x for x, _ in pts]
            mid = clip_to_range([s.median for _, s in pts], lo, hi)
            low = clip_to_range([s.min for _, s in pts], lo, hi)
            high = clip_to_range([s.max for _, s in pts], lo, hi)
            ys = [y for y, _ in mid]
            yerr = [[max(0.0, y - a) for y, (a, _) in zip(ys, low)],
                    [max(0.0, b - y) for y, (b, _) in zip(ys, high)]]
            ax.errorbar(xs, ys, yerr=yerr, marker=marker, markersize=size, color=color,
                        linestyle=style, capsize=2, elinewidth=0.8, label=label)
            label = None
            for x, (y, where), (_, s) in zip(xs, mid, pts):
                if where:  # off the scale: an arrow-like marker at the edge, and the value
                    ax.plot([x], [y], marker="^" if where > 0 else "v", markersize=9, color=color,
                            linestyle="none", clip_on=False)
                    k = stacked.get((x, where), 0)  # several at one x: one label under another
                    stacked[(x, where)] = k + 1
                    ax.annotate(f"x{s.median:.3g}" if s.median < 100 else f"x{s.median:.0f}", (x, y),
                                textcoords="offset points", fontsize=7, color=color,
                                xytext=(6, -11 - 9 * k if where > 0 else 3 + 9 * k))
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xlabel("elements (float32); stars: multi-tensor problems (ResNet-50, 1e4 tensors)")
    ax.set_ylabel(f"step time / 4R3W bandwidth probe ({lo:g} to {hi:g})")
    ax.set_title(f"AdaBelief step: median of per-round ratios, bars min-max; off-scale points at "
                 f"the edge\n({res.machine['cpu']}, numpy {res.machine['numpy']})", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    out.print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adabelief_conformance._bench",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", type=float, nargs="+", help="flat sizes (elements), e.g. 1e4 1e7")
    ap.add_argument("--no-resnet50", action="store_true", help="skip ResNet-50's 161 tensors")
    ap.add_argument("--backends", nargs="+", default=list(BUILTIN_BACKENDS),
                    help=f"built-in backends (default: {' '.join(BUILTIN_BACKENDS)})")
    ap.add_argument("--repeats", type=int, help="samples per backend (default 7; 3 with --quick)")
    ap.add_argument("--chunks", type=int, nargs="+", help="numpy chunk sizes to compare")
    ap.add_argument("--threads", type=int,
                    help=f"numba-parallel's thread count (default: the usable cores, {usable_cpus()} here)")
    ap.add_argument("--load", action=argparse.BooleanOptionalAction, default=None,
                    help="time the CPU backends again with one core kept busy (default: on; off "
                         "with --quick)")
    ap.add_argument("--load-size", type=float,
                    help=f"elements of the load-sensitivity problem (default {_size_name(LOAD_SIZE)})")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference and campaign throughput table")
    ap.add_argument("--campaign", action=argparse.BooleanOptionalAction, default=None,
                    help="campaign throughput on 1 and 2 processes (default: on; off with --quick)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--png", help="plot the ratios here (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    run_bench([int(x) for x in args.sizes] if args.sizes else None, not args.no_resnet50,
              args.backends, args.repeats, args.json, args.png, chunk_sizes=args.chunks,
              quick=args.quick, threads=args.threads, load=args.load,
              load_size=int(args.load_size) if args.load_size else None,
              reference=not args.no_reference, campaign=args.campaign)
    return 0


if __name__ == "__main__":
    sys.exit(main())
