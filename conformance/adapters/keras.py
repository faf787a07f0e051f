"""Check a Keras optimizer class: ``KerasOptimizer(tfa.optimizers.AdaBelief, ...)``.

Keras optimizers keep one global step count (``iterations``) per optimizer, so each parameter
gets an optimizer of its own, built with ``learning_rate = lr·lr_mult`` and
``weight_decay = wd·wd_mult``; its slots and ``iterations`` are then set to the case's state and
``t``. Two optimizer APIs are handled:

* the legacy ``OptimizerV2`` API (TF ≤ 2.10's ``tf.keras.optimizers.Optimizer``, TF 2.11-2.15's
  ``tf.keras.optimizers.legacy``, ``tf_keras``): slots created by ``_create_all_weights`` and
  reached with ``get_slot(var, name)``;
* the Keras 3 API, with any backend: variables created by ``build([var])``; the adapter finds a
  slot as the optimizer variable, shaped like the parameter, whose path ends with ``_NAME`` or
  ``/NAME`` (``slots=`` maps the spec's ``m``, ``s``, ``s_max`` to those names). With the JAX
  backend and float64 among the dtypes, JAX's 64-bit mode is turned on (as the optax adapter
  does). Keras 3 applies ``weight_decay`` itself, decoupled (w − lr·λ·w before the update).

For ``float16-mp`` the parameter is a float32 variable and the float16 gradient is cast to
float32, as Keras's ``LossScaleOptimizer`` leaves it. TensorFlow is imported when an adapter is
built.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from .._protocol import NUMPY_DTYPES, CaseSkipped, ParamResult, RunRequest
from ._common import (
    ALL_DTYPES,
    SwitchSet,
    distribution_version,
    import_framework,
    inexpressible_inputs,
    resolve_profiles,
    to_float16,
)

__all__ = ["HYPERPARAMETER_NAMES", "SLOT_NAMES", "KerasOptimizer"]

SLOT_NAMES: dict[str, str] = {"m": "m", "s": "v", "s_max": "vhat"}
# spec hyperparameter -> Keras constructor argument, as TensorFlow Addons names them
HYPERPARAMETER_NAMES: dict[str, str] = {"learning_rate": "learning_rate", "beta1": "beta_1",
                                        "beta2": "beta_2", "epsilon": "epsilon",
                                        "wd": "weight_decay"}
# TensorFlow Addons' and adabelief-tf's AdaBelief: decay always decoupled, below the threshold
# an SGD step
FIXED: dict[str, bool] = {"weight_decouple": True, "degenerated_to_sgd": True}


class KerasOptimizer:
    """An :class:`~adabelief_conformance.Implementation` running a Keras optimizer class."""

    def __init__(self, optimizer_class: Callable[..., Any], *,
                 profiles: Collection[str] | str = ("tensorflow",),
                 dtypes: Collection[str] = ALL_DTYPES,
                 configuration: str | Mapping[str, bool] = "case",
                 switches: Mapping[str, str | None] | None = None,
                 fixed: Mapping[str, bool] | None = None,
                 options: Mapping[str, Any] | None = None,
                 slots: Mapping[str, str] | None = None,
                 hyperparameter_names: Mapping[str, str] | None = None,
                 name: str | None = None, version: str | None = None) -> None:
        # The legacy OptimizerV2 API lives in TensorFlow; Keras 3 works with any of its backends.
        self._legacy = any(c.__name__ == "OptimizerV2" for c in getattr(optimizer_class, "__mro__", ()))
        if self._legacy:
            self._tf = import_framework("tensorflow", "tensorflow")
            framework = f"tensorflow {self._tf.__version__}"
        else:
            self._keras = import_framework("keras", "keras")
            backend = self._keras.backend.backend()
            framework = f"keras {self._keras.__version__}, {backend} backend"
            if backend == "jax" and "float64" in dtypes:  # as the optax adapter (its module doc)
                import_framework("jax", "optax").config.update("jax_enable_x64", True)
        self.optimizer_class = optimizer_class
        module = getattr(optimizer_class, "__module__", "") or ""
        qualname = getattr(optimizer_class, "__qualname__", repr(optimizer_class))
        switch_options = {"weight_decouple": None, "fixed_decay": None, "rectify": "rectify",
                          "degenerated_to_sgd": None, "amsgrad": "amsgrad", **(switches or {})}
        self.switches = SwitchSet.of_class(qualname if name is None else name, optimizer_class,
                                           switch_options, {**FIXED, **(fixed or {})}, configuration)
        self.options = dict(options or {})
        self.slots = {**SLOT_NAMES, **(slots or {})}
        self.hyper = {**HYPERPARAMETER_NAMES, **(hyperparameter_names or {})}
        self.name = name or f"{module}.{qualname}[{self.switches.label()}]"
        self.version = version or f"{distribution_version(module)} ({framework})"
        self.profiles = resolve_profiles(profiles)
        self.dtypes = frozenset(dtypes)

    def _build(self, req: RunRequest, values: Mapping[str, bool], lr: float, wd: float) -> Any:
        h = req.hyperparameters
        kwargs: dict[str, Any] = {self.hyper["learning_rate"]: lr, self.hyper["beta1"]: h.beta1,
                                  self.hyper["beta2"]: h.beta2, self.hyper["epsilon"]: h.epsilon,
                                  **self.options}
        if wd != 0.0:
            if not self.hyper.get("wd"):
                raise CaseSkipped(f"{self.switches.library} has no weight decay argument")
            kwargs[self.hyper["wd"]] = wd
        for switch, option in self.switches.options.items():
            if option:
                kwargs[option] = values[switch]
        try:
            return self.optimizer_class(**kwargs)
        except (ValueError, TypeError) as e:
            raise CaseSkipped(f"{self.switches.library} rejects these hyperparameters: "
                              f"{type(e).__name__}: {e}") from None

    def _slot(self, opt: Any, var: Any, key: str) -> Any | None:
        name = self.slots.get(key)
        if not name:
            return None
        if hasattr(opt, "get_slot"):  # legacy OptimizerV2
            return opt.get_slot(var, name) if name in opt.get_slot_names() else None
        shape = tuple(var.shape)
        found = [v for v in opt.variables if tuple(v.shape) == shape
                 and str(getattr(v, "path", v.name)).split(":")[0].endswith(("_" + name, "/" + name))]
        return found[0] if len(found) == 1 else None

    def _variable(self, w: np.ndarray) -> Any:
        if self._legacy:
            return self._tf.Variable(w)
        return self._keras.Variable(w, dtype=str(w.dtype))

    def _apply(self, opt: Any, var: Any, g: np.ndarray) -> np.ndarray:
        if self._legacy:
            opt.apply_gradients([(self._tf.constant(g), var)])
            return np.array(var.numpy())
        ops = self._keras.ops
        opt.apply_gradients([(ops.convert_to_tensor(g, dtype=str(g.dtype)), var)])
        return np.array(ops.convert_to_numpy(var))

    def _read(self, slot: Any) -> np.ndarray:
        if self._legacy:
            return np.asarray(slot.numpy())
        return np.asarray(self._keras.ops.convert_to_numpy(slot))

    def run(self, req: RunRequest) -> list[list[ParamResult]]:
        reason = inexpressible_inputs(req, self.switches.library)
        if reason:
            raise CaseSkipped(reason)
        values = self.switches.values(req)
        h = req.hyperparameters
        _, master_dt, state_dt = NUMPY_DTYPES[req.dtype]
        variables, opts = [], []
        for p in req.params:
            var = self._variable(np.asarray(p.w, dtype=master_dt))
            opt = self._build(req, values, h.learning_rate * p.lr_mult, h.wd * p.wd_mult)
            if hasattr(opt, "_create_all_weights"):
                opt._create_all_weights([var])
            else:
                opt.build([var])
            for key, value in (("m", p.m), ("s", p.s), ("s_max", p.s_max)):
                slot = self._slot(opt, var, key)
                if slot is None:
                    if key == "s_max":
                        continue
                    raise CaseSkipped(f"{self.switches.library}: no slot {self.slots.get(key)!r} "
                                      f"for {key}; pass slots=")
                slot.assign(np.zeros_like(p.s) if value is None else value)
            opt.iterations.assign(p.t)
            variables.append(var)
            opts.append(opt)
        amsgrad = any(p.s_max is not None for p in req.params)
        out: list[list[ParamResult]] = []
        for step in req.steps:
            results = []
            for opt, var, g in zip(opts, variables, step.grads):
                w = self._apply(opt, var, np.asarray(g, dtype=master_dt))
                s_max = self._slot(opt, var, "s_max") if amsgrad else None
                m, s = self._slot(opt, var, "m"), self._slot(opt, var, "s")
                assert m is not None and s is not None  # found when the state was loaded
                results.append(ParamResult(
                    w=w,
                    m=self._read(m).astype(state_dt),
                    s=self._read(s).astype(state_dt),
                    w16=to_float16(w) if req.dtype == "float16-mp" else None,
                    s_max=None if s_max is None else self._read(s_max).astype(state_dt)))
            out.append(results)
        return out
