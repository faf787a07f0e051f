"""The Keras adapter: the legacy OptimizerV2 path runs the real TensorFlow Addons AdaBelief
(where TensorFlow 2.15 is installed: `nox -s compatibility`), and the Keras 3 path runs a Keras 3
optimizer through Keras's own build / apply_gradients / variables machinery."""

from __future__ import annotations

import os

import pytest
from conftest import needs

from adabelief_conformance._runner import check, select_cases


def _keras3():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = needs("keras")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip(f"keras {keras.__version__} is not Keras 3")
    return keras


def _adabelief3(keras):
    """AdaBelief as TensorFlow Addons computes it without rectification and AMSGrad, written as a
    Keras 3 optimizer (the code under test is the adapter, not this class)."""
    ops = keras.ops

    class AdaBelief3(keras.optimizers.Optimizer):
        def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-14,
                     weight_decay=None, name="adabelief3", **kwargs):
            super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name,
                             **kwargs)
            self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._m = [self.add_variable_from_reference(v, "m") for v in var_list]
            self._v = [self.add_variable_from_reference(v, "v") for v in var_list]

        def update_step(self, gradient, variable, learning_rate):
            k = self._get_variable_index(variable)
            m, v = self._m[k], self._v[k]
            dt = variable.dtype
            lr = ops.cast(learning_rate, dt)
            t = ops.cast(self.iterations + 1, dt)
            b1, b2, eps = (ops.cast(x, dt) for x in (self.beta_1, self.beta_2, self.epsilon))
            g = ops.cast(gradient, dt)
            self.assign(m, b1 * m + (1 - b1) * g)
            self.assign(v, b2 * v + (1 - b2) * ops.square(g - m) + eps)
            m_hat = m / (1 - ops.power(b1, t))
            v_hat = ops.sqrt(v / (1 - ops.power(b2, t)))
            self.assign_sub(variable, lr * m_hat / (v_hat + eps))

    return AdaBelief3


def test_keras3_optimizer_conforms_through_the_keras3_path(bundled_cases) -> None:
    keras = _keras3()
    from adabelief_conformance.adapters.keras import KerasOptimizer

    impl = KerasOptimizer(_adabelief3(keras), profiles={"tensorflow"},
                          dtypes={"float32", "float16-mp"},
                          switches={"rectify": None, "amsgrad": None},
                          fixed={"rectify": False, "amsgrad": False})
    assert not impl._legacy
    report = check(impl, select_cases(bundled_cases, profiles={"tensorflow"},
                                      dtypes={"float32", "float16-mp"}), max_failures=1)
    counts = report.totals.counts
    # the tensorflow profile's cases without rectification and AMSGrad (the others are skipped)
    assert counts["passed"] >= 40, counts
    # what fails is what XLA does, not the adapter: subnormals flushed to zero
    for r in report.results:
        if r.outcome.status == "failed":
            assert r.case.suite in ("magnitudes", "special-values"), r.outcome.message
            assert "= 0x0p+0 (0.0)" in r.outcome.message or "nan" in r.outcome.message, r.outcome.message


def test_legacy_path_runs_tensorflow_addons(bundled_cases) -> None:
    # TensorFlow 2.15 lives in its own environment (numpy < 2): `nox -s compatibility` runs this
    pytest.importorskip("tensorflow_addons")
    from adabelief_conformance._targets import resolve_target

    report = check(resolve_target("library:tensorflow-addons"),
                   select_cases(bundled_cases, profiles={"tensorflow"}, dtypes={"float32"}),
                   max_failures=1)
    assert report.totals.counts["passed"] >= 60
