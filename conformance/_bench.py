"""Benchmark: AdaBelief step time as a multiple of a memory-bandwidth probe.

An optimizer step reads w, m, s and g and writes w, m and s: 7 arrays' worth of traffic, so no
implementation can beat the time NumPy needs to merely stream 4 arrays in and 3 out. That
*probe* (``w += g; m = -m; s = -s``, in place: 4 reads, 3 writes) is timed side by side with
every backend in the same run, and results are reported as ratios to it, which carry over
between machines far better than milliseconds do.

Timing: each backend gets its own copy of the state. A first step warms it up (and compiles,
for Numba) and sizes the inner loop so that one sample lasts at least ``min_sample_s``; then
the repeats go round-robin over the backends, in an order rotated every round, so that machine
noise hits all of them alike. The reported time is the minimum over the samples (the median is
kept too). All runs use float32, profile mxnet and MXNet's default hyperparameters unless told
otherwise.

Run ``python -m adabelief_conformance._bench --help``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    "QUICK_SIZES",
    "RESNET50_SHAPES",
    "BenchProblem",
    "BenchResults",
    "StepFactory",
    "main",
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


def _builtin_factory(name: str) -> StepFactory:
    """The factory of a bundled backend; raises (ImportError, RuntimeError...) when unavailable."""
    if name == "naive":
        return naive_factory
    if name == "numpy":
        return numpy_factory()
    if name in ("numba", "numba-parallel"):
        return numba_factory(parallel=name == "numba-parallel")
    if name == "cupy":
        return cupy_factory()
    if name == GPU_PROBE:
        return cupy_probe_factory()
    raise ValueError(f"unknown backend {name!r}; built in: {', '.join(BUILTIN_BACKENDS)}")


# ----- timing ------------------------------------------------------------------------------------

@dataclass
class Timing:
    number: int  # steps per sample
    samples: list[float] = field(default_factory=list)  # seconds per step

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


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
            timings[name].samples.append(_sample(steps[name], timings[name].number))
    return timings


# ----- results -----------------------------------------------------------------------------------

@dataclass
class ProblemResult:
    name: str
    elements: int
    tensors: int
    timings: dict[str, Timing]

    def ratio(self, backend: str, stat: str = "best") -> float:
        """Time of ``backend`` over the probe's (``stat``: best or median)."""
        t, p = self.timings[backend], self.timings[PROBE]
        return float(getattr(t, stat) / getattr(p, stat))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, t in self.timings.items():
            out[name] = {
                "best_s": t.best,
                "median_s": t.median,
                "steps_per_sample": t.number,
                "samples_s": t.samples,
                "ratio_to_probe": self.ratio(name),
                "median_ratio_to_probe": self.ratio(name, "median"),
                "effective_gb_per_s": BYTES_PER_ELEMENT * self.elements / t.best / 1e9,
            }
            if "naive" in self.timings and name != "naive":
                out[name]["speedup_over_naive"] = self.timings["naive"].best / t.best
        return {"problem": self.name, "elements": self.elements, "tensors": self.tensors,
                "backends": out}


@dataclass
class BenchResults:
    problems: list[ProblemResult]
    machine: dict[str, Any]
    config: dict[str, Any]
    skipped: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "config": self.config, "skipped": self.skipped,
                "results": [p.to_json() for p in self.problems]}

    def backends(self) -> list[str]:
        names: list[str] = []
        for p in self.problems:
            names += [n for n in p.timings if n not in names]
        return names

    def table(self) -> Any:
        """A rich Table: per problem, each backend's best time and its ratio to the probe."""
        from rich.table import Table

        table = Table(title=f"AdaBelief step, float32 (best of {self.config['repeats']}; "
                            f"ratio = time / probe time; probe = 4-read/3-write stream)")
        table.add_column("problem")
        table.add_column("elements", justify="right")
        table.add_column("tensors", justify="right")
        for name in self.backends():
            table.add_column(name, justify="right")
        for p in self.problems:
            cells = []
            for name in self.backends():
                if name not in p.timings:
                    cells.append("-")
                    continue
                t = p.timings[name]
                gbps = BYTES_PER_ELEMENT * p.elements / t.best / 1e9
                extra = f"{gbps:.1f} GB/s" if name == PROBE else f"x{p.ratio(name):.2f}"
                cells.append(f"{_ms(t.best)}\n{extra}")
            table.add_row(p.name, f"{p.elements:,}", str(p.tensors), *cells)
        return table


def _console() -> Any:
    """Rich's console for the table. Off a terminal (a pipe, a CI log) rich assumes 80 columns
    and squeezes every cell into several lines; give it room for one row of text per line."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(160, console.width))
    return console


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


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
) -> BenchResults:
    """Time the probe, the named built-in ``backends`` and the ``extra`` factories on each size
    (a single tensor) and on ResNet-50's 161 tensors; print a table; write JSON and a PNG.

    ``chunk_sizes``: time the numpy backend once per chunk size (columns ``numpy@16K``...).
    ``quick``: tiny sizes (and ResNet-50's shapes scaled down 1000x), 3 repeats: a smoke run.
    Unavailable backends are skipped with the reason printed and recorded.
    """
    out = console if console is not None else _console()
    if sizes is None:
        sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    if min_sample_s is None:
        min_sample_s = 0.001 if quick else 0.01
    if repeats is None:
        repeats = 3 if quick else 7
    factories: dict[str, StepFactory] = {PROBE: probe_factory}
    skipped: dict[str, str] = {}
    for name in backends:
        if name == "numpy" and chunk_sizes:
            for c in chunk_sizes:
                factories[f"numpy@{c // 1024}K" if c % 1024 == 0 else f"numpy@{c}"] = numpy_factory(c)
            continue
        try:
            factories[name] = _builtin_factory(name)
        except ValueError:
            raise
        except Exception as e:  # ImportError, no device, a compile failure
            skipped[name] = f"{type(e).__name__}: {' '.join(str(e).split())}"
            out.print(f"[yellow]skipping {name}[/]: {skipped[name]}")
    for name, f in (extra or {}).items():
        if name in factories:
            raise ValueError(f"backend name {name!r} is taken")
        factories[name] = f

    problems: list[tuple[str, tuple[int, ...], tuple[float, ...] | None]] = [
        (_size_name(n), (int(n),), None) for n in sizes]
    if resnet50:
        rn = [math.prod(sh) for sh in RESNET50_SHAPES]
        if quick:  # same 161 tensors, 1000x fewer elements
            problems.append(("resnet50/1000", tuple(max(1, n // 1000) for n in rn), None))
        else:
            problems.append(("resnet50", tuple(rn), None))
            # Per-tensor multipliers that differ between neighbours (weights decay, biases and
            # normalisation parameters do not): the same step cost is the goal.
            problems.append(("1e4 tensors, wd_mult 1/0", (100,) * 10_000, (1.0, 0.0) * 5_000))

    results = []
    for pname, psizes, wd_mults in problems:
        problem = make_problem(pname, psizes, hyperparameters, wd_mults=wd_mults)
        steps: dict[str, Callable[[], object]] = {}
        for name, factory in factories.items():
            try:
                steps[name] = factory(problem)
            except Exception as e:
                if name == PROBE:
                    raise
                skipped[name] = f"{type(e).__name__}: {' '.join(str(e).split())}"
                out.print(f"[yellow]skipping {name} on {pname}[/]: {skipped[name]}")
        timings = _time_round_robin(steps, repeats, min_sample_s)
        results.append(ProblemResult(pname, problem.n_elements, len(psizes), timings))
        del problem, steps

    hp = hyperparameters
    config = {
        "repeats": repeats,
        "statistic": "best (min) of the samples; medians also recorded",
        "min_sample_s": min_sample_s,
        "dtype": "float32",
        "profile": "mxnet",
        "hyperparameters": {k: getattr(hp, k) for k in hp.__dataclass_fields__},
        "bytes_per_element": BYTES_PER_ELEMENT,
        "numpy_chunk_size": list(chunk_sizes) if chunk_sizes else DEFAULT_CHUNK,
        "probe": "np.add(w, g, out=w); np.negative(m, out=m); np.negative(s, out=s)",
        "quick": quick,
    }
    res = BenchResults(results, machine_info(), config, skipped)
    out.print(res.table())
    fractions = gpu_bandwidth_fractions(res)
    if fractions:
        config["cupy_fraction_of_device_probe"] = fractions
        out.print("cupy vs the device 4-read/3-write probe (goal >= 85% at >= 2^24 elements, "
                  ">= 70% for resnet50): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in fractions.items()))
    if json_path is not None:
        Path(json_path).write_text(json.dumps(res.to_json(), indent=2) + "\n")
        out.print(f"wrote {json_path}")
    if png_path is not None:
        _plot(res, Path(png_path), out)
    return res


def _plot(res: BenchResults, path: Path, out: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        out.print(f"[yellow]no plot[/]: matplotlib is not installed ({e}); "
                  "pip install adabelief-conformance[plot]")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    single = [p for p in res.problems if p.tensors == 1]
    multi = [p for p in res.problems if p.tensors > 1]
    for i, name in enumerate(n for n in res.backends() if n != PROBE):
        color = f"C{i}"
        pts = [(p.elements, p.ratio(name)) for p in single if name in p.timings]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=color, label=name)
        for p in multi:
            if name in p.timings:
                ax.plot([p.elements], [p.ratio(name)], marker="*", markersize=12, color=color,
                        linestyle="none")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("elements (float32); stars: ResNet-50's 161 tensors")
    ax.set_ylabel("step time / 4R3W bandwidth probe")
    ax.set_title(f"AdaBelief step ({res.machine['cpu']}, numpy {res.machine['numpy']})", fontsize=9)
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
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--png", help="plot the ratios here (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = ap.parse_args(argv)
    run_bench([int(x) for x in args.sizes] if args.sizes else None, not args.no_resnet50,
              args.backends, args.repeats, args.json, args.png, chunk_sizes=args.chunks,
              quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
