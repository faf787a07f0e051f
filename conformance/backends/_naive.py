"""The ``naive`` target: the update rule transcribed line by line into NumPy.

One expression per line, a fresh array per intermediate, one parameter at a time, nothing
clever: it is meant to be read next to the spec and believed, and it is the benchmark's
baseline. Every hyperparameter is rounded to the compute dtype first and every operation runs
in it (float32 for float32 and float16-mp, float64 for float64); the step size is evaluated in
float64, as MXNet's Python does, and rounded once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from adabelief_reference import Hyperparameters, profile_named, profile_names

from .._protocol import NUMPY_DTYPES, ParamResult, RunRequest

__all__ = ["NaiveNumpy", "NaiveParam", "naive_step", "naive_update"]



def naive_update(
    w: np.ndarray,
    m: np.ndarray,
    s: np.ndarray,
    g: np.ndarray,
    t: int,
    lr_mult: float,
    wd_mult: float,
    hp: Hyperparameters,
    rescale_grad: float,
    profile: str,
    compute: np.dtype,
    s_max: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One parameter's new (w, m, s); ``t`` is the update count of this step (>= 1). Under
    amsgrad ``s_max`` is the maximum buffer, updated in place."""
    c = compute.type
    with np.errstate(all="ignore"):
        # float64 scalars (not Python floats): 1/0 and overflow give inf instead of raising.
        d = np.float64
        lr_i = d(hp.learning_rate) * d(lr_mult)
        wd_i = d(hp.wd) * d(wd_mult)
        if hp.correct_bias:
            eta64 = lr_i * np.sqrt(d(1) - d(hp.beta2) ** t) / (d(1) - d(hp.beta1) ** t)
        else:
            eta64 = lr_i
        eta = c(eta64)
        wd_c = c(wd_i)
        rescale = c(rescale_grad)
        beta1 = c(hp.beta1)
        beta2 = c(hp.beta2)
        epsilon = c(hp.epsilon)
        one = c(1)
        clip = hp.clip_gradient
        clip_on = clip is not None and clip > 0  # MXNet clips only for clip_gradient > 0
        w = w.astype(compute)
        g = g.astype(compute)  # float16 -> float32 is exact
        g = rescale * g
        prof = profile_named(profile)
        if hp.weight_decouple:  # decoupled: the decay is subtracted from w below, not added here
            if clip_on:
                g = np.clip(g, -c(clip), c(clip))
        elif prof.weight_decay == "coupled-before-clip":
            g = g + wd_c * w
            if clip_on:
                g = np.clip(g, -c(clip), c(clip))
        else:  # coupled-after-clip: clip, then weight decay
            if clip_on:
                g = np.clip(g, -c(clip), c(clip))
            g = g + wd_c * w
        m = beta1 * m + (one - beta1) * g
        r = g - m
        eps_state = epsilon if prof.stored_epsilon == "epsilon" else c(hp.eps_root)
        if hp.weight_decouple:  # w*(1 - lr_i*wd_i), or w*(1 - wd_i) with fixed_decay
            w = w * c(d(1) - (wd_i if hp.fixed_decay else lr_i * wd_i))
        s = beta2 * s + (one - beta2) * (r * r) + eps_state
        s_den = s
        if s_max is not None:  # AMSGrad: the running maximum of s, updated in place
            np.maximum(s_max, s, out=s_max)
            s_den = s_max
        placement = prof.epsilon_denominator
        rho = None
        if hp.rectify:  # RAdam's SMA length N_t decides the branch (binary64)
            b2 = d(hp.beta2)
            n_inf = d(2) / (d(1) - b2) - d(1)
            p2 = b2**t
            n_t = n_inf - d(2) * t * p2 / (d(1) - p2)
            if n_t < 5:  # an SGD step (lr_i/bc1)*m, or no step at all
                bc1 = d(1) - d(hp.beta1) ** t if hp.correct_bias else d(1)
                return (w - c(lr_i / bc1) * m if hp.degenerated_to_sgd else w), m, s
            rho = np.sqrt((n_t - 4) * (n_t - 2) * n_inf / ((n_inf - 4) * (n_inf - 2) * n_t))
            before = prof.rectification.endswith("before-bias-correction")
            placement = "before-bias-correction" if before else "after-bias-correction"
            eta = c(eta64 * rho)
            if prof.amsgrad == "max-of-s-unrectified":
                s_den = s
        if placement == "before-bias-correction":
            w = w - eta * (m / (np.sqrt(s_den) + epsilon))
        else:  # epsilon after the bias correction: (lr_i/bc1) * m / (sqrt(s/bc2) + epsilon)
            bc1, bc2 = (d(1) - d(hp.beta1) ** t, d(1) - d(hp.beta2) ** t) if hp.correct_bias else (d(1), d(1))
            inner = s_den + epsilon if placement.endswith("transient-epsilon") else s_den
            a = lr_i / bc1 if rho is None else lr_i * rho / bc1
            w = w - c(a) * (m / (np.sqrt(inner / c(bc2)) + epsilon))
    return w, m, s


@dataclass
class NaiveParam:
    """One parameter's state; ``t`` counts the updates applied."""

    w: np.ndarray
    m: np.ndarray
    s: np.ndarray
    t: int = 0
    lr_mult: float = 1.0
    wd_mult: float = 1.0
    s_max: np.ndarray | None = None  # amsgrad only


def naive_step(params: Sequence[NaiveParam], grads: Sequence[np.ndarray], hp: Hyperparameters,
               rescale_grad: float | None = None, profile: str = "mxnet") -> bool:
    """One step over ``params``, written back into their arrays. False when skipped."""
    r = hp.rescale_grad if rescale_grad is None else float(rescale_grad)
    for p in params:
        p.t += 1  # counted even when the step is skipped
    skip_rule = profile_named(profile).rescale_skip == "skip-when-zero-or-nonfinite"
    if skip_rule and (r == 0 or not math.isfinite(r)):
        return False  # the skip rule: w, m, s unchanged
    for p, g in zip(params, grads):
        w, m, s = naive_update(p.w, p.m, p.s, g, p.t, p.lr_mult, p.wd_mult, hp, r, profile,
                               p.m.dtype, p.s_max)
        p.w[...] = w
        p.m[...] = m
        p.s[...] = s
    return True


class NaiveNumpy:
    """``naive``: a literal NumPy transcription of the update, one parameter at a time."""

    name = "naive"
    description = "literal NumPy transcription of the update (temporaries, per parameter)"
    profiles = frozenset(profile_names())
    dtypes = frozenset(NUMPY_DTYPES)

    def __init__(self) -> None:
        from .. import __version__

        self.version = f"{__version__} (numpy {np.__version__})"

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        params = [NaiveParam(p.w.copy(), p.m.copy(), p.s.copy(), p.t, p.lr_mult, p.wd_mult,
                             None if p.s_max is None else p.s_max.copy())
                  for p in request.params]
        multi_precision = request.dtype == "float16-mp"
        results = []
        for step in request.steps:
            naive_step(params, step.grads, request.hyperparameters, step.rescale_grad,
                       request.profile)
            out = []
            for p in params:
                w16 = None
                if multi_precision:
                    with np.errstate(over="ignore"):
                        w16 = p.w.astype(np.float16)
                out.append(ParamResult(p.w.copy(), p.m.copy(), p.s.copy(), w16,
                                       None if p.s_max is None else p.s_max.copy()))
            results.append(out)
        return results
