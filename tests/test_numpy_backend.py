"""The ``numpy`` (fused, in place) and ``naive`` backends: agreement with the reference on small
cases, the flat-buffer API, and a step that allocates nothing."""

from __future__ import annotations

import itertools
import math
import tracemalloc
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import pytest
from adabelief_reference import (
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
    profile_names,
    tolerances,
)

from adabelief_conformance import Implementation, ParamResult, request_from_case
from adabelief_conformance._ulp import ulp
from adabelief_conformance.backends._naive import NaiveNumpy, NaiveParam, naive_step
from adabelief_conformance.backends._numpy import FusedAdaBelief, NumpyBackend, subnormals_flushed

PROFILES = ("mxnet", "mxnet-doc")
DTYPE_NAMES = ("float32", "float64", "float16-mp")
SCENARIOS = ("basic", "multi-param", "multi-step", "skip", "clip", "clip-zero", "clip-negative",
             "specials", "inf-weight", "subnormal", "no-bias-correction")
_NP = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
# Per dtype: a scale whose values are subnormal in the compute (and storage) format.
_TINY = {"float32": 1e-39, "float64": 1e-310, "float16-mp": 1e-6}
INF, NAN = math.inf, math.nan


def _floats(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in a)


def _vals(rng: np.random.Generator, n: int, scale: float, fmt: Format,
          positive: bool = False) -> tuple[float, ...]:
    x = rng.random(n) if positive else rng.standard_normal(n)
    with np.errstate(all="ignore"):
        return _floats((x * scale).astype(_NP[fmt.name]))


def make_case(scenario: str, profile: str, dtype: str, seed: int = 1) -> CaseInputs:
    """A small case: a few parameters, a few elements, one to four steps."""
    rng = np.random.default_rng(seed)
    from adabelief_reference import DTYPES

    spec = DTYPES[dtype]
    hp = Hyperparameters(wd=0.01)
    sizes: Sequence[int] = (5, 3)
    ts: Sequence[int] = (0, 7)
    lr_mults: Sequence[float] = (1.0, 0.5)
    wd_mults: Sequence[float] = (1.0, 0.0)
    n_steps = 1
    rescales: Sequence[float | None] = (None,) * 4
    gscale, wscale = 1.0, 1.0
    if scenario == "multi-param":  # distinct t, lr_mult, wd_mult; an empty parameter; chunking
        sizes, ts = (4, 0, 6, 1, 5), (0, 3, 3, 100, 1)
        lr_mults, wd_mults = (1.0, 2.0, 0.25, 1.0, 3.0), (1.0, 1.0, 0.0, 2.0, 0.5)
        n_steps = 2
    elif scenario == "multi-step":
        n_steps, rescales = 4, (None, 0.5, 2.0, None)
        hp = Hyperparameters(learning_rate=0.01, wd=0.001, rescale_grad=0.125)
    elif scenario == "skip":  # rescale 0, inf, NaN: skipped under mxnet, literal under mxnet-doc
        n_steps, rescales = 4, (0.0, INF, NAN, None)
    elif scenario == "clip":
        hp = Hyperparameters(wd=0.5, clip_gradient=0.3)
        gscale = 2.0
    elif scenario == "clip-zero":
        hp = Hyperparameters(wd=0.01, clip_gradient=0.0)
    elif scenario == "clip-negative":
        hp = Hyperparameters(wd=0.01, clip_gradient=-1.0)
    elif scenario == "no-bias-correction":
        hp = Hyperparameters(correct_bias=False, wd=0.1, learning_rate=0.1)
    elif scenario == "subnormal":
        hp = Hyperparameters(wd=0.0, epsilon=0.0 if dtype != "float16-mp" else 1e-30)
        gscale = wscale = _TINY[dtype]
    elif scenario == "inf-weight":  # wd == 0 meets an infinite or NaN weight: 0*inf is NaN
        hp = Hyperparameters(wd=0.0)
    params = []
    for i, n in enumerate(sizes):
        w = list(_vals(rng, n, wscale, spec.master))
        if scenario == "inf-weight" and n >= 3:
            w[0], w[1], w[2] = INF, -INF, NAN
        params.append(ParamInput(
            tuple(w),
            _vals(rng, n, 0.1 * wscale, spec.compute),
            _vals(rng, n, 0.01 * wscale * wscale, spec.compute, positive=True),
            t=ts[i], lr_mult=lr_mults[i], wd_mult=wd_mults[i], index=i))
    steps = []
    for k in range(n_steps):
        grads = []
        for n in sizes:
            g = list(_vals(rng, n, gscale, spec.storage))
            if scenario == "specials" and n >= 4:
                g[0], g[1], g[2], g[3] = NAN, INF, -INF, 0.0
            grads.append(tuple(g))
        steps.append(StepInput(tuple(grads), rescales[k]))
    return CaseInputs(profile, dtype, hp, tuple(params), tuple(steps))


@cache
def _golden(scenario: str, profile: str, dtype: str) -> GoldenCase:
    return golden(make_case(scenario, profile, dtype))


def _accepts(alt: Finite | Special, x: float, fmt: Format, n_tol: int) -> bool:
    if isinstance(alt, Special):
        return {"any": True, "nan": x != x, "inf": x == INF, "-inf": x == -INF}[alt.kind]
    return math.isfinite(x) and abs((x - alt.value) - alt.residual) <= n_tol * float(ulp(alt.sigma, fmt))


def golden_mismatches(case: CaseInputs, gold: GoldenCase,
                      results: Sequence[Sequence[ParamResult]]) -> list[str]:
    """Every output element outside 2 ulp(sigma) of the exact value (or of the wrong class)."""
    tol = tolerances()[case.dtype]
    spec = case.dtype_spec
    fmts = {"w": spec.master, "m": spec.compute, "s": spec.compute, "w16": FLOAT16}
    dtypes = {"w": spec.master.name, "m": spec.compute.name, "s": spec.compute.name, "w16": "float16"}
    bad: list[str] = []
    if len(results) != len(gold.steps):
        return [f"{len(results)} steps returned, {len(gold.steps)} expected"]
    for k, step in enumerate(gold.steps):
        for i, outs in enumerate(step):
            for name, expected in outs.items():
                got = getattr(results[k][i], name)
                if got is None or got.dtype != np.dtype(dtypes[name]) or got.shape != (len(expected),):
                    bad.append(f"step {k} param {i} {name}: got {None if got is None else got.dtype}"
                               f" {None if got is None else got.shape}")
                    continue
                for j, alts in enumerate(expected):
                    x = float(got[j])
                    if not any(_accepts(a, x, fmts[name], tol[name]) for a in alts):
                        bad.append(f"step {k} param {i} {name}[{j}] = {x!r}; expected {alts}")
    return bad


IMPLEMENTATIONS: dict[str, Implementation] = {
    "numpy": NumpyBackend(),
    "numpy-chunk3": NumpyBackend(chunk_size=3),  # chunks split inside and across parameters
    "naive": NaiveNumpy(),
}


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_backends_agree_with_reference(scenario: str, profile: str, dtype: str) -> None:
    case = make_case(scenario, profile, dtype)
    gold = _golden(scenario, profile, dtype)
    bad = []
    for name, impl in IMPLEMENTATIONS.items():
        bad += [f"{name}: {b}" for b in golden_mismatches(case, gold, impl.run(request_from_case(case)))]
    assert not bad, "\n".join(bad[:10])


def test_implementations_satisfy_the_protocol() -> None:
    for impl, name in ((NumpyBackend(), "numpy"), (NaiveNumpy(), "naive")):
        assert isinstance(impl, Implementation)
        assert impl.name == name
        assert set(impl.profiles) == set(profile_names())
        assert set(impl.dtypes) == {"float32", "float64", "float16-mp"}


def test_builtin_targets_resolve() -> None:
    targets = pytest.importorskip("adabelief_conformance._targets")
    assert isinstance(targets.resolve_target("numpy"), NumpyBackend)
    assert isinstance(targets.resolve_target("naive"), NaiveNumpy)


def test_subnormals_are_not_flushed() -> None:
    assert not subnormals_flushed()


def _random_opt(dtype: str = "float32", n: int = 1000, **kw: Any) -> FusedAdaBelief:
    rng = np.random.default_rng(3)
    sizes = [n // 2, n // 4, n - n // 2 - n // 4]
    opt = FusedAdaBelief(sizes, dtype, w=rng.standard_normal(n), m=rng.standard_normal(n) * 0.1,
                         s=rng.random(n) * 0.01, **kw)
    opt.grad[...] = rng.standard_normal(n)
    return opt


def test_skip_rule_leaves_state_and_counts_the_update() -> None:
    opt = _random_opt(t=[0, 4, 9])
    before = opt.snapshot()
    for r in (0.0, INF, -INF, NAN):
        assert opt.step(rescale_grad=r) is False
    after = opt.snapshot()
    for a, b in zip(before[:3], after[:3]):
        assert a.tobytes() == b.tobytes()
    assert list(opt.t) == [4, 8, 13]
    assert opt.step(rescale_grad=1.0) is True
    assert list(opt.t) == [5, 9, 14]
    assert not np.array_equal(opt.w, before[0])


def test_mxnet_doc_applies_a_zero_rescale() -> None:
    opt = _random_opt(profile="mxnet-doc")
    w0 = opt.w.copy()
    assert opt.step(rescale_grad=0.0) is True
    assert not np.array_equal(opt.w, w0)  # m decays toward 0 and w moves


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_chunking_does_not_change_a_bit(dtype: str) -> None:
    hp = Hyperparameters(wd=0.01, clip_gradient=0.5, rescale_grad=0.5)
    outs = []
    for chunk in (1, 7, 100, 65536):
        opt = _random_opt(dtype, 777, hyperparameters=hp, t=[0, 1, 2], wd_mults=[1, 0, 1],
                          chunk_size=chunk)
        for _ in range(3):
            opt.step()
        outs.append(b"".join(a.tobytes() for a in opt.snapshot() if a is not None))
    assert all(o == outs[0] for o in outs)


def test_flat_buffer_api_updates_views_in_place() -> None:
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal(sh).astype(np.float32) for sh in [(2, 3), (4,), (0,), (5, 1)]]
    hp = Hyperparameters(wd=0.01)
    opt = FusedAdaBelief.from_arrays(weights, "float16-mp", hyperparameters=hp,
                                     lr_mults=[1, 2, 1, 0.5], wd_mults=[1, 0, 1, 1], t=[0, 3, 0, 1])
    views = opt.params()
    assert [v.w.shape for v in views] == [(2, 3), (4,), (0,), (5, 1)]
    assert all(np.shares_memory(v.w, opt.w) for v in views if v.w.size)
    grads = [rng.standard_normal(np.shape(x)).astype(np.float16) for x in weights]
    for v, g in zip(views, grads):
        v.grad[...] = g  # fill the optimizer's gradient buffer through the views
    w_flat, w16_flat = opt.w, opt.w16
    assert opt.step() is True
    assert opt.w is w_flat and opt.w16 is w16_flat  # same buffers, updated in place
    # The same update through the naive transcription, parameter by parameter.
    naive = [NaiveParam(x.ravel().copy(), np.zeros(x.size, np.float32), np.zeros(x.size, np.float32),
                        t, lr, wd) for x, t, lr, wd in zip(weights, [0, 3, 0, 1], [1, 2, 1, 0.5],
                                                           [1, 0, 1, 1])]
    naive_step(naive, [g.ravel() for g in grads], hp)
    for v, p in zip(views, naive):
        np.testing.assert_allclose(v.w.ravel(), p.w, rtol=1e-6, atol=1e-9)
        # The fused form's s = b2*(s - r*r) + r*r cancels: ~1/(1-b2) ulps apart from naive's.
        np.testing.assert_allclose(v.m.ravel(), p.m, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(v.s.ravel(), p.s, rtol=2e-4, atol=1e-12)
        assert v.w16 is not None and v.w16.dtype == np.float16
        assert np.array_equal(v.w16, v.w.astype(np.float16))
    assert list(opt.t) == [1, 4, 1, 2]


def _peak_bytes(fn: object) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("hp", [Hyperparameters(),
                                Hyperparameters(wd=0.1, rescale_grad=0.5, clip_gradient=1.0)],
                         ids=["defaults", "wd-rescale-clip"])
def test_a_step_allocates_no_buffer(dtype: str, hp: Hyperparameters) -> None:
    n = 100_000
    opt = _random_opt(dtype, n, hyperparameters=hp)
    g = opt.grad.copy()
    opt.step(g)  # warm up: first-call caches
    buffer_bytes = n * opt.m.itemsize
    # The measurement sees NumPy's array allocations (a control: one array of the size).
    assert _peak_bytes(lambda: np.empty(n, opt.m.dtype).fill(0)) >= buffer_bytes
    peak = _peak_bytes(lambda: opt.step(g))
    assert peak < buffer_bytes // 20, f"a step allocated {peak} bytes (one buffer: {buffer_bytes})"


def test_bad_gradient_shape_is_a_usage_error() -> None:
    from adabelief_conformance._errors import UsageError

    opt = _random_opt()
    with pytest.raises(UsageError):
        opt.step(np.zeros(3, np.float32))
    with pytest.raises(UsageError):
        FusedAdaBelief([3], chunk_size=0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16-mp"])
@pytest.mark.parametrize("profile, switches", [("mxnet", {}), ("mxnet-doc", {}),
                                               ("adabelief-pytorch", {"weight_decouple": True}),
                                               ("optax", {})])
def test_mixed_chunks_compute_what_each_tensor_alone_computes(dtype, profile, switches) -> None:
    """Many small tensors whose lr_mult and wd_mult alternate are processed in mixed chunks with
    per-element scalars (issue 9 item 4); every bit must be what the tensor gets on its own,
    including wd 0 next to non-finite weights and -0 gradients."""
    from adabelief_conformance.backends._native import FlatPlan
    from adabelief_conformance.backends._numpy import FusedAdaBelief

    rng = np.random.default_rng(11)
    sizes = [int(x) for x in rng.integers(1, 40, 120)]
    lr_m = [1.0, 0.5, 2.0] * 40
    wd_m = [1.0, 0.0] * 60
    hp = Hyperparameters(wd=0.01, clip_gradient=0.7, **switches)
    storage, master, compute = (np.dtype(x) for x in
                                {"float32": ("f4", "f4", "f4"), "float64": ("f8", "f8", "f8"),
                                 "float16-mp": ("f2", "f4", "f4")}[dtype])
    n = sum(sizes)
    w = rng.standard_normal(n).astype(master)
    w[::17] = np.inf
    w[5::23] = np.nan
    m = (rng.standard_normal(n) * 0.1).astype(compute)
    s = np.abs(rng.standard_normal(n) * 0.01).astype(compute)
    grads = [rng.standard_normal(n).astype(storage) for _ in range(3)]
    for g in grads:
        g[::13] = -0.0
    plan = FlatPlan(sizes, dtype, profile, hp, lr_m, wd_m)
    many = FusedAdaBelief.from_plan(plan, w.copy(), m.copy(), s.copy(), 256)
    for g in grads:
        many.step(g)
    assert many._layout and many._layout[0].run < 0  # the mixed path ran
    off = np.concatenate(([0], np.cumsum(sizes)))
    for i, (a, b) in enumerate(itertools.pairwise(off.tolist())):
        one_plan = FlatPlan([sizes[i]], dtype, profile, hp, [lr_m[i]], [wd_m[i]])
        one = FusedAdaBelief.from_plan(one_plan, w[a:b].copy(), m[a:b].copy(), s[a:b].copy(), 256)
        for g in grads:
            one.step(g[a:b].copy())
        for got, want in ((many.w[a:b], one.w), (many.m[a:b], one.m), (many.s[a:b], one.s)):
            assert np.array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}")) or \
                (np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(
                    np.where(np.isnan(got), 0, got).view(f"u{got.itemsize}"),
                    np.where(np.isnan(want), 0, want).view(f"u{want.itemsize}"))), f"tensor {i}"
