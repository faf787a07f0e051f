"""The benchmark harness: ResNet-50's shapes, round-robin timing, the quick run's JSON and table."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

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
