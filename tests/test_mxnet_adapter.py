"""The real MXNet 2.0.0b1 AdaBelief (examples/mxnet_adapter) against the golden vectors.

Needs the separate environment of ``examples/mxnet_adapter/setup.sh`` (mxnet==2.0.0b1 needs
numpy<1.24): ``.mxnet-venv/bin/python`` in the repository root, or the interpreter named by
``ADABELIEF_MXNET_PYTHON``. Without one, every test here is skipped with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adabelief_conformance._expectations import load_expectations
from adabelief_conformance._runner import check, load_cases, select_cases
from adabelief_conformance._subprocess import SubprocessImplementation

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "examples" / "mxnet_adapter" / "adapter.py"
STEP_EXPECTATIONS = ROOT / "examples" / "mxnet_adapter" / "expectations-step.json"
# Enough to cover the fused kernel's algebra, clipping order and bounds, weight decay and epsilon,
# in a few seconds.
FUSED_SUITES = ("defaults", "clipping", "weight-decay", "epsilon")
# Where step() deviates from the fused kernels (the expectation file lists those cases).
STEP_SUITES = ("clipping", "rescale", "weight-decay")


def _interpreter() -> Path | None:
    named = os.environ.get("ADABELIEF_MXNET_PYTHON")
    path = Path(named) if named else ROOT / ".mxnet-venv" / "bin" / "python"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def mxnet_python() -> Path:
    python = _interpreter()
    if python is None:
        pytest.skip("no MXNet environment: run examples/mxnet_adapter/setup.sh (creates "
                    ".mxnet-venv) or set ADABELIEF_MXNET_PYTHON to a Python with "
                    "mxnet==2.0.0b1 and this package installed")
    return python


def _adapter(python: Path, mode: str) -> Iterator[SubprocessImplementation]:
    # Importing mxnet takes a few seconds: a generous handshake timeout.
    with SubprocessImplementation([str(python), str(ADAPTER), "--mode", mode], timeout=60,
                                  startup_timeout=120, cwd=ROOT) as impl:
        yield impl


@pytest.fixture(scope="module")
def fused_multi(mxnet_python: Path) -> Iterator[SubprocessImplementation]:
    yield from _adapter(mxnet_python, "fused-multi")


@pytest.fixture(scope="module")
def step_mode(mxnet_python: Path) -> Iterator[SubprocessImplementation]:
    yield from _adapter(mxnet_python, "step")


def test_handshake_declares_what_mxnet_supports(fused_multi: SubprocessImplementation) -> None:
    assert fused_multi.profiles == {"mxnet"}
    # The fused kernels reject float64 weights, so the adapter must not declare it.
    assert fused_multi.dtypes == {"float32", "float16-mp"}
    assert "2.0.0" in fused_multi.version


@pytest.mark.parametrize("dtype", ["float32", "float16-mp"])
def test_fused_multi_tensor_kernel_conforms(fused_multi: SubprocessImplementation, dtype: str) -> None:
    cases = select_cases(load_cases(suites=FUSED_SUITES), profiles=["mxnet"], dtypes=[dtype],
                         suites=FUSED_SUITES)
    assert cases
    report = check(fused_multi, cases)
    problems = [f"{r.id}: {r.status}: {r.outcome.message}" for r in report.problems()]
    assert not problems, "\n".join(problems)
    assert report.totals.counts["passed"] == len(cases)


def test_step_deviations_are_exactly_the_expectation_file(step_mode: SubprocessImplementation) -> None:
    """step() fails exactly the cases expectations-step.json lists (strict entries: a listed case
    that passes again, or an unlisted failure, makes the run non-conforming)."""
    cases = select_cases(load_cases(suites=STEP_SUITES), profiles=["mxnet"], suites=STEP_SUITES)
    expectations = load_expectations(STEP_EXPECTATIONS).with_known(load_cases())
    report = check(step_mode, cases, expectations=expectations)
    problems = [f"{r.id}: {r.status}: {r.outcome.message}" for r in report.problems()]
    stale = [f"{e.describe()}: {why}" for e, why in report.stale_entries]
    assert not problems and not stale, "\n".join(problems + stale)
    assert report.totals.counts["xfailed"] > 0
