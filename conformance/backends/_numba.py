"""Numba backend (optional extra): the kernel's per-element arithmetic as a Numba loop.

The loop is the CUDA kernel's, element for element: the same operations in the same order
(``kernels/adabelief_step.cuh``), compiled with ``fastmath=False`` and ``error_model="numpy"``
so that LLVM contracts nothing, keeps subnormals and divides by zero per IEEE. Its results are
bit-identical to the ``cuda-host`` build (NaN payloads aside).

Speed: a step streams 4 arrays in and 3 out, so the loop must run at memory bandwidth. It does
when LLVM vectorises it (AVX: 8 float32 lanes; ``vsqrtps``/``vdivps`` are IEEE operations like
their scalar forms, so vectorising changes no bit). That takes a loop with no branch and no
per-element table lookup: the parameters lie end to end in flat buffers and run in chunks that
never span two tensors (as on the GPU), so each chunk has one eta and one wd; the hyperparameters
are unpacked into locals; and each flag combination (clip or not, weight decay before or after
the clip) has its own loop, with the clamp written as selects. ``parallel=True`` spreads the
chunks over threads with ``prange``.

float16-mp works block by block through a small float32 buffer: the gradient is widened into it
with a 65536-entry table (exact), the float32 loop above runs, and the float16 weight copy is
rounded from the float32 bits with branch-free integer arithmetic (ties to even, subnormals
kept, as ``ab_float_to_half``). Numba is imported on first use: importing this module does not
need it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from .._protocol import NUMPY_DTYPES, ParamResult, RunRequest
from ._native import (
    SUPPORTED_PROFILES,
    FlatPlan,
    FlatStepper,
    _flat_array,
    require_kernel_profile,
    run_flat_request,
)

__all__ = ["CHUNK", "NumbaBackend", "NumbaFlatStepper", "numba_kernels"]

CHUNK = 65536  # elements per chunk: the unit of work of one prange iteration
_BLOCK = 2048  # float16-mp: elements per pass through the float32 gradient buffer (L1-sized)
_HALF_ONE = np.float32(0.5)  # a float32 constant: Numba would make a Python 0.5 a float64

_INSTALL_HINT = "the numba backend needs numba: pip install adabelief-conformance[numba]"

# The loops below are plain module-level functions, compiled on first use by numba_kernels().
# They call each other through these module globals, which hold Numba dispatchers once built
# (Numba resolves globals when it compiles a caller, and LLVM inlines the small ones), and
# ``_prange`` is numba.prange then (a plain range in a function compiled with parallel=False).
_clamp: Any = None
_update: Any = None
_span: Any = None
_widen: Any = None
_narrow: Any = None
_span_half: Any = None
_prange: Any = range


def _clamp_py(x: Any, c: Any, nc: Any) -> Any:
    """ab_clamp (nc = -c): comparisons, not min/max, so NaN stays NaN and +-inf becomes +-c."""
    return c if x > c else (nc if x < nc else x)


def _update_py(w0: Any, m0: Any, s0: Any, gc: Any, eta: Any, b1: Any, omb1: Any, b2: Any,
               omb2: Any, eps: Any) -> Any:
    """One element, from the clipped gradient gc on: ab_element_*'s operations in its order."""
    m1 = b1 * m0 + omb1 * gc
    r = gc - m1
    s1 = (b2 * s0 + omb2 * (r * r)) + eps
    return w0 - eta * (m1 / (np.sqrt(s1) + eps)), m1, s1


def _span_py(w: Any, m: Any, s: Any, g: Any, eta: Any, wd: Any, h: Any, flags: int) -> None:
    """Update w, m, s (slices of one tensor, hence one eta and one wd) from g, in place.

    h = (rescale, beta1, 1-beta1, beta2, 1-beta2, epsilon, clip) in the compute dtype. The
    scalars go into locals (read from h inside the loop, they would be reloaded after every
    store to w, m, s, which LLVM cannot prove h does not alias) and each flag combination gets
    its own loop: no branch is left in any of them, so LLVM vectorises all three.
    """
    rescale, b1, omb1, b2, omb2, eps, clip = h[0], h[1], h[2], h[3], h[4], h[5], h[6]
    nclip = -clip
    if not flags & 1:  # no AB_FLAG_CLIP: both profiles compute rescale * g + wd * w
        for i in range(w.shape[0]):
            w0 = w[i]
            gc = rescale * g[i] + wd * w0
            w[i], m[i], s[i] = _update(w0, m[i], s[i], gc, eta, b1, omb1, b2, omb2, eps)
    elif flags & 2:  # AB_FLAG_WD_AFTER_CLIP (mxnet-doc): clip, then add the weight decay
        for i in range(w.shape[0]):
            w0 = w[i]
            gc = _clamp(rescale * g[i], clip, nclip) + wd * w0
            w[i], m[i], s[i] = _update(w0, m[i], s[i], gc, eta, b1, omb1, b2, omb2, eps)
    else:  # mxnet: add the weight decay, then clip
        for i in range(w.shape[0]):
            w0 = w[i]
            gc = _clamp(rescale * g[i] + wd * w0, clip, nclip)
            w[i], m[i], s[i] = _update(w0, m[i], s[i], gc, eta, b1, omb1, b2, omb2, eps)


def _widen_py(g16: Any, table: Any, out: Any) -> None:
    """float16 bit patterns -> float32 through the exact 65536-entry table."""
    for i in range(g16.shape[0]):
        out[i] = table[g16[i]]


def _narrow_py(bits: Any, out: Any) -> None:
    """float32 bit patterns -> float16 bit patterns, as ab_float_to_half: round to nearest
    even, overflow to inf, binary16 subnormals exact, NaN quiet with its payload's top bits.

    Every case is computed and the right one selected, so the loop has no branch."""
    for i in range(bits.shape[0]):
        u = np.int64(bits[i])
        a = u & 0x7FFFFFFF
        sign = (u >> 16) & 0x8000
        # Normal binary16: rebias the exponent (127 -> 15) and drop 13 mantissa bits, adding
        # just under half of them plus the kept lsb: ties go to even, a carry is still right.
        q = (a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13
        # Below 2^-14 (a binary16 subnormal): 0.5 + x rounds x to a multiple of 2^-24, to
        # nearest even, in the float32 addition itself; the low bits are then that multiple.
        sub = np.int64(np.float32(np.uint32(a).view(np.float32) + _HALF_ONE).view(np.uint32))
        q = sub - 0x3F000000 if a < 0x38800000 else q
        q = 0x7C00 if a >= 0x477FF000 else q  # >= 65520: the tie with 65504 goes to inf
        q = 0x7E00 | ((a >> 13) & 0x3FF) if a > 0x7F800000 else q  # NaN
        out[i] = sign | q


def _span_half_py(w: Any, m: Any, s: Any, w16: Any, wbits: Any, g16: Any, table: Any, eta: Any,
                  wd: Any, h: Any, flags: int) -> None:
    """float16-mp over one tensor's slices: widen a block of g, run the float32 loop, round
    the block's new w to float16 (wbits views w: the bits just stored)."""
    n = w.shape[0]
    buf = np.empty(min(n, _BLOCK), dtype=np.float32)
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        gb = buf[: b - a]
        _widen(g16[a:b], table, gb)
        _span(w[a:b], m[a:b], s[a:b], gb, eta, wd, h, flags)
        _narrow(wbits[a:b], w16[a:b])


# The drivers: chunk c is elements chunk_start[c] up to the chunk size or the end of its
# tensor chunk_tensor[c]. Serial and parallel are separate functions, not one compiled twice:
# Numba's disk cache keys on the function, not on the parallel flag, and would hand one the
# other's machine code.
def _run_float_serial_py(w: Any, m: Any, s: Any, g: Any, chunk_tensor: Any, chunk_start: Any,
                         offsets: Any, eta: Any, wd: Any, h: Any, flags: int, chunk: int) -> None:
    for c in range(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        a = chunk_start[c]
        b = min(a + chunk, offsets[k + 1])
        _span(w[a:b], m[a:b], s[a:b], g[a:b], eta[k], wd[k], h, flags)


def _run_float_parallel_py(w: Any, m: Any, s: Any, g: Any, chunk_tensor: Any, chunk_start: Any,
                           offsets: Any, eta: Any, wd: Any, h: Any, flags: int, chunk: int) -> None:
    for c in _prange(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        a = chunk_start[c]
        b = min(a + chunk, offsets[k + 1])
        _span(w[a:b], m[a:b], s[a:b], g[a:b], eta[k], wd[k], h, flags)


def _run_half_serial_py(w: Any, m: Any, s: Any, w16: Any, wbits: Any, g16: Any, table: Any,
                        chunk_tensor: Any, chunk_start: Any, offsets: Any, eta: Any, wd: Any,
                        h: Any, flags: int, chunk: int) -> None:
    for c in range(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        a = chunk_start[c]
        b = min(a + chunk, offsets[k + 1])
        _span_half(w[a:b], m[a:b], s[a:b], w16[a:b], wbits[a:b], g16[a:b], table, eta[k], wd[k],
                   h, flags)


def _run_half_parallel_py(w: Any, m: Any, s: Any, w16: Any, wbits: Any, g16: Any, table: Any,
                          chunk_tensor: Any, chunk_start: Any, offsets: Any, eta: Any, wd: Any,
                          h: Any, flags: int, chunk: int) -> None:
    for c in _prange(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        a = chunk_start[c]
        b = min(a + chunk, offsets[k + 1])
        _span_half(w[a:b], m[a:b], s[a:b], w16[a:b], wbits[a:b], g16[a:b], table, eta[k], wd[k],
                   h, flags)


_KERNELS: dict[bool, tuple[Any, Any]] = {}


def numba_kernels(parallel: bool = False) -> tuple[Any, Any]:
    """(float kernel, float16-mp kernel), compiled on first call (and cached on disk)."""
    if parallel in _KERNELS:
        return _KERNELS[parallel]
    try:
        import numba
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from None
    global _clamp, _update, _span, _widen, _narrow, _span_half, _prange
    # fastmath=False: IEEE semantics, no contraction into FMA, no reassociation.
    opts: dict[str, Any] = {"error_model": "numpy", "fastmath": False, "cache": True, "nogil": True}
    if _span is None:
        _clamp = numba.njit(**opts)(_clamp_py)
        _update = numba.njit(**opts)(_update_py)
        _span = numba.njit(**opts)(_span_py)
        _widen = numba.njit(**opts)(_widen_py)
        _narrow = numba.njit(**opts)(_narrow_py)
        _span_half = numba.njit(**opts)(_span_half_py)
        _prange = numba.prange
    if parallel:
        kernels = (numba.njit(parallel=True, **opts)(_run_float_parallel_py),
                   numba.njit(parallel=True, **opts)(_run_half_parallel_py))
    else:
        kernels = (numba.njit(**opts)(_run_float_serial_py), numba.njit(**opts)(_run_half_serial_py))
    _KERNELS[parallel] = kernels
    return kernels


# float16 bit pattern -> float32, exact (numpy's widening is IEEE-exact, subnormals included).
_WIDEN = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


class NumbaFlatStepper:
    """Flat-buffer optimizer in Numba; w, m, s (numpy arrays) are updated in place."""

    def __init__(self, plan: FlatPlan, w: Any, m: Any, s: Any, parallel: bool = False) -> None:
        require_kernel_profile(plan, "the numba kernel")
        self.plan = plan
        self.parallel = parallel
        self._float_kernel, self._half_kernel = numba_kernels(parallel)
        n = plan.n_elements
        self.w = _flat_array(w, plan.master_dtype, n, "w")
        self.m = _flat_array(m, plan.compute_dtype, n, "m")
        self.s = _flat_array(s, plan.compute_dtype, n, "s")
        self.w16: np.ndarray | None = None
        if plan.multi_precision:
            with np.errstate(over="ignore"):  # overflow to inf is the right result
                self.w16 = self.w.astype(np.float16)  # rounds to nearest even, as the kernel
        self._chunk_tensor, self._chunk_start = plan.chunks(CHUNK)
        self._hyper_of: tuple[Any, ...] | None = None
        self._h = np.zeros(0, dtype=plan.compute_dtype)

    def step(self, g: Any, rescale_grad: float | None = None) -> bool:
        plan = self.plan
        sc = plan.advance(rescale_grad)
        if sc is None:
            return False
        gf = _flat_array(g, plan.storage_dtype, plan.n_elements, "g")
        if sc.hyper is not self._hyper_of:  # a new rescale_grad: the plan caches the tuple
            self._hyper_of, self._h = sc.hyper, np.array(sc.hyper, dtype=plan.compute_dtype)
        h = self._h
        common = (self._chunk_tensor, self._chunk_start, plan.offsets, sc.eta, plan.wd, h,
                  sc.flags, CHUNK)
        if self.w16 is not None:
            self._half_kernel(self.w, self.m, self.s, self.w16.view(np.uint16), self.w.view(np.uint32),
                              gf.view(np.uint16), _WIDEN, *common)
        else:
            self._float_kernel(self.w, self.m, self.s, gf, *common)
        return True

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        return (self.w.copy(), self.m.copy(), self.s.copy(),
                None if self.w16 is None else self.w16.copy())


class NumbaBackend:
    """``numba``: the CUDA kernel's loop in Numba (IEEE, no fast-math), serial or ``parallel``."""

    name: str = "numba"
    profiles: Collection[str] = frozenset(SUPPORTED_PROFILES)
    dtypes: Collection[str] = frozenset(NUMPY_DTYPES)

    def __init__(self, parallel: bool = False) -> None:
        try:
            import numba
        except ImportError as e:
            raise ImportError(f"{_INSTALL_HINT} ({e})") from None
        from .. import __version__

        self.parallel = parallel
        self.version = f"{__version__} (numba {numba.__version__}{', parallel' if parallel else ''})"
        self.description = "the CUDA kernel's per-element loop in Numba" + (" (prange)" if parallel else "")
        numba_kernels(parallel)

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
            return NumbaFlatStepper(plan, w, m, s, self.parallel)

        return run_flat_request(request, make)
