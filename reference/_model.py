"""The inputs of one conformance case: hyperparameters, per-parameter state, and the steps.

These frozen dataclasses are shared by the reference, the vector generator and the runner. All
floating-point values are Python floats holding exactly the value the vector file spells in hex.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._formats import FLOAT16, FLOAT32, FLOAT64, Format

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "DTYPES",
    "SWITCHES",
    "CaseInputs",
    "DtypeSpec",
    "Hyperparameters",
    "ParamInput",
    "StepInput",
]


@dataclass(frozen=True)
class DtypeSpec:
    """Where each array lives: gradient and stored weight (storage), master weight, and state."""

    name: str
    storage: Format  # gradient and the weight the model sees
    master: Format  # the weight the optimizer updates (equal to storage unless multi-precision)
    compute: Format  # m, s and every intermediate

    @property
    def multi_precision(self) -> bool:
        return self.storage != self.master


DTYPES: dict[str, DtypeSpec] = {
    "float32": DtypeSpec("float32", FLOAT32, FLOAT32, FLOAT32),
    "float64": DtypeSpec("float64", FLOAT64, FLOAT64, FLOAT64),
    "float16-mp": DtypeSpec("float16-mp", FLOAT16, FLOAT32, FLOAT32),
}


@dataclass(frozen=True)
class Hyperparameters:
    """MXNet's AdaBelief hyperparameters; defaults are MXNet's."""

    learning_rate: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-6
    correct_bias: bool = True
    wd: float = 0.0
    rescale_grad: float = 1.0
    clip_gradient: float | None = None
    # The epsilon stored in s under stored_epsilon = eps_root (optax's eps_root); 0.0 elsewhere.
    eps_root: float = 0.0
    # Switches that some libraries expose (spec/profiles.md#switches); a profile lists the values
    # its cases may take. weight_decouple: the decay is subtracted from w (lr_i*wd_i*w), not added
    # to the gradient; fixed_decay: ... and not scaled by the learning rate (wd_i*w).
    weight_decouple: bool = False
    fixed_decay: bool = False
    # rectify: RAdam's variance rectification (spec/algorithm.md#rectification); with
    # degenerated_to_sgd, steps whose SMA length is below 5 are SGD steps, else no update of w.
    rectify: bool = False
    degenerated_to_sgd: bool = False
    # amsgrad: the denominator uses s_max = max(s_max, s'), a state of its own
    amsgrad: bool = False


SWITCHES: tuple[str, ...] = ("weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd", "amsgrad")


DEFAULT_HYPERPARAMETERS = Hyperparameters()


@dataclass(frozen=True)
class ParamInput:
    """One parameter tensor (flattened) and its optimizer state before the case's first step.

    ``t`` is the number of updates already applied to this parameter: the first step of the case
    uses update count ``t + 1``.
    """

    w: tuple[float, ...]
    m: tuple[float, ...]
    s: tuple[float, ...]
    t: int = 0
    lr_mult: float = 1.0
    wd_mult: float = 1.0
    index: int = 0
    s_max: tuple[float, ...] | None = None  # the AMSGrad maximum of s (amsgrad cases only)

    def __post_init__(self) -> None:
        n = len(self.w)
        if len(self.m) != n or len(self.s) != n:
            raise ValueError(f"parameter {self.index}: w, m and s must have the same length")
        if self.s_max is not None and len(self.s_max) != n:
            raise ValueError(f"parameter {self.index}: s_max must have the length of w")
        if self.t < 0:
            raise ValueError(f"parameter {self.index}: t must be >= 0, got {self.t}")


@dataclass(frozen=True)
class StepInput:
    """One optimizer step: a gradient per parameter, and an optional rescale_grad override."""

    grads: tuple[tuple[float, ...], ...]
    rescale_grad: float | None = None


@dataclass(frozen=True)
class CaseInputs:
    profile: str
    dtype: str
    hyperparameters: Hyperparameters
    params: tuple[ParamInput, ...]
    steps: tuple[StepInput, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        from ._profiles import profile_named, profile_names

        if self.profile not in profile_names():
            return  # a profile this version does not know: a runner skips its cases
        for p in self.params:
            if (p.s_max is not None) != self.hyperparameters.amsgrad:
                raise ValueError(f"parameter {p.index}: s_max is the state of amsgrad cases: "
                                 f"{'missing' if p.s_max is None else 'not allowed'} here")
        allowed = profile_named(self.profile).switches
        for name in SWITCHES:
            value = getattr(self.hyperparameters, name)
            if value not in allowed.get(name, (False,)):
                raise ValueError(f"{name} = {value} is not a setting of profile {self.profile} "
                                 f"(it allows {list(allowed.get(name, (False,)))})")
        for k, step in enumerate(self.steps):
            if len(step.grads) != len(self.params):
                raise ValueError(f"step {k}: {len(step.grads)} gradients for {len(self.params)} parameters")
            for p, g in zip(self.params, step.grads):
                if len(g) != len(p.w):
                    raise ValueError(f"step {k}: gradient for parameter {p.index} has the wrong length")

    @property
    def dtype_spec(self) -> DtypeSpec:
        return DTYPES[self.dtype]

    def rescale_at(self, k: int) -> float:
        r = self.steps[k].rescale_grad
        return self.hyperparameters.rescale_grad if r is None else r


def is_finite(x: float) -> bool:
    return math.isfinite(x)
