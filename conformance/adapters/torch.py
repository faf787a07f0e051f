"""Check any ``torch.optim.Optimizer`` class: ``TorchOptimizer(timm.optim.AdaBelief, ...)``.

Each case gets a fresh optimizer with one parameter group per parameter (its ``lr_mult`` and
``wd_mult`` folded into the group's ``lr`` and ``weight_decay``, and its own step count, whether
the library keeps the count per parameter or per group). The optimizer takes one step on zero
gradients to create its state, whose tensors and count are then overwritten with the case's. For
``float16-mp`` the parameter is a float32 master copy, the float16 gradient is cast to float32
before the step and the float16 weight is the master rounded, as ``torch.amp`` training does.

torch is imported when an adapter is built, so the package needs it only when it is used.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Collection, Mapping, Sequence
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

__all__ = ["STATE_NAMES", "SWITCH_OPTIONS", "TorchOptimizer"]

# spec name -> the state key most PyTorch AdaBelief implementations use
STATE_NAMES: dict[str, str] = {"m": "exp_avg", "s": "exp_avg_var", "s_max": "max_exp_avg_var",
                               "t": "step"}
# profile switch -> constructor option, as adabelief-pytorch names them
SWITCH_OPTIONS: dict[str, str | None] = {
    "weight_decouple": "weight_decouple", "fixed_decay": "fixed_decay", "rectify": "rectify",
    "degenerated_to_sgd": "degenerated_to_sgd", "amsgrad": "amsgrad"}


class TorchOptimizer:
    """An :class:`~adabelief_conformance.Implementation` running a ``torch.optim.Optimizer``.

    ``optimizer_class(params, lr=, betas=, eps=, weight_decay=, **options)`` must build the
    optimizer; ``switches`` maps each profile switch to the constructor option that sets it (None:
    the library has none, and ``fixed`` says how it behaves); ``configuration`` is ``"case"``,
    ``"defaults"``, ``"mxnet-closest"`` or a dict of switches (adapters/_common.py).
    """

    def __init__(self, optimizer_class: Callable[..., Any], *,
                 profiles: Collection[str] | str = ("adabelief-pytorch",),
                 dtypes: Collection[str] = ALL_DTYPES,
                 configuration: str | Mapping[str, bool] = "case",
                 switches: Mapping[str, str | None] | None = None,
                 fixed: Mapping[str, bool] | None = None,
                 options: Mapping[str, Any] | None = None,
                 state_names: Mapping[str, str] | None = None,
                 name: str | None = None, version: str | None = None) -> None:
        self._torch = import_framework("torch", "torch")
        self.optimizer_class = optimizer_class
        module = getattr(optimizer_class, "__module__", "") or ""
        qualname = getattr(optimizer_class, "__qualname__", repr(optimizer_class))
        self.options = dict(options or {})
        self.state_names = {**STATE_NAMES, **(state_names or {})}
        switch_options = {**SWITCH_OPTIONS, **(switches or {})}
        self.switches = SwitchSet.of_class(qualname if name is None else name, optimizer_class,
                                           switch_options, fixed or {}, configuration)
        extra = "".join(f",{k}={v}" for k, v in sorted(self.options.items()))
        self.name = name or f"{module}.{qualname}[{self.switches.label()}{extra}]"
        self.version = version or f"{distribution_version(module)} (torch {self._torch.__version__})"
        self.profiles = resolve_profiles(profiles)
        self.dtypes = frozenset(dtypes)

    # -- one case ---------------------------------------------------------------------------
    def _build(self, req: RunRequest, values: Mapping[str, bool], params: Sequence[Any]) -> Any:
        h = req.hyperparameters
        kwargs: dict[str, Any] = {"lr": h.learning_rate, "betas": (h.beta1, h.beta2),
                                  "eps": h.epsilon, "weight_decay": h.wd, **self.options}
        for switch, option in self.switches.options.items():
            if option:
                kwargs[option] = values[switch]
        groups = [{"params": [q], "lr": h.learning_rate * p.lr_mult,
                   "weight_decay": h.wd * p.wd_mult} for q, p in zip(params, req.params)]
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # adabelief-pytorch prints a change log
                return self.optimizer_class(groups, **kwargs)
        except (ValueError, TypeError) as e:
            raise CaseSkipped(f"{self.switches.library} rejects these hyperparameters: "
                              f"{type(e).__name__}: {e}") from None

    def _load_state(self, opt: Any, params: Sequence[Any], req: RunRequest) -> None:
        torch = self._torch
        names = self.state_names
        for q, p, group in zip(params, req.params, opt.param_groups):
            state = opt.state[q]
            with torch.no_grad():
                q.copy_(torch.from_numpy(p.w))
                for key, value in ((names["m"], p.m), (names["s"], p.s)):
                    if key not in state:
                        raise CaseSkipped(f"{self.switches.library} keeps no state {key!r} "
                                          f"(its keys: {sorted(state)}); pass state_names=")
                    state[key].copy_(torch.from_numpy(value))
                if names["s_max"] in state:
                    s_max = p.s_max if p.s_max is not None else np.zeros_like(p.s)
                    state[names["s_max"]].copy_(torch.from_numpy(s_max))
            holder = state if names["t"] in state else group
            if names["t"] not in holder:
                raise CaseSkipped(f"{self.switches.library} keeps no step count {names['t']!r}")
            if torch.is_tensor(holder[names["t"]]):
                holder[names["t"]].fill_(p.t)
            else:
                holder[names["t"]] = type(holder[names["t"]])(p.t)

    def run(self, req: RunRequest) -> list[list[ParamResult]]:
        torch = self._torch
        reason = inexpressible_inputs(req, self.switches.library)
        if reason:
            raise CaseSkipped(reason)
        values = self.switches.values(req)
        _, master_dt, state_dt = NUMPY_DTYPES[req.dtype]
        params = [torch.nn.Parameter(torch.from_numpy(np.array(p.w, dtype=master_dt)))
                  for p in req.params]
        opt = self._build(req, values, params)
        for q in params:  # one step on zero gradients creates the state; it is overwritten next
            q.grad = torch.zeros_like(q)
        opt.step()
        self._load_state(opt, params, req)
        amsgrad = any(p.s_max is not None for p in req.params)
        out: list[list[ParamResult]] = []
        for step in req.steps:
            for q, g in zip(params, step.grads):
                q.grad = torch.from_numpy(np.asarray(g, dtype=master_dt))  # float16 -> float32 (AMP)
            opt.step()
            results = []
            for q in params:
                state = opt.state[q]
                w = q.detach().numpy().copy()
                s_max = state.get(self.state_names["s_max"]) if amsgrad else None
                results.append(ParamResult(
                    w=w,
                    m=state[self.state_names["m"]].numpy().astype(state_dt, copy=True),
                    s=state[self.state_names["s"]].numpy().astype(state_dt, copy=True),
                    w16=to_float16(w) if req.dtype == "float16-mp" else None,
                    s_max=None if s_max is None else s_max.numpy().astype(state_dt, copy=True)))
            out.append(results)
        return out
