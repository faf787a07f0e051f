"""Numba backend (optional extra): the kernel's per-element arithmetic as a Numba loop.

The loop is the CUDA kernel's, element for element: the same operations in the same order
(``kernels/adabelief_step.cuh``), compiled with ``fastmath=False`` and ``error_model="numpy"``
so that LLVM contracts nothing, keeps subnormals and divides by zero per IEEE. Its results are
bit-identical to the ``cuda-host`` build (NaN payloads aside). float16 gradients are read
through a uint16 view and widened with a 65536-entry table (exact); the float16 weight copy is
rounded from the float32 bits with integer arithmetic (ties to even, subnormals kept).

The parameters lie end to end in flat buffers and run in chunks that never span two tensors
(as on the GPU); ``parallel=True`` spreads the chunks over threads with ``prange``. Numba is
imported on first use: importing this module does not need it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from ._native import SUPPORTED_PROFILES, FlatPlan, FlatStepper, _flat_array, run_flat_request
from ._protocol import NUMPY_DTYPES, ParamResult, RunRequest

__all__ = ["CHUNK", "NumbaBackend", "NumbaFlatStepper", "numba_kernels"]

CHUNK = 16384  # elements per chunk: the unit of work of one prange iteration

_INSTALL_HINT = "the numba backend needs numba: pip install adabelief-conformance[numba]"

# The loops below are plain module-level functions, compiled on first use by numba_kernels().
# They call each other through these module globals, which hold Numba dispatchers once built
# (Numba resolves globals when it compiles a caller), and ``_prange`` is numba.prange then
# (which is a plain range in a function compiled with parallel=False).
_element: Any = None
_float_to_half_bits: Any = None
_chunk_float: Any = None
_chunk_half: Any = None
_prange: Any = range


def _element_py(w: Any, m: Any, s: Any, g: Any, eta: Any, wd: Any, h: Any, flags: int) -> Any:
    """One element; h = (rescale, beta1, 1-beta1, beta2, 1-beta2, epsilon, clip) in the
    compute dtype. Operation order: adabelief_step.cuh, ab_element_*."""
    gs = h[0] * g
    if flags & 2:  # AB_FLAG_WD_AFTER_CLIP (mxnet-doc)
        if flags & 1:  # AB_FLAG_CLIP; comparisons keep a NaN gradient NaN
            if gs > h[6]:
                gs = h[6]
            elif gs < -h[6]:
                gs = -h[6]
        gc = gs + wd * w
    else:
        gc = gs + wd * w
        if flags & 1:
            if gc > h[6]:
                gc = h[6]
            elif gc < -h[6]:
                gc = -h[6]
    m1 = h[1] * m + h[2] * gc
    r = gc - m1
    s1 = (h[3] * s + h[4] * (r * r)) + h[5]
    d = np.sqrt(s1) + h[5]
    return w - eta * (m1 / d), m1, s1


def _float_to_half_bits_py(u: Any) -> Any:
    """float32 bit pattern -> float16 bit pattern, round to nearest even (ab_float_to_half)."""
    a = np.int64(u) & 0x7FFFFFFF
    sign = (np.int64(u) >> 16) & 0x8000
    if a >= 0x7F800000:
        if a > 0x7F800000:
            return sign | 0x7E00 | ((a >> 13) & 0x3FF)
        return sign | 0x7C00
    if a >= 0x477FF000:  # >= 65520: rounds to inf
        return sign | 0x7C00
    e = a >> 23
    if e < 113:  # binary16 subnormal or zero
        shift = 126 - e
        if shift > 24:
            return sign
        man = (a & 0x7FFFFF) | 0x800000
        q = man >> shift
        rem = man & ((np.int64(1) << shift) - 1)
        half = np.int64(1) << (shift - 1)
        if rem > half or (rem == half and (q & 1) == 1):
            q += 1
        return sign | q
    q = ((e - 112) << 10) | ((a >> 13) & 0x3FF)
    rem = a & 0x1FFF
    if rem > 0x1000 or (rem == 0x1000 and (q & 1) == 1):
        q += 1
    return sign | q


def _chunk_float_py(w: Any, m: Any, s: Any, g: Any, first: int, last: int, eta: Any, wd: Any,
                    h: Any, flags: int) -> None:
    for i in range(first, last):
        w[i], m[i], s[i] = _element(w[i], m[i], s[i], g[i], eta, wd, h, flags)


def _chunk_half_py(w: Any, m: Any, s: Any, w16: Any, wbits: Any, g16: Any, widen: Any, first: int,
                   last: int, eta: Any, wd: Any, h: Any, flags: int) -> None:
    for i in range(first, last):
        w[i], m[i], s[i] = _element(w[i], m[i], s[i], widen[g16[i]], eta, wd, h, flags)
        w16[i] = _float_to_half_bits(wbits[i])  # wbits views w: the bits just stored


# Serial and parallel loops are separate functions, not one compiled twice: Numba's disk cache
# keys on the function, not on the parallel flag, and would hand one the other's machine code.
def _run_float_serial_py(w: Any, m: Any, s: Any, g: Any, chunk_tensor: Any, chunk_start: Any,
                         offsets: Any, eta: Any, wd: Any, h: Any, flags: int, chunk: int) -> None:
    for c in range(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        last = min(chunk_start[c] + chunk, offsets[k + 1])
        _chunk_float(w, m, s, g, chunk_start[c], last, eta[k], wd[k], h, flags)


def _run_float_parallel_py(w: Any, m: Any, s: Any, g: Any, chunk_tensor: Any, chunk_start: Any,
                           offsets: Any, eta: Any, wd: Any, h: Any, flags: int, chunk: int) -> None:
    for c in _prange(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        last = min(chunk_start[c] + chunk, offsets[k + 1])
        _chunk_float(w, m, s, g, chunk_start[c], last, eta[k], wd[k], h, flags)


def _run_half_serial_py(w: Any, m: Any, s: Any, w16: Any, wbits: Any, g16: Any, widen: Any,
                        chunk_tensor: Any, chunk_start: Any, offsets: Any, eta: Any, wd: Any,
                        h: Any, flags: int, chunk: int) -> None:
    for c in range(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        last = min(chunk_start[c] + chunk, offsets[k + 1])
        _chunk_half(w, m, s, w16, wbits, g16, widen, chunk_start[c], last, eta[k], wd[k], h, flags)


def _run_half_parallel_py(w: Any, m: Any, s: Any, w16: Any, wbits: Any, g16: Any, widen: Any,
                          chunk_tensor: Any, chunk_start: Any, offsets: Any, eta: Any, wd: Any,
                          h: Any, flags: int, chunk: int) -> None:
    for c in _prange(chunk_tensor.shape[0]):
        k = chunk_tensor[c]
        last = min(chunk_start[c] + chunk, offsets[k + 1])
        _chunk_half(w, m, s, w16, wbits, g16, widen, chunk_start[c], last, eta[k], wd[k], h, flags)


_KERNELS: dict[bool, tuple[Any, Any]] = {}


def numba_kernels(parallel: bool = False) -> tuple[Any, Any]:
    """(float kernel, float16-mp kernel), compiled on first call (and cached on disk)."""
    if parallel in _KERNELS:
        return _KERNELS[parallel]
    try:
        import numba
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from None
    global _element, _float_to_half_bits, _chunk_float, _chunk_half, _prange
    # fastmath=False: IEEE semantics, no contraction into FMA, no reassociation.
    opts: dict[str, Any] = {"error_model": "numpy", "fastmath": False, "cache": True, "nogil": True}
    if _element is None:
        _element = numba.njit(**opts)(_element_py)
        _float_to_half_bits = numba.njit(**opts)(_float_to_half_bits_py)
        _chunk_float = numba.njit(**opts)(_chunk_float_py)
        _chunk_half = numba.njit(**opts)(_chunk_half_py)
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

    def step(self, g: Any, rescale_grad: float | None = None) -> bool:
        plan = self.plan
        sc = plan.advance(rescale_grad)
        if sc is None:
            return False
        gf = _flat_array(g, plan.storage_dtype, plan.n_elements, "g")
        h = np.array(sc.hyper, dtype=plan.compute_dtype)
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
        from . import __version__

        self.parallel = parallel
        self.version = f"{__version__} (numba {numba.__version__}{', parallel' if parallel else ''})"
        self.description = "the CUDA kernel's per-element loop in Numba" + (" (prange)" if parallel else "")
        numba_kernels(parallel)

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
            return NumbaFlatStepper(plan, w, m, s, self.parallel)

        return run_flat_request(request, make)
