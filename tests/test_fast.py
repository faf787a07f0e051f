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
from adabelief_conformance._vectors import KIND_ANY, KIND_FINITE

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


def test_agrees_with_every_decided_element_of_the_vector_set(bundled_cases) -> None:
    seen: dict[tuple[str, str], int] = {}
    decided = elements = 0
    for vc in bundled_cases:
        if implementation_defined(vc.case):
            assert all((ea.kind == KIND_ANY).all() for ea in vc.expected.values()), vc.id
            continue
        out = fast_case(vc.case)
        if out is None:
            continue
        for k, row in enumerate(out):
            for i, res in enumerate(row):
                off, n = next((o, n) for kk, ii, o, n in vc.layout if kk == k and ii == i)
                for name, fo in res.items():
                    ea = vc.expected[name]
                    elements += n
                    for j in np.flatnonzero(fo.decided).tolist():
                        decided += 1
                        where = (vc.id, k, i, name, j)
                        if fo.anything[j]:
                            assert ea.kind[off + j] == KIND_ANY, where
                            continue
                        assert ea.kind[off + j] == KIND_FINITE, where
                        assert ea.value[off + j] == fo.value[j], where
                        assert abs(ea.sigma[off + j] - fo.sigma[j]) <= 1e-12 * abs(ea.sigma[off + j]), where
                        assert abs(ea.residual[off + j] - fo.residual[j]) <= 1e-15 * abs(fo.value[j]), where
                        seen[vc.profile, vc.dtype] = seen.get((vc.profile, vc.dtype), 0) + 1
    # every profile and dtype is exercised, and the path decides most of what it evaluates
    assert set(seen) == set(PAIRS), set(PAIRS) - set(seen)
    assert decided >= 0.85 * elements, (decided, elements)


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
    decided, checked = _random_agreement(2 * len(PAIRS), 3, 24, regular)
    assert checked > 1000 and decided > 0.8 * checked


@pytest.mark.slow
@pytest.mark.parametrize("regular", [False, True])
def test_agrees_with_mpmath_on_many_random_cases(regular) -> None:
    decided, checked = _random_agreement(60 * len(PAIRS), 4, 48, regular)
    assert decided > 0.8 * checked


def test_expected_arrays_match_the_golden_case() -> None:
    case = random_case(np.random.default_rng(5), "tensorflow", "float16-mp", 64, regular=True)
    fx = fast_expected(case)
    g = fast_golden(case)
    assert fx is not None and g is not None
    flat = 0
    for row in g.steps:
        for res in row:
            n = len(res["w"])
            for name, exps in res.items():
                for j, e in enumerate(exps):
                    if (flat + j) in fx.special[name]:
                        assert fx.special[name][flat + j] == e
                    else:
                        assert e == (Finite(fx.value[name][flat + j], fx.residual[name][flat + j],
                                            fx.sigma[name][flat + j]),)
            flat += n
    assert fx.fast_elements + fx.mpmath_elements == flat


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
