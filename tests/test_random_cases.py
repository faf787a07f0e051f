"""No conforming implementation is failed: the catalogue's conforming variants and the bundled
backends, on seeded random cases over the whole input space (special values, subnormals, the
largest finite values, epsilon = 0, skipped steps, both profiles, every dtype).

The default run checks 150 cases; ``-m slow`` checks 3000 more.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from adabelief_reference import (
    DTYPES,
    CaseInputs,
    Hyperparameters,
    ParamInput,
    StepInput,
    golden,
    profile_named,
    profile_names,
    tolerances,
)
from adabelief_reference._generate import _hp_json, _test_json
from adabelief_reference._suites import Test as VectorTest

from adabelief_conformance._catalogue import VARIANTS, CatalogueImplementation
from adabelief_conformance._compare import run_case
from adabelief_conformance._vectors import _parse_case
from adabelief_conformance.backends._naive import NaiveNumpy
from adabelief_conformance.backends._native import NativeHostBackend
from adabelief_conformance.backends._numpy import NumpyBackend

_NP = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
_SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0]


def _values(rng, n, fmt, kind, p_special):
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 4, n)
    if kind == "s":
        x = np.abs(x)
    with np.errstate(all="ignore"):
        out = [float(v) for v in x.astype(_NP[fmt.name])]
    for j in range(n):
        r = rng.random()
        if r < p_special:
            out[j] = _SPECIAL[rng.integers(len(_SPECIAL))]
        elif r < p_special + 0.04:
            out[j] = float(np.finfo(_NP[fmt.name]).max) * rng.choice([-1, 1])
        elif r < p_special + 0.08:
            out[j] = float(np.finfo(_NP[fmt.name]).smallest_subnormal) * int(rng.integers(1, 50))
    if kind == "s":
        out = [abs(v) if v == v else v for v in out]
    return tuple(out)


def random_case(rng) -> CaseInputs:
    profile = str(rng.choice(list(profile_names())))
    dtype = str(rng.choice(list(DTYPES)))
    spec = DTYPES[dtype]
    p_special = float(rng.choice([0.0, 0.02, 0.1]))
    clip = rng.choice([None, 1.0, 0.0, -1.0, 1e-3, math.inf])
    hp = Hyperparameters(
        learning_rate=float(rng.choice([1e-3, 0.1, 0.0, 10.0])), beta1=float(rng.choice([0.9, 0.0, 0.5, 0.99])),
        beta2=float(rng.choice([0.999, 0.0, 0.9, 0.99999])), epsilon=float(rng.choice([1e-6, 0.0, 1e-30, 1e-8])),
        correct_bias=bool(rng.random() < 0.8), wd=float(rng.choice([0.0, 0.01, 1.0])),
        rescale_grad=float(rng.choice([1.0, 0.5, 1e-3, 1e30])), clip_gradient=None if clip is None else float(clip))
    if profile_named(profile).stored_epsilon == "eps_root":
        hp = replace(hp, eps_root=float(rng.choice([0.0, 1e-16, 1e-6, 1e-30])))
    for name, allowed in sorted(profile_named(profile).switches.items()):
        hp = replace(hp, **{name: bool(rng.choice(allowed))})
    sizes = rng.integers(1, 5, rng.integers(1, 3))
    params = tuple(
        ParamInput(_values(rng, n, spec.master, "w", p_special), _values(rng, n, spec.compute, "m", p_special),
                   _values(rng, n, spec.compute, "s", p_special), t=int(rng.choice([0, 1, 3, 100])),
                   lr_mult=float(rng.choice([1.0, 0.5, 2.0])), wd_mult=float(rng.choice([1.0, 0.0])), index=i)
        for i, n in enumerate(sizes))
    steps = tuple(
        StepInput(tuple(_values(rng, n, spec.storage, "g", p_special) for n in sizes),
                  rng.choice([None, None, None, 0.0, math.inf, 2.0]))
        for _ in range(int(rng.integers(1, 4))))
    if hp.amsgrad:  # the maximum of s: at s, or above it
        params = tuple(replace(p, s_max=tuple(float(x) * float(rng.choice([1.0, 4.0])) for x in p.s))
                       for p in params)
    return CaseInputs(profile, dtype, hp, params, steps)


def as_vector_case(case: CaseInputs):
    """The case as the runner sees it: through the vector format and the loader's parser."""
    test = _test_json("random", VectorTest(case, "", ()), golden(case))
    group = {"profile": case.profile, "dtype": case.dtype, "hyperparameters": _hp_json(case.hyperparameters),
             "tolerance": tolerances()[case.dtype]}
    return _parse_case("random", "random", group, test)


IMPLEMENTATIONS = [CatalogueImplementation(n, k) for n, k in VARIANTS.items()]
IMPLEMENTATIONS += [NumpyBackend(), NaiveNumpy(), NativeHostBackend()]


def _check(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        vc = as_vector_case(random_case(rng))
        for impl in IMPLEMENTATIONS:
            if vc.profile not in impl.profiles:
                continue
            with np.errstate(all="ignore"):
                out = run_case(impl, vc)
            assert out.status == "passed", f"{impl.name} fails a conforming case: {out.message}\n{vc.case}"


def test_conforming_implementations_pass_random_cases() -> None:
    _check(20261124, 150)


@pytest.mark.slow
def test_conforming_implementations_pass_many_random_cases() -> None:
    _check(7, 3000)
