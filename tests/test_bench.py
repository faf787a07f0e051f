"""The benchmark harness: ResNet-50's shapes, round-robin timing, the quick run's JSON and table,
min / median / max and page faults per cell, the load-sensitivity process, the reference
throughput cells, the goals block and the plot's clipping. No test asserts a timing."""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from adabelief_conformance import _bench
from adabelief_conformance._bench import (
    RESNET50_SHAPES,
    BenchProblem,
    _time_round_robin,
    main,
    run_bench,
)


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_resnet50_has_torchvisions_161_tensors() -> None:
    assert len(RESNET50_SHAPES) == 161
    assert sum(math.prod(s) for s in RESNET50_SHAPES) == 25_557_032  # torchvision's count
    convs = [s for s in RESNET50_SHAPES if len(s) == 4]
    vectors = [s for s in RESNET50_SHAPES if len(s) == 1]
    assert len(convs) == 53 and len(vectors) == 53 * 2 + 1  # BN gamma/beta, fc bias
    assert RESNET50_SHAPES[0] == (64, 3, 7, 7)
    assert RESNET50_SHAPES[-2:] == ((1000, 2048), (1000,))
    # Every convolution is followed by its BatchNorm's gamma and beta, of its output width.
    for i, s in enumerate(RESNET50_SHAPES[:-2]):
        if len(s) == 4:
            assert RESNET50_SHAPES[i + 1] == RESNET50_SHAPES[i + 2] == (s[0],)


def test_round_robin_takes_every_sample_and_rotates() -> None:
    order: list[str] = []

    def make(name: str) -> Callable[[], None]:
        return lambda: order.append(name)

    timings = _time_round_robin({"a": make("a"), "b": make("b"), "c": make("c")}, repeats=3,
                                min_sample_s=0.0)
    assert all(len(t.samples) == 3 and t.number == 1 for t in timings.values())
    rounds = order[6:]  # after two warm-up calls each
    assert rounds == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def _double_probe(p: BenchProblem) -> Callable[[], object]:
    w, m, s = p.state()

    def step() -> None:  # the probe's traffic, twice
        for _ in range(2):
            np.add(w, p.g, out=w)
            np.negative(m, out=m)
            np.negative(s, out=s)

    return step


def test_quick_run_writes_json_table_and_plot(tmp_path: Path) -> None:
    console = _quiet()
    jpath, ppath = tmp_path / "bench.json", tmp_path / "bench.png"
    res = run_bench(quick=True, backends=("naive", "numpy"), repeats=3, json_path=jpath,
                    png_path=ppath, extra={"double-probe": _double_probe}, console=console)
    data = json.loads(jpath.read_text())
    assert data["machine"]["numpy"] == np.__version__
    assert data["machine"]["cpu_count"] >= 1
    assert data["config"]["quick"] is True
    problems = {r["problem"]: r for r in data["results"]}
    assert set(problems) == {"1000", "2e4", "resnet50/1000"}
    assert problems["resnet50/1000"]["tensors"] == 161
    for r in data["results"]:
        b = r["backends"]
        assert set(b) == {"probe", "naive", "numpy", "double-probe"}
        assert b["probe"]["ratio_to_probe"] == 1.0
        for v in b.values():
            assert len(v["samples_s"]) == 3
            assert v["best_s"] > 0 and v["ratio_to_probe"] > 0 and math.isfinite(v["ratio_to_probe"])
        assert b["numpy"]["speedup_over_naive"] > 0
    assert res.problems[0].ratio("probe") == 1.0
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "probe" in text and "double-probe" in text and "GB/s" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no plot" in text
    else:
        assert ppath.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunk_sizes_become_columns() -> None:
    res = run_bench([2000], resnet50=False, backends=("numpy",), repeats=1,
                    chunk_sizes=(1024, 4096, 1000), console=_quiet(), quick=True)
    assert list(res.problems[0].timings) == ["probe", "numpy@1K", "numpy@4K", "numpy@1000"]


def test_unavailable_backends_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_numba(parallel: bool) -> _bench.StepFactory:
        raise ImportError("No module named 'numba'")

    def broken(p: BenchProblem) -> Callable[[], object]:
        raise RuntimeError("no device")

    monkeypatch.setattr(_bench, "numba_factory", no_numba)
    console = _quiet()
    res = run_bench([1000], resnet50=False, backends=("numba", "numpy"), repeats=1,
                    extra={"broken": broken}, console=console, quick=True)
    assert "numba" in res.skipped and "No module named" in res.skipped["numba"]
    assert res.skipped["broken"] == "RuntimeError: no device"
    assert list(res.problems[0].timings) == ["probe", "numpy"]
    assert "skipping numba" in console.file.getvalue()  # type: ignore[attr-defined]


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        run_bench([1000], resnet50=False, backends=("fortran",), console=_quiet(), quick=True)


def test_command_line_quick_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    assert main(["--quick", "--no-resnet50", "--sizes", "1e3", "--backends", "numpy",
                 "--repeats", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["problem"] for r in data["results"]] == ["1000"]


@pytest.mark.gpu
def test_gpu_benchmark_reports_the_share_of_device_bandwidth() -> None:
    from adabelief_conformance.backends._cupy import device_available

    ok, reason = device_available()
    if not ok:
        pytest.skip(f"no CUDA device: {reason}")
    from adabelief_conformance._bench import gpu_bandwidth_fractions, run_bench

    res = run_bench(sizes=[1 << 20], resnet50=False, backends=("cupy", "cupy-probe"), quick=True)
    fractions = gpu_bandwidth_fractions(res)
    assert set(fractions) == {"1M"} or len(fractions) == 1
    assert all(0 < f < 10 for f in fractions.values())


# ----- spread, page faults, load, reference throughput, goals, plot -----------------------------

def test_json_carries_min_median_max_and_faults_per_step(tmp_path: Path) -> None:
    console = _quiet()
    jpath = tmp_path / "bench.json"
    run_bench([1000], resnet50=False, backends=("naive", "numpy"), repeats=3, json_path=jpath,
              console=console, quick=True, reference=False)
    data = json.loads(jpath.read_text())
    b = data["results"][0]["backends"]
    for name, v in b.items():
        assert v["min_s"] == v["best_s"] == min(v["samples_s"])
        assert v["max_s"] == max(v["samples_s"])
        assert v["min_s"] <= v["median_s"] <= v["max_s"]
        assert v["ratio_to_probe"] > 0 and v["median_ratio_to_probe"] > 0 and v["max_ratio_to_probe"] > 0
        rr = v["round_ratios_to_probe"]
        assert rr["min"] <= rr["median"] <= rr["max"]
        assert v["minor_faults_per_step"] is None or v["minor_faults_per_step"] >= 0
        assert isinstance(v["allocation_bound"], bool) and isinstance(v["note"], str)
        if name == "probe":
            assert rr == {"min": 1.0, "median": 1.0, "max": 1.0}
    assert "fresh temporaries every step" in b["naive"]["note"]
    assert data["load_sensitivity"] == {"skipped": "off (--quick; --load turns it on)"}
    assert data["throughput"] == []
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for header in ("min", "median", "max", "x probe (min)", "x probe (median)", "faults/step", "note"):
        assert header in text


def test_page_faults_are_counted_per_step_and_label_the_row(monkeypatch: pytest.MonkeyPatch) -> None:
    faults = iter(range(0, 10_000, 50))  # the counter moves by 50 around every sample

    def fake_faults() -> int:
        return next(faults)

    t = _bench.Timing(number=5, samples=[1.0, 2.0], faults=[250, 250])
    assert t.faults_per_step == 50.0
    # Labelled when the faults reach a tenth of the pages of one float32 array of the problem.
    pages = 500 * mmap.PAGESIZE // 4  # elements whose arrays have 500 pages each: 50 is a tenth
    assert t.allocation_bound(pages) and not t.allocation_bound(pages + mmap.PAGESIZE)
    assert _bench._note("naive", t, pages, None) == "allocation-bound; fresh temporaries every step"
    assert _bench._note("naive", t, 100 * pages, None) == "fresh temporaries every step"
    quiet = _bench.Timing(number=5, samples=[1.0], faults=[0])
    assert not quiet.allocation_bound(1) and _bench._note("numpy", quiet, 1, None) == ""
    assert _bench._note("numba-parallel", quiet, 1, 4) == "4 threads"
    assert _bench.Timing(number=1, samples=[1.0]).faults_per_step is None  # not counted

    monkeypatch.setattr(_bench, "_minor_faults", fake_faults)
    timings = _time_round_robin({"a": lambda: None}, repeats=2, min_sample_s=0.0)
    assert timings["a"].faults == [50, 50] and timings["a"].faults_per_step == 50.0


def _timing(samples: list[float]) -> _bench.Timing:
    return _bench.Timing(number=1, samples=samples, faults=[0] * len(samples))


def _results(problems: list[_bench.ProblemResult],
             cells: list[_bench.ThroughputCell] | None = None) -> _bench.BenchResults:
    return _bench.BenchResults(problems, {"usable_cpus": 2, "cpu": "x", "numpy": "1"},
                               {"repeats": 3, "threads": None}, {}, throughput=cells or [])


def test_goals_are_judged_on_per_round_ratios() -> None:
    probe = _timing([1.0, 2.0, 1.0])
    p5 = _bench.ProblemResult("1e5", 100_000, 1, {
        "probe": probe, "numba": _timing([1.2, 2.8, 1.3]), "numpy": _timing([5.0, 10.0, 5.0])})
    # The twin problems move the same bytes: numpy's times are compared, not the probe's noise.
    mixed = _bench.ProblemResult(_bench.MULT_PROBLEM, 1_000_000, 10_000, {
        "probe": _timing([2.0, 2.0, 2.0]), "numpy": _timing([6.0, 6.6, 7.2])})
    equal = _bench.ProblemResult(_bench.EQUAL_MULT_PROBLEM, 1_000_000, 10_000, {
        "probe": _timing([1.0, 1.0, 1.0]), "numpy": _timing([6.0, 6.0, 6.0])})
    fast = _bench.ThroughputCell("fast", "fast", 1, "setup", rates=[2e6, 1e6, 3e6])
    goals = {g.goal.split(" ")[0] + str(i): g
             for i, g in enumerate(_bench.evaluate_goals(_results([p5, mixed, equal], [fast])))}
    numba, mult, ref, numpy_large, speedup, numba_large = goals.values()
    assert numba.figure == _bench.Spread(1.2, 1.3, 1.4) and numba.met is True
    assert numba.measured().startswith("x1.30 (x1.20-x1.40)")
    assert mult.figure is not None and mult.figure.median == pytest.approx(1.1)
    assert mult.figure.min == pytest.approx(1.0) and mult.figure.max == pytest.approx(1.2)
    assert mult.met is True  # 1.1: at the edge of the 10% tolerance
    assert ref.figure == _bench.Spread(1e6, 2e6, 3e6) and ref.met is True
    assert ref.measured().startswith("2.00e6/s (1.00e6-3.00e6)")
    assert numpy_large.met is None and numpy_large.verdict == "not measured"
    assert "no problem of >= 1e7 elements" in numpy_large.measured()
    assert numba_large.met is None and speedup.met is None
    # numpy against naive on the large problems: naive's time over numpy's, round by round.
    big = _bench.ProblemResult("1e7", 10_000_000, 1, {
        "probe": _timing([1.0, 1.0, 1.0]), "numpy": _timing([2.0, 2.0, 3.0]),
        "naive": _timing([8.0, 3.0, 9.0]), "numba": _timing([1.0, 1.1, 1.2])})
    by_goal = {g.goal: g for g in _bench.evaluate_goals(_results([big]))}
    speedup = by_goal["numpy >= 2x faster than naive at >= 1e7 elements"]
    assert speedup.figure == _bench.Spread(1.5, 3.0, 4.0) and speedup.met is True
    numba_large = by_goal["numba <= 1.15x the probe at >= 1e7 elements"]
    assert numba_large.figure == _bench.Spread(1.0, 1.1, 1.2) and numba_large.met is True
    # A failed reference cell leaves its goal unmeasured, with the error.
    failed = _bench.ThroughputCell("fast", "fast", 1, "setup", error="RuntimeError: boom")
    ref = _bench.evaluate_goals(_results([p5], [failed]))[2]
    assert ref.met is None and "RuntimeError: boom" in ref.measured()


def test_goals_block_is_printed(tmp_path: Path) -> None:
    console = _quiet()
    jpath = tmp_path / "bench.json"
    run_bench([100_000], resnet50=False, backends=("numpy",), repeats=3, json_path=jpath,
              extra={"numba": _double_probe}, console=console, quick=True, reference=False)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "goals" in text
    assert "numba <= 1.5x the probe at 1e5 elements" in text
    assert "reference fast path >= 1.00e6 element-steps/s per core" in text
    goals = json.loads(jpath.read_text())["goals"]
    assert len(goals) == 6
    assert all(g["verdict"] in ("met", "not met", "not measured") for g in goals)
    numba = goals[0]
    assert numba["verdict"] in ("met", "not met") and numba["min"] <= numba["median"] <= numba["max"]
    assert goals[2]["verdict"] == "not measured"  # no reference throughput in this run


def test_the_full_run_has_the_equal_multiplier_twin() -> None:
    problems = {name: (sizes, mults) for name, sizes, mults in _bench.bench_problems([10], True, False)}
    mixed, equal = problems[_bench.MULT_PROBLEM], problems[_bench.EQUAL_MULT_PROBLEM]
    assert mixed[0] == equal[0] == (100,) * 10_000
    assert mixed[1] == (1.0, 0.0) * 5_000 and equal[1] == (1.0,) * 10_000
    quick = [name for name, _, _ in _bench.bench_problems([10], True, True)]
    assert quick == ["10", "resnet50/1000"]


def test_plot_keeps_to_the_decision_range() -> None:
    lo, hi = _bench.PLOT_RANGE
    assert (lo, hi) == (0.5, 20.0)
    got = _bench.clip_to_range([0.1, 0.5, 1.0, 19.9, 20.0, 370.0, math.inf, -math.inf])
    assert got == [(0.5, -1), (0.5, 0), (1.0, 0), (19.9, 0), (20.0, 0), (20.0, 1), (20.0, 1), (0.5, -1)]
    (v, where), = _bench.clip_to_range([math.nan])
    assert math.isnan(v) and where == 0
    assert _bench.clip_to_range([3.0, 0.2], lo=1.0, hi=2.0) == [(2.0, 1), (1.0, -1)]


def test_load_sensitivity_starts_and_stops_its_busy_process() -> None:
    seen: list[Any] = []

    @contextlib.contextmanager
    def recording() -> Iterator[Any]:
        with _bench.busy_core() as proc:
            assert proc.is_alive()
            seen.append(proc)
            yield proc
        assert not proc.is_alive()

    problem = _bench.make_problem("1000", (1000,))
    res = _bench.measure_load({"probe": _bench.probe_factory, "numba-parallel": _double_probe,
                               "other": _double_probe}, problem, repeats=2, min_sample_s=0.0,
                              busy=recording)
    assert len(seen) == 1 and not seen[0].is_alive() and seen[0].exitcode is not None
    assert list(res.loaded) == ["probe", "numba-parallel"]  # only the load backends
    assert all(len(t.samples) == 2 for t in [*res.loaded.values(), *res.unloaded.values()])
    assert res.slowdown("numba-parallel") > 0
    data = res.to_json()
    assert data["busy_processes"] == 1 and data["backends"]["probe"]["loaded_over_unloaded"] > 0


def test_load_sensitivity_row_in_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[bool] = []

    @contextlib.contextmanager
    def fake_busy() -> Iterator[None]:  # no process in this test: the wiring only
        started.append(True)
        yield None

    monkeypatch.setattr(_bench, "busy_core", fake_busy)
    console = _quiet()
    jpath = tmp_path / "bench.json"
    run_bench([1000], resnet50=False, backends=("numpy",), repeats=2, json_path=jpath,
              extra={"numba-parallel": _double_probe}, console=console, quick=True, load=True,
              load_size=2000, reference=False)
    assert started == [True]
    load = json.loads(jpath.read_text())["load_sensitivity"]
    assert load["problem"] == "2000" and load["elements"] == 2000
    assert set(load["backends"]) == {"probe", "numpy", "numba-parallel"}
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "load sensitivity" in text and "loaded / unloaded" in text


def test_numba_parallel_threads_are_pinned_and_recorded(tmp_path: Path) -> None:
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    jpath = tmp_path / "bench.json"
    console = _quiet()
    res = run_bench([1000], resnet50=False, backends=("numba-parallel",), repeats=1, threads=1,
                    json_path=jpath, console=console, quick=True, reference=False)
    data = json.loads(jpath.read_text())
    assert data["config"]["threads"] == 1 and data["machine"]["numba_threads"] == 1
    assert data["results"][0]["backends"]["numba-parallel"]["note"] == "1 thread"
    assert numba.get_num_threads() == before  # restored after the run
    assert "numba-parallel" in res.problems[0].timings
    res = run_bench([1000], resnet50=False, backends=("numba-parallel",), repeats=1,
                    threads=10**6, console=_quiet(), quick=True, reference=False)
    assert "threads asked for" in res.skipped["numba-parallel"]


def test_a_failing_throughput_cell_reports_one_line() -> None:
    calls = {"n": 0}

    def boom() -> tuple[int, float, dict[str, Any]]:
        calls["n"] += 1
        raise RuntimeError("the reference\n  is being rewritten")

    cell = _bench.measure_throughput("fast", "reference fast path", "2 cases", boom, repeats=3)
    assert calls["n"] == 1 and cell.error == "RuntimeError: the reference is being rewritten"
    assert cell.spread is None and cell.to_json()["median_per_s"] is None

    runs: Iterator[tuple[int, float, dict[str, Any]]] = iter([(100, 0.5, {}), (100, 0.25, {}),
                                                              (100, 1.0, {})])
    cell = _bench.measure_throughput("x", "x", "s", lambda: next(runs), repeats=3, processes=2)
    assert cell.spread == _bench.Spread(100.0, 200.0, 400.0) and cell.error is None
    assert cell.to_json()["median_per_process_per_s"] == 100.0


def test_reference_throughput_survives_a_failing_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adabelief_reference

    def broken(case: Any, *a: Any, **k: Any) -> Any:
        raise ValueError("half-rewritten")

    monkeypatch.setattr(adabelief_reference, "fast_expected", broken)
    console = _quiet()
    jpath = tmp_path / "bench.json"
    run_bench([1000], resnet50=False, backends=("numpy",), repeats=1, json_path=jpath,
              console=console, quick=True)
    cells = {c["key"]: c for c in json.loads(jpath.read_text())["throughput"]}
    assert cells["fast"]["error"] == "ValueError: half-rewritten"
    assert cells["mpmath"]["error"] is None or cells["mpmath"]["error"].count("\n") == 0
    assert cells["campaign-1"]["skipped"] == cells["campaign-2"]["skipped"] == "not with --quick"
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "reference and campaign throughput" in text
    assert "failed: ValueError: half-rewritten" in text
