"""The mistake catalogue: executable mutants (must fail) and conforming variants (must pass).

Each entry is a :class:`Knobs` setting of one configurable NumPy evaluation of the update. The
default knobs evaluate the spec's formula in the compute dtype; every mutant turns one knob to a
real porting mistake (spec/mistakes.md), every conforming variant to another admissible way of
rounding. The meta-test (tests/test_catalogue.py) proves that every mutant fails at least one
vector and every variant passes all of them; ``diagnose`` ranks these entries against the
outputs of a failing implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
from adabelief_reference import Profile, profile_named, profile_names

from ._protocol import NUMPY_DTYPES, ParamResult, RunRequest

__all__ = ["MUTANTS", "VARIANTS", "CatalogueImplementation", "Knobs", "applies_to"]


@dataclass(frozen=True)
class Knobs:
    # --- mistakes -------------------------------------------------------------------------
    # profile | swapped | decoupled (always) | coupled (weight_decouple ignored) | ignored
    weight_decay: str = "profile"
    fixed_decay: str = "profile"  # profile | ignored (the decoupled decay always scaled by lr_i)
    clip: str = "profile"  # profile | ignored
    rescale: str = "before-clip"  # before-clip | ignored | after-clip
    epsilon: str = "profile"  # profile | not-in-s | not-stored | twice
    # profile | before-bias-correction | after-bias-correction: a forced epsilon_denominator
    epsilon_denominator: str = "profile"
    stored_epsilon: str = "profile"  # profile | epsilon | eps_root: a forced stored_epsilon
    residual: str = "new-m"  # new-m | old-m | bias-corrected-m
    bias_correction: str = "sqrt-bc2"  # sqrt-bc2 | none | bc2
    t_offset: int = 0
    epsilon_value: float | None = None  # a wrong hard-wired epsilon
    epsilon_zero_as: float | None = None  # epsilon = 0 silently replaced (TensorFlow: 1e-7)
    hyperparameters_float32: bool = False  # hyperparameters held in float32 (TensorFlow, float64 runs)
    flush_subnormals: bool = False  # FTZ/DAZ: subnormal inputs and results become zero (XLA, TF on CPU)
    swap_betas: bool = False
    global_t: bool = False
    float16_without_master: bool = False
    skip_rule: str = "profile"  # profile | never | not-counted
    # --- admissible arithmetic ---------------------------------------------------------------
    moments_form: str = "canonical"  # canonical: b*x + (1-b)*y | fused: b*(x-y) + y
    # first moment only: canonical | fused | plain: m + (1-b1)*(g-m) | lerp: torch.lerp(m, g, 1-b1)
    first_moment_form: str = "as-moments"
    omit_zero_decay: bool = False  # leave the decay term out when wd_i == 0 (no 0*w)
    rectify: str = "profile"  # profile | ignored (rectify=True computes the unrectified update)
    rectified_epsilon: str = "profile"  # profile | swapped: the rectified branch's epsilon placement
    sma_threshold: str = ">=5"  # >=5 | >4 (torch-optimizer)
    sgd_bias_correction: bool = True  # the SGD fallback divides by bc1 (torch-optimizer does not)
    degenerate: str = "profile"  # profile | ignored (below the threshold always an SGD step)
    # profile | ignored (the denominator on s) | torch-optimizer (eps accumulates in the max buffer)
    amsgrad: str = "profile"
    amsgrad_rectified: str = "profile"  # profile | swapped: the rectified step on s or on s_max
    decoupled_form: str = "mult"  # mult: w*(1 - c) - step (PyTorch) | in-step: w - (step + c*w) (TF)
    root_form: str = "ratio"  # epsilon after the bias correction: sqrt(s/bc2) | roots: sqrt(s)/sqrt(bc2)
    update_form: str = "eta"  # eta: eta*(m/d) | lrm: (eta*m)/d | hat: lr*(m/bc1)/(sqrt(s/bc2)+eps/sqrt(bc2))
    one_minus_beta_in_double: bool = False  # MXNet step(): (1 - beta) from Python doubles
    bias_correction_in_compute_dtype: bool = False
    fma: bool = False
    compute_in_float64: bool = False
    hyperparameters_rounded_first: bool = False  # every hyperparameter rounded before any use


MUTANTS: dict[str, Knobs] = {
    "epsilon not added to s": Knobs(epsilon="not-in-s"),
    "epsilon added to s but not stored": Knobs(epsilon="not-stored"),
    "epsilon after bias correction, sqrt(s_hat)+eps": Knobs(epsilon_denominator="after-bias-correction"),
    "epsilon before bias correction, sqrt(s)+eps (MXNet's placement)":
        Knobs(epsilon_denominator="before-bias-correction"),
    "epsilon added again before the bias correction of s (the paper's sqrt((s+eps)/bc2))":
        Knobs(epsilon_denominator="after-bias-correction-with-transient-epsilon"),
    "epsilon stored in s instead of eps_root": Knobs(stored_epsilon="epsilon"),
    "epsilon added twice inside the root": Knobs(epsilon="twice"),
    "residual with the old m": Knobs(residual="old-m"),
    "residual with the bias-corrected m": Knobs(residual="bias-corrected-m"),
    "no bias correction": Knobs(bias_correction="none"),
    "bc2 instead of sqrt(bc2)": Knobs(bias_correction="bc2"),
    "t off by one (t+1)": Knobs(t_offset=1),
    "t off by one (t-1)": Knobs(t_offset=-1),
    "clip and weight decay in the other profile's order": Knobs(weight_decay="swapped"),
    "clip ignored": Knobs(clip="ignored"),
    "rescale ignored": Knobs(rescale="ignored"),
    "rescale applied after clipping": Knobs(rescale="after-clip"),
    "decoupled weight decay": Knobs(weight_decay="decoupled"),
    "weight decay ignored": Knobs(weight_decay="ignored"),
    "weight_decouple ignored: decay added to the gradient": Knobs(weight_decay="coupled"),
    "rectify ignored: no rectification": Knobs(rectify="ignored"),
    "amsgrad ignored: the denominator on s, not its maximum": Knobs(amsgrad="ignored"),
    "AMSGrad epsilon accumulating in the maximum buffer (torch-optimizer)": Knobs(amsgrad="torch-optimizer"),
    "rectified step on the other second moment (s or its maximum)": Knobs(amsgrad_rectified="swapped"),
    "rectified step with epsilon on the other side of the bias correction": Knobs(rectified_epsilon="swapped"),
    "SMA threshold N > 4 instead of N >= 5 (torch-optimizer)": Knobs(sma_threshold=">4"),
    "SGD fallback without the bias correction (torch-optimizer)": Knobs(sgd_bias_correction=False),
    "degenerated_to_sgd ignored: SGD steps below the threshold": Knobs(degenerate="ignored"),
    "fixed_decay ignored: decoupled decay scaled by the learning rate": Knobs(fixed_decay="ignored"),
    "default epsilon 1e-8": Knobs(epsilon_value=1e-8),
    "default epsilon 1e-16": Knobs(epsilon_value=1e-16),
    "beta1 and beta2 swapped": Knobs(swap_betas=True),
    "TensorFlow quirk: epsilon 0 replaced by 1e-7": Knobs(epsilon_zero_as=1e-7),
    "TensorFlow quirk: hyperparameters held in float32": Knobs(hyperparameters_float32=True),
    "XLA/TensorFlow quirk: subnormals flushed to zero": Knobs(flush_subnormals=True),
    "one global t": Knobs(global_t=True),
    "float16 state without master weights": Knobs(float16_without_master=True),
    "never skips on zero or non-finite rescale_grad": Knobs(skip_rule="never"),
    "skipped step not counted in t": Knobs(skip_rule="not-counted"),
}

VARIANTS: dict[str, Knobs] = {
    "spec formula in the compute dtype": Knobs(),
    "MXNet fused-kernel algebra": Knobs(moments_form="fused"),
    "MXNet step(): separately rounded operations": Knobs(one_minus_beta_in_double=True, update_form="lrm"),
    "bias correction in the compute dtype": Knobs(bias_correction_in_compute_dtype=True),
    "hyperparameters rounded to the compute dtype first": Knobs(hyperparameters_rounded_first=True),
    "bias-corrected moments (hat form)": Knobs(update_form="hat"),
    "FMA-contracted evaluation": Knobs(fma=True),
    "FMA with the fused algebra": Knobs(fma=True, moments_form="fused"),
    "float64 compute, rounded at the end": Knobs(compute_in_float64=True),
    "first moment as torch.lerp (timm, pytorch-optimizer)": Knobs(first_moment_form="lerp"),
    "first moment as m + (1-b1)*(g-m)": Knobs(first_moment_form="plain"),
    "zero weight decay term left out": Knobs(omit_zero_decay=True),
    "decoupled decay as TensorFlow computes it, w - lr*(u + wd*w)": Knobs(decoupled_form="in-step"),
    "lerp first moment, zero decay left out, sqrt(s)/sqrt(bc2) (PyTorch libraries)":
        Knobs(first_moment_form="lerp", omit_zero_decay=True, root_form="roots",
              one_minus_beta_in_double=True, update_form="lrm"),
}


def applies_to(knobs: Knobs, profile: Profile) -> bool:
    """Whether the mutant ``knobs`` is a mistake under ``profile`` at all.

    A mutant that forces a choice to the value the profile declares anyway, or that changes a
    rule the profile never applies (the skip rule under ``rescale_skip = never``), computes what
    the profile computes: the meta-test does not expect the vectors to catch it there.
    """
    if knobs.epsilon_denominator == profile.epsilon_denominator:
        knobs = replace(knobs, epsilon_denominator="profile")
    if knobs.stored_epsilon == profile.stored_epsilon:
        knobs = replace(knobs, stored_epsilon="profile")
    if profile.rescale_skip == "never":
        knobs = replace(knobs, skip_rule="profile")
    allowed = profile.switches
    if knobs.weight_decay == "coupled" and True not in allowed.get("weight_decouple", (False,)):
        knobs = replace(knobs, weight_decay="profile")  # the profile never decouples anyway
    if knobs.weight_decay == "decoupled" and False not in allowed.get("weight_decouple", (False,)):
        knobs = replace(knobs, weight_decay="profile")  # the profile always decouples anyway
    if knobs.weight_decay == "swapped" and False not in allowed.get("weight_decouple", (False,)):
        knobs = replace(knobs, weight_decay="profile")  # no coupled term to put on either side
    if True not in allowed.get("rectify", (False,)):  # the rectification knobs change nothing
        knobs = replace(knobs, rectify="profile", rectified_epsilon="profile", sma_threshold=">=5",
                        sgd_bias_correction=True, degenerate="profile")
    if True not in allowed.get("amsgrad", (False,)):  # the AMSGrad knobs change nothing
        knobs = replace(knobs, amsgrad="profile", amsgrad_rectified="profile")
    if knobs.amsgrad_rectified == "swapped" and True not in allowed.get("rectify", (False,)):
        knobs = replace(knobs, amsgrad_rectified="profile")
    if knobs.degenerate == "ignored" and False not in allowed.get("degenerated_to_sgd", (False,)):
        knobs = replace(knobs, degenerate="profile")
    if knobs.fixed_decay == "ignored" and True not in allowed.get("fixed_decay", (False,)):
        knobs = replace(knobs, fixed_decay="profile")
    return knobs != Knobs()


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fused multiply-add rounded once to the dtype of the inputs."""
    dt = np.result_type(a, b, c)
    if dt.itemsize < 8:  # float16/32: the float64 product is exact, one extra rounding is harmless
        return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(dt)
    a, b, c = np.broadcast_arrays(a, b, c)
    out = np.empty(a.shape, dtype=np.float64)
    for i, (x, y, z) in enumerate(zip(a.ravel(), b.ravel(), c.ravel())):
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            out[i] = x * y + z
        else:
            try:
                out[i] = float(Fraction(x) * Fraction(y) + Fraction(z))
            except OverflowError:  # the exact result rounds to an infinity
                out[i] = math.copysign(math.inf, float(np.sign(x) * np.sign(y)) if x * y != 0 else z)
    return out


def _flush(x: np.ndarray) -> np.ndarray:
    """Subnormals to (signed) zero, as FTZ/DAZ do."""
    tiny = np.finfo(x.dtype).tiny
    with np.errstate(invalid="ignore"):  # inf * 0 in the branch np.where does not take
        return np.where(np.abs(x) < tiny, x * 0, x).astype(x.dtype)


@dataclass
class _State:
    w: np.ndarray
    m: np.ndarray
    s: np.ndarray
    t: int
    s_max: np.ndarray | None = None


class CatalogueImplementation:
    """An Implementation whose arithmetic is set by :class:`Knobs`."""

    version = "catalogue"
    profiles = frozenset(profile_names())
    dtypes = frozenset({"float32", "float64", "float16-mp"})

    def __init__(self, name: str, knobs: Knobs) -> None:
        self.name = name
        self.knobs = knobs

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        kn = self.knobs
        _, w_dt, s_dt = NUMPY_DTYPES[request.dtype]
        mp = request.dtype == "float16-mp"
        ct = np.dtype(np.float16) if (mp and kn.float16_without_master) else s_dt
        if kn.compute_in_float64:
            ct = np.dtype(np.float64)
        with np.errstate(over="ignore"):  # float16 storage of a large float32 master overflows
            state = [_State(p.w.astype(np.float16).astype(ct) if ct == np.float16 else p.w.astype(ct),
                            p.m.astype(ct), p.s.astype(ct), p.t,
                            None if p.s_max is None else p.s_max.astype(ct)) for p in request.params]
        steps_done = 0
        out: list[list[ParamResult]] = []
        flush = _flush if kn.flush_subnormals else (lambda x: x)
        if kn.flush_subnormals:
            for st in state:
                st.w, st.m, st.s = flush(st.w), flush(st.m), flush(st.s)
        with np.errstate(all="ignore"):
            for step in request.steps:
                skip = self._skips(request.profile, step.rescale_grad)
                res = []
                for i, p in enumerate(request.params):
                    st = state[i]
                    if not (skip and kn.skip_rule == "not-counted"):
                        st.t += 1
                    if not skip:
                        t = (request.params[0].t + steps_done + 1) if kn.global_t else st.t
                        w1, m1, s1, x1 = self._update(request, p.lr_mult, p.wd_mult, t + kn.t_offset,
                                                      flush(step.grads[i].astype(ct)), step.rescale_grad,
                                                      st.w, st.m, st.s, ct, st.s_max)
                        w1, m1, s1 = flush(w1), flush(m1), flush(s1)
                        if x1 is not None:
                            st.s_max = flush(x1).astype(s_dt).astype(ct)
                        # The state lives in its storage dtype between steps.
                        if ct == np.float16:
                            st.w, st.m, st.s = w1, m1, s1
                        else:
                            st.w = w1.astype(w_dt).astype(ct)
                            st.m, st.s = m1.astype(s_dt).astype(ct), s1.astype(s_dt).astype(ct)
                    w = st.w.astype(w_dt)
                    res.append(ParamResult(w, st.m.astype(s_dt), st.s.astype(s_dt),
                                           w.astype(np.float16) if mp else None,
                                           None if st.s_max is None else st.s_max.astype(s_dt)))
                steps_done += 1
                out.append(res)
        return out

    def _skips(self, profile: str, rescale: float) -> bool:
        rule = self.knobs.skip_rule
        if rule == "never" or profile_named(profile).rescale_skip == "never":
            return False
        return rescale == 0 or not math.isfinite(rescale)

    def _update(self, req: RunRequest, lr_mult: float, wd_mult: float, t: int, g: np.ndarray, rescale: float,
                w: np.ndarray, m: np.ndarray, s: np.ndarray, ct: np.dtype, smax: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        kn, hp = self.knobs, req.hyperparameters
        C = ct.type

        def mul_add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
            return _fma(np.asarray(a, ct), np.asarray(b, ct), np.asarray(c, ct)) if kn.fma else (a * b + c).astype(ct)

        b1, b2 = (hp.beta2, hp.beta1) if kn.swap_betas else (hp.beta1, hp.beta2)
        eps = hp.epsilon if kn.epsilon_value is None else kn.epsilon_value
        if eps == 0 and kn.epsilon_zero_as is not None:  # `epsilon or backend.epsilon()`
            eps = kn.epsilon_zero_as
        lr_i, wd_i = hp.learning_rate * lr_mult, hp.wd * wd_mult
        if kn.hyperparameters_float32:  # float32 variables, cast to the weight's dtype
            # (Keras's _set_hyper ones; epsilon is a plain Python float there, converted exactly)
            f32 = np.float32
            b1, b2 = (float(f32(x)) for x in (b1, b2))
            lr_i, wd_i = float(f32(hp.learning_rate)) * lr_mult, float(f32(hp.wd)) * wd_mult
        clip = hp.clip_gradient
        if kn.hyperparameters_rounded_first:
            # As MXNet's C++ operators receive them: every scalar is a compute-dtype value, and the
            # bias correction below is computed (in double) from the rounded betas.
            b1, b2, eps, lr_i, wd_i, rescale = (float(C(x)) for x in (b1, b2, eps, lr_i, wd_i, rescale))
            clip = None if clip is None else float(C(clip))
        r = C(rescale)
        clip_on = clip is not None and clip > 0 and kn.clip == "profile"
        prof = profile_named(req.profile)
        order = "before" if prof.weight_decay == "coupled-before-clip" else "after"
        if kn.weight_decay == "swapped":
            order = "after" if order == "before" else "before"
        decoupled = kn.weight_decay == "decoupled" or (hp.weight_decouple and kn.weight_decay != "coupled")
        wd_mode = "ignored" if kn.weight_decay == "ignored" else "decoupled" if decoupled else order

        def clamp(x: np.ndarray) -> np.ndarray:
            return np.clip(x, C(-clip), C(clip)).astype(ct) if clip_on else x

        gs = g if kn.rescale == "ignored" else (g * r if kn.rescale == "before-clip" else g)
        wdw = C(wd_i) * w
        omit = kn.omit_zero_decay and wd_i == 0
        if wd_mode == "before":
            gc = clamp(gs if omit else (mul_add(C(wd_i), w, gs) if kn.fma else gs + wdw))
        elif wd_mode == "after":
            gc = clamp(gs)
            if kn.rescale == "after-clip":
                gc = gc * r
            gc = gc if omit else gc + wdw
        else:
            gc = clamp(gs)
        if kn.rescale == "after-clip" and wd_mode != "after":
            gc = gc * r
        gc = gc.astype(ct)

        b1c, b2c = C(b1), C(b2)
        om1 = C(1.0 - b1) if kn.one_minus_beta_in_double else C(1) - b1c
        om2 = C(1.0 - b2) if kn.one_minus_beta_in_double else C(1) - b2c
        m_form = kn.moments_form if kn.first_moment_form == "as-moments" else kn.first_moment_form
        if m_form == "fused":
            m1 = mul_add(b1c, m - gc, gc)
        elif m_form == "plain":
            m1 = (m + om1 * (gc - m)).astype(ct)
        elif m_form == "lerp":  # torch.lerp(m, g, w): its two branches, w rounded from double
            wgt = C(1.0 - b1)
            m1 = (m + wgt * (gc - m) if wgt < 0.5 else gc - (gc - m) * (C(1) - wgt)).astype(ct)
        else:
            m1 = mul_add(b1c, m, om1 * gc)

        # bias correction
        if kn.bias_correction_in_compute_dtype:
            bc1 = C(1) - np.power(b1c, C(t)) if t > 0 else C(0)
            bc2 = C(1) - np.power(b2c, C(t)) if t > 0 else C(0)
        else:
            bc1 = C(1.0 - b1**t)
            bc2 = C(1.0 - b2**t)
        if kn.residual == "old-m":
            res = gc - m
        elif kn.residual == "bias-corrected-m":
            res = gc - m1 / bc1
        else:
            res = gc - m1
        res = res.astype(ct)
        r2 = res * res
        eps_c = C(eps)
        stored = prof.stored_epsilon if kn.stored_epsilon == "profile" else kn.stored_epsilon
        eps_s = eps_c if stored == "epsilon" else C(hp.eps_root)
        if kn.moments_form == "fused":
            base = mul_add(b2c, s - r2, r2)
        else:
            base = mul_add(b2c, s, om2 * r2)
        s_store = base if kn.epsilon in ("not-in-s", "not-stored") else (base + eps_s).astype(ct)
        s_den = (base + eps_s).astype(ct) if kn.epsilon == "not-stored" else s_store
        if kn.epsilon == "twice":
            s_den = (s_den + eps_s).astype(ct)

        if kn.bias_correction == "none" or not req.hyperparameters.correct_bias:
            eta = C(lr_i)
            bc1x, bc2x = C(1), C(1)
        else:
            if kn.bias_correction_in_compute_dtype:
                f = np.sqrt(bc2) if kn.bias_correction == "sqrt-bc2" else bc2
                eta = C(lr_i) * f / bc1
            else:
                f = math.sqrt(1.0 - b2**t) if kn.bias_correction == "sqrt-bc2" else (1.0 - b2**t)
                den = 1.0 - b1**t
                eta = C(lr_i * f / den) if den else C(math.inf)
            bc1x, bc2x = bc1, bc2

        placement = prof.epsilon_denominator if kn.epsilon_denominator == "profile" else kn.epsilon_denominator
        rho: float | None = None
        sgd: str | None = None
        if hp.rectify and kn.rectify != "ignored":
            # RAdam's SMA length in binary64, as the PyTorch libraries compute it
            n_inf = 2.0 / (1.0 - b2) - 1.0
            p2 = b2**t
            n_t = n_inf - 2.0 * t * p2 / (1.0 - p2)
            if n_t >= 5.0 if kn.sma_threshold == ">=5" else n_t > 4.0:
                rho = math.sqrt((n_t - 4.0) * (n_t - 2.0) * n_inf / ((n_inf - 4.0) * (n_inf - 2.0) * n_t))
                before = prof.rectification.endswith("before-bias-correction")
                if kn.rectified_epsilon == "swapped":
                    before = not before
                placement = "before-bias-correction" if before else "after-bias-correction"
            else:
                degenerate = hp.degenerated_to_sgd or kn.degenerate == "ignored"
                sgd = "sgd" if degenerate else "none"
        smax1 = None
        if smax is not None:  # AMSGrad: the running maximum of s, a state of its own
            if kn.amsgrad == "torch-optimizer":  # max of s without eps, then eps added to the buffer
                s_store = base
                smax1 = (np.maximum(smax, base) + eps_s).astype(ct)
            else:
                smax1 = np.maximum(smax, s_store)
            if kn.amsgrad != "ignored":
                on_max = True
                if rho is not None:
                    on_max = prof.amsgrad == "max-of-s"
                    if kn.amsgrad_rectified == "swapped":
                        on_max = not on_max
                s_den = smax1 if on_max else s_store
        if sgd is not None:
            bc1_sgd = (1.0 - b1**t) if (kn.sgd_bias_correction and req.hyperparameters.correct_bias) else 1.0
            step_ = C(lr_i / bc1_sgd) * m1 if sgd == "sgd" else np.zeros_like(m1)
        elif placement != "before-bias-correction":
            if placement == "after-bias-correction-with-transient-epsilon":
                s_den = (s_den + eps_c).astype(ct)  # transient: not stored
            bc2y = bc2x * bc2x if kn.bias_correction == "bc2" else bc2x
            if kn.root_form == "roots":
                d = np.sqrt(s_den) / np.sqrt(bc2y) + eps_c
            else:
                d = np.sqrt(s_den / bc2y) + eps_c
            if kn.update_form == "hat":
                step_ = C(lr_i) * ((m1 / bc1x) / d)
            else:
                lr_b = C(lr_i) / bc1x
                step_ = (lr_b * m1) / d if kn.update_form == "lrm" else lr_b * (m1 / d)
        elif kn.update_form == "hat" and kn.bias_correction == "sqrt-bc2":
            rb = np.sqrt(bc2x)
            step_ = C(lr_i) * ((m1 / bc1x) / (np.sqrt(s_den / bc2x) + eps_c / rb))
        elif kn.update_form == "lrm":
            step_ = (eta * m1) / (np.sqrt(s_den) + eps_c)
        else:
            ratio = (m1 / (np.sqrt(s_den) + eps_c)).astype(ct)
            if kn.fma and wd_mode != "decoupled" and rho is None:
                w1 = _fma(np.asarray(-eta, ct), ratio, np.asarray(w, ct))
                step_ = None
            else:
                step_ = eta * ratio
        if rho is not None:  # the rectified step: rho times the update (rounded once more)
            step_ = (np.asarray(step_, ct) * C(rho)).astype(ct)
        if wd_mode == "decoupled":
            fixed = hp.fixed_decay and kn.fixed_decay != "ignored"
            c = wd_i if fixed else lr_i * wd_i
            step_ = np.asarray(step_, ct)
            if kn.decoupled_form == "in-step":  # TensorFlow: var -= lr*(u + wd*var)
                w1 = (w - (step_ + C(c) * w).astype(ct)).astype(ct)
            else:  # PyTorch: p *= 1 - lr*wd (a binary64 scalar), then the step
                w1 = ((w * C(1.0 - c)).astype(ct) - step_).astype(ct)
        elif step_ is not None:
            w1 = (w - np.asarray(step_, ct)).astype(ct)
        return w1.astype(ct), m1.astype(ct), s_store.astype(ct), smax1


def catalogue(entries: dict[str, Knobs]) -> list[CatalogueImplementation]:
    return [CatalogueImplementation(name, kn) for name, kn in entries.items()]


def variants_for(names: Sequence[str] | None = None) -> list[CatalogueImplementation]:
    return catalogue({k: v for k, v in VARIANTS.items() if names is None or k in names})

