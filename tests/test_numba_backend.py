"""The Numba backend: agreement with the reference, bit-identity with the host build of the
CUDA kernel source (serial and prange variants), its float16 rounding on its own, and that its
loops stay vectorised (the condition for running at memory bandwidth)."""

from __future__ import annotations

import platform
import re
import sys

import numpy as np
import pytest
from adabelief_reference import Hyperparameters
from test_native import (
    CLIPS,
    DTYPE_NAMES,
    PROFILES,
    SCENARIOS,
    bit_identity_failures,
    bundled_failures,
    golden_mismatches,
    make_case,
    random_grad,
    random_state,
    same_bits,
)

from adabelief_conformance import Implementation, request_from_case
from adabelief_conformance import _vectors as V
from adabelief_conformance.backends import _numba as NB
from adabelief_conformance.backends._native import (
    FlatPlan,
    FlatStepper,
    HostLibrary,
    NativeFlatStepper,
    host_library,
)
from adabelief_conformance.backends._numba import NumbaBackend, NumbaFlatStepper

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


# Sizes around this backend's own boundaries: the prange chunk, the float16-mp block, and
# tensors smaller than either (the vectorised loops' scalar remainders), empty ones included.
NUMBA_SIZES = (NB.CHUNK + 1, 5, 0, NB._BLOCK - 1, NB._BLOCK + 1, NB.CHUNK, 2 * NB.CHUNK + 9, 1)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "prange"])
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
def test_numba_is_bit_identical_across_chunks_and_blocks(host_lib: HostLibrary, profile: str,
                                                         dtype: str, clip: float | None,
                                                         parallel: bool) -> None:
    rng = np.random.default_rng([7, PROFILES.index(profile), DTYPE_NAMES.index(dtype), clip is None])
    hp = Hyperparameters(learning_rate=0.01, wd=0.02, clip_gradient=clip)
    k = len(NUMBA_SIZES)

    def plan() -> FlatPlan:
        return FlatPlan(NUMBA_SIZES, dtype, profile, hp, wd_mults=np.linspace(0, 3, k).tolist(),
                        t=list(range(k)))

    ref_plan = plan()
    w, m, s = random_state(rng, ref_plan)
    ref = NativeFlatStepper(ref_plan, w.copy(), m.copy(), s.copy(), host_lib)
    test = NumbaFlatStepper(plan(), w.copy(), m.copy(), s.copy(), parallel=parallel)
    for step in range(3):
        g = random_grad(rng, ref_plan)
        assert ref.step(g) and test.step(g)
        for name, a, b in zip(("w", "m", "s", "w16"), ref.snapshot(), test.snapshot()):
            assert (a is None) == (b is None), name
            if a is not None and b is not None:
                assert same_bits(a, b), f"step {step}: {name} differs"


def _float32_bits_to_test() -> np.ndarray:
    """Every sign and exponent, with the mantissas where float16 rounding turns: around the
    half-way points of the 13 dropped bits, of the subnormal shifts, and the extremes; plus
    random bit patterns (NaNs with payloads included)."""
    mants = {0, 1, 2, 0x7FFFFF, 0x7FFFFE, 0x400000, 0x3FFFFF}
    for shift in range(13, 25):  # the dropped bits: 13 for normals, up to 24 for subnormals
        half = 1 << (shift - 1)
        for base in (0, 1 << shift, 3 << shift, 0x7FFFFF & ~((1 << shift) - 1)):
            mants.update(x & 0x7FFFFF for x in (base + half - 1, base + half, base + half + 1))
    exps = np.arange(256, dtype=np.uint32) << 23
    man = np.array(sorted(mants), dtype=np.uint32)
    grid = (exps[:, None] | man[None, :]).ravel()
    rnd = np.random.default_rng(3).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([grid, grid | np.uint32(0x80000000), rnd])


def test_float16_rounding_matches_the_host_build(host_lib: HostLibrary) -> None:
    NB.numba_kernels()
    bits = _float32_bits_to_test()
    ours = np.empty(bits.shape[0], dtype=np.uint16)
    NB._narrow(bits, ours)
    ref = host_lib.float_to_half(bits.view(np.float32)).view(np.uint16)
    bad = np.flatnonzero(ours != ref)  # NaN payloads included: the two compute the same bits
    assert not len(bad), [(hex(int(bits[i])), hex(int(ours[i])), hex(int(ref[i]))) for i in bad[:5]]
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    assert same_bits(NB._WIDEN, host_lib.half_to_float(every.view(np.float16)))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="checks x86 vector instructions")
def test_float_loops_are_vectorised() -> None:
    """Each of the three loops of _span (no clip; clip then decay; decay then clip) must compile
    to packed square roots and divisions: a branch or a float64 promotion slipped into the loop
    body stops LLVM from vectorising it, and the backend falls to several times the bandwidth
    probe. Compiled afresh (no disk cache), since Numba shows no assembly for cached code."""
    import numba

    NB.numba_kernels()
    span = numba.njit(error_model="numpy", fastmath=False)(NB._span_py)
    f32 = np.zeros(4, np.float32)
    span(f32, f32.copy(), f32.copy(), f32.copy(), np.float32(1), np.float32(0),
         np.zeros(7, np.float32), 0)
    asm = span.inspect_asm(span.signatures[0])
    for op in ("sqrtps", "divps"):
        assert len(re.findall(rf"\bv?{op}\b", asm)) >= 3, f"{op}: a float32 loop is not vectorised"
