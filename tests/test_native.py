"""The host build of the CUDA kernel source ("cuda-host"), the flat-plan host side, and the
device compile check.

The helpers at the top (``make_case``, ``golden_mismatches``,
``bundled_failures``, ``bit_identity_failures``, ``same_bits``) are shared with test_numba_backend.py and
test_cupy_backend.py, which import them from this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from adabelief_reference import (
    DTYPES,
    FLOAT16,
    CaseInputs,
    Finite,
    Format,
    GoldenCase,
    Hyperparameters,
    ParamInput,
    Special,
    StepInput,
    golden,
    tolerances,
)

from adabelief_conformance import Implementation, ParamResult, request_from_case
from adabelief_conformance import _vectors as V
from adabelief_conformance._compare import run_case
from adabelief_conformance._ulp import ulp
from adabelief_conformance.backends import _native
from adabelief_conformance.backends._cupy import KERNEL_SOURCE
from adabelief_conformance.backends._native import (
    DEVICE_OPTIONS,
    HOST_CFLAGS,
    HOST_SOURCE,
    STEP_HEADER,
    FlatPlan,
    FlatStepper,
    HostLibrary,
    NativeFlatStepper,
    NativeHostBackend,
    build_host_library,
    check_device_compile,
    device_ptx,
    find_nvcc,
    host_library,
)

PROFILES = ("mxnet", "mxnet-doc")
DTYPE_NAMES = ("float32", "float64", "float16-mp")
SCENARIOS = ("basic", "clip", "clip-zero", "clip-negative", "skip", "specials", "subnormal",
             "no-bias-correction")

# ----- shared helpers ---------------------------------------------------------------------------

_NP = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
# (w, g, m, s) magnitudes, epsilon and wd that put values, and results, among the subnormals
# (every other gradient is zero, so that m decays through the subnormals).
_TINY = {
    "float32": (1e-38, 1e-40, 1e-41, 1e-44, 1e-42, 0.01),
    "float64": (1e-307, 1e-309, 1e-311, 1e-315, 1e-313, 0.01),
    "float16-mp": (3e-5, 2e-6, 1e-40, 1e-44, 1e-44, 0.0),  # w16 and g: float16 subnormals
}


def _values(rng: np.random.Generator, n: int, scale: float, fmt: str, positive: bool = False) -> np.ndarray:
    x = rng.standard_normal(n) * scale
    with np.errstate(under="ignore"):
        return (np.abs(x) if positive else x).astype(_NP[fmt])


def _floats(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in a)


def make_case(scenario: str, profile: str, dtype: str, seed: int = 0) -> CaseInputs:
    """A small case: 3 parameters of different sizes, update counts and multipliers, 3 to 6 steps."""
    rng = np.random.default_rng([seed, SCENARIOS.index(scenario), PROFILES.index(profile),
                                 DTYPE_NAMES.index(dtype)])
    spec = DTYPES[dtype]
    fw, fc, fg = spec.master.name, spec.compute.name, spec.storage.name
    sizes, ts = (5, 1, 7), (0, 7, 1000)
    lr_mults, wd_mults = (1.0, 0.5, 2.0), (1.0, 0.0, 3.0)
    hp = Hyperparameters(learning_rate=0.01, wd=0.01)
    scales = (1.0, 1.0, 0.1, 1e-3)  # w, g, m, s
    rescales: list[float | None] = [None, None, None]
    if scenario == "clip":
        hp = Hyperparameters(learning_rate=0.01, wd=0.5, clip_gradient=0.3, rescale_grad=2.0)
    elif scenario == "clip-zero":
        hp = Hyperparameters(wd=0.05, clip_gradient=0.0)
    elif scenario == "clip-negative":
        hp = Hyperparameters(wd=0.05, clip_gradient=-1.0)
    elif scenario == "skip":
        rescales = [1.0, 0.0, math.nan, 0.5, math.inf, -0.0]
    elif scenario == "subnormal":
        w_s, g_s, m_s, s_s, eps, wd = _TINY[dtype]
        scales = (w_s, g_s, m_s, s_s)
        hp = Hyperparameters(learning_rate=1e-3, epsilon=eps, wd=wd)
    elif scenario == "no-bias-correction":
        hp = Hyperparameters(learning_rate=0.01, correct_bias=False, wd=0.01, clip_gradient=1.5)
    params = []
    for i, n in enumerate(sizes):
        w = _values(rng, n, scales[0], fw)
        m = _values(rng, n, scales[2], fc)
        s = _values(rng, n, scales[3], fc, positive=True)
        if scenario == "specials" and n > 1:
            w[0], m[1 % n], s[-1] = (np.inf, -0.0, np.nan) if i == 0 else (-np.inf, np.nan, np.inf)
        params.append(ParamInput(_floats(w), _floats(m), _floats(s), t=ts[i], lr_mult=lr_mults[i],
                                 wd_mult=wd_mults[i], index=i))
    steps = []
    for k, r in enumerate(rescales):
        grads = []
        for n in sizes:
            g = _values(rng, n, scales[1], fg)
            if scenario == "subnormal":
                g[::2] = 0.0
            if scenario == "specials" and n > 1 and k < 2:
                g[k] = (np.nan, np.inf)[k]
                g[-1] = -np.inf
            grads.append(_floats(g))
        steps.append(StepInput(tuple(grads), r))
    return CaseInputs(profile, dtype, hp, tuple(params), tuple(steps))


@cache
def golden_of(case: CaseInputs) -> GoldenCase:
    """golden() once per case for the whole session (the cases are hashable)."""
    return golden(case)


def _accepts(alt: Finite | Special, x: float, fmt: Format, n_tol: float) -> bool:
    if isinstance(alt, Special):
        return (alt.kind == "any" or (alt.kind == "nan" and math.isnan(x))
                or (alt.kind == "inf" and x == math.inf) or (alt.kind == "-inf" and x == -math.inf))
    if not math.isfinite(x):
        return False
    return x == alt.value or abs((x - alt.value) - alt.residual) <= n_tol * float(ulp(alt.sigma, fmt))


def golden_mismatches(case: CaseInputs, results: Sequence[Sequence[ParamResult]]) -> list[str]:
    """Every output element of ``results`` that no alternative of the golden values accepts
    (|got - exact| <= N ulp(sigma), spec/tolerances.json), described; empty when all conform."""
    gold = golden_of(case)
    spec = case.dtype_spec
    tol = tolerances()[case.dtype]
    fmts = {"w": spec.master, "m": spec.compute, "s": spec.compute, "w16": FLOAT16}
    names = ("w", "m", "s", "w16") if spec.multi_precision else ("w", "m", "s")
    bad: list[str] = []
    assert len(results) == len(case.steps)
    for k, step in enumerate(results):
        assert len(step) == len(case.params)
        for i, res in enumerate(step):
            for name in names:
                got = getattr(res, name)
                assert got is not None and got.dtype == np.dtype(fmts[name].name), (name, got)
                for j, x in enumerate(np.asarray(got, dtype=np.float64).tolist()):
                    alts = gold.steps[k][i][name][j]
                    if not any(_accepts(a, x, fmts[name], tol[name]) for a in alts):
                        bad.append(f"step {k} param {i} {name}[{j}] = {x!r} ({fmts[name].name}), expected {alts}")
    return bad


def bundled_failures(impl: Implementation, cases: Sequence[V.VectorCase]) -> list[str]:
    """Run every bundled case the implementation supports; one message per case that fails."""
    outcomes = [run_case(impl, vc) for vc in cases]
    return [f"{o.id}: {o.status}: {o.message}" for o in outcomes if o.status not in ("passed", "skipped")]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, except that any NaN matches any NaN (payloads are unspecified)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return bool(np.array_equal(nan_a, nan_b) and np.array_equal(a.view(u)[~nan_a], b.view(u)[~nan_b]))


def _sprinkle(rng: np.random.Generator, arr: np.ndarray) -> None:
    """Put NaN, +-inf, +-0 and subnormals at random places of ``arr`` (about 10% in all)."""
    n = arr.shape[0]
    tiny = float(np.finfo(arr.dtype).smallest_subnormal) * 64
    pick = rng.random(n)
    arr[pick < 0.01] = np.nan
    arr[(pick >= 0.01) & (pick < 0.02)] = np.inf
    arr[(pick >= 0.02) & (pick < 0.03)] = -np.inf
    arr[(pick >= 0.03) & (pick < 0.05)] = 0.0
    arr[(pick >= 0.05) & (pick < 0.06)] = -0.0
    sub = np.flatnonzero((pick >= 0.06) & (pick < 0.1))
    with np.errstate(under="ignore"):
        arr[sub] = (rng.standard_normal(len(sub)) * tiny).astype(arr.dtype)


def random_state(rng: np.random.Generator, plan: FlatPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat w, m, s for ``plan``, specials sprinkled in."""
    n = plan.n_elements
    w = (rng.standard_normal(n) * 2.0).astype(plan.master_dtype)
    m = (rng.standard_normal(n) * 0.1).astype(plan.compute_dtype)
    s = (rng.random(n) * 1e-3).astype(plan.compute_dtype)
    for a in (w, m, s):
        _sprinkle(rng, a)
    return w, m, s


def random_grad(rng: np.random.Generator, plan: FlatPlan) -> np.ndarray:
    """A flat gradient of mixed magnitudes (some clipped, some tiny), specials sprinkled in."""
    n = plan.n_elements
    g = (rng.standard_normal(n) * rng.choice([1e-6, 1e-2, 1.0, 30.0], n)).astype(plan.storage_dtype)
    _sprinkle(rng, g)
    return g


# Tensor sizes around the device chunk (4096) and the numba chunk (65536), and empty ones.
BIT_SIZES = (1, 0, 4095, 4096, 4097, 16385, 65537, 3)
CLIPS = (None, 0.5, 0.0, -1.0)


def bit_identity_failures(make: Callable[[FlatPlan, np.ndarray, np.ndarray, np.ndarray], FlatStepper],
                          host_lib: HostLibrary, profile: str, dtype: str, clip: float | None,
                          seed: int = 0) -> list[str]:
    """Run a flat stepper and the host build side by side on random data for 5 steps (two of
    them skipped under mxnet); describe every output that is not bit-identical."""
    rng = np.random.default_rng([seed, PROFILES.index(profile), DTYPE_NAMES.index(dtype),
                                 CLIPS.index(clip)])
    hp = Hyperparameters(learning_rate=0.01, wd=0.02, clip_gradient=clip)
    k = len(BIT_SIZES)

    def plan() -> FlatPlan:
        return FlatPlan(BIT_SIZES, dtype, profile, hp, lr_mults=np.linspace(0.5, 2, k).tolist(),
                        wd_mults=np.linspace(0, 3, k).tolist(), t=[3 * i * i for i in range(k)])

    ref_plan = plan()
    w, m, s = random_state(rng, ref_plan)
    ref = NativeFlatStepper(ref_plan, w.copy(), m.copy(), s.copy(), host_lib)
    test = make(plan(), w.copy(), m.copy(), s.copy())
    bad = []
    for step, r in enumerate((1.0, 0.0, 0.5, math.nan, 3.0)):
        g = random_grad(rng, ref_plan)
        applied = ref.step(g, r)
        if test.step(g, r) != applied:
            bad.append(f"step {step}: skip decisions differ")
        for name, a, b in zip(("w", "m", "s", "w16"), ref.snapshot(), test.snapshot()):
            if a is None and b is None:
                continue
            if a is None or b is None:
                bad.append(f"step {step} {name}: present in only one of the results")
            elif not same_bits(a, b):
                u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
                diff = np.flatnonzero((a.view(u) != b.view(u)) & ~(np.isnan(a) & np.isnan(b)))
                bad.append(f"step {step} {name}: {len(diff)} elements differ, first at {list(diff[:5])}")
    return bad


# ----- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def host_lib() -> HostLibrary:
    """The host build, compiled once per session (or found in the user cache)."""
    return host_library()


@pytest.fixture(scope="session")
def cuda_host(host_lib: HostLibrary) -> NativeHostBackend:
    return NativeHostBackend()


# ----- the host build ---------------------------------------------------------------------------

def test_host_build_compiles_with_pinned_flags(tmp_path: Path) -> None:
    first = build_host_library(cache_dir=tmp_path)
    assert not first.cached and first.path.exists() and first.seconds > 0
    assert first.path.parent == tmp_path
    for flag in ("-ffp-contract=off", "-fno-fast-math"):
        assert flag in first.command and flag in HOST_CFLAGS
    again = build_host_library(cache_dir=tmp_path)
    assert again.cached and again.path == first.path and again.key == first.key


def test_host_and_device_compile_the_same_header() -> None:
    include = '#include "adabelief_step.cuh"'
    assert include in HOST_SOURCE.read_text() and include in KERNEL_SOURCE
    assert STEP_HEADER.parent == HOST_SOURCE.parent
    assert "--fmad=false" in DEVICE_OPTIONS and "--ftz=false" in DEVICE_OPTIONS


def test_subnormals_are_not_flushed(host_lib: HostLibrary) -> None:
    assert host_lib.flush_flags() == 0


def test_half_to_float_is_exact_for_every_half(host_lib: HostLibrary) -> None:
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    ours = host_lib.half_to_float(every)
    assert np.array_equal(ours.view(np.uint32), every.astype(np.float32).view(np.uint32))


def test_float_to_half_rounds_like_ieee(host_lib: HostLibrary) -> None:
    # Every exponent and sign, with mantissas at and around each rounding boundary (ties of
    # every binary16 subnormal shift included), then random bit patterns.
    mant = {0, 1, 2, 0x7FFFFF, 0x7FFFFE}
    for b in range(24):
        for j in (1, 2, 3):
            for d in (-1, 0, 1):
                mant.add(((j << b) + d) & 0x7FFFFF)
    m = np.array(sorted(mant), dtype=np.uint32)
    e = np.arange(256, dtype=np.uint32)
    bits = ((e[:, None] << 23) | m[None, :]).ravel()
    bits = np.concatenate([bits, bits | 0x80000000,
                           np.random.default_rng(5).integers(0, 1 << 32, 1 << 20, dtype=np.uint32)])
    f = bits.view(np.float32)
    with np.errstate(over="ignore"):
        assert same_bits(host_lib.float_to_half(f), f.astype(np.float16))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cuda_host_agrees_with_reference(cuda_host: NativeHostBackend, scenario: str, profile: str,
                                         dtype: str) -> None:
    case = make_case(scenario, profile, dtype)
    results = cuda_host.run(request_from_case(case, f"{scenario}/{profile}/{dtype}"))
    bad = golden_mismatches(case, results)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_skip_rule_leaves_state_and_counts_the_step(cuda_host: NativeHostBackend, dtype: str) -> None:
    case = make_case("skip", "mxnet", dtype)  # rescales 1, 0, nan, 0.5, inf, -0
    results = cuda_host.run(request_from_case(case))
    for k in (1, 2, 4, 5):  # skipped: identical to the step before
        for before, after in zip(results[k - 1], results[k]):
            for name in ("w", "m", "s", "w16"):
                a, b = getattr(before, name), getattr(after, name)
                assert (a is None and b is None) or same_bits(a, b)
    assert not same_bits(results[3][0].w, results[2][0].w)  # rescale 0.5 did update


def test_profiles_differ_where_clipping_meets_weight_decay(cuda_host: NativeHostBackend) -> None:
    a = cuda_host.run(request_from_case(make_case("clip", "mxnet", "float64")))
    b = cuda_host.run(request_from_case(make_case("clip", "mxnet-doc", "float64")))
    assert not np.array_equal(a[-1][0].m, b[-1][0].m)


def test_cuda_host_passes_the_bundled_vectors(cuda_host: NativeHostBackend,
                                              bundled_cases: list[V.VectorCase]) -> None:
    bad = bundled_failures(cuda_host, bundled_cases)
    assert not bad, "\n".join(bad[:10])


def test_is_an_implementation(cuda_host: NativeHostBackend) -> None:
    assert isinstance(cuda_host, Implementation)
    assert cuda_host.name == "cuda-host"
    assert set(cuda_host.profiles) == {"mxnet", "mxnet-doc"}
    assert set(cuda_host.dtypes) == {"float32", "float64", "float16-mp"}


# ----- the flat plan (host side of every flat backend) ---------------------------------------

def test_flat_plan_step_sizes_and_skip_rule() -> None:
    hp = Hyperparameters(learning_rate=0.003, beta1=0.8, beta2=0.99, wd=0.1)
    plan = FlatPlan([2, 3], "float32", "mxnet", hp, lr_mults=[1.0, 0.25], wd_mults=[2.0, 0.0], t=[0, 9])
    sc = plan.advance()
    assert sc is not None and list(plan.t) == [1, 10]
    for k, (lr_mult, t) in enumerate(((1.0, 1), (0.25, 10))):
        eta = 0.003 * lr_mult * (math.sqrt(1 - 0.99**t) / (1 - 0.8**t))
        assert sc.eta[k] == np.float32(eta) and sc.eta.dtype == np.float32
    assert list(plan.wd) == [np.float32(0.2), np.float32(0.0)]
    assert sc.hyper[2] == np.float32(1) - np.float32(0.8)  # 1 - beta1 rounded in float32
    for r in (0.0, -0.0, math.nan, math.inf, -math.inf):
        assert plan.advance(r) is None
    assert list(plan.t) == [6, 15]  # skipped steps are counted
    doc = FlatPlan([1], "float64", "mxnet-doc", hp)
    assert doc.advance(0.0) is not None and doc.advance(math.nan) is not None


def test_flat_plan_chunks_cover_each_tensor_once() -> None:
    plan = FlatPlan([5, 0, 9, 4, 0])
    tensor, start = plan.chunks(4)
    seen = np.zeros(plan.n_elements, dtype=int)
    for k, a in zip(tensor, start):
        b = min(a + 4, plan.offsets[k + 1])
        assert plan.offsets[k] <= a < b
        seen[a:b] += 1
    assert (seen == 1).all()


def test_native_stepper_updates_in_place(host_lib: HostLibrary) -> None:
    plan = FlatPlan([3, 4], "float16-mp")
    w = np.linspace(-1, 1, 7, dtype=np.float32)
    m, s = np.zeros(7, np.float32), np.zeros(7, np.float32)
    st = NativeFlatStepper(plan, w, m, s, host_lib)
    assert st.w is w and st.m is m and st.s is s
    assert st.step(np.ones(7, np.float16))
    assert (w != np.linspace(-1, 1, 7, dtype=np.float32)).all()
    assert st.w16 is not None and same_bits(st.w16, w.astype(np.float16))
    with pytest.raises(ValueError, match="7 elements"):
        st.step(np.ones(6, np.float16))


# ----- the device compile check ---------------------------------------------------------------

needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc not installed (CUDA toolkit)")


@needs_nvcc
def test_kernels_compile_for_sm80_and_sm90() -> None:
    results = check_device_compile(("sm_80", "sm_90"))
    for arch, r in results.items():
        assert r.ok, f"{arch}: {r.detail}"


@needs_nvcc
def test_device_code_has_no_fused_multiply_add() -> None:
    ptx = device_ptx("sm_90")
    assert "adabelief_step_f16_master" in ptx
    assert not re.search(r"\b(fma|mad)\.\w*f(32|64)", ptx)
    # cvt without .ftz: subnormal halves survive; every float mul/add is explicitly rounded
    assert "cvt.rn.f16.f32" in ptx and ".ftz" not in ptx
    assert not re.search(r"\b(mul|add|sub)\.f(32|64)", ptx)


def test_device_compile_reports_skip_without_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "find_nvcc", lambda: None)
    results = check_device_compile(("sm_80", "sm_90"))
    assert [r.status for r in results.values()] == ["skipped", "skipped"]
    assert "nvcc not found" in results["sm_80"].detail


@pytest.mark.parametrize("rectify", [False, True])
@pytest.mark.parametrize("correct_bias", [True, False])
def test_scalars_computed_ahead_are_those_of_one_step(rectify, correct_bias) -> None:
    """FlatPlan computes the scalars of 32 steps in one pass (issue 9 item 4): every row must be
    bit for bit what a single step computes, across the refills and with skipped steps."""
    profile = "adabelief-pytorch" if rectify else "mxnet"
    hp = Hyperparameters(learning_rate=0.003, correct_bias=correct_bias, wd=0.01,
                         **({"rectify": True, "degenerated_to_sgd": False, "weight_decouple": True}
                            if rectify else {}))
    plan = FlatPlan([3, 0, 5], "float32", profile, hp, [1.0, 0.5, 2.0], [1.0, 0.0, 3.0], [0, 7, 2**31])
    for k in range(75):
        t_before = plan.t.copy()
        sc = plan.advance(0.0 if k % 11 == 5 else None)
        one = plan._scalars((t_before + 1)[None, :])
        if sc is None:
            continue
        assert sc.eta.flags.c_contiguous and same_bits(sc.eta, one[0][0])
        for got, want in ((sc.root_scale, one[1]), (sc.mode, one[2])):
            assert (got is None) == (want is None)
            if got is not None and want is not None:
                assert got.flags.c_contiguous
                assert same_bits(got, want[0]) if got.dtype.itemsize > 1 else (got == want[0]).all()
