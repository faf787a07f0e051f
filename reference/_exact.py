"""The AdaBelief operation graph of spec/algorithm.md, evaluated exactly with error bounds.

Every node returns an :class:`X` whose interval encloses the exact value and whose ``e`` is the
node's first-order error bound (spec/error-model.md): the propagated part, from the node's true
partial derivatives and its inputs' bounds, plus the local part, the rounding errors of the
node's own operations, maximised over the admissible evaluation forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mpmath.libmp import mpf_cmp

from ._arith import _ZERO, FIN, FORMS, NAN, NINF, PINF, POW_WEIGHT, Evaluator, NeedPrecision, X
from ._formats import FLOAT16
from ._model import CaseInputs
from ._profiles import Profile, profile_named

__all__ = ["ALTERNATIVE_MODES", "CaseEvaluation", "evaluate_mode", "has_zero_decay", "outputs_of"]

# Which form of each node a whole mode (reference/_arith.py, FORMS) evaluates.
_M_FORM = {"canonical": "A", "fused": "B", "step": "A", "hat": "A", "plain": "C", "lerp-high": "D"}
_S_FORM = {"canonical": "A", "fused": "B", "step": "A", "hat": "A", "plain": "A", "lerp-high": "A"}
_U_FORM = {"canonical": "eta", "fused": "eta", "step": "lrm", "hat": "hat", "plain": "eta", "lerp-high": "eta"}
# epsilon after the bias correction: (denominator, numerator) forms of the update.
# decoupled weight decay (weight_decouple): mult: w*(1 - c) - delta (PyTorch);
# in-step: w - (delta + c*w) (TensorFlow's lr*(u + wd*w)); c = lr_i*wd_i, or wd_i with fixed_decay.
_D_FORM = {"canonical": "mult", "fused": "mult", "step": "in-step", "hat": "mult", "plain": "mult",
           "lerp-high": "in-step"}
_A_FORM = {"canonical": ("q", "a"), "fused": ("q", "a"), "step": ("q", "am"), "hat": ("roots", "a"),
           "plain": ("q", "a"), "lerp-high": ("q", "a")}


_STATE = ("w", "m", "s", "s_max")


def outputs_of(case: CaseInputs) -> tuple[str, ...]:
    """Names of the per-element outputs of every step, in order (s_max in amsgrad cases)."""
    names = ("w", "m", "s", "s_max") if case.hyperparameters.amsgrad else ("w", "m", "s")
    return (*names, "w16") if case.dtype_spec.multi_precision else names


@dataclass
class CaseEvaluation:
    """Per step, per parameter: output name -> list of X. Plus what the evaluation noticed."""

    steps: list[list[dict[str, list[X]]]]
    overflowed: bool
    saw_nonfinite: bool
    implementation_defined: bool
    any_mask: list[list[dict[str, list[bool]]]]


@dataclass
class _Scalars:
    lr: X
    eta: X
    wd: X
    bc1: X
    bc2: X
    rb: X


class _Graph:
    def __init__(self, ev: Evaluator, profile: Profile) -> None:
        self.ev = ev
        self.p = profile
        self.one = X(FIN, ev.iv.mpf(1), ev.zero)
        self.u16 = ev.pl.ldexp(1, -FLOAT16.precision)
        self.half_eta16 = ev.pl.ldexp(1, FLOAT16.emin - FLOAT16.precision)
        # A divisor bound at most this is underflow noise (square roots of a few half-ulps of
        # the least subnormal), not evidence that a nonzero divisor can arise.
        self.noise = ev.pl.sqrt(64 * ev.half_eta)

    # ----- per-parameter scalars (spec: effective_learning_rate, bias_corrected_step_size) -----
    def product(self, a: X, b: X) -> X:
        ev = self.ev
        r = ev.mul(a, b)
        if r.k == FIN:
            r.e = ev.mag(b) * a.e + ev.mag(a) * b.e + ev.E(r)
        return r

    def scalars(self, lr: X, lr_mult: X, wd: X, wd_mult: X, b1: X, b2: X, t: int, correct_bias: bool) -> _Scalars:
        ev, mag = self.ev, self.ev.mag
        lr_i = self.product(lr, lr_mult)
        wd_i = self.product(wd, wd_mult)
        if not correct_bias:
            return _Scalars(lr_i, lr_i, wd_i, self.one, self.one, self.one)
        bcs = []
        for b in (b1, b2):
            p = ev.pow_int(b, t)
            if p.k == FIN:
                p.e = t * mag(b) ** (t - 1) * b.e + ev.E(p, POW_WEIGHT)
            bc = ev.sub(self.one, p)
            if bc.k == FIN:
                bc.e = p.e + ev.E(bc)
            bcs.append(bc)
        bc1, bc2 = bcs
        rb = ev.sqrt(bc2)
        if rb.k == FIN:
            rb.e = self.sqrt_prop(rb, bc2) + ev.E(rb)
        num = ev.mul(lr_i, rb)
        eta = ev.div(num, bc1)
        if eta.k == FIN:
            m_bc1 = mag(bc1)
            prop = (mag(rb) * lr_i.e + mag(lr_i) * rb.e) / m_bc1 + mag(num) * bc1.e / m_bc1**2
            loc = max(ev.E(num) / m_bc1, mag(lr_i) * ev.E(ev.div(rb, bc1)))
            eta.e = prop + loc + ev.E(eta)
        return _Scalars(lr_i, eta, wd_i, bc1, bc2, rb)

    def sqrt_prop(self, q: X, a: X) -> Any:
        """|sqrt(a+d) - sqrt(a)| <= min(d / (2 sqrt(a)), sqrt(d)), with d = a.e."""
        ev = self.ev
        root = ev.pl.sqrt(a.e)
        mq = ev.mag(q)
        return root if mq == 0 else min(a.e / (2 * mq), root)

    # ----- per-element nodes -------------------------------------------------------------
    def gradient(self, g: X, w: X, rescale: X, sc: _Scalars, clip: X | None,
                 coupled: bool = True) -> X:
        """spec: effective_gradient (coupled: the decay term is added to the gradient)."""
        ev = self.ev
        gs = self.product(rescale, g)
        if not coupled or (ev.omit_zero_decay and sc.wd.k == FIN and ev.mag(sc.wd) == 0):
            # The decay term left out where its coefficient is exactly zero (no 0*w).
            return self.clip(gs, clip) if clip is not None else gs
        wdw = self.product(sc.wd, w)
        if self.p.weight_decay == "coupled-before-clip":
            gw = ev.add(gs, wdw)
            if gw.k == FIN:
                gw.e = gs.e + wdw.e + ev.E(gw)
            return self.clip(gw, clip) if clip is not None else gw
        gc = self.clip(gs, clip) if clip is not None else gs
        out = ev.add(gc, wdw)
        if out.k == FIN:
            out.e = gc.e + wdw.e + ev.E(out)
        return out

    def clip(self, x: X, c: X) -> X:
        ev, mag = self.ev, self.ev.mag
        out = ev.clip(x, c)
        if out.k != FIN:
            return out
        if x.k != FIN:  # an infinite input clamped to +-c: only c's own rounding
            out.e = c.e
            return out
        if c.k != FIN:  # clip_gradient = inf clamps nothing: the input's bound passes through
            out.e = x.e
            return out
        a, cm = mag(x), mag(c)
        if a > cm:
            out.e = c.e + (x.e if a - cm <= x.e else 0)
        else:
            out.e = x.e + (c.e if cm - a <= x.e + c.e else 0)
        return out

    def first_moment(self, b1: X, m: X, g: X) -> X:
        """spec: first_moment. Forms A: b1*m + (1-b1)*g; B: b1*(m-g) + g; C: m + (1-b1)*(g-m);
        D: g - (g-m)*(1-(1-b1)). C and D are torch.lerp's two branches; their 1-b1 may be
        rounded twice (in binary64, then to the compute format), hence its weight 2."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        results = []
        for f in ev.forms(_M_FORM):
            if f == "A":
                om = ev.sub(self.one, b1)
                bm, og = ev.mul(b1, m), ev.mul(om, g)
                r = ev.add(bm, og)
                loc = mag(g) * E(om) + E(bm) + E(og) + E(r)
            elif f == "B":
                d = ev.sub(m, g)
                bd = ev.mul(b1, d)
                r = ev.add(bd, g)
                loc = mag(b1) * E(d) + E(bd) + E(r)
            elif f == "C":
                om = ev.sub(self.one, b1)
                d = ev.sub(g, m)
                od = ev.mul(om, d)
                r = ev.add(m, od)
                loc = mag(d) * E(om, 2) + mag(om) * E(d) + E(od) + E(r)
            else:
                om = ev.sub(self.one, b1)
                c = ev.sub(self.one, om)
                d = ev.sub(g, m)
                cd = ev.mul(d, c)
                r = ev.sub(g, cd)
                loc = mag(d) * (E(om, 2) + E(c)) + mag(c) * E(d) + E(cd) + E(r)
            results.append((r, loc))
        out = results[0][0]
        if out.k == FIN:
            om = ev.sub(self.one, b1)
            prop = mag(b1) * m.e + mag(om) * g.e + mag(ev.sub(m, g)) * b1.e
            out.e = prop + max(loc for _, loc in results)
        return out

    def second_moment(self, b2: X, s: X, r2: X, eps: X) -> X:
        """spec: second_moment. Forms A: b2*s + (1-b2)*r2 + eps; B: b2*(s-r2) + r2 + eps."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        in_state = self.p.epsilon_in_state
        results = []
        for f in ev.forms(_S_FORM):
            if f == "A":
                ob = ev.sub(self.one, b2)
                bs, orr = ev.mul(b2, s), ev.mul(ob, r2)
                part = ev.add(bs, orr)
                r = ev.add(part, eps) if in_state else part
                loc = mag(r2) * E(ob) + E(bs) + E(orr) + E(r)
                if in_state and ev.mode is None:
                    # Any association of the three-term sum is admissible.
                    loc += max(E(part), E(ev.add(orr, eps)), E(ev.add(bs, eps)))
                elif in_state:
                    loc += E(part)
            else:
                d = ev.sub(s, r2)
                bd = ev.mul(b2, d)
                q = ev.add(bd, r2)
                r = ev.add(q, eps) if in_state else q
                loc = mag(b2) * E(d) + E(bd) + E(q) + (E(r) if in_state else 0)
            results.append((r, loc))
        out = results[0][0]
        if ev.mode is not None and out.k == FIN and all(x.k == FIN for x in (b2, s, r2, eps)):
            # s' = b2*s + (1-b2)*r2 (+ eps) is nonnegative when its parts are and 0 <= b2 <= 1; form
            # B's interval b2*(s - r2) + r2 may straddle 0 where s' = 0 exactly (r2's enclosure
            # [0, d] enters twice): it is cut at 0, so that its square root can be taken
            lo, hi = out.v._mpi_
            zero = ev.iv.mpf(0)
            nonneg = all(x.v >= zero for x in (s, r2, eps)) and b2.v >= zero and b2.v <= self.one.v
            if nonneg and mpf_cmp(lo, _ZERO) < 0 <= mpf_cmp(hi, _ZERO):
                out = X(FIN, ev.iv.mpf((0, ev.pl.make_mpf(hi))), out.e)
        if out.k == FIN:
            ob = ev.sub(self.one, b2)
            prop = mag(b2) * s.e + mag(ob) * r2.e + mag(ev.sub(s, r2)) * b2.e
            if in_state:
                prop += eps.e
            out.e = prop + max(loc for _, loc in results)
        return out

    def step_size(self, sc: _Scalars, m1: X, s1: X, eps: X, placement: str | None = None) -> X:
        """spec: update_direction: the amount subtracted from w (placement: the profile's
        epsilon_denominator unless given)."""
        if (placement or self.p.epsilon_denominator) != "before-bias-correction":
            return self._step_after_bc(sc, m1, s1, eps)
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        q = ev.sqrt(s1)
        d = ev.add(q, eps)
        results = []
        for f in ev.forms(_U_FORM):
            if f == "eta":
                ratio = ev.div(m1, d)
                delta = ev.mul(sc.eta, ratio)
                loc_f = mag(sc.eta) * E(ratio) + E(delta)
            elif f == "lrm":
                em = ev.mul(sc.eta, m1)
                delta = ev.div(em, d)
                loc_f = (E(em) / mag(d) if mag(d) else 0) + E(delta)
            else:  # hat: lr * (m/bc1) / (sqrt(s/bc2) + eps/sqrt(bc2))
                mh, sh = ev.div(m1, sc.bc1), ev.div(s1, sc.bc2)
                qh = ev.sqrt(sh)
                er = ev.div(eps, sc.rb)
                dd = ev.add(qh, er)
                rt = ev.div(mh, dd)
                delta = ev.mul(sc.lr, rt)
                mdd = mag(dd)
                if mdd:
                    k = mag(delta) / mdd
                    e_sh = E(sh)
                    mqh = mag(qh)
                    sh_term = min(e_sh / (2 * mqh), ev.pl.sqrt(e_sh)) if mqh else ev.pl.sqrt(e_sh)
                    loc_f = (mag(sc.lr) / mdd * E(mh) + k * (sh_term + E(qh) + E(er) + E(dd))
                             + mag(sc.lr) * E(rt) + E(delta))
                else:
                    loc_f = 0
            results.append((delta, loc_f))
        out = results[0][0]
        if d.k == FIN:
            d.e = (self.sqrt_prop(q, s1) + E(q) if q.k == FIN else 0) + eps.e + E(d)
        self.check_divisor(d, m1)
        em = ev.mul(sc.eta, m1)  # the numerator of the (eta*m)/d form
        if em.k == FIN:
            em.e = mag(sc.eta) * m1.e + mag(m1) * sc.eta.e + E(em)
            self.check_divisor(d, em)
        if out.k == FIN:
            md = mag(d)
            if md == 0:
                out.e = ev.zero
                return out
            e_q = self.sqrt_prop(q, s1) if q.k == FIN else 0
            e_d = e_q + eps.e
            k = mag(out) / md
            prop = mag(m1) / md * sc.eta.e + mag(sc.eta) / md * m1.e + k * e_d
            loc_d = k * (E(q) + E(d))
            out.e = prop + loc_d + max(loc for _, loc in results)
        return out

    def check_divisor(self, d: X, num: X) -> None:
        """Flag the element when the step's division leaves the first-order regime.

        The step is num / d. A first-order bound on it is sound while d's relative bound is
        small; at d.e >= |d| / 4 the neglected terms can exceed the bound itself (1/d is not
        linear). With d = 0 exactly, the exact step is +-inf or NaN, but a conforming evaluation
        holds a divisor anywhere in [-d.e, d.e]: when d.e is above the underflow noise and a
        finite quotient is possible there (or num's sign is uncertain), the outcome depends on
        the evaluation. Such elements are implementation-defined (spec/error-model.md#limits).
        """
        if d.k != FIN or num.k != FIN:
            return
        ev = self.ev
        md, mn = ev.mag(d), ev.mag(num)
        if md == 0:
            if mn > 0 and 2 * num.e >= mn:
                self.unsafe = True
            elif d.e > self.noise and (mn == 0 or mn - num.e < d.e * ev.threshold.a):
                self.unsafe = True
        elif 4 * d.e >= md:
            self.unsafe = True

    def _step_after_bc(self, sc: _Scalars, m1: X, s1: X, eps: X) -> X:
        """Epsilon after the bias correction: (lr/bc1) * m / (sqrt(s_hat) + eps), s_hat = s/bc2,
        or (s + eps)/bc2 with the transient epsilon. Denominator forms q: sqrt(s_hat) and
        roots: sqrt(s or s + eps)/sqrt(bc2); numerator forms a: a*(m/d) and am: (a*m)/d."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        transient = self.p.epsilon_denominator == "after-bias-correction-with-transient-epsilon"
        self.dd_loc = ev.zero
        se = ev.add(s1, eps) if transient else s1
        a = ev.div(sc.lr, sc.bc1)
        sh = ev.div(se, sc.bc2)
        qh = ev.sqrt(sh)
        dd = ev.add(qh, eps)
        den, num = _A_FORM[ev.mode[0]] if ev.mode else ("q", "a")
        qs = ev.sqrt(se)
        d_form = dd if den == "q" else ev.add(ev.div(qs, sc.rb), eps)
        out = ev.mul(a, ev.div(m1, d_form)) if num == "a" else ev.div(ev.mul(a, m1), d_form)
        mbc1, mbc2 = mag(sc.bc1), mag(sc.bc2)
        se_e = (s1.e + eps.e) if transient else s1.e  # propagated: s' and the added epsilon
        if dd.k == FIN and sh.k == FIN and qh.k == FIN:
            sh.e = se_e / mbc2 + mag(se) * sc.bc2.e / mbc2**2
            dd.e = self.sqrt_prop(qh, sh) + eps.e  # propagated part only
            if qs.k == FIN:
                # local rounding errors of the denominator, the larger of its two forms
                e_se = E(se) if transient else 0
                x = e_se / mbc2 + E(sh)
                mq = mag(qh)
                loc_q = (min(x / (2 * mq), ev.pl.sqrt(x)) if mq else ev.pl.sqrt(x)) + E(qh)
                mqs, mrb = mag(qs), mag(sc.rb)
                root_err = (min(e_se / (2 * mqs), ev.pl.sqrt(e_se)) if mqs else ev.pl.sqrt(e_se)) + E(qs)
                qr = ev.div(qs, sc.rb)
                loc_roots = root_err / mrb + mqs * E(sc.rb) / mrb**2 + E(qr)
                self.dd_loc = max(loc_q, loc_roots) + E(dd)
                divisor = X(FIN, dd.v, dd.e + self.dd_loc)
                self.check_divisor(divisor, m1)
                am = ev.mul(a, m1)
                if am.k == FIN and m1.k == FIN:
                    am.e = mag(a) * m1.e + mag(m1) * (sc.lr.e / mbc1 + mag(sc.lr) * sc.bc1.e / mbc1**2
                                                       + E(a)) + E(am)
                    self.check_divisor(divisor, am)
        if out.k != FIN:
            return out
        mdd = mag(dd)
        if dd.k != FIN or mdd == 0:
            out.e = ev.zero
            return out
        rt = ev.div(m1, dd)
        k = mag(out) / mdd
        a_prop = sc.lr.e / mbc1 + mag(sc.lr) * sc.bc1.e / mbc1**2
        prop = mag(rt) * a_prop + mag(a) / mdd * m1.e + k * dd.e
        loc_num = max(mag(a) * E(rt), E(ev.mul(a, m1)) / mdd) + mag(rt) * E(a) + E(out)
        out.e = prop + k * self.dd_loc + loc_num
        return out

    def element(self, sc: _Scalars, hp: dict[str, Any], w: X, g: X, m: X, s: X, clip: X | None,
                s_max: X | None = None) -> dict[str, X]:
        """spec: adabelief_step for one element (s_max: the AMSGrad state, amsgrad cases)."""
        ev = self.ev
        decouple = hp["switches"].weight_decouple
        gc = self.gradient(g, w, hp["rescale"], sc, clip, coupled=not decouple)
        m1 = self.first_moment(hp["beta1"], m, gc)
        if ev.mode is None and gc.k == FIN and m.k == FIN and m1.k == FIN:
            # Same exact value as gc - m1, but free of the interval dependency problem: with
            # beta1 = 0 or g == m it is exactly zero, where gc - m1 would give [-d, d].
            r = ev.mul(hp["beta1"], ev.sub(gc, m))
        else:
            r = ev.sub(gc, m1)
        if r.k == FIN:
            r.e = gc.e + m1.e + ev.E(r)
        r2 = ev.square(r)
        if r2.k == FIN:
            # |(r+d)^2 - r^2| <= 2|r|d + d^2: the square term matters where r is (nearly) zero.
            r2.e = 2 * ev.mag(r) * r.e + r.e**2 + ev.E(r2)
        s1 = self.second_moment(hp["beta2"], s, r2, hp["eps_state"])
        s_den = s1  # the second moment under the root
        smax1 = None
        if s_max is not None:  # spec: amsgrad_maximum
            smax1 = self.maximum(s_max, s1)
            s_den = smax1
        rect = hp.get("rectification")
        if rect is not None:
            s_rect = s1 if self.p.amsgrad == "max-of-s-unrectified" else s_den
            delta = self.rectified_step(rect[0], rect[1], sc, m1, s_rect, hp["epsilon"])
        else:
            delta = self.step_size(sc, m1, s_den, hp["epsilon"])
        if decouple:
            w1 = self.decoupled_weight(sc, w, delta, hp["switches"].fixed_decay)
        else:
            w1 = ev.sub(w, delta)
            if w1.k == FIN:
                w1.e = w.e + delta.e + ev.E(w1)
        for x in (gc, m1, r, r2, s1, delta, w1):
            self.check_range(x)
        out = {"w": w1, "m": m1, "s": s1}
        if smax1 is not None:
            self.check_range(smax1)
            out["s_max"] = smax1
        return out

    def maximum(self, a: X, b: X) -> X:
        """max(a, b), exact (no rounding); NaN if either is NaN; bound max(e_a, e_b)."""
        if NAN in (a.k, b.k):
            return X(NAN)
        if PINF in (a.k, b.k):
            return X(PINF)
        if a.k == NINF:
            return X(b.k, b.v, b.e)
        if b.k == NINF:
            return X(a.k, a.v, a.e)
        lo = a.v.a if a.v.a >= b.v.a else b.v.a
        hi = a.v.b if a.v.b >= b.v.b else b.v.b
        return X(FIN, self.ev.iv.mpf((lo, hi)), max(a.e, b.e))

    def decoupled_weight(self, sc: _Scalars, w: X, delta: X, fixed: bool) -> X:
        """spec: decoupled_decay: w' = w - c*w - delta with c = lr_i*wd_i (or wd_i, fixed).
        Forms mult: w*(1 - c) - delta; in-step: w - (delta + c*w), the latter with TensorFlow's
        sites lr_i*(E(wd_i*w) + E(u + wd_i*w)) where u = delta/lr_i."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        c = sc.wd if fixed else self.product(sc.lr, sc.wd)
        k = ev.sub(self.one, c)
        cw = ev.mul(c, w)
        t3 = ev.add(delta, cw)
        form = _D_FORM[ev.mode[0]] if ev.mode else "mult"
        if form == "mult":
            out = ev.sub(ev.mul(w, k), delta)
        else:
            out = ev.sub(w, t3)
        if out.k == FIN and w.k == FIN and c.k == FIN and delta.k == FIN:
            loc_mult = mag(w) * E(k) + E(ev.mul(w, k)) + E(out)
            if fixed:
                loc_in = E(cw) + E(t3) + E(out)
            else:
                mlr = mag(sc.lr)
                u_plus = E(ev.div(t3, sc.lr)) if mlr else ev.zero
                loc_in = mlr * (E(ev.mul(sc.wd, w)) + u_plus) + E(t3) + E(out)
            out.e = mag(k) * w.e + mag(w) * c.e + delta.e + max(loc_mult, loc_in)
            self.check_range(t3)
        return out

    # ----- rectification (spec: sma_length, rectification_factor, rectified_direction) -------
    def sma_length(self, b2: X, t: int) -> tuple[X, X, Any, Any, Any, Any]:
        """(N_inf, N_t, dN_inf/db2, dN_t/db2, local_inf, local_t): the SMA lengths with bounds.

        beta2's leaf error enters both through their exact derivatives (N_t = N_inf - q moves far
        less than either term when beta2 does); the local parts are the rounding sites of the
        evaluation in the compute format, each through its own derivative: 1 - b2 (2/om^2), the
        quotient and the difference for N_inf; the pow (2t/bc^2), 1 - p (|tp|/bc^2), 2t*p (1/bc),
        the quotient and the difference for N_t."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        iv = ev.iv
        two = X(FIN, iv.mpf(2), ev.zero)
        om = ev.sub(self.one, b2)
        inv = ev.div(two, om)
        n_inf = ev.sub(inv, self.one)
        p = ev.pow_int(b2, t)
        bc = ev.sub(self.one, p)
        tp = ev.mul(X(FIN, iv.mpf(2 * t), ev.zero), p)
        q = ev.div(tp, bc)
        n = ev.sub(n_inf, q)
        mom, mbc = mag(om), mag(bc)
        d_inf = 2 / om.v**2
        d_n = d_inf - 2 * t * t * b2.v ** (t - 1) / bc.v**2 if t > 1 else d_inf - 2 / bc.v**2
        loc_inf = 2 * E(om) / mom**2 + E(inv) + E(n_inf)
        loc_n = (loc_inf + 2 * t * E(p, POW_WEIGHT) / mbc**2 + mag(tp) * E(bc) / mbc**2
                 + E(tp) / mbc + E(q) + E(n))
        dm_inf, dm_n = mag(X(FIN, d_inf)), mag(X(FIN, d_n))
        n_inf.e = dm_inf * b2.e + loc_inf
        n.e = dm_n * b2.e + loc_n
        return n_inf, n, d_inf, d_n, loc_inf, loc_n

    def rectification_factor(self, b2: X, sma: tuple[X, X, Any, Any, Any, Any]) -> X:
        """rho = sqrt((N-4)(N-2)N_inf / ((N_inf-4)(N_inf-2)N)) for N >= 5, with its bound: ln rho^2
        moves by a_N dN + a_inf dN_inf, so beta2's leaf error enters through the exact
        a_N dN/db2 + a_inf dN_inf/db2, the local parts of N and N_inf through |a_N| and |a_inf|;
        plus the sites of the four differences and the five products and quotients (in any
        order), halved by the root."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        n_inf, n, d_inf, d_n, loc_inf, loc_n = sma
        four, two = X(FIN, ev.iv.mpf(4), ev.zero), X(FIN, ev.iv.mpf(2), ev.zero)
        n4, n2, i4, i2 = ev.sub(n, four), ev.sub(n, two), ev.sub(n_inf, four), ev.sub(n_inf, two)
        r2 = ev.div(ev.mul(ev.mul(n4, n2), n_inf), ev.mul(ev.mul(i4, i2), n))
        rho = ev.sqrt(r2)
        a_n = 1 / n4.v + 1 / n2.v - 1 / n.v
        a_inf = 1 / n_inf.v - 1 / i4.v - 1 / i2.v
        lead = mag(X(FIN, a_n * d_n + a_inf * d_inf)) * b2.e
        rel_prop = lead + mag(X(FIN, a_n)) * loc_n + mag(X(FIN, a_inf)) * loc_inf
        inv = [1 / mag(x) for x in (n4, n2, i4, i2)]
        rel_loc = sum(E(x) * k for x, k in zip((n4, n2, i4, i2), inv)) + 5 * self.ev.u
        rho.e = mag(rho) * (rel_prop + rel_loc) / 2 + E(rho)
        return rho

    def rectification(self, b2: X, t: int, degenerate: bool) -> tuple[str, X | None, bool]:
        """(branch, rho, uncertain): branch 'rectified' (N_t >= 5), 'sgd' or 'none' below the
        threshold; uncertain when |N_t - 5| is within N_t's bound (the branch may differ)."""
        ev = self.ev
        sma = self.sma_length(b2, t)
        n = sma[1]
        five = ev.iv.mpf(5)
        dist = ev.mag(X(FIN, n.v - five))
        uncertain = dist <= n.e
        lo, hi = n.v.a, n.v.b
        if lo >= five or (uncertain and hi >= five):
            return "rectified", self.rectification_factor(b2, sma), uncertain
        if hi < five or uncertain:
            return ("sgd" if degenerate else "none"), None, uncertain
        raise NeedPrecision("SMA length at the threshold")

    def rectified_step(self, branch: str, rho: X | None, sc: _Scalars, m1: X, s1: X, eps: X) -> X:
        """spec: rectified_direction: rho * the update in the rectified branch's epsilon placement,
        (lr_i/bc1)*m' below the threshold (sgd), or nothing."""
        ev, mag, E = self.ev, self.ev.mag, self.ev.E
        if branch == "none":
            return X(FIN, ev.iv.mpf(0), ev.zero)
        if branch == "sgd":
            a = ev.div(sc.lr, sc.bc1)
            # (lr_i*m')/bc1 rather than a*m': the same exact value, but an exact quotient stays
            # a point interval, so that an exact tie (m' = (1 - b1)*g, bc1 = 1 - b1) is seen.
            out = ev.div(ev.mul(sc.lr, m1), sc.bc1)
            if out.k == FIN and m1.k == FIN:
                mbc1 = mag(sc.bc1)
                a_prop = sc.lr.e / mbc1 + mag(sc.lr) * sc.bc1.e / mbc1**2
                loc = max(mag(m1) * E(a), mag(sc.lr) * E(ev.div(m1, sc.bc1))) + E(out)
                out.e = mag(m1) * a_prop + mag(a) * m1.e + loc
            return out
        assert rho is not None
        placement = ("before-bias-correction" if self.p.rectification.endswith("before-bias-correction")
                     else "after-bias-correction")
        base = self.step_size(sc, m1, s1, eps, placement)
        out = ev.mul(rho, base)
        if out.k == FIN and base.k == FIN:
            out.e = mag(base) * rho.e + mag(rho) * base.e + E(out)
        return out

    dd_loc: Any = 0  # the last after-bias-correction denominator's local error bound
    unsafe = False  # w of this element is implementation-defined from this step on
    unsafe_all = False  # every output of this element is, from this step on

    def check_range(self, x: X) -> None:
        """Flag the element when an intermediate may overflow within its error bound although
        its exact value does not: a conforming evaluation may then produce an infinity (or a
        NaN from it) that no admissible form of the exact values shows."""
        if x.k == FIN and x.e:
            m = self.ev.mag(x)
            if m < self.ev.threshold.a <= m + x.e:
                self.unsafe_all = True

    def w16(self, w1: X) -> X:
        """The float16 copy of the float32 master weight: one more rounding, in float16."""
        out = X(w1.k, w1.v, w1.e)
        if w1.k == FIN:
            out.e = w1.e + max(self.ev.mag(w1) * self.u16, self.half_eta16)
        return out


def _clip_enabled(c: float | None, profile: Profile) -> tuple[bool, bool]:
    """(clip is applied, the case is implementation-defined)."""
    if c is None:
        return False, False
    if c > 0:  # NaN compares false: MXNet's kernels test clip >= 0 after a truthiness check
        return True, False
    return False, profile.clip_nonpositive == "implementation-defined"


def _rounding_changes_class(case: CaseInputs) -> bool:
    """True when rounding a hyperparameter to the compute format changes what it is: a finite
    value becomes infinite, a nonzero one zero, or a beta becomes 1. An implementation may round
    hyperparameters (spec/dtypes.md), and then computes with a different kind of number (inf * 0
    is NaN, 1 - beta1 = 0 divides by zero) than the exact analysis assumes: the case is
    implementation-defined (spec/error-model.md#limits)."""
    fmt = case.dtype_spec.compute
    hp = case.hyperparameters
    values = [hp.learning_rate, hp.epsilon, hp.eps_root, hp.wd, hp.clip_gradient]
    values += [case.rescale_at(k) for k in range(len(case.steps))]
    values += [x for p in case.params for x in (p.lr_mult, p.wd_mult)]
    for x in values:
        if x is None or x != x or x in (float("inf"), float("-inf")) or x == 0:
            continue
        r = fmt.round_fraction(Fraction(x))
        if r == 0 or r in (float("inf"), float("-inf")):
            return True
    for b in (hp.beta1, hp.beta2):
        if b == b and b not in (float("inf"), float("-inf")) and b != 1:
            r = fmt.round_fraction(Fraction(b)) if b else 0.0
            if r == 1 or (b != 0 and r == 0) or r in (float("inf"), float("-inf")):
                return True
    return False


def evaluate_mode(case: CaseInputs, prec: int, mode: tuple[str, bool, bool] | None) -> CaseEvaluation:
    """Evaluate all steps of a case at interval precision ``prec`` in one mode (see Evaluator)."""
    profile = profile_named(case.profile)
    spec = case.dtype_spec
    ev = Evaluator(prec, spec.compute, mode)
    graph = _Graph(ev, profile)
    hp = case.hyperparameters
    leaves = {
        "lr": ev.const(hp.learning_rate),
        "beta1": ev.const(hp.beta1),
        "beta2": ev.const(hp.beta2),
        "epsilon": ev.const(hp.epsilon),
        "wd": ev.const(hp.wd),
    }
    # The epsilon added to s and stored: the denominator's, or a separate eps_root (optax).
    leaves["eps_state"] = leaves["epsilon"] if profile.stored_epsilon == "epsilon" else ev.const(hp.eps_root)
    clip_on, impl_defined = _clip_enabled(hp.clip_gradient, profile)
    impl_defined = impl_defined or _rounding_changes_class(case)
    clip = ev.const(hp.clip_gradient) if clip_on and hp.clip_gradient is not None else None
    saw_nonfinite = any(x.k != FIN for x in leaves.values())
    state = []
    for p in case.params:
        xs = {n: [ev.const(v) for v in getattr(p, n)] for n in _STATE if getattr(p, n) is not None}
        for lst in xs.values():
            for x in lst:
                x.e = ev.zero  # inputs are values of their format: no rounding
                saw_nonfinite |= x.k != FIN
        state.append(xs)
    t = [p.t for p in case.params]
    mults = [(ev.const(p.lr_mult), ev.const(p.wd_mult)) for p in case.params]
    steps: list[list[dict[str, list[X]]]] = []
    any_mask: list[list[dict[str, list[bool]]]] = []  # elements the analysis cannot vouch for
    tainted: set[tuple[int, int]] = set()
    for k, step in enumerate(case.steps):
        rescale_value = case.rescale_at(k)
        rescale = ev.const(rescale_value)
        skip = profile.rescale_skip == "skip-when-zero-or-nonfinite" and (
            rescale_value == 0 or rescale.k != FIN)
        out_step = []
        unsafe_now: set[tuple[int, int]] = set()
        any_mask.append([{} for _ in case.params])
        for i in range(len(case.params)):
            t[i] += 1
            if skip:
                new = {n: [X(x.k, x.v, x.e) for x in xs_i] for n, xs_i in state[i].items()}
            else:
                sc = graph.scalars(leaves["lr"], mults[i][0], leaves["wd"], mults[i][1],
                                   leaves["beta1"], leaves["beta2"], t[i], hp.correct_bias)
                hpx = dict(leaves, rescale=rescale, switches=hp)
                uncertain = False
                if hp.rectify:
                    branch, rho, uncertain = graph.rectification(leaves["beta2"], t[i], hp.degenerated_to_sgd)
                    hpx["rectification"] = (branch, rho)
                new = {n: [] for n in state[i]}
                for j, gval in enumerate(step.grads[i]):
                    graph.unsafe = uncertain  # the rectification's branch is not certain
                    graph.unsafe_all = False
                    g = ev.const(gval)
                    g.e = ev.zero
                    saw_nonfinite |= g.k != FIN
                    res = graph.element(sc, hpx, state[i]["w"][j], g, state[i]["m"][j],
                                        state[i]["s"][j], clip,
                                        state[i]["s_max"][j] if "s_max" in state[i] else None)
                    for n in new:
                        new[n].append(res[n])
                    if graph.unsafe:
                        unsafe_now.add((i, j))
                    if graph.unsafe_all:
                        tainted.add((i, j))
            state[i] = new
            outs = dict(new)
            if spec.multi_precision:
                outs["w16"] = [graph.w16(x) for x in new["w"]]
            for n in outs:  # w depends on the step; later steps depend on everything
                any_mask[-1][i][n] = [(i, j) in tainted or ((i, j) in unsafe_now and n in ("w", "w16"))
                                      for j in range(len(outs[n]))]
            saw_nonfinite |= any(x.k != FIN for lst in outs.values() for x in lst)
            out_step.append(outs)
        steps.append(out_step)
        tainted |= unsafe_now
    return CaseEvaluation(steps, ev.overflowed, saw_nonfinite or rescale_nonfinite(case), impl_defined, any_mask)


def rescale_nonfinite(case: CaseInputs) -> bool:
    vals = [case.rescale_at(k) for k in range(len(case.steps))]
    return any(v != v or v in (float("inf"), float("-inf")) for v in vals)


ALTERNATIVE_MODES: tuple[tuple[str, bool, bool], ...] = tuple(
    (f, o, z) for f in FORMS for o in (False, True) for z in (False, True))


def has_zero_decay(case: CaseInputs) -> bool:
    """Whether some parameter's weight decay is exactly zero (the term may be left out)."""
    return any(case.hyperparameters.wd * p.wd_mult == 0 for p in case.params)
