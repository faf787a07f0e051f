"""The vector suites: which inputs each golden vector file holds, and why.

Each suite is a function ``(rng, dtype, profile) -> list[Test]``. Inputs are drawn from a seeded
``random.Random`` and rounded to the formats they are stored in, so the files are reproducible
byte for byte. The regimes are chosen where the catalogued mistakes are large compared with the
error scale: tiny gradients (epsilon dominates s), t > 1 (the stored epsilon and the bias
correction show), w near zero (the step is not hidden under w's own rounding), and so on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from ._formats import Format
from ._model import DTYPES, CaseInputs, Hyperparameters, ParamInput, StepInput
from ._profiles import profile_named, switch_settings

__all__ = ["FLAGS", "SUITES", "Test"]

INF, NAN = math.inf, math.nan


@dataclass(frozen=True)
class Test:
    case: CaseInputs
    comment: str
    flags: tuple[str, ...]


# flag -> (bug type, what a failure of a test with this flag most likely means)
FLAGS: dict[str, tuple[str, str]] = {
    "Defaults": ("baseline", "The update with MXNet's default hyperparameters is wrong."),
    "Grid": ("hyperparameter handling", "Some hyperparameter is ignored, swapped or mis-rounded."),
    "EpsilonPlacement": ("epsilon placement", "epsilon is missing from s, added twice, or applied after the bias correction (sqrt(s_hat)+eps) instead of before it."),
    "EpsilonInState": ("epsilon persistence", "epsilon is added to s for the denominator but not stored in the state (or stored twice); visible from the second step."),
    "BiasCorrection": ("bias correction", "Missing bias correction, 1-beta2^t used instead of its square root, or t off by one."),
    "NoBiasCorrection": ("bias correction switch", "correct_bias=False is not honoured."),
    "ClipOrder": ("clip / weight-decay order", "Weight decay added after clipping instead of before (or the reverse for the mxnet-doc profile)."),
    "Clip": ("clipping", "clip_gradient is ignored or applied to the wrong quantity."),
    "ClipNonPositive": ("clip_gradient <= 0", "clip_gradient 0 or negative must disable clipping (profile mxnet); MXNet's step() path zeroes or scrambles the gradient instead."),
    "WeightDecay": ("weight decay", "Weight decay ignored, decoupled (AdamW-style) instead of coupled, or wd_mult ignored."),
    "Rescale": ("rescale_grad", "rescale_grad ignored, or applied after clipping."),
    "SkipRule": ("non-finite or zero rescale_grad", "MXNet's fused kernels skip the whole update when rescale_grad is 0 or not finite, and still count the step."),
    "PerParameterT": ("update count", "One global t instead of one per parameter index, or lr_mult / wd_mult ignored."),
    "LargeT": ("large t", "beta^t underflow or integer overflow of t mishandled."),
    "Cancellation": ("cancellation", "An evaluation that loses accuracy where terms cancel (g == m, w == step)."),
    "SpecialValue": ("special values", "NaN, infinity or signed zero in an input is not propagated per IEEE 754."),
    "Subnormal": ("subnormals", "Subnormal inputs or results flushed to zero (FTZ/DAZ)."),
    "Overflow": ("overflow", "An intermediate overflow handled differently from any admissible evaluation."),
    "Magnitude": ("dynamic range", "Wrong results far from 1: scaling, underflow, overflow."),
    "Trajectory": ("state over many steps", "State (m, s, t) not carried correctly from step to step."),
    "AMSGrad": ("AMSGrad", "The maximum of s is not kept, not used in the denominator, holds a stray epsilon, or is used where the library uses s (or the reverse)."),
    "Rectification": ("rectification", "The SMA threshold, the rectification factor, the rectified step's epsilon placement or the step below the threshold is wrong, or rectify is ignored."),
    "MixedPrecision": ("multi-precision", "float16 weights updated without the float32 master copy, or the float16 copy not rounded from it."),
}


# ----- helpers ------------------------------------------------------------------------------

def fit(x: float, fmt: Format) -> float:
    """Round a double to the nearest value of ``fmt`` (exactly, no double rounding)."""
    if not math.isfinite(x) or x == 0:
        return x  # keeps the sign of zero
    return fmt.round_fraction(Fraction(x))


def loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def signed(rng: random.Random, x: float) -> float:
    return x if rng.random() < 0.5 else -x


class Builder:
    """Makes cases for one (dtype, profile), rounding every input to its storage format."""

    def __init__(self, rng: random.Random, dtype: str, profile: str) -> None:
        self.rng = rng
        self.dtype = dtype
        self.profile = profile
        spec = DTYPES[dtype]
        self.gf, self.wf, self.sf = spec.storage, spec.master, spec.compute
        # Under stored_epsilon = eps_root every case gets an eps_root of its own, drawn from a
        # stream separate from the inputs' (so the inputs match the other profiles'): mostly
        # unlike epsilon, so that storing epsilon instead shows.
        self.eps_root_rng = (random.Random(f"eps_root/{profile}/{dtype}")
                             if profile_named(profile).stored_epsilon == "eps_root" else None)
        # The switch settings a case of this profile may take, the library's defaults first; the
        # cases of every suite take them in turn, so that each suite checks the library with its
        # own defaults and with its options set closest to MXNet (switches off) alike.
        self.switch_settings = switch_settings(profile_named(profile))
        self.cases_made = 0

    def default_switches(self) -> dict[str, bool]:
        """The library's default setting of every switch of this profile."""
        return {k: v[0] for k, v in profile_named(self.profile).switches.items()}

    def allows(self, **switches: bool) -> bool:
        """Whether this profile's cases may take these switch values."""
        return all(v in profile_named(self.profile).switches.get(k, (False,)) for k, v in switches.items())

    def param(self, w: Sequence[float], m: Sequence[float] | None = None, s: Sequence[float] | None = None,
              t: int = 0, lr_mult: float = 1.0, wd_mult: float = 1.0, index: int = 0) -> ParamInput:
        n = len(w)
        m = [0.0] * n if m is None else m
        s = [0.0] * n if s is None else s
        return ParamInput(tuple(fit(x, self.wf) for x in w), tuple(fit(x, self.sf) for x in m),
                          tuple(fit(x, self.sf) for x in s), t, lr_mult, wd_mult, index)

    def grads(self, *per_param: Sequence[float]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(fit(x, self.gf) for x in g) for g in per_param)

    def case(self, hp: Hyperparameters, params: Sequence[ParamInput],
             steps: Sequence[Sequence[Sequence[float]]], rescales: Sequence[float | None] | None = None,
             switches: dict[str, bool] | None = None) -> CaseInputs:
        rescales = rescales or [None] * len(steps)
        st = tuple(StepInput(self.grads(*g), r) for g, r in zip(steps, rescales))
        if self.eps_root_rng is not None and hp.eps_root == 0.0:
            e = hp.epsilon
            hp = replace(hp, eps_root=self.eps_root_rng.choice([0.0, 1e-16, e / 16, 16 * e, e]))
        if switches is None and self.switch_settings != [{}]:
            switches = self.switch_settings[self.cases_made % len(self.switch_settings)]
        if switches is not None:  # a switch the suite does not set keeps the library default
            hp = replace(hp, **{**self.default_switches(), **switches})
        if hp.amsgrad:  # the maximum buffer starts where s is, unless the suite says otherwise
            params = [p if p.s_max is not None else replace(p, s_max=p.s) for p in params]
        else:
            params = [replace(p, s_max=None) for p in params]
        self.cases_made += 1
        return CaseInputs(self.profile, self.dtype, hp, tuple(params), st)

    def random_state(self, n: int, gscale: tuple[float, float] = (1e-3, 3.0),
                     wscale: tuple[float, float] = (1e-3, 2.0), moments: bool = True) -> tuple[list[float], list[float], list[float], list[float]]:
        r = self.rng
        g = [signed(r, loguniform(r, *gscale)) for _ in range(n)]
        w = [signed(r, loguniform(r, *wscale)) for _ in range(n)]
        if moments:
            m = [signed(r, loguniform(r, gscale[0] / 10, gscale[1])) for _ in range(n)]
            s = [loguniform(r, gscale[0] ** 2 / 100, gscale[1] ** 2) for _ in range(n)]
        else:
            m, s = [0.0] * n, [0.0] * n
        return w, g, m, s

    def random_grads(self, n: int, scale: tuple[float, float] = (1e-3, 3.0)) -> list[float]:
        return [signed(self.rng, loguniform(self.rng, *scale)) for _ in range(n)]


def _mp_flag(b: Builder) -> tuple[str, ...]:
    return ("MixedPrecision",) if DTYPES[b.dtype].multi_precision else ()


HP = Hyperparameters


# ----- suites -------------------------------------------------------------------------------

def suite_defaults(b: Builder) -> list[Test]:
    tests = []
    hp = HP()
    for t0 in (0, 1, 9, 99):
        w, g, m, s = b.random_state(8, moments=t0 > 0)
        nsteps = 1 if t0 else 2
        steps = [[g]] + [[b.random_grads(8)] for _ in range(nsteps - 1)]
        tests.append(Test(b.case(hp, [b.param(w, m, s, t=t0)], steps),
                          f"default hyperparameters, t={t0}, {nsteps} step(s)", ("Defaults", *_mp_flag(b))))
    # The example of spec/errata.md: w=10, g=0.3, wd=0.05, clip=0.5 at t=1.
    tests.append(Test(b.case(HP(wd=0.05, clip_gradient=0.5), [b.param([10.0, 1.0, -1.0, 0.0])],
                             [[[0.3, 1.0, -0.3, 0.7]]]),
                      "MXNet measurement example (w=10, g=0.3, wd=0.05, clip=0.5)", ("Defaults", "ClipOrder")))
    return tests


GRID = {
    "learning_rate": (1e-3, 0.1, 0.5),
    "beta1": (0.0, 0.5, 0.9, 0.99),
    "beta2": (0.5, 0.9, 0.999, 0.99999),
    "epsilon": (1e-6, 1e-8, 1e-3),
    "wd": (0.0, 0.03, 0.5),
    "rescale_grad": (1.0, 0.125, 0.7),
    "clip_gradient": (None, 0.4, 5.0),
    "correct_bias": (True, False),
}


def suite_grid(b: Builder) -> list[Test]:
    tests = []
    for _ in range(20):
        kw = {k: b.rng.choice(v) for k, v in GRID.items()}
        hp = HP(**kw)  # type: ignore[arg-type]
        t0 = b.rng.choice((0, 0, 2, 30))
        w, g, m, s = b.random_state(6, moments=t0 > 0)
        steps = [[g], [b.random_grads(6)]]
        desc = ", ".join(f"{k}={v}" for k, v in kw.items())
        tests.append(Test(b.case(hp, [b.param(w, m, s, t=t0)], steps), f"grid: {desc}, t={t0}", ("Grid",)))
    return tests


def suite_clipping(b: Builder) -> list[Test]:
    tests = []
    gs = [0.3, -0.3, 0.5, -0.5, 0.8, -0.8, 1e3, -1e3, 0.4999, 1e-4]
    w = [0.5, -0.5, 2.0, -2.0, 0.1, 1.0, 0.0, 3.0, 0.01, 0.001]
    for clip in (None, 0.5, 1e-3, 1e30, INF):
        for wd in (0.0, 0.05, 0.5):
            hp = HP(clip_gradient=clip, wd=wd, learning_rate=0.01)
            flags = ["Clip"] + (["ClipOrder"] if wd and clip else [])
            tests.append(Test(b.case(hp, [b.param(w)], [[gs], [[x * 0.5 for x in gs]]]),
                              f"clip_gradient={clip}, wd={wd}", tuple(flags)))
    for clip in (0.0, -0.5, -INF, NAN):
        hp = HP(clip_gradient=clip, wd=0.05, learning_rate=0.01)
        tests.append(Test(b.case(hp, [b.param(w)], [[gs]]),
                          f"clip_gradient={clip}: disables clipping (mxnet); implementation-defined (mxnet-doc)",
                          ("ClipNonPositive",)))
    return tests


def suite_weight_decay(b: Builder) -> list[Test]:
    tests = []
    w = [10.0, -10.0, 1.0, 0.25, -3.0, 100.0, 0.0, 1e-3]
    g = [0.0, 0.3, -0.3, 1e-3, 2.0, -0.01, 0.5, 0.0]
    for wd, clip in ((0.05, None), (0.05, 0.5), (0.5, 1.0), (1e-4, None), (2.0, 0.1)):
        hp = HP(wd=wd, clip_gradient=clip)
        for wd_mult in (1.0, 0.0, 3.0):
            flags = ["WeightDecay"] + (["ClipOrder"] if clip else [])
            tests.append(Test(b.case(hp, [b.param(w, t=3, m=[0.01] * 8, s=[1e-4] * 8, wd_mult=wd_mult)],
                                     [[g], [g]]),
                              f"wd={wd}, wd_mult={wd_mult}, clip_gradient={clip}", tuple(flags)))
    return tests


def suite_decoupled_weight_decay(b: Builder) -> list[Test]:
    """Decoupled decay (weight_decouple), where it shows most: a zero gradient and a large w, so
    that the step is the decay alone; the lr-scaled and the fixed form; several steps. Only for
    profiles whose cases may decouple the decay."""
    if not b.allows(weight_decouple=True):
        return []
    tests = []
    w = [10.0, -10.0, 1.0, 0.25, -3.0, 100.0, 0.0, 1e-3]
    g = [0.0, 0.0, 0.3, -0.3, 1e-3, 0.0, 0.5, 2.0]
    for fixed in (False, True):
        if not b.allows(weight_decouple=True, fixed_decay=fixed):
            continue
        sw = {"weight_decouple": True, "fixed_decay": fixed}
        for wd, lr, wd_mult in ((0.05, 1e-3, 1.0), (0.5, 0.1, 1.0), (1e-4, 1e-3, 3.0), (0.05, 1e-3, 0.0),
                                (2.0, 0.01, 1.0)):
            tests.append(Test(b.case(HP(wd=wd, learning_rate=lr), [b.param(w, t=3, m=[0.01] * 8, s=[1e-4] * 8,
                                                                           wd_mult=wd_mult)],
                                     [[g], [g], [[0.0] * 8]], switches=sw),
                              f"decoupled decay, fixed_decay={fixed}, wd={wd}, lr={lr}, wd_mult={wd_mult}",
                              ("WeightDecay",)))
        tests.append(Test(b.case(HP(wd=0.05, clip_gradient=0.1), [b.param(w, t=0)], [[g]], switches=sw),
                          f"decoupled decay with clipping, fixed_decay={fixed}: the decay is not clipped",
                          ("WeightDecay", "ClipOrder")))
        tests.append(Test(b.case(HP(wd=0.05), [b.param([INF, -INF, NAN, 1.0], t=2, m=[0.01] * 4, s=[1e-3] * 4)],
                                 [[[0.1, 0.1, 0.1, 0.1]]], switches=sw),
                          f"decoupled decay of non-finite weights, fixed_decay={fixed}", ("WeightDecay", "SpecialValue")))
    return tests


def suite_rectification(b: Builder) -> list[Test]:
    """RAdam's rectification (rectify), where it shows: the first steps, where the SMA length
    N_t crosses 5 (t = 5 to 6 for these beta2) and below it the SGD step or none; tiny gradients,
    so that the rectified step's epsilon placement shows. Only for profiles that rectify."""
    if not b.allows(rectify=True):
        return []
    tests = []
    w = [0.0, 0.0, 1e-3, 10.0, 0.0, -2.0]  # w = 0: the step itself is the output, to the last bit
    for beta2 in (0.999, 0.99, 0.9):
        for t0 in (0, 3, 4, 5, 6, 20):
            for degenerate in (True, False):
                if not b.allows(rectify=True, degenerated_to_sgd=degenerate):
                    continue
                grads = [[[x * (1 + 0.2 * k) for x in (1e-4, -2e-3, 0.3, -1e-5, 1e-6, 1.5)]] for k in range(3)]
                m0 = [0.0] * 6 if t0 == 0 else [1e-4, -1e-3, 0.1, 0.0, 0.0, 0.5]
                s0 = [0.0] * 6 if t0 == 0 else [1e-8, 1e-6, 1e-3, 1e-10, 0.0, 0.1]
                sw = dict(b.default_switches(), rectify=True, degenerated_to_sgd=degenerate)
                tests.append(Test(b.case(HP(beta2=beta2, wd=0.01), [b.param(w, m0, s0, t=t0)], grads,
                                         switches=sw),
                                  f"rectify, beta2={beta2}, t={t0}..{t0 + 3}, degenerated_to_sgd={degenerate}",
                                  ("Rectification",)))
    return tests


def suite_amsgrad(b: Builder) -> list[Test]:
    """AMSGrad (amsgrad), where it shows: a maximum buffer above s, so that s decreasing under
    small gradients leaves the denominator on the maximum; with rectification on and off (the
    libraries differ in which s the rectified step takes). Only for profiles that have it."""
    if not b.allows(amsgrad=True):
        return []
    tests = []
    w = [0.0, 0.0, 1e-3, 0.5, 0.0, -2.0]
    g = [1e-4, -2e-3, 0.3, -1e-5, 1e-6, 1.5]
    s0 = [1e-6, 1e-4, 0.09, 1e-8, 0.0, 2.0]
    for t0 in (0, 3, 10, 1000):
        for rectify in (False, True):
            if not b.allows(amsgrad=True, rectify=rectify):
                continue
            for above in (1.0, 100.0):
                s_max = [x * above for x in s0]
                m0 = [0.0] * 6 if t0 == 0 else [1e-4, -1e-3, 0.1, 0.0, 0.0, 0.5]
                p = replace(b.param(w, m0, s0, t=t0), s_max=tuple(fit(x, b.sf) for x in s_max))
                sw = dict(b.default_switches(), amsgrad=True, rectify=rectify)
                steps = [[[x * 0.5**k for x in g]] for k in range(3)]  # shrinking: s decreases
                tests.append(Test(b.case(HP(wd=0.01), [p], steps, switches=sw),
                                  f"amsgrad, rectify={rectify}, t={t0}..{t0 + 3}, s_max = {above} * s",
                                  ("AMSGrad",)))
    return tests


def suite_rescale(b: Builder) -> list[Test]:
    tests = []
    w, g, m, s = b.random_state(6, gscale=(1e-4, 10.0))
    for r in (0.125, 1 / 3, 1e3, 1e-6, -1.0):
        for clip in (None, 0.5):
            hp = HP(rescale_grad=r, clip_gradient=clip)
            flags = ["Rescale"] + (["Clip"] if clip else [])
            tests.append(Test(b.case(hp, [b.param(w, m, s, t=1)], [[g], [b.random_grads(6)]]),
                              f"rescale_grad={r}, clip_gradient={clip}", tuple(flags)))
    for r in (0.0, NAN, INF, -INF):
        hp = HP(rescale_grad=r, wd=0.01)
        tests.append(Test(b.case(hp, [b.param(w, m, s, t=1)], [[g]]),
                          f"rescale_grad={r}: mxnet skips the update; mxnet-doc applies it", ("SkipRule",)))
        # A skipped step still counts: the next step uses t+2.
        tests.append(Test(b.case(HP(wd=0.01), [b.param(w, m, s, t=1)], [[g], [g], [b.random_grads(6)]],
                                 rescales=[1.0, r, 1.0]),
                          f"per-step rescale_grad 1, {r}, 1: the skipped step still increments t",
                          ("SkipRule", "BiasCorrection")))
    return tests


def suite_no_bias_correction(b: Builder) -> list[Test]:
    tests = []
    for t0 in (0, 4, 1000):
        w, g, m, s = b.random_state(8, moments=t0 > 0)
        hp = HP(correct_bias=False, learning_rate=0.01)
        tests.append(Test(b.case(hp, [b.param(w, m, s, t=t0)], [[g], [b.random_grads(8)]]),
                          f"correct_bias=False, t={t0}", ("NoBiasCorrection",)))
    return tests


def suite_epsilon(b: Builder) -> list[Test]:
    tests = []
    tiny = [1e-5, -2e-5, 1e-4, -3e-4, 1e-3, -2e-3, 5e-6, 0.0]
    w = [0.0, 1e-3, -1e-3, 0.01, 0.0, -0.01, 1e-4, 0.5]
    for eps in (1e-6, 1e-8, 1e-3, 0.0):
        hp = HP(epsilon=eps)
        tests.append(Test(b.case(hp, [b.param(w)], [[tiny]]),
                          f"tiny gradients at t=1, epsilon={eps}: s is dominated by epsilon", ("EpsilonPlacement",)))
        steps = [[[x * (1 + 0.1 * k) for x in tiny]] for k in range(6)]
        # With epsilon = 0 the zero gradient's step is 0/0: NaN in w from the first step on.
        special = ("SpecialValue",) if eps == 0 else ()
        tests.append(Test(b.case(hp, [b.param(w)], steps),
                          f"tiny gradients over 6 steps, epsilon={eps}: epsilon accumulates in the stored s",
                          ("EpsilonPlacement", "EpsilonInState", *special)))
    for t0 in (1, 5, 50):
        s0 = [1e-6 * (t0 + 1)] * 8
        hp = HP()
        tests.append(Test(b.case(hp, [b.param(w, m=[x * 0.5 for x in tiny], s=s0, t=t0)], [[tiny], [tiny]]),
                          f"state already holding epsilon (t={t0})", ("EpsilonPlacement", "EpsilonInState", "BiasCorrection")))
    # g == m (so g - m_new = 0) and s = 0 with epsilon = 0: 0/0 in the step.
    tests.append(Test(b.case(HP(epsilon=0.0), [b.param([1.0, 0.0, 2.0], m=[0.5, 0.0, 0.0], s=[0.0, 0.0, 0.0])],
                             [[[0.5, 0.0, 0.0]]]),
                      "epsilon = 0 with s = 0: the step divides 0 by 0 (NaN) or m by 0 (inf)", ("EpsilonPlacement", "SpecialValue")))
    return tests


def suite_timestep(b: Builder) -> list[Test]:
    tests = []
    for t0 in (0, 1, 2, 10, 1000, 10**6, 2**31 - 1, 2**32, 10**15):
        w, g, m, s = b.random_state(6, moments=t0 > 0)
        flags = ["BiasCorrection"] + (["LargeT"] if t0 >= 10**6 else [])
        tests.append(Test(b.case(HP(), [b.param(w, m, s, t=t0)], [[g], [b.random_grads(6)]]),
                          f"update count t={t0} before the case", tuple(flags)))
    return tests


def suite_cancellation(b: Builder) -> list[Test]:
    tests = []
    # g == m: m_new = g and g - m_new = 0 exactly.
    tests.append(Test(b.case(HP(), [b.param([0.5, -0.5, 1.0, 0.0], m=[0.128, -1.14, 3.0, 1e-3], s=[1e-3, 1e-2, 1.0, 1e-6], t=7)],
                             [[[0.128, -1.14, 3.0, 1e-3]]]),
                      "g == m: the residual g - m_new is exactly zero", ("Cancellation",)))
    # m = 0.9*0.128 + 0.1*(-1.14): the terms cancel to a small m.
    tests.append(Test(b.case(HP(), [b.param([0.0, 0.0, 1.0], m=[0.128, 1.0, -0.5], s=[0.02, 0.1, 0.1], t=3)],
                             [[[-1.14, -9.0, 4.5]]]),
                      "m cancels: 0.9*m + 0.1*g nearly zero", ("Cancellation",)))
    # w close to the step it takes.
    tests.append(Test(b.case(HP(learning_rate=0.01), [b.param([0.0099, 0.01, -0.0101, 1e-3], t=0)],
                             [[[1.0, 1.0, -1.0, 0.5]]]),
                      "w nearly equal to its step: w - step cancels", ("Cancellation",)))
    # s cancels in MXNet's fused form b2*(s - r^2) + r^2 when s is close to r^2.
    tests.append(Test(b.case(HP(), [b.param([0.1, 0.1], m=[0.0, 0.0], s=[0.81, 0.0081], t=2)],
                             [[[1.0, 0.1]]]),
                      "s close to the squared residual", ("Cancellation",)))
    return tests


def suite_special_values(b: Builder) -> list[Test]:
    tests = []
    fmt_g, fmt_w = b.gf, b.wf
    sub_g = float(fmt_g.min_subnormal) * 3
    sub_w = float(fmt_w.min_subnormal) * 5
    specials = [("NaN", NAN), ("+inf", INF), ("-inf", -INF), ("+0", 0.0), ("-0", -0.0)]
    base_w, base_g, base_m, base_s = [0.5, -0.25], [0.1, -0.2], [0.01, -0.02], [1e-3, 2e-3]
    for where in ("w", "g", "m", "s"):
        for name, v in specials:
            w, g, m, s = list(base_w), list(base_g), list(base_m), list(base_s)
            {"w": w, "g": g, "m": m, "s": s}[where][0] = v
            for clip in (None, 0.5):
                tests.append(Test(b.case(HP(wd=0.01, clip_gradient=clip), [b.param(w, m, s, t=2)], [[g]]),
                                  f"{where}[0] = {name}, clip_gradient={clip}", ("SpecialValue",)))
            if where == "w" and v != 0:
                # wd = 0: 0*w is NaN for a non-finite w, and leaving the term out is admissible.
                tests.append(Test(b.case(HP(), [b.param(w, m, s, t=2)], [[g], [g]]),
                                  f"{where}[0] = {name}, weight decay 0, two steps", ("SpecialValue",)))
    w = [sub_w, -sub_w, 0.0, 1e-3]
    g = [sub_g, -sub_g, sub_g, 0.0]
    tests.append(Test(b.case(HP(), [b.param(w, m=[sub_w, 0.0, -sub_w, 0.0], s=[sub_w, sub_w, 0.0, 0.0], t=1)], [[g]]),
                      "subnormal w, g, m, s", ("Subnormal",)))
    tests.append(Test(b.case(HP(epsilon=0.0, learning_rate=1e-3), [b.param([0.0, 0.0], t=0)], [[[sub_g, -sub_g]]]),
                      "subnormal gradient with epsilon = 0: s underflows", ("Subnormal", "EpsilonPlacement")))
    # Moments that are subnormals of the compute format, a zero gradient and epsilon = 0: m and s
    # stay subnormal, and a flush to zero turns the step into 0/0.
    sub_c = float(b.sf.min_subnormal)
    tests.append(Test(b.case(HP(epsilon=0.0), [b.param([1.0, -1.0], m=[5 * sub_c, -3 * sub_c],
                                                       s=[7 * sub_c, sub_c * 2**20], t=5)], [[[0.0, 0.0]]]),
                      "subnormal moments, zero gradient, epsilon = 0", ("Subnormal",)))
    return tests


def suite_magnitudes(b: Builder) -> list[Test]:
    tests = []
    for fmt, where in ((b.gf, "g"), (b.wf, "w")):
        lo, hi = fmt.emin - fmt.precision + 1, fmt.emax
        exps = [lo, lo + 5, fmt.emin - 1, fmt.emin, fmt.emin + 3, -20, -5, 0, 5, 20, hi - 10, hi]
        vals = [signed(b.rng, math.ldexp(1.0 + b.rng.random() * (k > lo + 5), k)) for k in exps]
        vals = [fit(v, fmt) for v in vals]
        n = len(vals)
        if where == "g":
            w, g = [0.0] * n, vals
        else:
            w, g = vals, [0.1] * n
        for lr in (1e-3, 10.0):
            tests.append(Test(b.case(HP(learning_rate=lr), [b.param(w, t=0)], [[g], [g]]),
                              f"{where} across the {fmt.name} range, learning_rate={lr}",
                              ("Magnitude", "Subnormal", "Overflow")))
    return tests


def suite_trajectories(b: Builder) -> list[Test]:
    tests = []
    for k, hp in enumerate((HP(), HP(learning_rate=0.01, wd=0.01, clip_gradient=1.0), HP(beta1=0.5, beta2=0.99, epsilon=1e-8))):
        nsteps = 120
        w = [0.5, -0.2, 1e-3]
        drift = [0.05, -0.01, 1e-4]
        steps = [[[d + signed(b.rng, loguniform(b.rng, abs(d) / 10 + 1e-6, abs(d) * 4 + 1e-4)) for d in drift]]
                 for _ in range(nsteps)]
        tests.append(Test(b.case(hp, [b.param(w)], steps),
                          f"trajectory of {nsteps} steps (set {k})", ("Trajectory",)))
    return tests


def suite_multi_parameter(b: Builder) -> list[Test]:
    tests = []
    for wd in (0.0, 0.05):
        hp = HP(wd=wd, learning_rate=0.01)
        params = []
        grads = []
        for i, (t0, lm, wm) in enumerate(((0, 1.0, 1.0), (5, 0.5, 2.0), (100, 2.0, 0.0))):
            w, g, m, s = b.random_state(4, moments=t0 > 0)
            params.append(b.param(w, m, s, t=t0, lr_mult=lm, wd_mult=wm, index=i))
            grads.append(g)
        steps = [grads, [b.random_grads(4) for _ in range(3)], [b.random_grads(4) for _ in range(3)]]
        tests.append(Test(b.case(hp, params, steps),
                          f"three parameters with t = 0, 5, 100, lr_mult = 1, 0.5, 2, wd_mult = 1, 2, 0 (wd={wd})",
                          ("PerParameterT", "WeightDecay")))
    return tests


SUITES: dict[str, tuple[str, Callable[[Builder], list[Test]]]] = {
    "defaults": ("MXNet's default hyperparameters at several t.", suite_defaults),
    "hyperparameter-grid": ("A seeded sample of a hyperparameter grid.", suite_grid),
    "clipping": ("clip_gradient None, positive, infinite, zero, negative and NaN, with and without weight decay.", suite_clipping),
    "weight-decay": ("Coupled weight decay with and without clipping, and wd_mult.", suite_weight_decay),
    "decoupled-weight-decay": ("Decoupled weight decay (weight_decouple, fixed_decay), for the profiles that have it.",
                               suite_decoupled_weight_decay),
    "rectification": ("RAdam's rectification (rectify, degenerated_to_sgd), for the profiles that have it.",
                      suite_rectification),
    "amsgrad": ("AMSGrad (amsgrad): the running maximum of s, for the profiles that have it.", suite_amsgrad),
    "rescale": ("rescale_grad values, the skip rule, and per-step rescale_grad.", suite_rescale),
    "no-bias-correction": ("correct_bias = False.", suite_no_bias_correction),
    "epsilon": ("Epsilon-placement discriminators: tiny gradients, epsilon-dominated s, several steps.", suite_epsilon),
    "timestep": ("t = 1, moderate and very large t.", suite_timestep),
    "cancellation": ("g == m and other cancellations.", suite_cancellation),
    "special-values": ("NaN, infinities, signed zeros and subnormals in each input.", suite_special_values),
    "magnitudes": ("Gradients and weights across each format's range.", suite_magnitudes),
    "trajectories": ("Trajectories of 120 steps.", suite_trajectories),
    "multi-parameter": ("Several parameters with their own t, lr_mult and wd_mult.", suite_multi_parameter),
}
