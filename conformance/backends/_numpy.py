"""The bundled ``numpy`` backend: a fused, in-place, multi-tensor AdaBelief step in NumPy.

:class:`FusedAdaBelief` owns one flat buffer per array kind (w, m, s, the gradient and, for
``float16-mp``, the float16 weights); every parameter is a view into them. A step walks the flat
buffers in cache-sized chunks and applies a short fixed sequence of in-place ufuncs to each
chunk, with ``out=`` everywhere and scratch buffers of one chunk allocated at construction, so
a step allocates nothing that grows with the model and streams each array through memory once.

Arithmetic (all in the compute dtype, each operation rounded once, IEEE, nothing flushed):
MXNet's fused-kernel form, one of the admissible evaluation orders (spec/error-model.md#forms,
``fused``)::

    g' = rescale*g + wd_i*w, clipped (mxnet), or clip(rescale*g) + wd_i*w (mxnet-doc)
    P  = b1*(m - g')          m_new = P + g'             # m = b1*(m - g') + g'
    r2 = P*P                                             # r = g' - m_new = -P exactly
    s_new = b2*(s - r2) + r2 + eps
    w_new = w - eta_i * (m_new / (sqrt(s_new) + eps))

``r2 = P*P`` saves the pass that would form ``r = g' - m_new``: the exact values agree
(m_new - g' = P before m_new is rounded), and P carries only the rounding errors that m_new
carries too, so the result stays inside the reference's error bound; with infinite or NaN
inputs it gives the NaNs the fused form gives. In the common case (rescale_grad 1, no
clipping, weight decay 0) a chunk costs 13 arithmetic passes and a finiteness test of w.

Every profile's choices, read from the plan (never the profile's name): eps_root stored in s
instead of eps (``stored_epsilon``); epsilon after the bias correction as the PyTorch libraries
place it, ``sqrt(s [+ eps]) / sqrt(bc2) + eps`` with the step lr_i/bc1 (``epsilon_denominator``;
one more pass); decoupled decay as a per-tensor factor ``w * (1 - lr_i*wd_i)`` before the step
(``weight_decouple``); rectification as a per-tensor step mode (rectified: eta times rho, SGD
step eta*m, or none) and AMSGrad as a running-maximum buffer (``s_max``) under the root.

Per-tensor scalars: :class:`~adabelief_conformance.backends._native.FlatPlan` (shared with the numba
and CuPy backends) counts the updates, evaluates eta in float64 and rounds it once, and applies
the skip rule. Chunks never span two runs of tensors whose (eta, wd) differ, so every ufunc
takes one scalar; the runs are re-derived from each step's eta (bias correction changes it
every step, and tensors with different t may converge to one value) and the chunk layout is
rebuilt only when they change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from adabelief_reference import DEFAULT_HYPERPARAMETERS, Hyperparameters

from .._errors import UsageError
from .._protocol import NUMPY_DTYPES, ParamResult, RunRequest
from ._native import (
    FLAG_CLIP,
    FLAG_WD_AFTER_CLIP,
    PLAN_PROFILES,
    FlatPlan,
    FlatStepper,
    run_flat_request,
)

__all__ = [
    "DEFAULT_CHUNK",
    "FusedAdaBelief",
    "NumpyBackend",
    "ParamView",
    "subnormals_flushed",
]

DEFAULT_CHUNK = 65536  # elements per chunk; see the benchmark's chunk-size sweep

# float16 bit pattern -> float32 value, exact (NumPy's widening is exact, subnormals included).
# A gather through this table (256 KiB, cache-resident) is about twice as fast as NumPy's
# float16 -> float32 cast loop.
_WIDEN16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def subnormals_flushed() -> bool:
    """True when the FPU flushes subnormals to zero in this process (FTZ/DAZ, set by some other
    library): NumPy's arithmetic would then not be IEEE and this backend could not conform."""
    tiny = np.array([np.finfo(np.float32).smallest_subnormal], dtype=np.float32)
    with np.errstate(all="ignore"):
        twice = np.add(tiny, tiny)
    return bool(twice[0] == 0 or tiny[0] * np.float32(1) == 0)


def _flat(x: Any, dtype: np.dtype, n: int, name: str) -> np.ndarray:
    """``x`` as a contiguous 1-D array of ``dtype``; no copy when it already is one."""
    a = np.ascontiguousarray(x, dtype=dtype)
    if a.ndim != 1 or a.shape[0] != n:
        raise UsageError(f"{name}: expected {n} elements of {dtype.name} in one flat array, "
                         f"got shape {a.shape}")
    return a


@dataclass(frozen=True)
class ParamView:
    """One parameter: views (shaped like the parameter) into the optimizer's flat buffers."""

    w: np.ndarray  # master weight
    m: np.ndarray
    s: np.ndarray
    grad: np.ndarray  # the gradient slot that ``step()`` reads when called without a gradient
    w16: np.ndarray | None  # float16 weight (float16-mp only)


class FusedAdaBelief:
    """AdaBelief over many parameters held in flat buffers, updated in place.

    ``shapes`` gives each parameter's shape (an int for 1-D). ``w``, ``m``, ``s`` are optional
    initial flat buffers (adopted without a copy when contiguous and of the right dtype; default
    w = 0, m = 0, s = 0). ``lr_mults``, ``wd_mults`` and ``t`` are per parameter.
    ``chunk_size`` is the number of elements each ufunc pass handles at a time.
    """

    def __init__(
        self,
        shapes: Sequence[int | Sequence[int]],
        dtype: str = "float32",
        profile: str = "mxnet",
        hyperparameters: Hyperparameters = DEFAULT_HYPERPARAMETERS,
        lr_mults: Sequence[float] | None = None,
        wd_mults: Sequence[float] | None = None,
        t: Sequence[int] | None = None,
        *,
        w: Any = None,
        m: Any = None,
        s: Any = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.shapes = [(int(x),) if isinstance(x, int | np.integer) else tuple(int(d) for d in x)
                       for x in shapes]
        sizes = [math.prod(sh) for sh in self.shapes]
        plan = FlatPlan(sizes, dtype, profile, hyperparameters, lr_mults, wd_mults, t)
        self._setup(plan, w, m, s, chunk_size)

    @classmethod
    def from_plan(cls, plan: FlatPlan, w: Any = None, m: Any = None, s: Any = None,
                  chunk_size: int = DEFAULT_CHUNK) -> FusedAdaBelief:
        """An optimizer over an existing plan (1-D parameters of ``plan.sizes``)."""
        self = cls.__new__(cls)
        self.shapes = [(int(n),) for n in plan.sizes]
        self._setup(plan, w, m, s, chunk_size)
        return self

    @classmethod
    def from_arrays(cls, weights: Sequence[np.ndarray], dtype: str = "float32",
                    **kwargs: Any) -> FusedAdaBelief:
        """An optimizer whose flat w holds copies of ``weights`` (state m = s = 0)."""
        master = NUMPY_DTYPES[dtype][1] if dtype in NUMPY_DTYPES else np.dtype(np.float32)
        flat = (np.concatenate([np.asarray(x, dtype=master).ravel() for x in weights])
                if weights else np.zeros(0, master))
        return cls([np.shape(x) for x in weights], dtype, w=flat, **kwargs)

    def _setup(self, plan: FlatPlan, w: Any, m: Any, s: Any, chunk_size: int) -> None:
        if plan.profile not in PLAN_PROFILES:
            raise UsageError(f"profile {plan.profile!r}: expected one of {list(PLAN_PROFILES)}")
        if int(chunk_size) < 1:
            raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
        if subnormals_flushed():
            raise RuntimeError("the FPU flushes subnormals to zero in this process (FTZ/DAZ set "
                               "by another library): NumPy arithmetic is not IEEE here")
        self.plan = plan
        self.chunk_size = int(chunk_size)
        n = plan.n_elements
        cd = plan.compute_dtype
        self.w = np.zeros(n, plan.master_dtype) if w is None else _flat(w, plan.master_dtype, n, "w")
        self.m = np.zeros(n, cd) if m is None else _flat(m, cd, n, "m")
        self.s = np.zeros(n, cd) if s is None else _flat(s, cd, n, "s")
        # amsgrad: the running maximum of s (set it through this attribute; default 0)
        self.s_max: np.ndarray | None = np.zeros(n, cd) if plan.amsgrad else None
        self.grad = np.zeros(n, plan.storage_dtype)
        self.w16: np.ndarray | None = None
        if plan.multi_precision:
            with np.errstate(over="ignore"):  # beyond float16's range the right result is inf
                self.w16 = self.w.astype(np.float16)  # round to nearest even
        # Scratch, one chunk each: the transformed gradient g' and one temporary.
        k = max(1, min(self.chunk_size, n))
        self._gbuf = np.empty(k, cd)
        self._xbuf = np.empty(k, cd)
        # float16-mp: the gradient's bit patterns as table indices (np.take would otherwise
        # allocate an intp copy of uint16 indices on every call).
        self._ibuf = np.empty(k if plan.multi_precision else 0, np.intp)
        self._fbuf = np.empty(k, np.bool_)  # isfinite(w), for the weight-decay-0 test
        # Runs of consecutive non-empty tensors: per step, neighbours with equal (eta, wd) share
        # chunks. The wd bits never change; eta's are compared each step.
        nonempty = np.flatnonzero(plan.sizes > 0)
        self._nonempty = nonempty
        self._starts = plan.offsets[:-1][nonempty]
        self._stops = plan.offsets[1:][nonempty]
        wd = plan.wd[nonempty]
        self._wd = wd
        self._wd_breaks = wd.view(_bits(cd))[1:] != wd.view(_bits(cd))[:-1]
        # weight_decouple: per tensor, the factor w is multiplied by before the step; runs of
        # tensors break where it changes (it depends on lr_mult and wd_mult, not on t).
        keep = None if plan.decay_keep is None else plan.decay_keep[nonempty]
        self._keep = keep
        if keep is not None:
            self._wd_breaks = self._wd_breaks | (keep.view(_bits(cd))[1:] != keep.view(_bits(cd))[:-1])
        self._layout_key: bytes | None = None
        self._layout: list[_Chunk] = []
        self._firsts = np.zeros(0, np.intp)
        # Mixed chunks (run = -1): chunks that ignore the runs and span many tensors, each with
        # per-element eta, wd, decay factor and root scale (spread from the tensors' values with
        # np.repeat). Used when the runs would cut the buffers into many more chunks than these:
        # tensors whose lr_mult or wd_mult alternate (no decay on biases) would otherwise cost a
        # dozen ufunc calls per tensor. Per element the arithmetic is the same.
        self._mixed: list[_Chunk] | None = None
        self._mixed_tensors: list[tuple[int, int, np.ndarray]] = []  # per chunk: tensors, lengths
        self._mixed_static: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []

    # ----- views ---------------------------------------------------------------------------

    def params(self) -> list[ParamView]:
        """Each parameter as views (of its shape) into the flat buffers."""
        out = []
        for sh, a, b in zip(self.shapes, self.plan.offsets[:-1], self.plan.offsets[1:]):
            out.append(ParamView(self.w[a:b].reshape(sh), self.m[a:b].reshape(sh),
                                 self.s[a:b].reshape(sh), self.grad[a:b].reshape(sh),
                                 None if self.w16 is None else self.w16[a:b].reshape(sh)))
        return out

    @property
    def t(self) -> np.ndarray:
        """Per parameter: the number of updates applied so far."""
        return self.plan.t

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        return (self.w.copy(), self.m.copy(), self.s.copy(),
                None if self.w16 is None else self.w16.copy())

    # ----- the step ------------------------------------------------------------------------

    def _chunks(self, eta: np.ndarray, root_scale: np.ndarray | None = None,
                mode: np.ndarray | None = None
                ) -> tuple[list[_Chunk], np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """This step's chunks, and per run of tensors that share (eta, wd, root_scale): those.

        The layout (where runs break, hence the chunks and their views) is cached: it changes
        only when two neighbours' step sizes start or stop being equal.
        """
        if len(self._nonempty) == 0:
            return ([], eta[:0], eta[:0], None if root_scale is None else root_scale[:0],
                    None if mode is None else mode[:0])
        e = eta[self._nonempty]
        rs = None if root_scale is None else root_scale[self._nonempty]
        md = None if mode is None else mode[self._nonempty]
        if len(e) == 1:  # one tensor: one run (the common benchmark case; skips some work)
            breaks = self._wd_breaks
            key = b""
        else:
            bits = e.view(_bits(e.dtype))
            breaks = (bits[1:] != bits[:-1]) | self._wd_breaks
            if rs is not None:
                rbits = rs.view(_bits(rs.dtype))
                breaks |= rbits[1:] != rbits[:-1]
            if md is not None:
                breaks |= md[1:] != md[:-1]
            key = breaks.tobytes()
        if key != self._layout_key:
            self._layout_key = key
            self._firsts = np.concatenate(([0], np.flatnonzero(breaks) + 1))
            runs = len(self._firsts)
            mixed_chunks = -(-int(self._stops[-1] - self._starts[0]) // self.chunk_size)
            self._layout = (self._mixed_layout() if md is None and runs > 2 * mixed_chunks + 8
                            else self._build_layout(self._firsts))
        if self._layout and self._layout[0].run < 0:  # mixed chunks: the values per tensor
            return self._layout, e, self._wd, rs, None
        return (self._layout, e[self._firsts], self._wd[self._firsts],
                None if rs is None else rs[self._firsts], None if md is None else md[self._firsts])

    def _mixed_layout(self) -> list[_Chunk]:
        """Chunks of chunk_size elements over all non-empty tensors (module doc of _setup)."""
        if self._mixed is not None:
            return self._mixed
        c = self.chunk_size
        starts, stops = self._starts, self._stops
        layout: list[_Chunk] = []
        for a in range(int(starts[0]), int(stops[-1]), c):
            b = min(a + c, int(stops[-1]))
            k = b - a
            # the non-empty tensors overlapping [a, b) and how many of their elements fall in it
            lo = int(np.searchsorted(stops, a, side="right"))
            hi = int(np.searchsorted(starts, b, side="left"))
            lens = np.minimum(stops[lo:hi], b) - np.maximum(starts[lo:hi], a)
            self._mixed_tensors.append((lo, hi, lens))
            wd_el = np.repeat(self._wd[lo:hi], lens)
            keep_el = None if self._keep is None else np.repeat(self._keep[lo:hi], lens)
            zero_el = (wd_el == 0) if (wd_el == 0).any() else None
            self._mixed_static.append((wd_el, keep_el, zero_el))
            layout.append(_Chunk(a, b, -1 - len(layout), self.w[a:b], self.m[a:b], self.s[a:b],
                                 None if self.w16 is None else self.w16[a:b],
                                 self._gbuf[:k], self._xbuf[:k], self._ibuf[:k], self._fbuf[:k],
                                 None if self.s_max is None else self.s_max[a:b]))
        self._mixed = layout
        return layout

    def _build_layout(self, firsts: np.ndarray) -> list[_Chunk]:
        lasts = np.concatenate((firsts[1:], [len(self._nonempty)])) - 1
        c = self.chunk_size
        layout = []
        for run, (i, j) in enumerate(zip(firsts.tolist(), lasts.tolist())):
            first, end = int(self._starts[i]), int(self._stops[j])
            for a in range(first, end, c):
                b = min(a + c, end)
                k = b - a
                layout.append(_Chunk(a, b, run, self.w[a:b], self.m[a:b], self.s[a:b],
                                     None if self.w16 is None else self.w16[a:b],
                                     self._gbuf[:k], self._xbuf[:k], self._ibuf[:k],
                                     self._fbuf[:k], None if self.s_max is None else self.s_max[a:b]))
        return layout

    def step(self, g: Any = None, rescale_grad: float | None = None) -> bool:
        """One step with the flat gradient ``g`` (default: the ``grad`` buffer, which the
        parameters' ``grad`` views fill). Returns False when the skip rule skipped it (the update
        counts still advance). Allocation-free when ``g`` is a contiguous array of the storage
        dtype (float16 for float16-mp)."""
        plan = self.plan
        gf = self.grad if g is None else _flat(g, plan.storage_dtype, plan.n_elements, "g")
        sc = plan.advance(rescale_grad)
        if sc is None:
            return False
        chunks, etas, wds, roots, modes = self._chunks(sc.eta, sc.root_scale, sc.mode)
        runs = 0 if chunks and chunks[0].run < 0 else len(etas)  # mixed chunks: no per-run values
        mode_of = [0] * runs if modes is None else modes.tolist()
        # 0-d arrays rather than NumPy scalars: a ufunc takes them a little faster.
        cd = plan.compute_dtype
        rescale, b1, _, b2, _, eps, clip = (np.array(v, cd) for v in sc.hyper)
        eps_s = eps if sc.eps_state is None else np.array(sc.eps_state, cd)
        lo = np.negative(clip)
        eta_0d = [etas[i, ...] for i in range(runs)]
        root_0d = None if roots is None else [roots[i, ...] for i in range(runs)]
        keep_0d = None if self._keep is None else [self._keep[i, ...] for i in self._firsts.tolist()[:runs]]
        wd_0d = [wds[i, ...] for i in range(runs)]
        wd_zero = (wds[:runs] == 0).tolist()
        coupled = self._keep is None  # decoupled decay: no term in the gradient at all
        scale = rescale != 1  # rescale 1 changes nothing, not even a NaN or a -0
        clip_first = bool(sc.flags & FLAG_CLIP and sc.flags & FLAG_WD_AFTER_CLIP)
        clip_last = bool(sc.flags & FLAG_CLIP and not sc.flags & FLAG_WD_AFTER_CLIP)
        sub, mul, add, div, sqrt = np.subtract, np.multiply, np.add, np.divide, np.sqrt
        with np.errstate(all="ignore"):  # inf and NaN are results here, not errors
            for a, b, run, w, m, s, w16, gb, x, ib, fin, smax in chunks:
                zero_el = None
                if run < 0:  # a mixed chunk: per-element values (see _mixed_layout)
                    first, last, lens = self._mixed_tensors[-1 - run]
                    wd_c, keep_c, zero_el = self._mixed_static[-1 - run]
                    eta_c: Any = np.repeat(etas[first:last], lens)
                    root_c: Any = None if roots is None else np.repeat(roots[first:last], lens)
                    wd_skip, mode = False, 0
                else:
                    eta_c, wd_c = eta_0d[run], wd_0d[run]
                    keep_c = None if keep_0d is None else keep_0d[run]
                    root_c = None if root_0d is None else root_0d[run]
                    wd_skip, mode = wd_zero[run], mode_of[run]
                # g': in gb, or the caller's gradient itself (read only) when unchanged.
                if w16 is not None:  # float16 gradient, widened exactly through the table
                    np.copyto(ib, gf[a:b].view(np.uint16))
                    np.take(_WIDEN16, ib, out=gb, mode="clip")  # mode "raise" buffers out
                    g1 = gb
                    if scale:
                        mul(gb, rescale, gb)
                elif scale:
                    mul(gf[a:b], rescale, gb)
                    g1 = gb
                else:
                    g1 = gf[a:b]
                if clip_first:  # mxnet-doc: clip, then weight decay
                    np.clip(g1, lo, clip, out=gb)
                    g1 = gb
                # wd*w with wd == 0 adds a zero, unless w holds an inf or NaN (0*inf is NaN):
                # then the term is applied literally. The test costs about what the two passes
                # would, but it also pulls w into the cache for the last pass. (Not np.dot:
                # BLAS threads make it erratic.)
                if zero_el is not None and coupled:  # some tensors of the chunk have wd 0
                    # as above, per element: the term is left out where wd == 0 and w is finite
                    # (adding -0 changes no value, not even the sign of a zero)
                    mul(w, wd_c, x)
                    np.isfinite(w, out=fin)
                    np.logical_and(fin, zero_el, out=fin)
                    np.copyto(x, _MINUS_ZERO[x.dtype.char], where=fin)
                    add(g1, x, gb)
                    g1 = gb
                elif coupled and (not wd_skip or not np.isfinite(w, out=fin).all()):
                    mul(w, wd_c, x)
                    add(g1, x, gb)
                    g1 = gb
                if clip_last:  # mxnet: weight decay, then clip
                    np.clip(g1, lo, clip, out=gb)
                    g1 = gb
                # m = b1*(m - g') + g', and r*r = P*P with P = b1*(m - g') = -r (exactly)
                sub(m, g1, m)
                mul(m, b1, m)
                mul(m, m, x)
                add(m, g1, m)
                # s = b2*(s - r*r) + r*r + eps
                sub(s, x, s)
                mul(s, b2, s)
                add(s, x, s)
                add(s, eps_s, s)
                s_root = s
                if smax is not None:  # amsgrad: the root takes the running maximum of s
                    np.maximum(smax, s, out=smax)
                    s_root = s if (sc.mode is not None and plan.amsgrad_rectified_on_s) else smax
                if mode:  # rectify below the SMA threshold: an SGD step eta*m, or none
                    if keep_c is not None:
                        mul(w, keep_c, w)
                    if mode == 1:
                        mul(m, eta_c, x)
                        sub(w, x, w)
                    if w16 is not None:
                        np.copyto(w16, w, casting="same_kind")
                    continue
                # w = w - eta*(m / (sqrt(s) + eps)); epsilon after the bias correction:
                # w = w - (lr_i/bc1)*(m / (sqrt(s [+ eps])/sqrt(bc2) + eps))
                if sc.transient:
                    add(s_root, eps, x)
                    sqrt(x, x)
                else:
                    sqrt(s_root, x)
                if root_c is not None:
                    div(x, root_c, x)
                add(x, eps, x)
                div(m, x, x)
                mul(x, eta_c, x)
                if keep_c is not None:  # decoupled decay: w*(1 - lr_i*wd_i) - step
                    mul(w, keep_c, w)
                sub(w, x, w)
                if w16 is not None:
                    np.copyto(w16, w, casting="same_kind")  # round to nearest even
        return True


class _Chunk(NamedTuple):
    """Elements [a, b) of one run of tensors: views into the flat buffers and the scratch."""

    a: int
    b: int
    run: int
    w: np.ndarray
    m: np.ndarray
    s: np.ndarray
    w16: np.ndarray | None
    gb: np.ndarray
    x: np.ndarray
    ib: np.ndarray
    fin: np.ndarray
    s_max: np.ndarray | None


_MINUS_ZERO = {np.dtype(t).char: np.dtype(t).type(-0.0) for t in (np.float16, np.float32, np.float64)}


def _bits(dtype: np.dtype) -> type[np.unsignedinteger[Any]]:
    """The unsigned integer type as wide as ``dtype`` (to compare floats bit for bit)."""
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]


class NumpyBackend:
    """``numpy``: the fused in-place multi-tensor NumPy step (:class:`FusedAdaBelief`)."""

    name = "numpy"
    description = "fused in-place multi-tensor NumPy step over flat buffers, in chunks"
    profiles = frozenset(PLAN_PROFILES)
    dtypes = frozenset(NUMPY_DTYPES)

    def __init__(self, chunk_size: int = DEFAULT_CHUNK) -> None:
        from .. import __version__

        self.chunk_size = chunk_size
        self.version = f"{__version__} (numpy {np.__version__})"

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
            return FusedAdaBelief.from_plan(plan, w, m, s, self.chunk_size)

        return run_flat_request(request, make)
