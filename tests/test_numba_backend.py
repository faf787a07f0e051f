"""The Numba backend: agreement with the reference, and bit-identity with the host build of
the CUDA kernel source (serial and prange variants)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from test_native import (
    CLIPS,
    DTYPE_NAMES,
    PROFILES,
    SCENARIOS,
    bit_identity_failures,
    bundled_failures,
    golden_mismatches,
    make_case,
    same_bits,
)

from adabelief_conformance import Implementation, request_from_case
from adabelief_conformance import _vectors as V
from adabelief_conformance._native import FlatPlan, FlatStepper, HostLibrary, host_library
from adabelief_conformance._numba_backend import NumbaBackend, NumbaFlatStepper

pytest.importorskip("numba", reason="numba not installed (pip install adabelief-conformance[numba])")


@pytest.fixture(scope="session")
def numba_backend() -> NumbaBackend:
    return NumbaBackend()  # compiles (or loads from Numba's cache) once per session


@pytest.fixture(scope="session")
def host_lib() -> HostLibrary:
    return host_library()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_numba_agrees_with_reference(numba_backend: NumbaBackend, scenario: str, profile: str,
                                     dtype: str) -> None:
    case = make_case(scenario, profile, dtype)
    bad = golden_mismatches(case, numba_backend.run(request_from_case(case)))
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "prange"])
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
def test_numba_is_bit_identical_to_host_build(host_lib: HostLibrary, profile: str, dtype: str,
                                              clip: float | None, parallel: bool) -> None:
    def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
        return NumbaFlatStepper(plan, w, m, s, parallel=parallel)

    bad = bit_identity_failures(make, host_lib, profile, dtype, clip)
    assert not bad, "\n".join(bad[:10])


def test_numba_passes_the_bundled_vectors(numba_backend: NumbaBackend,
                                          bundled_cases: list[V.VectorCase]) -> None:
    bad = bundled_failures(numba_backend, bundled_cases)
    assert not bad, "\n".join(bad[:10])


def test_numba_stepper_updates_in_place_and_skips() -> None:
    plan = FlatPlan([2, 5], "float32", "mxnet")
    w = np.linspace(-1, 1, 7, dtype=np.float32)
    m, s = np.zeros(7, np.float32), np.zeros(7, np.float32)
    st = NumbaFlatStepper(plan, w, m, s)
    assert st.w is w and st.m is m and st.s is s
    before = w.copy()
    assert not st.step(np.ones(7, np.float32), rescale_grad=0.0)  # skip rule: nothing runs
    assert same_bits(w, before) and list(plan.t) == [1, 1]
    assert st.step(np.ones(7, np.float32))
    assert (w < before).all()


def test_is_an_implementation(numba_backend: NumbaBackend) -> None:
    assert isinstance(numba_backend, Implementation)
    assert numba_backend.name == "numba"
    assert set(numba_backend.dtypes) == {"float32", "float64", "float16-mp"}


def test_missing_numba_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    with pytest.raises(ImportError, match=r"pip install adabelief-conformance\[numba\]"):
        NumbaBackend()
