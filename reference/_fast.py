"""The fast reference path (issue 9): a case's exact outputs and σ vectorised over elements with
double-double arithmetic (reference/_dd.py) and a running bound on its own error; an element is
*undecided* wherever that bound cannot settle the correctly rounded value of one of its outputs,
or wherever it leaves the path's scope, and :func:`fast_golden` / :func:`fast_expected` then take
that element's expectations from mpmath (the update is element-wise: the undecided elements form
a smaller case of their own). The golden vectors stay mpmath-proven; this serves campaigns,
``fuzz`` and ``reference``.

Scope. Every profile of spec/profiles.json, read from its choices (epsilon before or after the
bias correction, with the paper's transient epsilon or optax's separate eps_root in the state,
coupled decay before or after clipping, decoupled decay in both of its forms, rectification in
its three branches, AMSGrad), dtypes float32, float64 and float16-mp. Left to mpmath:

* whole cases: a non-finite hyperparameter or per-parameter scalar (bias correction, eta, the
  rectification factor), a non-finite or zero rescale_grad in a profile without the skip rule,
  a rectification whose branch is uncertain at the interval precision;
* elements: a non-finite input, an input or intermediate outside [2^-400, 2^400] (the range where
  the double-double bounds hold) or within a factor 2 of the compute format's overflow threshold,
  a clip or divisor boundary within the bound, an output interval that straddles a rounding
  boundary, a σ within 10^-12 of a power of two, a zero or tiny output.

Implementation-defined cases (a clip_gradient <= 0 where the profile says so, a hyperparameter
whose rounding changes its class) are "any" everywhere, as in the reference, without evaluation.

The per-parameter scalars (bias corrections, eta, the rectification factor) come from the mpmath
reference itself (:class:`reference._exact._Graph`), once per parameter and step. σ follows
spec/error-model.md node by node as reference/_exact.py computes it, in binary64; the magnitudes
of the nodes that only enter σ (the other evaluation forms' intermediates) are taken in binary64
from the double-double leading parts (relative error ~10^-16, far inside the 10^-12 margin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dd as D
from ._arith import FIN, Evaluator, NeedPrecision
from ._exact import _clip_enabled, _Graph, _rounding_changes_class, outputs_of
from ._formats import FLOAT16
from ._model import CaseInputs
from ._profiles import Profile, profile_named

__all__ = ["FastExpected", "FastOutput", "fast_case", "fast_expected", "fast_golden", "implementation_defined"]

_GROW = 1.0 + 2.0**-40  # rounding-up factor for the binary64 arithmetic on bounds
_SCALARS = ("eta", "wd", "lr", "bc1", "bc2", "rb")


@dataclass
class FastOutput:
    """Per element: the correctly rounded value, the residual and σ, as the vectors store them;
    ``decided`` False where the fast path could not settle them (use mpmath there)."""

    value: np.ndarray
    residual: np.ndarray
    sigma: np.ndarray
    decided: np.ndarray
    # decided, and "any": the bound is as large as the value (the reference's _admissible)
    anything: np.ndarray


@dataclass
class _V:
    """The exact value as a double-double x, b a bound on its error, e the node's first-order
    evaluation bound (spec/error-model.md). Arrays over elements, or 0-d for scalars."""

    x: D.DD
    b: Any
    e: Any


def _const(v: np.ndarray) -> _V:
    v = np.asarray(v, dtype=np.float64)
    z = np.zeros_like(v)
    return _V(D.DD(v, z), z, z)


def _scalar(x: Any) -> _V:
    """A node of the mpmath reference (an X) as a 0-d node: its interval's midpoint as a
    double-double, the interval's radius plus that conversion's error, and the node's bound e."""
    from mpmath.libmp import from_float, mpf_add, mpf_shift, mpf_sub, to_float

    a, b = x.v._mpi_
    mid = mpf_shift(mpf_add(a, b), -1)  # exact
    hi = to_float(mid, rnd="n")
    rest = mpf_sub(mid, from_float(hi))  # exact
    lo = to_float(rest, rnd="n")
    conversion = abs(to_float(mpf_sub(rest, from_float(lo)), rnd="u"))
    rad = (to_float(mpf_sub(b, mid), rnd="u") + conversion) * 1.0000001  # 0 for an exact point
    return _V(D.DD(np.float64(hi), np.float64(lo)), np.float64(rad), np.float64(float(x.e)))


def _mag(v: _V) -> Any:
    return np.abs(v.x.hi)


class _Ops:
    """Exact-value arithmetic with running bounds, and the rounding-site bound E of one format."""

    def __init__(self, fmt: Any) -> None:
        self.u = math.ldexp(1.0, -fmt.precision)
        self.half_eta = math.ldexp(1.0, fmt.emin - fmt.precision)
        self.limit = math.ldexp(1.0, fmt.emax - 1)  # half the overflow threshold: a margin
        # the overflow threshold (the largest finite value for binary64, 2^-53 relative below it)
        self.threshold = min(float((2 ** (fmt.precision + 1) - 1) * 2.0 ** (fmt.emax - fmt.precision)),
                             float(np.finfo(np.float64).max))

    def E(self, m: Any, weight: float = 1.0) -> Any:
        """The bound of one rounding site whose exact result has magnitude m (an array)."""
        e = np.maximum(m * self.u, self.half_eta)
        return e if weight == 1.0 else weight * e

    def Ev(self, v: _V, weight: float = 1.0) -> Any:
        return self.E(np.abs(v.x.hi), weight)

    @staticmethod
    def add(a: _V, c: _V, exact: bool = False) -> _V:
        """The sum. With ``exact``: no local bound where both operands are plain doubles (lo = 0):
        there the double-double sum is Knuth's error-free two_sum (the chains of m and s, whose
        exact values may be ties)."""
        z = D.add(a.x, c.x)
        local = D.ADD_BOUND * np.abs(z.hi)
        if exact:
            local = np.where((a.x.lo == 0) & (c.x.lo == 0), 0.0, local)
        return _V(z, (a.b + c.b + local) * _GROW, 0.0)

    def sub(self, a: _V, c: _V, exact: bool = False) -> _V:
        return self.add(a, _V(D.neg(c.x), c.b, c.e), exact)

    @staticmethod
    def mul(a: _V, c: _V, exact: bool = False) -> _V:
        z = D.mul(a.x, c.x)
        local = D.MUL_BOUND * np.abs(z.hi)
        if exact:  # no local bound where both operands are plain: two_prod is error-free
            local = np.where((a.x.lo == 0) & (c.x.lo == 0), 0.0, local)
        b = np.abs(a.x.hi) * c.b + np.abs(c.x.hi) * a.b + a.b * c.b + local
        return _V(z, b * (_GROW * _GROW), 0.0)

    @staticmethod
    def div(a: _V, c: _V) -> _V:
        z = D.div(a.x, c.x)
        den = np.abs(c.x.hi) - c.b
        b = (a.b + np.abs(z.hi) * c.b) / den + D.DIV_BOUND * np.abs(z.hi)
        return _V(z, np.where(den > 0, b * (_GROW * _GROW), np.inf), 0.0)

    @staticmethod
    def sqrt(a: _V) -> _V:
        z = D.sqrt(a.x)
        low = np.abs(a.x.hi) - a.b
        b = a.b / (2 * np.sqrt(low)) + D.SQRT_BOUND * np.abs(z.hi)
        return _V(z, np.where(low > 0, b * (_GROW * _GROW), np.inf), 0.0)


def _sqrt_prop(mq: Any, e: Any) -> Any:
    """|sqrt(a + d) - sqrt(a)| <= min(d / (2 sqrt(a)), sqrt(d)), d = e, as _Graph.sqrt_prop."""
    root = np.sqrt(e)
    return np.where(mq > 0, np.minimum(e / (2 * np.where(mq > 0, mq, 1.0)), root), root)


def implementation_defined(case: CaseInputs) -> bool:
    """Whether the reference makes every output of ``case`` "any" (reference/_exact.py)."""
    prof = profile_named(case.profile)
    return _clip_enabled(case.hyperparameters.clip_gradient, prof)[1] or _rounding_changes_class(case)


def _in_scope(case: CaseInputs, prof: Profile) -> bool:
    hp = case.hyperparameters
    leaves = [hp.learning_rate, hp.beta1, hp.beta2, hp.epsilon, hp.wd]
    if prof.stored_epsilon != "epsilon":
        leaves.append(hp.eps_root)
    if not all(math.isfinite(x) for x in leaves):
        return False
    for k in range(len(case.steps)):
        r = case.rescale_at(k)
        if (not math.isfinite(r) or r == 0) and prof.rescale_skip != "skip-when-zero-or-nonfinite":
            return False  # the whole case is NaN or infinite: the reference's alternative forms
    return all(math.isfinite(x) for p in case.params for x in (p.lr_mult, p.wd_mult))


class _Case:
    """The per-case context of the element-wise graph."""

    def __init__(self, case: CaseInputs, prof: Profile) -> None:
        spec = case.dtype_spec
        self.prof = prof
        self.fmt = spec.compute
        self.ev = Evaluator(128, spec.compute, None)
        self.graph = _Graph(self.ev, prof)
        self.ops = _Ops(spec.compute)
        self.hp = hp = case.hyperparameters
        ev = self.ev
        self.leaf = {k: ev.const(v) for k, v in (("lr", hp.learning_rate), ("b1", hp.beta1), ("b2", hp.beta2),
                                                 ("eps", hp.epsilon), ("wd", hp.wd))}
        self.leaf["eps_state"] = (self.leaf["eps"] if prof.stored_epsilon == "epsilon"
                                  else ev.const(hp.eps_root))
        clip_on, _ = _clip_enabled(hp.clip_gradient, prof)
        c = hp.clip_gradient
        # clip_gradient = inf clamps nothing (and an infinite leaf has no rounding error)
        self.clip = _scalar(ev.const(c)) if clip_on and c is not None and math.isfinite(c) else None
        self.b1, self.b2 = _scalar(self.leaf["b1"]), _scalar(self.leaf["b2"])
        self.eps, self.eps_state = _scalar(self.leaf["eps"]), _scalar(self.leaf["eps_state"])
        self.one = _V(D.DD(np.float64(1.0), np.float64(0.0)), np.float64(0.0), np.float64(0.0))
        om, ob = self.ops.sub(self.one, self.b1, True), self.ops.sub(self.one, self.b2, True)
        om.e, ob.e = np.float64(0.0), np.float64(0.0)
        self.om, self.ob = om, ob
        self._consts: dict[float, Any] = {}
        self.unsafe = np.zeros(0, dtype=bool)  # of the element step being evaluated: w is "any"
        self.unsafe_all = np.zeros(0, dtype=bool)  # every output is "any"

    def const(self, x: float) -> Any:
        """ev.const, once per value (a Fraction rounding each time otherwise)."""
        if x not in self._consts:
            self._consts[x] = self.ev.const(x)
        return self._consts[x]

    def scalars(self, lr_mult: float, wd_mult: float, t: int) -> dict[str, _V] | None:
        leaf = self.leaf
        sc = self.graph.scalars(leaf["lr"], self.const(lr_mult), leaf["wd"], self.const(wd_mult), leaf["b1"],
                                leaf["b2"], t, self.hp.correct_bias)
        if any(getattr(sc, name).k != FIN for name in _SCALARS):
            return None
        out = {name: _scalar(getattr(sc, name)) for name in _SCALARS}
        self._derived(sc, out)
        return out

    def _derived(self, raw: Any, sc: dict[str, _V]) -> None:
        """The per-parameter scalars that the element graph uses beyond the reference's:
        a = lr/bc1, and for decoupled decay c = lr*wd (or wd) and k = 1 - c."""
        ev, graph = self.ev, self.graph
        a = ev.div(raw.lr, raw.bc1)
        if a.k != FIN:
            raise NeedPrecision("a")
        sc["a"] = _scalar(a)
        if self.hp.weight_decouple:
            c = raw.wd if self.hp.fixed_decay else graph.product(raw.lr, raw.wd)
            k = ev.sub(graph.one, c)
            if c.k != FIN or k.k != FIN:
                raise NeedPrecision("decay")
            k.e = ev.zero
            sc["c"], sc["k"] = _scalar(c), _scalar(k)


def _gradient(C: _Case, g: _V, w: _V, rescale: _V, sc: dict[str, _V], good: np.ndarray,
              nodes: list[Any]) -> _V:
    """spec: effective_gradient (_Graph.gradient and clip, mode None)."""
    ops, E = C.ops, C.ops.Ev
    gs = ops.mul(rescale, g, True)
    gs.e = _mag(g) * rescale.e + _mag(rescale) * g.e + E(gs)
    nodes.append(gs)
    if C.hp.weight_decouple:
        return _clip(C, gs, good, nodes) if C.clip is not None else gs
    wd = sc["wd"]
    wdw = ops.mul(wd, w, True)
    wdw.e = _mag(w) * wd.e + _mag(wd) * w.e + E(wdw)
    nodes.append(wdw)
    if C.prof.weight_decay == "coupled-before-clip":
        gw = ops.add(gs, wdw, True)
        gw.e = gs.e + wdw.e + E(gw)
        nodes.append(gw)
        return _clip(C, gw, good, nodes) if C.clip is not None else gw
    gc = _clip(C, gs, good, nodes) if C.clip is not None else gs
    out = ops.add(gc, wdw, True)
    out.e = gc.e + wdw.e + E(out)
    nodes.append(out)
    return out


def _clip(C: _Case, gw: _V, good: np.ndarray, nodes: list[Any]) -> _V:
    clip = C.clip
    assert clip is not None
    a, cm = _mag(gw), _mag(clip)
    over = a - gw.b > cm + clip.b  # certainly clamped
    under = a + gw.b < cm - clip.b  # certainly not
    good &= over | under
    sign = np.sign(gw.x.hi)
    x = D.DD(np.where(over, sign * clip.x.hi, gw.x.hi), np.where(over, sign * clip.x.lo, gw.x.lo))
    e = np.where(over, clip.e + np.where(a - cm <= gw.e, gw.e, 0.0),
                 gw.e + np.where(cm - a <= gw.e + clip.e, clip.e, 0.0))
    return _V(x, np.where(over, clip.b, gw.b), e)


def _first_moment(C: _Case, m: _V, gc: _V, nodes: list[Any]) -> _V:
    """spec: first_moment, forms A-D (_Graph.first_moment); the exact value from form A."""
    ops, E, Em = C.ops, C.ops.Ev, C.ops.E
    b1, om = C.b1, C.om
    bm, og = ops.mul(b1, m, True), ops.mul(om, gc, True)
    m1 = ops.add(bm, og, True)
    mb1, mom = _mag(b1), _mag(om)
    e_om = Em(mom)
    # the other forms' intermediates enter σ only by their magnitudes: binary64 suffices
    dmg = np.abs(m.x.hi - gc.x.hi)
    loc_a = _mag(gc) * e_om + E(bm) + E(og)
    loc_b = mb1 * Em(dmg) + Em(mb1 * dmg)
    loc_c = dmg * (2 * e_om) + mom * Em(dmg) + Em(mom * dmg)
    c = np.abs(1.0 - om.x.hi)  # (1 - (1 - b1)), rounded once more
    loc_d = dmg * (2 * e_om + Em(c)) + c * Em(dmg) + Em(dmg * c)
    m1.e = (mb1 * m.e + mom * gc.e + dmg * b1.e
            + np.maximum(np.maximum(loc_a, loc_b), np.maximum(loc_c, loc_d)) + E(m1))
    # every node the reference bounds (E) is range-checked: one at the overflow threshold sets
    # the reference's case-wide overflow flag
    nodes.extend((m1, bm, og, dmg, mb1 * dmg, mom * dmg, c * dmg))
    return m1


def _second_moment(C: _Case, s: _V, r2: _V, nodes: list[Any]) -> _V:
    """spec: second_moment, forms A and B, epsilon (or eps_root) stored in s."""
    ops, E, Em = C.ops, C.ops.Ev, C.ops.E
    b2, ob, eps = C.b2, C.ob, C.eps_state
    bs, orr = ops.mul(b2, s, True), ops.mul(ob, r2, True)
    part = ops.add(bs, orr, True)
    s1 = ops.add(part, eps, True)
    mb2, mob, me = _mag(b2), _mag(ob), _mag(eps)
    assoc = np.maximum(np.maximum(E(part), Em(np.abs(orr.x.hi + eps.x.hi))), Em(np.abs(bs.x.hi + eps.x.hi)))
    loc_a = _mag(r2) * Em(mob) + E(bs) + E(orr) + assoc
    dsr = s.x.hi - r2.x.hi
    bd = b2.x.hi * dsr
    loc_b = mb2 * Em(np.abs(dsr)) + Em(np.abs(bd)) + Em(np.abs(bd + r2.x.hi))
    s1.e = (mb2 * s.e + mob * r2.e + np.abs(dsr) * b2.e + eps.e + np.maximum(loc_a, loc_b) + E(s1))
    nodes.extend((part, s1, bs, orr, np.abs(dsr), np.abs(bd + r2.x.hi), me, orr.x.hi + eps.x.hi,
                  bs.x.hi + eps.x.hi))
    return s1


def _check_divisor(C: _Case, good: np.ndarray, d_mag: Any, d_e: Any) -> None:
    """_Graph.check_divisor: where 4 d.e >= |d| (|d| > 0) the element's w is implementation-defined
    from this step on (C.unsafe); certainly clear of it, or certainly within it, the path decides;
    near that boundary, or at d = 0, mpmath does."""
    clear = 4 * d_e * (1 + 1e-9) < d_mag
    within = (d_mag > 0) & (4 * d_e >= d_mag * (1 + 1e-9))
    good &= clear | within
    C.unsafe |= within


def _step_before(C: _Case, sc: dict[str, _V], m1: _V, s1: _V, good: np.ndarray, nodes: list[Any]) -> _V:
    """update_direction with epsilon before the bias correction: eta * m' / (sqrt(s') + eps),
    forms eta, lrm and hat (_Graph.step_size)."""
    ops, E, Em = C.ops, C.ops.Ev, C.ops.E
    eps, eta = C.eps, sc["eta"]
    q = ops.sqrt(s1)
    d = ops.add(q, eps)
    ratio = ops.div(m1, d)
    delta = ops.mul(eta, ratio)
    meta, md, mq, mm1 = _mag(eta), _mag(d), _mag(q), _mag(m1)
    loc_eta = meta * E(ratio) + E(delta)
    mem = meta * mm1
    safe_md = np.where(md > 0, md, 1.0)
    loc_lrm = np.where(md > 0, Em(mem) / safe_md, 0.0) + E(delta)
    e_q = _sqrt_prop(mq, s1.e)
    d_e = e_q + E(q) + eps.e + E(d)
    _check_divisor(C, good, md, d_e)
    k = _mag(delta) / safe_md
    prop = mm1 / safe_md * eta.e + meta / safe_md * m1.e + k * (e_q + eps.e)
    loc_dd = k * (E(q) + E(d))
    # the hat form: lr*(m/bc1)/(sqrt(s/bc2) + eps/sqrt(bc2)), the same exact value
    lr, bc1, bc2, rb = sc["lr"], sc["bc1"], sc["bc2"], sc["rb"]
    mh = mm1 / _mag(bc1)
    sh = _mag(s1) / _mag(bc2)
    qh = np.sqrt(sh)
    er = _mag(eps) / _mag(rb)
    dh = qh + er
    mlr = _mag(lr)
    rt = mh / np.where(dh > 0, dh, 1.0)
    e_sh = Em(sh)
    sh_term = _sqrt_prop(qh, e_sh)
    kh = mlr * rt / np.where(dh > 0, dh, 1.0)
    loc_hat = np.where(dh > 0, mlr / np.where(dh > 0, dh, 1.0) * Em(mh)
                       + kh * (sh_term + Em(qh) + Em(er) + Em(dh)) + mlr * Em(rt) + Em(mlr * rt), 0.0)
    delta.e = np.where(md > 0, prop + loc_dd + np.maximum(np.maximum(loc_eta, loc_lrm), loc_hat), 0.0)
    nodes.extend((q, d, ratio, delta, mem, mh, sh, dh, rt, mlr * rt))
    return delta


def _step_after(C: _Case, sc: dict[str, _V], m1: _V, s1: _V, good: np.ndarray, nodes: list[Any]) -> _V:
    """update_direction with epsilon after the bias correction (_Graph._step_after_bc): denominator
    forms q: sqrt(s_hat) + eps and roots: sqrt(s or s + eps)/sqrt(bc2) + eps, numerator forms
    a*(m/d) and (a*m)/d, a = lr/bc1; s_hat = s/bc2, or (s + eps)/bc2 with the transient epsilon."""
    ops, E, Em = C.ops, C.ops.Ev, C.ops.E
    eps = C.eps
    transient = C.prof.epsilon_denominator == "after-bias-correction-with-transient-epsilon"
    lr, bc1, bc2, rb = sc["lr"], sc["bc1"], sc["bc2"], sc["rb"]
    a = sc["a"]
    se = ops.add(s1, eps) if transient else s1
    if transient:
        nodes.append(se)
    sh = ops.div(se, bc2)
    qh = ops.sqrt(sh)
    dd = ops.add(qh, eps)
    rt = ops.div(m1, dd)
    out = ops.mul(a, rt)
    mbc1, mbc2, mlr, ma, mm1 = _mag(bc1), _mag(bc2), _mag(lr), _mag(a), _mag(m1)
    se_e = (s1.e + eps.e) if transient else s1.e
    mse, mqh, mdd = _mag(se), _mag(qh), _mag(dd)
    sh_e = se_e / mbc2 + mse * bc2.e / mbc2**2
    dd_prop = _sqrt_prop(mqh, sh_e) + eps.e
    e_se = E(se) if transient else 0.0
    x = e_se / mbc2 + E(sh)
    loc_q = _sqrt_prop(mqh, x) + E(qh)
    qs = np.sqrt(mse)
    mrb = _mag(rb)
    root_err = _sqrt_prop(qs, e_se) + Em(qs)
    qr = qs / mrb
    loc_roots = root_err / mrb + qs * Em(mrb) / mrb**2 + Em(qr)
    dd_loc = np.maximum(loc_q, loc_roots) + E(dd)
    _check_divisor(C, good, mdd, dd_prop + dd_loc)
    safe = np.where(mdd > 0, mdd, 1.0)
    k = _mag(out) / safe
    a_prop = lr.e / mbc1 + mlr * bc1.e / mbc1**2
    prop = _mag(rt) * a_prop + ma / safe * m1.e + k * dd_prop
    am = ma * mm1
    loc_num = np.maximum(ma * E(rt), Em(am) / safe) + _mag(rt) * Em(ma) + E(out)
    out.e = np.where(mdd > 0, prop + k * dd_loc + loc_num, 0.0)
    nodes.extend((sh, qh, dd, rt, out, am, qr))
    return out


def _step(C: _Case, sc: dict[str, _V], m1: _V, s1: _V, placement: str, good: np.ndarray,
          nodes: list[Any]) -> _V:
    if placement == "before-bias-correction":
        return _step_before(C, sc, m1, s1, good, nodes)
    return _step_after(C, sc, m1, s1, good, nodes)


def _rectified(C: _Case, sc: dict[str, _V], branch: str, rho: _V | None, m1: _V, s1: _V,
               good: np.ndarray, nodes: list[Any]) -> _V:
    """spec: rectified_direction (_Graph.rectified_step)."""
    ops, E, Em = C.ops, C.ops.Ev, C.ops.E
    if branch == "none":
        z = np.zeros_like(m1.x.hi)
        return _V(D.DD(z, z), z, z)
    if branch == "sgd":
        lr, bc1, a = sc["lr"], sc["bc1"], sc["a"]
        out = ops.div(ops.mul(lr, m1), bc1)
        mbc1, mm1 = _mag(bc1), _mag(m1)
        a_prop = lr.e / mbc1 + _mag(lr) * bc1.e / mbc1**2
        loc = np.maximum(mm1 * Em(_mag(a)), _mag(lr) * Em(mm1 / mbc1)) + E(out)
        out.e = mm1 * a_prop + _mag(a) * m1.e + loc
        nodes.extend((out, _mag(lr) * mm1, mm1 / mbc1))
        return out
    assert rho is not None
    placement = ("before-bias-correction" if C.prof.rectification.endswith("before-bias-correction")
                 else "after-bias-correction")
    base = _step(C, sc, m1, s1, placement, good, nodes)
    out = ops.mul(rho, base)
    out.e = _mag(base) * rho.e + _mag(rho) * base.e + E(out)
    nodes.append(out)
    return out


def _decoupled(C: _Case, sc: dict[str, _V], w: _V, delta: _V, nodes: list[Any]) -> _V:
    """spec: decoupled_decay, forms mult: w*(1 - c) - delta and in-step: w - (delta + c*w)."""
    ops, E, Em = C.ops, C.ops.Ev, C.ops.E
    c = sc["c"]
    k = sc["k"]
    wk = ops.mul(w, k)
    out = ops.sub(wk, delta)
    mw = _mag(w)
    cw = c.x.hi * w.x.hi
    t3 = np.abs(delta.x.hi + cw)
    loc_mult = mw * Em(_mag(k)) + E(wk) + E(out)
    if C.hp.fixed_decay:
        loc_in = Em(np.abs(cw)) + Em(t3) + E(out)
    else:
        mlr = _mag(sc["lr"])
        u_plus = Em(t3 / mlr) if mlr else 0.0
        loc_in = mlr * (Em(_mag(sc["wd"]) * mw) + u_plus) + Em(t3) + E(out)
    out.e = _mag(k) * w.e + mw * c.e + delta.e + np.maximum(loc_mult, loc_in)
    nodes.extend((wk, out, t3, cw, _mag(sc["wd"]) * mw, t3 / np.where(_mag(sc["lr"]) > 0, _mag(sc["lr"]), 1.0)))
    return out


def _element(C: _Case, st: dict[str, _V], g: _V, rescale: _V, sc: dict[str, _V],
             rect: tuple[str, _V | None] | None) -> tuple[dict[str, _V], np.ndarray]:
    """spec: adabelief_step for every element (_Graph.element, mode None): the new state and
    where the path decides it."""
    ops, E = C.ops, C.ops.Ev
    w, m, s = st["w"], st["m"], st["s"]
    good = np.ones(np.shape(w.x.hi), dtype=bool)
    C.unsafe = np.zeros(np.shape(w.x.hi), dtype=bool)
    C.unsafe_all = np.zeros(np.shape(w.x.hi), dtype=bool)
    nodes: list[Any] = []
    gc = _gradient(C, g, w, rescale, sc, good, nodes)
    m1 = _first_moment(C, m, gc, nodes)
    r = ops.mul(C.b1, ops.sub(gc, m, True), True)
    r.e = gc.e + m1.e + E(r)
    r2 = ops.mul(r, r, True)
    r2.e = 2 * _mag(r) * r.e + r.e**2 + E(r2)
    nodes.extend((gc, r, r2))
    s1 = _second_moment(C, s, r2, nodes)
    s_den = s1
    smax1 = None
    if "s_max" in st:  # spec: amsgrad_maximum (exact; its bound the larger of the two)
        sm = st["s_max"]
        take = s1.x.hi > sm.x.hi
        close = np.abs(s1.x.hi - sm.x.hi) <= (s1.b + sm.b) * 2
        good &= ~close | (s1.x.hi == sm.x.hi) & (s1.x.lo == sm.x.lo)
        smax1 = _V(D.DD(np.where(take, s1.x.hi, sm.x.hi), np.where(take, s1.x.lo, sm.x.lo)),
                   np.maximum(s1.b, sm.b), np.maximum(s1.e, sm.e))
        s_den = smax1
    if rect is not None:
        s_rect = s1 if C.prof.amsgrad == "max-of-s-unrectified" else s_den
        delta = _rectified(C, sc, rect[0], rect[1], m1, s_rect, good, nodes)
    else:
        delta = _step(C, sc, m1, s_den, C.prof.epsilon_denominator, good, nodes)
    if C.hp.weight_decouple:
        w1 = _decoupled(C, sc, w, delta, nodes)
    else:
        w1 = ops.sub(w, delta)
        w1.e = w.e + delta.e + E(w1)
    nodes.append(w1)
    # every intermediate within the double-doubles' safe range and far from the compute format's
    # overflow threshold (NaN and infinite values and bounds fail the comparison too)
    limit = min(ops.limit, D.SAFE_MAX)
    for v in nodes:
        if isinstance(v, _V):
            a = np.abs(v.x.hi)
            good &= (a + v.b < limit) & ((a >= D.SAFE_MIN) | (a == 0))
        else:
            good &= np.abs(v) < limit
    # _Graph.check_range: where a node's bound reaches the overflow threshold although its value
    # does not, every output of the element is "any" from this step on (C.unsafe_all); near that
    # boundary, mpmath decides
    for v in (gc, m1, r, r2, s1, delta, w1) + (() if smax1 is None else (smax1,)):
        a = np.abs(v.x.hi)
        reach = a + v.b + v.e
        clear = reach * (1 + 1e-9) < ops.threshold
        over = (a + v.b < limit) & ((a - v.b + v.e) >= ops.threshold * (1 + 1e-9))
        good &= clear | over
        C.unsafe_all |= over & ~clear
    out = {"w": w1, "m": m1, "s": s1}
    if smax1 is not None:
        out["s_max"] = smax1
    return out, good


_BENIGN = {"w": 0.5, "m": 0.25, "s": 1.0, "s_max": 1.0}


def fast_case(case: CaseInputs) -> list[list[dict[str, FastOutput]]] | None:
    """Per step, per parameter: output name -> FastOutput; None when the whole case is left to
    mpmath (module doc). Implementation-defined cases are None too (see
    :func:`implementation_defined`)."""
    return None if implementation_defined(case) else _evaluate(case)


def _evaluate(case: CaseInputs) -> list[list[dict[str, FastOutput]]] | None:
    """fast_case for a case known not to be implementation-defined."""
    prof = profile_named(case.profile)
    if not _in_scope(case, prof):
        return None
    try:
        with np.errstate(all="ignore"):
            return _fast_case(case, prof)
    except NeedPrecision:
        return None


def _fast_case(case: CaseInputs, prof: Profile) -> list[list[dict[str, FastOutput]]] | None:
    C = _Case(case, prof)
    spec = case.dtype_spec
    names = outputs_of(case)
    out_fmts = {"w": spec.master, "m": spec.compute, "s": spec.compute, "s_max": spec.compute, "w16": FLOAT16}
    state: list[dict[str, _V]] = []
    ok: list[np.ndarray] = []
    for p in case.params:
        arrays = {n: np.array(getattr(p, n), dtype=np.float64) for n in ("w", "m", "s", "s_max")
                  if getattr(p, n) is not None}
        good = np.ones(len(p.w), dtype=bool)
        for a in arrays.values():
            good &= D.safe(a)
        st = {}
        for n, a in arrays.items():
            st[n] = _const(np.where(good, a, _BENIGN[n]))
        state.append(st)
        ok.append(good)
    t = [p.t for p in case.params]
    # elements whose every later output is "any" (an unsafe division at an earlier step)
    tainted = [np.zeros(len(p.w), dtype=bool) for p in case.params]
    out: list[list[dict[str, FastOutput]]] = []
    for k, step in enumerate(case.steps):
        rescale_value = case.rescale_at(k)
        skip = prof.rescale_skip == "skip-when-zero-or-nonfinite" and (
            rescale_value == 0 or not math.isfinite(rescale_value))
        rescale = None if skip else _scalar(C.const(rescale_value))
        row = []
        for i, p in enumerate(case.params):
            t[i] += 1
            if rescale is not None:
                sc = C.scalars(p.lr_mult, p.wd_mult, t[i])
                if sc is None:
                    return None
                rect = None
                uncertain = False  # the rectification's branch: then every w is "any" (the reference)
                if C.hp.rectify:
                    branch, rho, uncertain = C.graph.rectification(C.leaf["b2"], t[i], C.hp.degenerated_to_sgd)
                    if rho is not None and rho.k != FIN:
                        return None
                    rect = (branch, None if rho is None else _scalar(rho))
                g_raw = np.array(step.grads[i], dtype=np.float64)
                g_ok = D.safe(g_raw)
                ok[i] &= g_ok
                g = _const(np.where(g_ok, g_raw, 1.0))
                new, good = _element(C, state[i], g, rescale, sc, rect)
                # a tainted element's outputs are "any", but its intermediates still count for the
                # reference's case-wide flags: out of range, it goes to mpmath like any other
                ok[i] &= good
                tainted[i] |= C.unsafe_all & ok[i]
                unsafe = (C.unsafe | uncertain) & ok[i] & ~tainted[i]
                state[i] = {n: _benign(v, ok[i], n) for n, v in new.items()}
            else:
                unsafe = np.zeros(len(p.w), dtype=bool)
            res = {n: _round(state[i][n], ok[i], out_fmts[n], rescale is None,
                             tainted[i] | unsafe if n == "w" else tainted[i])
                   for n in names if n != "w16"}
            if "w16" in names:
                w1 = state[i]["w"]
                floor16 = math.ldexp(1.0, FLOAT16.emin - FLOAT16.precision)
                e16 = w1.e + np.maximum(np.abs(w1.x.hi) * 2.0**-FLOAT16.precision, floor16)
                # where the floor certainly wins the max, σ = (w's bound + floor16)/u16 is at least
                # the power of two floor16/u16 in the reference as here: the same ulp(σ)
                at_floor = np.abs(w1.x.hi) * 2.0**-FLOAT16.precision < floor16 * (1 - 1e-9)
                res["w16"] = _round(_V(w1.x, w1.b, e16), ok[i], FLOAT16, False, tainted[i] | unsafe, at_floor)
            tainted[i] |= unsafe
            row.append(res)
        out.append(row)
    return out


def _benign(v: _V, ok: np.ndarray, name: str) -> _V:
    """Undecided elements restarted from a harmless value (they are mpmath's), so that their
    arithmetic stays finite and normal."""
    if ok.all():
        return v
    fill = _BENIGN[name]
    return _V(D.DD(np.where(ok, v.x.hi, fill), np.where(ok, v.x.lo, 0.0)), np.where(ok, v.b, 0.0),
              np.where(ok, v.e, 0.0))


def _round(v: _V, ok: np.ndarray, fmt: Any, carried: bool = False, forced: np.ndarray | None = None,
           sigma_above: np.ndarray | None = None) -> FastOutput:
    """Round the exact value to ``fmt`` where the interval [x - b, x + b] rounds one way: where it
    stays strictly between the midpoints from value to its two neighbours."""
    value, up, down = _round_dd(v.x, np.dtype(fmt.name))
    res = D.sub(v.x, D.DD(value, np.zeros_like(value)))
    residual = res.hi + res.lo
    b = np.broadcast_to(v.b, value.shape)
    e = np.broadcast_to(v.e, value.shape)
    a = np.abs(value)
    sigma = e / math.ldexp(1.0, -fmt.precision)
    # x's distances to the two midpoints from the double-double residual (exact differences where
    # they are small; relative error 2^-52 at most elsewhere), against b with a margin
    grow = 1 + 2.0**-40
    inside = ((up / 2 - res.hi) - res.lo > b * grow) & ((down / 2 + res.hi) + res.lo > b * grow)
    # an exact value (no error at all) halfway between two values of fmt: a tie, rounded to even
    # by _round_dd; the residual is exact there (x - value is a sum of two nearby doubles)
    tie = (b == 0) & (res.lo == 0) & (np.abs(res.hi) == np.where(residual > 0, up, down) / 2)
    # tiny values and bounds: there the subnormal floors of the bound dominate σ, and the interval
    # reference's magnitudes (upper ends of intervals) are what count: mpmath decides; a zero value
    # is decided like any other (x certainly rounds to it)
    floors_ok = e > 2.0**-900
    in_range = (a >= D.SAFE_MIN) & floors_ok
    # σ so close to a power of two that ulp(σ) could differ from the reference's: mpmath decides
    sigma_ok = (np.abs(np.frexp(sigma)[0] - 0.5) > 1e-12) & (sigma > 0)
    if sigma_above is not None:  # σ at or just above a power of two in both evaluations
        sigma_ok |= sigma_above & (sigma > 0)
    # near the reference's _admissible boundary (a bound as large as the value means "any")
    least_normal = math.ldexp(1.0, fmt.emin)
    admissible_clear = ~(np.abs(e - a) <= 1e-9 * a) & ~((e >= a) & (e > least_normal))
    decided = ok & sigma_ok & admissible_clear & (
        (inside & (in_range | ((a == 0) & floors_ok))) | (tie & in_range))
    # a value carried unchanged by a skipped step: exact, σ 0; mpmath has no -0
    exact = ok & carried & (b == 0) & (e == 0) & (v.x.lo == 0) & (value == v.x.hi) & np.isfinite(value)
    # the bound certainly as large as the value, and above the format's least normal: "any"
    anything = ok & np.isfinite(value) & (e > a * (1 + 1e-9)) & (e > least_normal * (1 + 1e-9))
    if forced is not None:  # implementation-defined elements (_Graph.check_divisor), in range
        anything |= forced & ok
    return FastOutput(value + 0.0, np.where(exact, 0.0, residual), np.where(exact, 0.0, sigma),
                      decided | exact | anything, anything)


def _round_dd(x: D.DD, dt: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hi + lo correctly rounded to ``dt`` (float16, float32 or float64), and the gaps to its
    upper and lower neighbours in ``dt`` (NaN where the value is not finite)."""
    if dt == np.float64:
        r = x.hi + x.lo  # |lo| <= ulp(hi)/2: hi + lo rounds correctly except at ties
        return r, np.nextafter(r, np.inf) - r, r - np.nextafter(r, -np.inf)
    # round hi, then correct by lo: hi alone may sit on a tie of dt that lo tips
    rd = x.hi.astype(dt)
    r = rd.astype(np.float64)
    diff = (x.hi - r) + x.lo
    up = np.nextafter(rd, np.array(np.inf, dt)).astype(np.float64) - r
    down = r - np.nextafter(rd, np.array(-np.inf, dt)).astype(np.float64)
    go_up, go_down = diff > up / 2, -diff > down / 2
    moved = go_up | go_down
    if not moved.any():
        return r, up, down
    r = np.where(go_up, r + up, np.where(go_down, r - down, r))
    rd = r.astype(dt)
    up = np.nextafter(rd, np.array(np.inf, dt)).astype(np.float64) - r
    down = r - np.nextafter(rd, np.array(-np.inf, dt)).astype(np.float64)
    return r, up, down


# ----- expectations -------------------------------------------------------------------------------

@dataclass
class FastExpected:
    """A case's expectations as arrays, flattened over steps, parameters and elements (the vector
    loader's layout): per output, value/residual/sigma, and ``special`` the flat indices whose
    expectation is not a single finite value (its Expectation tuple, from mpmath or "any")."""

    value: dict[str, np.ndarray]
    residual: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    special: dict[str, dict[int, Any]]
    fast_elements: int  # element-steps whose outputs all came from the fast path
    mpmath_elements: int  # element-steps evaluated by mpmath


def _anything(case: CaseInputs) -> FastExpected:
    from ._golden import Special

    names = outputs_of(case)
    n = sum(len(p.w) for p in case.params) * len(case.steps)
    z = np.zeros(n)
    anything = (Special("any"),)
    return FastExpected({k: z for k in names}, {k: z for k in names}, {k: z for k in names},
                        {k: dict.fromkeys(range(n), anything) for k in names}, n, 0)


def fast_expected(case: CaseInputs, fallback: bool = True) -> FastExpected | None:
    """The case's expectations (:class:`FastExpected`): from the fast path where it decides, from
    mpmath (:func:`reference.golden` of the sub-case of the undecided elements) elsewhere, or all
    from mpmath when the case is out of the path's scope. With ``fallback`` False, None instead of
    calling mpmath."""
    if implementation_defined(case):
        return _anything(case)
    return _expected(case, _evaluate(case), fallback)


def _expected(case: CaseInputs, out: list[list[dict[str, FastOutput]]] | None, fallback: bool) -> FastExpected | None:
    from ._golden import Finite, Special, golden

    names = outputs_of(case)
    if out is None:
        if not fallback:
            return None
        return _from_golden(case, golden(case), names)
    sizes = [len(p.w) for p in case.params]
    undecided = [np.zeros(n, dtype=bool) for n in sizes]
    for row in out:
        for i, res in enumerate(row):
            for fo in res.values():
                undecided[i] |= ~fo.decided
    val = {n: np.concatenate([res[n].value for row in out for res in row]) for n in names}
    resid = {n: np.concatenate([res[n].residual for row in out for res in row]) for n in names}
    sig = {n: np.concatenate([res[n].sigma for row in out for res in row]) for n in names}
    special: dict[str, dict[int, Any]] = {n: {} for n in names}
    anything = (Special("any"),)
    for n in names:
        flags = np.concatenate([res[n].anything for row in out for res in row])
        special[n].update(dict.fromkeys(np.flatnonzero(flags).tolist(), anything))
    n_und = sum(int(u.sum()) for u in undecided)
    fx = FastExpected(val, resid, sig, special, (sum(sizes) - n_und) * len(case.steps), n_und * len(case.steps))
    if not n_und:
        return fx
    if not fallback:
        return None
    picks = [(i, np.flatnonzero(u)) for i, u in enumerate(undecided) if u.any()]
    exact = golden(_sub_case(case, picks))
    offsets = np.cumsum([0, *sizes])
    per_step = int(offsets[-1])
    for k in range(len(case.steps)):
        for q, (i, js) in enumerate(picks):
            base = k * per_step + int(offsets[i])
            for n in names:
                exps = exact.steps[k][q][n]
                for pos, j in enumerate(js.tolist()):
                    e = exps[pos]
                    flat = base + j
                    if len(e) == 1 and isinstance(e[0], Finite):
                        val[n][flat], resid[n][flat], sig[n][flat] = e[0].value, e[0].residual, e[0].sigma
                        special[n].pop(flat, None)
                    else:
                        special[n][flat] = e
    return fx


def _from_golden(case: CaseInputs, g: Any, names: tuple[str, ...]) -> FastExpected:
    from ._golden import Finite

    val: dict[str, list[float]] = {n: [] for n in names}
    resid: dict[str, list[float]] = {n: [] for n in names}
    sig: dict[str, list[float]] = {n: [] for n in names}
    special: dict[str, dict[int, Any]] = {n: {} for n in names}
    for row in g.steps:
        for res in row:
            for n in names:
                for e in res[n]:
                    if len(e) == 1 and isinstance(e[0], Finite):
                        val[n].append(e[0].value)
                        resid[n].append(e[0].residual)
                        sig[n].append(e[0].sigma)
                    else:
                        special[n][len(val[n])] = e
                        val[n].append(0.0)
                        resid[n].append(0.0)
                        sig[n].append(0.0)
    total = len(val[names[0]])
    return FastExpected({n: np.array(v) for n, v in val.items()}, {n: np.array(v) for n, v in resid.items()},
                        {n: np.array(v) for n, v in sig.items()}, special, 0, total)


def _sub_case(case: CaseInputs, picks: list[tuple[int, np.ndarray]]) -> CaseInputs:
    from dataclasses import replace

    from ._model import ParamInput, StepInput

    def take(xs: Any, js: np.ndarray) -> Any:
        return None if xs is None else tuple(xs[j] for j in js.tolist())

    params = tuple(
        ParamInput(w=take(case.params[i].w, js), m=take(case.params[i].m, js), s=take(case.params[i].s, js),
                   t=case.params[i].t, lr_mult=case.params[i].lr_mult, wd_mult=case.params[i].wd_mult,
                   index=case.params[i].index, s_max=take(case.params[i].s_max, js))
        for i, js in picks)
    steps = tuple(StepInput(tuple(take(st.grads[i], js) for i, js in picks), st.rescale_grad)
                  for st in case.steps)
    return replace(case, params=params, steps=steps)


def fast_golden(case: CaseInputs, fallback: bool = True) -> Any:
    """The case's expectations as :func:`reference.golden` gives them (a GoldenCase), built from
    :func:`fast_expected`; None when ``fallback`` is off and some element needs mpmath, or when the
    case is out of the path's scope."""
    from ._golden import Finite, GoldenCase

    if implementation_defined(case):
        fx: FastExpected | None = _anything(case)
    else:
        out = _evaluate(case)
        fx = None if out is None else _expected(case, out, fallback)
    if fx is None:
        return None
    names = outputs_of(case)
    sizes = [len(p.w) for p in case.params]
    offsets = np.cumsum([0, *sizes])
    per_step = int(offsets[-1])
    steps = []
    for k in range(len(case.steps)):
        row = []
        for i, n_el in enumerate(sizes):
            base = k * per_step + int(offsets[i])
            res = {}
            for n in names:
                sp = fx.special[n]
                v, r, s = fx.value[n], fx.residual[n], fx.sigma[n]
                res[n] = [sp[base + j] if base + j in sp else
                          (Finite(float(v[base + j]), float(r[base + j]), float(s[base + j])),)
                          for j in range(n_el)]
            row.append(res)
        steps.append(row)
    return GoldenCase(steps, 106)
