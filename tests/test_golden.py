"""The reference: proven rounding, precision escalation, ties, result classes, and the
MXNet measurement that motivated the error model."""

from __future__ import annotations

import math

import numpy as np
from adabelief_reference import (
    FLOAT32,
    CaseInputs,
    Finite,
    Hyperparameters,
    ParamInput,
    Special,
    StepInput,
    golden,
    tolerances,
)

from adabelief_conformance._ulp import ulp


def _case(dtype="float32", profile="mxnet", hp=None, w=(10.0,), g=(0.3,), m=(0.0,), s=(0.0,), t=0, steps=1):
    hp = hp or Hyperparameters(wd=0.05, clip_gradient=0.5)
    return CaseInputs(profile, dtype, hp, (ParamInput(tuple(w), tuple(m), tuple(s), t),),
                      tuple(StepInput((tuple(g),)) for _ in range(steps)))


def _err_sigma(exp: Finite, got: float) -> float:
    return abs((got - exp.value) - exp.residual) / float(ulp(exp.sigma, FLOAT32))


def test_all_three_mxnet_code_paths_are_accepted() -> None:
    # Measured on mxnet==2.0.0b1 (CPU): multi-tensor kernel, single-tensor kernel, step().
    g = golden(_case())
    s = g.steps[0][0]["s"][0][0]
    n = tolerances()["float32"]["s"]
    for text in ("0x1.aac0dep-13", "0x1.aac3d2p-13", "0x1.aac53ap-13"):
        assert _err_sigma(s, float.fromhex(text)) <= n
    w = g.steps[0][0]["w"][0][0]
    assert _err_sigma(w, float.fromhex("0x1.3ff6ecp+3")) <= n
    m = g.steps[0][0]["m"][0][0]
    for text in ("0x1.9999a0p-5", "0x1.99999ap-5"):
        assert _err_sigma(m, float.fromhex(text)) <= n


def test_weight_decay_before_clip_is_what_mxnet_computes() -> None:
    # MXNet: clip(0.3 + 0.05*10) = 0.5, so m = 0.1 * 0.5 = 0.05; the doc order would give
    # clip(0.3) + 0.5 = 0.8 and m = 0.08.
    m_code = golden(_case(profile="mxnet")).steps[0][0]["m"][0][0]
    m_doc = golden(_case(profile="mxnet-doc")).steps[0][0]["m"][0][0]
    assert abs(m_code.value - 0.05) < 1e-8 and abs(m_doc.value - 0.08) < 1e-8


def test_escalation_gives_the_same_values() -> None:
    case = _case(dtype="float64", hp=Hyperparameters(), g=(0.3, 1e-4, -2.5), w=(1.0, 0.0, -3.0),
                 m=(0.0, 0.0, 0.1), s=(0.0, 0.0, 0.2), t=5, steps=3)
    low = golden(case, start=24)
    high = golden(case)
    assert low.precision > 24
    for sl, sh in zip(low.steps, high.steps):
        for ol, oh in zip(sl, sh):
            for name in ol:
                for el, eh in zip(ol[name], oh[name]):
                    assert [a.value for a in el] == [a.value for a in eh]  # the rounding is proven
                    for a, b in zip(el, eh):
                        assert math.isclose(a.residual, b.residual, rel_tol=1e-9, abs_tol=1e-300)
                        assert math.isclose(a.sigma, b.sigma, rel_tol=1e-9)


def test_exact_ties_round_to_even_and_are_counted() -> None:
    # beta1 = 0.5, m = 1, g = 2^-24: m_new = 0.5 + 2^-25, exactly halfway between 0.5 and the
    # next float32 (0.5 + 2^-24); ties-to-even rounds down to 0.5.
    hp = Hyperparameters(beta1=0.5)
    g = golden(_case(hp=hp, w=(0.0,), g=(2.0**-24,), m=(1.0,), s=(1.0,), t=3))
    m = g.steps[0][0]["m"][0][0]
    assert m.value == 0.5 and m.residual == 2.0**-25
    assert g.ties >= 1


def test_special_values_give_named_alternatives() -> None:
    # g = inf: b1*m + (1-b1)*g is inf, but MXNet's fused b1*(m-g) + g is inf - inf = NaN.
    g = golden(_case(hp=Hyperparameters(), g=(math.inf,), w=(1.0,)))
    m_alts = g.steps[0][0]["m"][0]
    assert Special("inf") in m_alts and Special("nan") in m_alts


def test_doc_profile_nonpositive_clip_is_implementation_defined() -> None:
    g = golden(_case(profile="mxnet-doc", hp=Hyperparameters(wd=0.05, clip_gradient=0.0)))
    assert g.steps[0][0]["w"][0] == (Special("any"),)
    g = golden(_case(profile="mxnet", hp=Hyperparameters(wd=0.05, clip_gradient=0.0)))
    assert isinstance(g.steps[0][0]["w"][0][0], Finite)


def test_skip_rule_keeps_state_and_counts_the_step() -> None:
    hp = Hyperparameters(rescale_grad=math.nan)
    base = _case(hp=hp, w=(1.0,), g=(0.5,), m=(0.1,), s=(0.2,), t=4)
    g = golden(base)
    out = g.steps[0][0]
    assert (out["w"][0][0].value, out["m"][0][0].value) == (1.0, np.float32(0.1))
    doc = golden(CaseInputs("mxnet-doc", base.dtype, hp, base.params, base.steps))
    assert doc.steps[0][0]["w"][0] == (Special("nan"),)


def test_sigma_is_plain_ulp_scale_in_benign_cases() -> None:
    g = golden(_case(dtype="float64", hp=Hyperparameters(beta1=0.5, beta2=0.75, epsilon=0.5, learning_rate=0.5),
                     w=(1.0,), g=(1.0,), m=(0.5,), s=(0.5,), t=10))
    for name in ("w", "m", "s"):
        e = g.steps[0][0][name][0][0]
        assert abs(e.value) <= e.sigma <= 40 * abs(e.value)


def test_hyperparameter_rounding_that_changes_class_is_implementation_defined() -> None:
    # float32: 1e-50 rounds to 0 and 0.9999999999999999 to 1; float64 keeps both.
    for hp in (Hyperparameters(rescale_grad=1e-50), Hyperparameters(beta1=0.9999999999999999),
               Hyperparameters(beta2=1e-123)):
        g32 = golden(_case(dtype="float32", hp=hp, w=(1.0,), g=(math.inf,)))
        assert all(e == (Special("any"),) for e in g32.steps[0][0]["w"] + g32.steps[0][0]["m"])
    g64 = golden(_case(dtype="float64", hp=Hyperparameters(rescale_grad=1e-50), w=(1.0,), g=(0.5,)))
    assert isinstance(g64.steps[0][0]["m"][0][0], Finite)
