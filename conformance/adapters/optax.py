"""Check an optax ``GradientTransformation``: ``OptaxTransformation(optax.adabelief)``.

``make(learning_rate=, b1=, b2=, eps=, eps_root=)`` (the keywords its signature accepts) builds
the transformation for one parameter: each parameter gets its own, with ``lr_i = lr·lr_mult``,
so that each keeps its own update count. Weight decay is chained the way optax composes it:
``add_decayed_weights(wd_i)`` before ``make``'s transformation (decay added to the gradient), or,
for ``weight_decouple``, the ``optax.adamw`` pattern ``chain(scale_by_belief(...),
add_decayed_weights(wd_i), scale_by_learning_rate(lr_i))``. The state is the transformation's
``init`` with the fields ``mu``, ``nu`` and ``count`` replaced by the case's ``m``, ``s`` and
``t`` (``optax.tree_utils.tree_set``). For ``float16-mp`` the parameter is a float32 master copy
and the float16 gradient is cast to float32.

float64 cases need JAX's 64-bit mode: the adapter turns ``jax_enable_x64`` on when it is built
with ``float64`` among its dtypes (the default), for the whole process. In that mode optax
evaluates its bias correction in float64 before casting it to the moments' dtype; without it,
in float32.
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
    signature_defaults,
    to_float16,
)

__all__ = ["STATE_NAMES", "OptaxTransformation"]

STATE_NAMES: dict[str, str] = {"m": "mu", "s": "nu", "t": "count"}
_INT32_MAX = 2**31 - 1


class OptaxTransformation:
    """An :class:`~adabelief_conformance.Implementation` running an optax transformation.

    ``eps_root``: for a profile that stores ε in s (``stored_epsilon = "epsilon"``), the adapter
    passes ``eps_root = eps``, which is how optax expresses it; for ``"eps_root"`` the case's
    value; in the ``defaults`` configuration the factory's own default.
    """

    def __init__(self, make: Callable[..., Any] | None = None, *,
                 profiles: Collection[str] | str = ("optax",),
                 dtypes: Collection[str] = ALL_DTYPES,
                 configuration: str | Mapping[str, bool] = "case",
                 state_names: Mapping[str, str] | None = None,
                 name: str | None = None, version: str | None = None) -> None:
        self._jax = import_framework("jax", "optax")
        self._optax = import_framework("optax", "optax")
        self._jnp = self._jax.numpy
        if "float64" in dtypes:
            self._jax.config.update("jax_enable_x64", True)
        self.make = self._optax.adabelief if make is None else make
        self._accepts = signature_defaults(self.make)
        qualname = getattr(self.make, "__qualname__", repr(self.make))
        module = getattr(self.make, "__module__", "optax") or "optax"
        # optax's transformations have no switches; decoupled decay is a chain (module doc)
        self.switches = SwitchSet(f"optax {qualname}", {"weight_decouple": "chain"}, {},
                                  {"weight_decouple": False}, configuration)
        self.state_names = {**STATE_NAMES, **(state_names or {})}
        self.name = name or f"{module}.{qualname}[{self.switches.label()}]"
        self.version = version or f"{distribution_version('optax')} (jax {self._jax.__version__})"
        self.profiles = resolve_profiles(profiles)
        self.dtypes = frozenset(dtypes)

    def _eps_root(self, req: RunRequest) -> float:
        from adabelief_reference import profile_named

        h = req.hyperparameters
        profile = profile_named(req.profile)
        if self.switches.configuration == "defaults" and "eps_root" in self._accepts:
            default = float(self._accepts["eps_root"])
            if profile.stored_epsilon == "eps_root" and h.eps_root != default:
                raise CaseSkipped(f"the case asks eps_root={h.eps_root!r}; {self.switches.library} "
                                  f"is configured (defaults) with eps_root={default!r}")
            return default
        if not profile.epsilon_in_state:
            return 0.0
        return h.epsilon if profile.stored_epsilon == "epsilon" else h.eps_root

    def _transformation(self, req: RunRequest, lr: float, wd: float, decouple: bool) -> Any:
        optax = self._optax
        h = req.hyperparameters
        kw = {"learning_rate": lr, "b1": h.beta1, "b2": h.beta2, "eps": h.epsilon,
              "eps_root": self._eps_root(req)}
        kw = {k: v for k, v in kw.items() if k in self._accepts or k == "learning_rate"}
        if "eps_root" not in kw and kw.get("eps_root", 0.0) != 0.0:
            raise CaseSkipped(f"{self.switches.library} has no eps_root")
        if wd == 0.0:
            return self.make(**kw)
        if not decouple:
            return optax.chain(optax.add_decayed_weights(wd), self.make(**kw))
        if self.make is not optax.adabelief:
            raise CaseSkipped(f"{self.switches.library}: decoupled weight decay is chained only "
                              "around optax.adabelief's scale_by_belief")
        kw.pop("learning_rate")
        return optax.chain(optax.scale_by_belief(**kw), optax.add_decayed_weights(wd),
                           optax.scale_by_learning_rate(lr))

    def run(self, req: RunRequest) -> list[list[ParamResult]]:
        jnp, optax = self._jnp, self._optax
        reason = inexpressible_inputs(req, self.switches.library, eps_root=True)
        if reason:
            raise CaseSkipped(reason)
        values = self.switches.values(req)
        if any(values[s] for s in ("fixed_decay", "rectify", "amsgrad")):
            raise CaseSkipped(f"{self.switches.library} cannot express "
                              f"{', '.join(s for s in ('fixed_decay', 'rectify', 'amsgrad') if values[s])}")
        if any(p.t + len(req.steps) > _INT32_MAX for p in req.params):
            raise CaseSkipped("optax's update count is int32 and saturates at 2**31 - 1")
        if req.dtype == "float64" and not self._jax.config.jax_enable_x64:
            raise CaseSkipped("float64 needs jax_enable_x64 (build the adapter with float64 in dtypes)")
        h = req.hyperparameters
        _, master_dt, state_dt = NUMPY_DTYPES[req.dtype]
        names = self.state_names
        txs, params, states = [], [], []
        for p in req.params:
            tx = self._transformation(req, h.learning_rate * p.lr_mult, h.wd * p.wd_mult,
                                      values["weight_decouple"])
            w = jnp.asarray(np.asarray(p.w, dtype=master_dt))
            state = tx.init(w)
            try:
                state = optax.tree_utils.tree_set(
                    state, **{names["m"]: jnp.asarray(p.m), names["s"]: jnp.asarray(p.s),
                              names["t"]: jnp.asarray(p.t, dtype=jnp.int32)})
            except (KeyError, ValueError) as e:
                raise CaseSkipped(f"{self.switches.library}: its state has no "
                                  f"{names['m']}/{names['s']}/{names['t']} ({e}); pass state_names=") from None
            txs.append(tx)
            params.append(w)
            states.append(state)
        out: list[list[ParamResult]] = []
        for step in req.steps:
            results = []
            for k, (tx, g) in enumerate(zip(txs, step.grads)):
                updates, states[k] = tx.update(jnp.asarray(np.asarray(g, dtype=master_dt)),
                                               states[k], params[k])
                params[k] = optax.apply_updates(params[k], updates)
                w = np.array(params[k])
                m = optax.tree_utils.tree_get(states[k], names["m"])
                s = optax.tree_utils.tree_get(states[k], names["s"])
                results.append(ParamResult(
                    w=w, m=np.asarray(m, dtype=state_dt).copy(), s=np.asarray(s, dtype=state_dt).copy(),
                    w16=to_float16(w) if req.dtype == "float16-mp" else None))
            out.append(results)
        return out
