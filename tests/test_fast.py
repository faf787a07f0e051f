"""The fast reference path (reference/_fast.py, issue 9 item 1): where it decides an output, it
gives the correctly rounded value, residual and σ that the mpmath reference gives: on every
in-scope element of the vector set and on random cases (more with `pytest -m slow`)."""

from __future__ import annotations

import numpy as np
import pytest
from adabelief_reference import golden
from adabelief_reference._fast import fast_case, fast_golden
from adabelief_reference._golden import Finite

from adabelief_conformance._campaign import random_case
from adabelief_conformance._vectors import KIND_FINITE


def _same(e, value: float, residual: float, sigma: float) -> bool:
    return (len(e) == 1 and isinstance(e[0], Finite) and e[0].value == value
            and abs(e[0].sigma - sigma) <= 1e-12 * abs(e[0].sigma)
            and abs(e[0].residual - residual) <= 1e-15 * abs(value))


def test_agrees_with_every_in_scope_element_of_the_vector_set(bundled_cases) -> None:
    cases = [c for c in bundled_cases if c.dtype in ("float32", "float64")]
    in_scope = decided = elements = 0
    for vc in cases:
        with np.errstate(all="ignore"):
            out = fast_case(vc.case)
        if out is None:
            continue
        in_scope += 1
        for k, row in enumerate(out):
            for i, res in enumerate(row):
                off, n = next((o, n) for kk, ii, o, n in vc.layout if kk == k and ii == i)
                for name, fo in res.items():
                    ea = vc.expected[name]
                    elements += n
                    for j in np.flatnonzero(fo.decided).tolist():
                        decided += 1
                        assert ea.kind[off + j] == KIND_FINITE, (vc.id, k, i, name, j)
                        assert ea.value[off + j] == fo.value[j], (vc.id, k, i, name, j)
                        assert abs(ea.sigma[off + j] - fo.sigma[j]) <= 1e-12 * abs(ea.sigma[off + j])
                        assert abs(ea.residual[off + j] - fo.residual[j]) <= 1e-15 * abs(fo.value[j])
    assert in_scope >= 200 and decided >= 0.9 * elements, (in_scope, decided, elements)


def _random_agreement(n_cases: int, seed: int) -> tuple[int, int]:
    decided = checked = 0
    for k in range(n_cases):
        profile = ("mxnet", "mxnet-doc")[(k // 2) % 2]
        case = random_case(np.random.default_rng([seed, k]), profile, ("float32", "float64")[k % 2], 32)
        fast = fast_golden(case)  # fast where decided, mpmath for the other elements
        if fast is None:
            continue
        exact = golden(case)
        with np.errstate(all="ignore"):
            out = fast_case(case)
        assert out is not None
        for kk, row in enumerate(exact.steps):
            for i, res in enumerate(row):
                for name, exps in res.items():
                    for j, e in enumerate(exps):
                        checked += 1
                        got = fast.steps[kk][i][name][j]
                        if out[kk][i][name].decided[j]:
                            decided += 1
                            (f,) = got
                            assert _same(e, f.value, f.residual, f.sigma), (k, kk, i, name, j, e, got)
                        else:  # merged from mpmath's own evaluation of the undecided elements
                            assert repr(got) == repr(e), (k, kk, i, name, j, e, got)
    return decided, checked


def test_agrees_with_mpmath_on_random_cases() -> None:
    decided, checked = _random_agreement(60, 3)
    assert checked > 1500 and decided > 0.8 * checked


@pytest.mark.slow
def test_agrees_with_mpmath_on_many_random_cases() -> None:
    decided, checked = _random_agreement(1500, 4)
    assert decided > 0.8 * checked


@pytest.mark.parametrize("profile, dtype", [("optax", "float32"), ("mxnet-doc", "float16-mp"),
                                            ("adabelief-pytorch", "float64")])
def test_out_of_scope_cases_are_left_to_mpmath(profile, dtype) -> None:
    case = random_case(np.random.default_rng(1), profile, dtype, 8)
    assert fast_case(case) is None and fast_golden(case) is None
