"""The fast reference path (issue 9, first slice): a case's exact outputs and σ vectorised over
elements with double-double arithmetic (reference/_dd.py) and a running bound on its own error;
``None`` wherever the bound cannot settle an output's correctly rounded value, or the case or an
element leaves the path's scope. The golden vectors stay mpmath-proven; this serves campaigns.

Scope of this slice: the profiles whose choices are those of ``mxnet`` and ``mxnet-doc``
(epsilon stored in s and added before the bias correction, coupled decay before or after clipping,
no rectification or AMSGrad; read from spec/profiles.json, ``_CHOICES``), dtypes ``float32`` and
``float64``, ``clip_gradient`` None or a finite positive value, a finite non-zero ``rescale_grad``,
and only finite values within [2^-400, 2^400] everywhere (inputs, intermediates and outputs), far
from the compute format's subnormal and overflow ranges by a margin. The per-parameter scalars
(bias corrections, eta) are taken from the mpmath reference itself (:class:`reference._exact._Graph`),
once per parameter and step. σ follows spec/error-model.md node by node, in binary64 (its
relative error is below 10^-13, far inside what the verdict's power-of-two ulp(σ) resolves,
except within that distance of a power of two: there the output is left to mpmath).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dd as D
from ._arith import FIN, Evaluator
from ._exact import _Graph, _rounding_changes_class
from ._model import CaseInputs
from ._profiles import profile_named

__all__ = ["FastOutput", "fast_case", "fast_golden"]

_GROW = 1.0 + 2.0**-40  # rounding-up factor for the binary64 arithmetic on bounds


@dataclass
class FastOutput:
    """Per element: the correctly rounded value, the residual and σ, as the vectors store them;
    ``decided`` False where the fast path could not settle them (use mpmath there)."""

    value: np.ndarray
    residual: np.ndarray
    sigma: np.ndarray
    decided: np.ndarray


@dataclass
class _V:
    """Per element: the exact value as a double-double, b a bound on its error, e the node's
    first-order evaluation bound (spec/error-model.md), ok where the path is in scope."""

    x: D.DD
    b: np.ndarray
    e: np.ndarray


def _const(v: np.ndarray) -> _V:
    v = np.asarray(v, dtype=np.float64)
    z = np.zeros_like(v)
    return _V(D.from_float(v), z, z.copy())


def _scalar(x: Any, n: int) -> _V:
    """A node of the mpmath reference (an X): its interval's midpoint as a double-double (from
    the interval's own precision), the interval's radius plus that conversion's error, and the
    node's bound e."""
    from mpmath.libmp import from_float, mpf_add, mpf_shift, mpf_sub, to_float

    a, b = x.v._mpi_
    mid = mpf_shift(mpf_add(a, b), -1)  # exact (precision 0)
    hi = to_float(mid, rnd="n")
    rest = mpf_sub(mid, from_float(hi))
    lo = to_float(rest, rnd="n")
    rad = to_float(mpf_sub(b, mid), rnd="u") + abs(hi) * 2.0**-105
    return _V(D.DD(np.full(n, hi), np.full(n, lo)), np.full(n, rad * 1.0000001), np.full(n, float(x.e)))


def _mag(v: _V) -> np.ndarray:
    return np.abs(v.x.hi)


class _Ops:
    def __init__(self, fmt: Any) -> None:
        self.u = math.ldexp(1.0, -fmt.precision)
        self.half_eta = math.ldexp(1.0, fmt.emin - fmt.precision)
        self.limit = math.ldexp(1.0, fmt.emax - 1)  # half the overflow threshold: a margin

    def E(self, v: _V | np.ndarray, weight: float = 1.0) -> np.ndarray:
        m = v if isinstance(v, np.ndarray) else _mag(v)
        return weight * np.maximum(m * self.u, self.half_eta)

    # exact-value arithmetic with a running bound b (relative bounds of _dd, grown slightly)
    @staticmethod
    def add(a: _V, c: _V) -> _V:
        z = D.add(a.x, c.x)
        return _V(z, (a.b + c.b + D.ADD_BOUND * np.abs(z.hi)) * _GROW, np.zeros_like(a.b))

    def sub(self, a: _V, c: _V) -> _V:
        return self.add(a, _V(D.neg(c.x), c.b, c.e))

    @staticmethod
    def mul(a: _V, c: _V) -> _V:
        z = D.mul(a.x, c.x)
        b = np.abs(a.x.hi) * c.b + np.abs(c.x.hi) * a.b + a.b * c.b + D.MUL_BOUND * np.abs(z.hi)
        return _V(z, b * _GROW * _GROW, np.zeros_like(a.b))

    @staticmethod
    def div(a: _V, c: _V) -> _V:
        z = D.div(a.x, c.x)
        den = np.abs(c.x.hi) - c.b
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (a.b + np.abs(z.hi) * c.b) / den + D.DIV_BOUND * np.abs(z.hi)
        return _V(z, np.where(den > 0, b * _GROW * _GROW, np.inf), np.zeros_like(a.b))

    @staticmethod
    def sqrt(a: _V) -> _V:
        z = D.sqrt(a.x)
        low = np.abs(a.x.hi) - a.b
        with np.errstate(divide="ignore", invalid="ignore"):
            b = a.b / (2 * np.sqrt(low)) + D.SQRT_BOUND * np.abs(z.hi)
        return _V(z, np.where(low > 0, b * _GROW * _GROW, np.inf), np.zeros_like(a.b))


# The profile choices this slice implements (spec/profiles.json); a profile with these values
# is in scope whatever its name.
_CHOICES = {"epsilon_in_state": (True,), "stored_epsilon": ("epsilon",),
            "epsilon_denominator": ("before-bias-correction",), "rectification": ("none",),
            "amsgrad": ("none",), "weight_decay": ("coupled-before-clip", "coupled-after-clip")}


def _in_scope(case: CaseInputs) -> bool:
    hp = case.hyperparameters
    prof = profile_named(case.profile)
    if case.dtype not in ("float32", "float64"):
        return False
    if any(getattr(prof, k) not in allowed for k, allowed in _CHOICES.items()):
        return False
    if hp.rectify or hp.amsgrad or hp.weight_decouple:
        return False
    c = hp.clip_gradient
    if c is not None and not (math.isfinite(c) and c > 0):
        return False  # clip <= 0 or NaN: disabled or implementation-defined by profile
    for k in range(len(case.steps)):
        r = case.rescale_at(k)
        if not math.isfinite(r) or r == 0:
            return False  # the skip rule, where the profile has one
    leaves = [hp.learning_rate, hp.beta1, hp.beta2, hp.epsilon, hp.wd]
    if not all(math.isfinite(x) for x in leaves) or _rounding_changes_class(case):
        return False
    return True


def fast_case(case: CaseInputs) -> list[list[dict[str, FastOutput]]] | None:
    """Per step, per parameter: output name -> FastOutput; None when the case is out of scope."""
    if not _in_scope(case):
        return None
    prof = profile_named(case.profile)
    spec = case.dtype_spec
    fmt = spec.compute
    ev = Evaluator(128, fmt, None)
    graph = _Graph(ev, prof)
    ops = _Ops(fmt)
    hp = case.hyperparameters
    lr, b1x, b2x, epsx, wdx = (ev.const(v) for v in (hp.learning_rate, hp.beta1, hp.beta2,
                                                      hp.epsilon, hp.wd))
    clipx = None if hp.clip_gradient is None else ev.const(hp.clip_gradient)
    state = []
    for p in case.params:
        arrays = [np.array(p.w), np.array(p.m), np.array(p.s)]
        if not all(np.isfinite(a).all() for a in arrays):
            return None  # a non-finite input: the reference evaluates the alternative forms
        state.append({"w": _const(arrays[0]), "m": _const(arrays[1]), "s": _const(arrays[2])})
    ok = [np.ones(len(p.w), dtype=bool) for p in case.params]
    for p, o in zip(case.params, ok):
        o &= D.safe(np.array(p.w), np.array(p.m), np.array(p.s))
    t = [p.t for p in case.params]
    out: list[list[dict[str, FastOutput]]] = []
    for k, step in enumerate(case.steps):
        rescale = ev.const(case.rescale_at(k))
        row = []
        for i, p in enumerate(case.params):
            t[i] += 1
            n = len(p.w)
            sc = graph.scalars(lr, ev.const(p.lr_mult), wdx, ev.const(p.wd_mult), b1x, b2x, t[i],
                               hp.correct_bias)
            if any(getattr(sc, name).k != FIN for name in ("eta", "wd", "lr", "bc1", "bc2", "rb")):
                return None
            g = _const(np.array(step.grads[i], dtype=np.float64))
            ok[i] &= D.safe(g.x)
            scv = {name: _scalar(getattr(sc, name), n) for name in ("eta", "wd", "lr", "bc1", "bc2", "rb")}
            new, good, case_level = _element(ops, state[i], g, _scalar(rescale, n), scv,
                                             _scalar(b1x, n), _scalar(b2x, n), _scalar(epsx, n),
                                             None if clipx is None else _scalar(clipx, n),
                                             prof.weight_decay)
            ok[i] &= good
            if case_level or not np.isfinite(np.asarray(step.grads[i], dtype=np.float64)).all():
                return None  # the reference evaluates this case's alternative forms: mpmath
            state[i] = new
            row.append({name: _round(new[name], ok[i], fmt, ops) for name in ("w", "m", "s")})
        out.append(row)
    return out


def _element(ops: _Ops, st: dict[str, _V], g: _V, rescale: _V, sc: dict[str, _V], b1: _V, b2: _V,
             eps: _V, clip: _V | None, weight_decay: str) -> tuple[dict[str, _V], np.ndarray, bool]:
    """spec: adabelief_step with coupled decay (before or after clipping) and epsilon before the
    bias correction, each node's bound e as reference/_exact.py computes it. Returns the new
    state, where the path decides, and whether the case-level conditions below hold anywhere."""
    E, mag = ops.E, _mag
    w, m, s = st["w"], st["m"], st["s"]
    eta, wd, lr, bc1, bc2, rb = (sc[k] for k in ("eta", "wd", "lr", "bc1", "bc2", "rb"))
    good = np.ones(len(w.b), dtype=bool)
    # gradient: rescale*g + wd*w, then clip
    gs = ops.mul(rescale, g)
    gs.e = mag(g) * rescale.e + mag(rescale) * g.e + E(gs)
    wdw = ops.mul(wd, w)
    wdw.e = mag(w) * wd.e + mag(wd) * w.e + E(wdw)
    before_clip = weight_decay == "coupled-before-clip"
    gw = ops.add(gs, wdw) if before_clip else gs
    if before_clip:
        gw.e = gs.e + wdw.e + E(gw)
    if clip is not None:
        a, cm = mag(gw), mag(clip)
        over = a - gw.b > cm  # certainly clamped
        under = a + gw.b < cm  # certainly not
        good &= over | under
        sign = np.sign(gw.x.hi)
        clamped = _V(D.DD(np.where(over, sign * clip.x.hi, gw.x.hi), np.where(over, sign * clip.x.lo, gw.x.lo)),
                     np.where(over, clip.b, gw.b), np.zeros_like(gw.b))
        clamped.e = np.where(over, clip.e + np.where(a - cm <= gw.e, gw.e, 0.0),
                             gw.e + np.where(cm - a <= gw.e + clip.e, clip.e, 0.0))
        gc = clamped
    else:
        gc = gw
    if not before_clip:  # mxnet-doc: clip, then the decay term
        out = ops.add(gc, wdw)
        out.e = gc.e + wdw.e + E(out)
        gc = out
    # first moment, forms A-D; the exact value from form A
    one = _const(np.ones_like(g.b))
    om = ops.sub(one, b1)
    bm, og = ops.mul(b1, m), ops.mul(om, gc)
    m1 = ops.add(bm, og)
    loc_a = mag(gc) * E(om) + E(bm) + E(og) + E(m1)
    dmg = ops.sub(m, gc)
    bd = ops.mul(b1, dmg)
    loc_b = mag(b1) * E(dmg) + E(bd) + E(m1)
    od = ops.mul(om, dmg)  # |(1-b1)(g-m)| = |(1-b1)(m-g)|
    loc_c = mag(dmg) * E(om, 2) + mag(om) * E(dmg) + E(od) + E(m1)
    c = ops.sub(one, om)
    cd = ops.mul(dmg, c)
    loc_d = mag(dmg) * (E(om, 2) + E(c)) + mag(c) * E(dmg) + E(cd) + E(m1)
    m1.e = (mag(b1) * m.e + mag(om) * gc.e + mag(dmg) * b1.e
            + np.maximum(np.maximum(loc_a, loc_b), np.maximum(loc_c, loc_d)))
    # residual r = b1*(g' - m), r^2
    r = ops.mul(b1, ops.sub(gc, m))
    r.e = gc.e + m1.e + E(r)
    r2 = ops.mul(r, r)
    r2.e = 2 * mag(r) * r.e + r.e**2 + E(r2)
    # second moment, forms A and B, epsilon stored
    ob = ops.sub(one, b2)
    bs, orr = ops.mul(b2, s), ops.mul(ob, r2)
    part = ops.add(bs, orr)
    s1 = ops.add(part, eps)
    assoc = np.maximum(np.maximum(E(part), E(ops.add(orr, eps))), E(ops.add(bs, eps)))
    loc_sa = mag(r2) * E(ob) + E(bs) + E(orr) + E(s1) + assoc
    dsr = ops.sub(s, r2)
    bdd = ops.mul(b2, dsr)
    qq = ops.add(bdd, r2)
    loc_sb = mag(b2) * E(dsr) + E(bdd) + E(qq) + E(s1)
    s1.e = mag(b2) * s.e + mag(ob) * r2.e + mag(dsr) * b2.e + eps.e + np.maximum(loc_sa, loc_sb)
    # step: eta * m' / (sqrt(s') + eps), forms eta, lrm, hat
    q = ops.sqrt(s1)
    d = ops.add(q, eps)
    ratio = ops.div(m1, d)
    delta = ops.mul(eta, ratio)
    loc_eta = mag(eta) * E(ratio) + E(delta)
    em = ops.mul(eta, m1)
    md = mag(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        loc_lrm = np.where(md > 0, E(em) / md, 0.0) + E(delta)
        root = np.sqrt(s1.e)
        mq = mag(q)
        e_q = np.where(mq == 0, root, np.minimum(s1.e / (2 * mq), root))
        good &= 8 * (e_q + E(q) + eps.e + E(d)) < md  # far from check_divisor's 4 d.e >= |d|
        k = mag(delta) / md
        prop = mag(m1) / md * eta.e + mag(eta) / md * m1.e + k * (e_q + eps.e)
        loc_dd = k * (E(q) + E(d))
    # the hat form: lr*(m/bc1)/(sqrt(s/bc2) + eps/sqrt(bc2)), the same exact value
    mh, sh = ops.div(m1, bc1), ops.div(s1, bc2)
    qh = ops.sqrt(sh)
    er = ops.div(eps, rb)
    dh = ops.add(qh, er)
    rt = ops.div(mh, dh)
    dl = ops.mul(lr, rt)
    mdh, mqh, e_sh = mag(dh), mag(qh), E(sh)
    with np.errstate(divide="ignore", invalid="ignore"):
        sh_term = np.where(mqh > 0, np.minimum(e_sh / (2 * mqh), np.sqrt(e_sh)), np.sqrt(e_sh))
        kh = mag(dl) / mdh
        loc_hat = np.where(mdh > 0, mag(lr) / mdh * E(mh) + kh * (sh_term + E(qh) + E(er) + E(dh))
                           + mag(lr) * E(rt) + E(dl), 0.0)
    delta.e = prop + loc_dd + np.maximum(np.maximum(loc_eta, loc_lrm), loc_hat)
    w1 = ops.sub(w, delta)
    w1.e = w.e + delta.e + E(w1)
    for v in (gs, wdw, gw, m1, r, r2, s1, q, d, delta, w1):
        good &= D.safe(v.x) & np.isfinite(v.b) & (mag(v) + v.e < ops.limit)
    # Case-level conditions of the reference (reference/_golden.py): an intermediate of any form
    # beyond the overflow threshold, or a non-finite value anywhere, makes it evaluate the
    # alternative forms for every element of the case: then the whole case is left to mpmath.
    nodes = (gs, wdw, gw, om, bm, og, m1, dmg, bd, od, c, cd, r, r2, ob, bs, orr, part, s1, dsr, bdd,
             qq, q, d, ratio, delta, em, mh, sh, qh, er, dh, rt, dl, w1)
    case_level = np.zeros(len(w.b), dtype=bool)
    for v in nodes:
        case_level |= ~np.isfinite(v.x.hi) | ~np.isfinite(v.b) | (mag(v) + v.b + v.e >= ops.limit)
    return {"w": w1, "m": m1, "s": s1}, good, bool(case_level.any())


def _round(v: _V, ok: np.ndarray, fmt: Any, ops: _Ops) -> FastOutput:
    """Round the exact value to ``fmt`` where the interval [x - b, x + b] rounds one way."""
    dt = np.dtype(fmt.name)
    lo = D.add(v.x, D.from_float(-v.b))
    hi = D.add(v.x, D.from_float(v.b))
    with np.errstate(over="ignore", invalid="ignore"):
        r_lo = _round_dd(lo, dt)
        r_hi = _round_dd(hi, dt)
    value = r_lo
    # zero or tiny values and bounds: there the subnormal floors of the bound dominate σ, and the
    # interval reference's magnitudes (upper ends of intervals) are what count: mpmath decides
    decided = (ok & (r_lo == r_hi) & np.isfinite(value) & (np.abs(value) >= 2.0**-400)
               & (v.e > 2.0**-900))
    res = D.sub(v.x, D.from_float(value))
    residual = res.hi + res.lo
    sigma = v.e / ops.u
    # σ so close to a power of two that ulp(σ) could differ from the reference's: mpmath decides
    frac = np.abs(np.frexp(sigma)[0])
    decided &= (np.abs(frac - 0.5) > 1e-12) & (sigma > 0)
    # the reference's _admissible: a bound as large as the value means "any"
    bound = sigma * math.ldexp(1.0, -fmt.precision)
    close = np.abs(bound - np.abs(value)) <= 1e-9 * np.abs(value)
    decided &= ~close & ~((bound >= np.abs(value)) & (bound > math.ldexp(1.0, fmt.emin)))
    return FastOutput(value, residual, sigma, decided)


def _round_dd(x: D.DD, dt: np.dtype) -> np.ndarray:
    """hi + lo correctly rounded to ``dt`` (float32 or float64): round hi, then correct by lo."""
    if dt == np.float64:
        return x.hi + x.lo  # |lo| <= ulp(hi)/2: hi + lo rounds correctly except at ties
    r = x.hi.astype(dt).astype(np.float64)
    # hi rounded to float32 may be off when hi sits on a float32 tie and lo tips it
    diff = (x.hi - r) + x.lo
    up = np.nextafter(r.astype(dt), np.array(np.inf, dt)).astype(np.float64)
    down = np.nextafter(r.astype(dt), np.array(-np.inf, dt)).astype(np.float64)
    half_up, half_down = (up - r) / 2, (r - down) / 2
    r = np.where(diff > half_up, up, np.where(-diff > half_down, down, r))
    return r


def fast_golden(case: CaseInputs, fallback: bool = True) -> Any:
    """The case's expectations as :func:`reference.golden` gives them (a GoldenCase): from the
    fast path where it decides, and, with ``fallback``, from mpmath for the elements it does not
    (the update is element-wise: those elements form a smaller case of their own). None when the
    case is out of the path's scope, or when an element is undecided and ``fallback`` is off."""
    from dataclasses import replace

    from ._golden import Expectation, Finite, GoldenCase, golden
    from ._model import ParamInput, StepInput

    with np.errstate(all="ignore"):
        out = fast_case(case)
    if out is None:
        return None
    undecided = [np.zeros(len(p.w), dtype=bool) for p in case.params]
    for row in out:
        for i, res in enumerate(row):
            for fo in res.values():
                undecided[i] |= ~fo.decided
    steps: list[list[dict[str, list[Expectation]]]] = [[{name: [(Finite(float(v), float(r), float(sg)),)
                      for v, r, sg in zip(fo.value, fo.residual, fo.sigma)]
               for name, fo in res.items()} for res in row] for row in out]
    if not any(u.any() for u in undecided):
        return GoldenCase(steps, 106)
    if not fallback:
        return None
    picks = [(i, np.flatnonzero(u).tolist()) for i, u in enumerate(undecided) if u.any()]
    params = tuple(
        ParamInput(w=tuple(case.params[i].w[j] for j in js), m=tuple(case.params[i].m[j] for j in js),
                   s=tuple(case.params[i].s[j] for j in js), t=case.params[i].t,
                   lr_mult=case.params[i].lr_mult, wd_mult=case.params[i].wd_mult, index=case.params[i].index)
        for i, js in picks)
    sub_steps = tuple(StepInput(tuple(tuple(st.grads[i][j] for j in js) for i, js in picks), st.rescale_grad)
                      for st in case.steps)
    exact = golden(replace(case, params=params, steps=sub_steps))
    for k in range(len(case.steps)):
        for q, (i, js) in enumerate(picks):
            for name in steps[k][i]:
                for pos, j in enumerate(js):
                    steps[k][i][name][j] = exact.steps[k][q][name][pos]
    return GoldenCase(steps, exact.precision, exact.ties)
