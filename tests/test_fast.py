"""The fast reference path (reference/_fast.py, issue 9 item 1): wherever it decides an output, it
gives the expectation the mpmath reference gives (the correctly rounded value with its residual and
σ, or "any"), in every profile and dtype: on every element of the vector set and on random cases
(more with `pytest -m slow`); where it does not decide, the expectations merged from mpmath's
evaluation of the undecided elements alone are those of the whole case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from adabelief_reference import DTYPES, golden, profile_names
from adabelief_reference._fast import fast_case, fast_expected, fast_golden, implementation_defined
from adabelief_reference._golden import Finite, Special

from adabelief_conformance._campaign import random_case
from adabelief_conformance._vectors import KIND_FINITE

PAIRS = [(p, d) for p in profile_names() for d in sorted(DTYPES)]


def _same(e, got) -> bool:
    """Equal expectations; σ to 1e-12 and the residual to 1e-15 of the value (both are binary64
    roundings of bounds the two paths compute in different arithmetic)."""
    if repr(e) == repr(got):
        return True
    if len(e) != 1 or len(got) != 1 or not isinstance(e[0], Finite) or not isinstance(got[0], Finite):
        return False
    a, b = e[0], got[0]
    return (a.value == b.value and abs(a.sigma - b.sigma) <= 1e-12 * abs(a.sigma)
            and abs(a.residual - b.residual) <= 1e-15 * abs(a.value))


@pytest.mark.parametrize("shard", range(4))
def test_agrees_with_every_element_of_the_vector_set(bundled_cases, shard) -> None:
    """Every element of every bundled case: fast where the path decides (counted per profile and
    dtype), mpmath's evaluation of the undecided elements alone elsewhere, against the stored
    mpmath-proven expectations."""
    from adabelief_conformance._vectors import _SPECIAL_KIND

    seen: dict[tuple[str, str], int] = {}
    fast = slow = 0
    for vc in bundled_cases[shard::4]:
        fx = fast_expected(vc.case)
        assert fx is not None
        fast += fx.fast_elements
        slow += fx.mpmath_elements
        if fx.fast_elements:
            seen[vc.profile, vc.dtype] = seen.get((vc.profile, vc.dtype), 0) + fx.fast_elements
        for name, ea in vc.expected.items():
            for flat in range(len(ea.kind)):
                where = (vc.id, name, flat)
                if flat in fx.special[name]:
                    e = fx.special[name][flat]
                    if len(e) == 1 and isinstance(e[0], Special):
                        assert ea.kind[flat] == _SPECIAL_KIND[e[0].kind], where
                    else:
                        assert ea.alternatives[flat] == e, where
                    continue
                assert ea.kind[flat] == KIND_FINITE, where
                assert ea.value[flat] == fx.value[name][flat], where
                assert abs(ea.sigma[flat] - fx.sigma[name][flat]) <= 1e-12 * abs(ea.sigma[flat]), where
                assert abs(ea.residual[flat] - fx.residual[name][flat]) <= 1e-15 * abs(ea.value[flat]), where
    # every profile and dtype is exercised, and the path settles most elements
    assert set(seen) == set(PAIRS), set(PAIRS) - set(seen)
    assert fast >= 0.8 * (fast + slow), (fast, slow)


def _random_agreement(n_cases: int, seed: int, size: int, regular: bool) -> tuple[int, int]:
    decided = checked = 0
    for k in range(n_cases):
        profile, dtype = PAIRS[k % len(PAIRS)]
        case = random_case(np.random.default_rng([seed, k]), profile, dtype, size, regular=regular)
        fast = fast_golden(case)  # fast where decided, mpmath for the other elements
        if fast is None:
            assert fast_case(case) is None
            continue
        exact = golden(case)
        out = fast_case(case)
        for kk, row in enumerate(exact.steps):
            for i, res in enumerate(row):
                for name, exps in res.items():
                    for j, e in enumerate(exps):
                        checked += 1
                        got = fast.steps[kk][i][name][j]
                        decided += bool(out is None or out[kk][i][name].decided[j])
                        assert _same(e, got), (profile, dtype, k, kk, i, name, j, e, got)
    return decided, checked


@pytest.mark.parametrize("regular", [False, True])
def test_agrees_with_mpmath_on_random_cases(regular) -> None:
    decided, checked = _random_agreement(3 * len(PAIRS), 3, 32, regular)
    assert checked > 2500 and decided > 0.8 * checked


@pytest.mark.slow
@pytest.mark.parametrize("regular", [False, True])
def test_agrees_with_mpmath_on_many_random_cases(regular) -> None:
    decided, checked = _random_agreement(60 * len(PAIRS), 4, 48, regular)
    assert decided > 0.8 * checked


def test_expected_arrays_match_mpmath() -> None:
    """fast_expected's flat arrays (the campaign's form) against golden, element by element."""
    case = random_case(np.random.default_rng(5), "tensorflow", "float16-mp", 64, regular=True)
    fx = fast_expected(case)
    exact = golden(case)
    assert fx is not None
    flat = 0
    for row in exact.steps:
        for res in row:
            n = len(res["w"])
            for name, exps in res.items():
                for j, e in enumerate(exps):
                    got = fx.special[name].get(flat + j) or (
                        Finite(fx.value[name][flat + j], fx.residual[name][flat + j], fx.sigma[name][flat + j]),)
                    assert _same(e, got), (name, flat + j, e, got)
            flat += n
    assert fx.fast_elements + fx.mpmath_elements == flat and fx.fast_elements > 0


def test_out_of_scope_cases_are_left_to_mpmath() -> None:
    case = random_case(np.random.default_rng(1), "optax", "float32", 8)
    from dataclasses import replace

    nan_lr = replace(case, hyperparameters=replace(case.hyperparameters, learning_rate=math.nan))
    assert fast_case(nan_lr) is None and fast_golden(nan_lr) is None
    fx = fast_expected(nan_lr)  # all from mpmath
    assert fx is not None and fx.fast_elements == 0 and fx.mpmath_elements > 0


def test_implementation_defined_cases_are_any_everywhere() -> None:
    from dataclasses import replace

    case = random_case(np.random.default_rng(2), "mxnet-doc", "float32", 8, regular=True)
    clip0 = replace(case, hyperparameters=replace(case.hyperparameters, clip_gradient=0.0))
    assert implementation_defined(clip0)
    g = fast_golden(clip0)
    assert g is not None and g.steps == golden(clip0).steps
    assert all(e == (Special("any"),) for row in g.steps for res in row for es in res.values() for e in es)


def test_the_reference_evaluates_alternative_forms_where_a_second_moment_is_exactly_zero() -> None:
    """Found by the slow agreement test: in the alternative forms (evaluated because another
    element overflows), r = g - m' of an element with m' = g has the enclosure [-d, d], so r^2 and
    the fused form's s' = b2*(s - r^2) + r^2 straddled 0 where s' = 0 exactly, and their square
    roots raised NeedPrecision at every precision. The square's own enclosure and s' cut at 0
    (it is nonnegative) fix it; mode None, and so the vectors, are unchanged."""
    from adabelief_reference._fast import _sub_case

    k = 767
    profile, dtype = PAIRS[k % len(PAIRS)]
    assert (profile, dtype) == ("optax", "float64")
    case = random_case(np.random.default_rng([4, k]), profile, dtype, 48)
    sub = _sub_case(case, [(0, np.array([0, 5, 6, 14]))])
    exact = golden(sub)  # raised NeedPrecision('sign') before
    fast = fast_golden(sub)
    assert fast is not None
    for a, b in zip(exact.steps, fast.steps):
        for name, exps in a[0].items():
            assert all(_same(e, f) for e, f in zip(exps, b[0][name]))
