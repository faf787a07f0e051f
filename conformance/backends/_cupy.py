"""CuPy backend: one multi-tensor CUDA kernel launch per step over flat device buffers.

The kernels below include ``kernels/adabelief_step.cuh``, the same per-element source the
``cuda-host`` backend compiles for the host, and are compiled by NVRTC with
:data:`DEVICE_OPTIONS` (no FMA contraction, no flush to zero, IEEE division and square root),
so on any device they give results bit-identical to the host build (NaN payloads aside).

Launch layout: the parameters lie end to end in flat buffers; the buffers are cut into chunks
of :data:`CHUNK` elements that never span two tensors, and blocks walk the chunks grid-stride.
The chunk table, the per-tensor offsets and weight decays live on the device from construction
on; per step only the per-tensor step sizes ``eta`` change, and they travel in one small
asynchronous copy from a pinned buffer. A step allocates nothing and does not synchronise
(unless its gradient is a host array, which must be copied to the device first).

CuPy is imported lazily: importing this module needs neither CuPy nor a GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from functools import cache
from typing import Any

import numpy as np

from .._errors import AdapterError, UsageError
from .._protocol import NUMPY_DTYPES, ParamResult, RunRequest
from ._kernel_source import KERNEL_SOURCE
from ._native import (
    DEVICE_OPTIONS,
    KERNELS_DIR,
    STEP_HEADER,
    SUPPORTED_PROFILES,
    FlatPlan,
    FlatStepper,
    require_kernel_profile,
    run_flat_request,
)

__all__ = [
    "BLOCK",
    "CHUNK",
    "KERNEL_NAMES",
    "KERNEL_SOURCE",
    "CupyBackend",
    "CupyFlatStepper",
    "device_available",
]

BLOCK = 256  # threads per block
CHUNK = 4096  # elements per chunk: 16 per thread, enough to hide the chunk-table loads
BLOCKS_PER_SM = 8  # grid = min(chunks, SMs * this); the loop over chunks covers the rest

# dtype name -> kernel
KERNEL_NAMES: dict[str, str] = {
    "float32": "adabelief_step_f32",
    "float64": "adabelief_step_f64",
    "float16-mp": "adabelief_step_f16_master",
}

# NVRTC options; CuPy adds the architecture of the current device.
NVRTC_OPTIONS: tuple[str, ...] = (*DEVICE_OPTIONS, f"-I{KERNELS_DIR}")


def _import_cupy() -> Any:
    try:
        import cupy
    except Exception as e:  # ImportError, or a CuPy whose CUDA libraries fail to load
        raise AdapterError(f"cupy backend needs a CUDA device: cupy is not importable "
                           f"({type(e).__name__}: {e}); pip install adabelief-conformance[cupy]") from None
    return cupy


def device_available() -> tuple[bool, str]:
    """(True, a description of the device) when CuPy can use a CUDA device, else (False, why)."""
    try:
        import cupy
    except Exception as e:
        return False, f"cupy is not importable ({type(e).__name__}: {e})"
    try:
        if cupy.cuda.runtime.is_hip:
            return False, "CuPy is built for ROCm/HIP; these kernels are CUDA"
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return False, "no CUDA device is visible"
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    except Exception as e:  # CUDARuntimeError: no driver, driver too old, no device
        return False, f"{type(e).__name__}: {e}"
    name = props.get("name", b"?")
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return True, f"{name} (sm_{dev.compute_capability}), CuPy {cupy.__version__}"


def _module_source() -> str:
    # CuPy's kernel cache keys on the source text, not on included files: put the header's
    # hash in the text so that an edited .cuh is recompiled.
    digest = hashlib.sha256(STEP_HEADER.read_bytes()).hexdigest()
    return f"// adabelief_step.cuh sha256 {digest}\n{KERNEL_SOURCE}"


@cache
def _kernel(name: str, device_id: int) -> Any:
    """The compiled kernel ``name`` for device ``device_id`` (compiled on first use, cached)."""
    cp = _import_cupy()
    with cp.cuda.Device(device_id):
        module = cp.RawModule(code=_module_source(), options=NVRTC_OPTIONS)
        return module.get_function(name)


def _device_flat(cp: Any, x: Any, dtype: np.dtype, n: int, name: str) -> Any:
    """``x`` as a contiguous 1-D device array of ``dtype``: the same array when it already is."""
    if isinstance(x, cp.ndarray) and x.dtype == dtype and x.flags.c_contiguous:
        a = x
    else:  # a host array, or another dtype or layout: one copy
        a = cp.ascontiguousarray(cp.asarray(x, dtype=dtype))
    if a.ndim != 1 or a.shape[0] != n:
        raise UsageError(f"{name}: expected {n} elements of {dtype.name} in one flat array, got shape {a.shape}")
    return a


class CupyFlatStepper:
    """Flat-buffer optimizer on the GPU (the benchmark-level API).

    ``w``, ``m``, ``s`` (and ``w16`` for float16-mp) are device arrays updated in place; pass
    device arrays to have them used without a copy. ``step(g)`` takes the flat gradient, best a
    device array, and launches one kernel for all tensors on ``stream`` (default: the current
    stream), without synchronising.
    """

    def __init__(self, plan: FlatPlan, w: Any, m: Any, s: Any, stream: Any = None) -> None:
        require_kernel_profile(plan, "the CuPy kernel")
        cp = _import_cupy()
        ok, reason = device_available()
        if not ok:
            raise AdapterError(f"cupy backend needs a CUDA device: {reason}")
        import cupyx

        self.cp = cp
        self.plan = plan
        n = plan.n_elements
        self.stream = stream if stream is not None else cp.cuda.get_current_stream()
        self.device_id = cp.cuda.Device().id
        with self.stream:  # every copy and launch of this stepper goes to its stream, in order
            self.w = _device_flat(cp, w, plan.master_dtype, n, "w")
            self.m = _device_flat(cp, m, plan.compute_dtype, n, "m")
            self.s = _device_flat(cp, s, plan.compute_dtype, n, "s")
            # astype(float16) rounds with __float2half_rn, as the kernel does.
            self.w16 = self.w.astype(cp.float16) if plan.multi_precision else None
            tensor, start = plan.chunks(CHUNK)
            self._offsets = cp.asarray(plan.offsets)
            self._chunk_tensor = cp.asarray(tensor)
            self._chunk_start = cp.asarray(start)
            self._wd = cp.asarray(plan.wd)
            self._eta = cp.zeros(plan.n_tensors, dtype=plan.compute_dtype)
        self._n_chunks = len(tensor)
        # Two pinned staging buffers for eta: the host fills one while the other may still be
        # read by a copy in flight; an event per buffer says when its last copy is done.
        self._pinned = [cupyx.zeros_pinned((plan.n_tensors,), dtype=plan.compute_dtype) for _ in range(2)]
        self._copied = [cp.cuda.Event(disable_timing=True) for _ in range(2)]
        self._recorded = [False, False]
        self._slot = 0
        sms = int(cp.cuda.runtime.getDeviceProperties(self.device_id)["multiProcessorCount"])
        self._grid = max(1, min(self._n_chunks, sms * BLOCKS_PER_SM))
        self._kernel = _kernel(KERNEL_NAMES[plan.dtype], self.device_id)
        self._scalars_i32 = (np.int32(self._n_chunks), np.int32(CHUNK))

    def step(self, g: Any, rescale_grad: float | None = None) -> bool:
        sc = self.plan.advance(rescale_grad)
        if sc is None:
            return False
        plan, cp = self.plan, self.cp
        with self.stream:
            gd = _device_flat(cp, g, plan.storage_dtype, plan.n_elements, "g")
            if self._n_chunks == 0:
                return True
            slot = self._slot
            self._slot ^= 1
            if self._recorded[slot]:
                self._copied[slot].synchronize()  # long done, normally: it is 2 steps old
            self._pinned[slot][...] = sc.eta
            self._eta.set(self._pinned[slot], stream=self.stream)
            self._copied[slot].record(self.stream)
            self._recorded[slot] = True
            head: tuple[Any, ...] = (self.w, self.m, self.s)
            if self.w16 is not None:
                head = (*head, self.w16)
            args = (*head, gd, self._offsets, self._chunk_tensor, self._chunk_start,
                    *self._scalars_i32, self._eta, self._wd, *sc.hyper, np.int32(sc.flags))
            self._kernel((self._grid,), (BLOCK,), args)  # launches on the current stream
        return True

    def synchronize(self) -> None:
        self.stream.synchronize()

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        self.stream.synchronize()
        get = self.cp.asnumpy
        return get(self.w), get(self.m), get(self.s), None if self.w16 is None else get(self.w16)


class CupyBackend:
    """``cupy``: the multi-tensor CUDA kernel over flat device buffers, in place."""

    name: str = "cupy"
    description = "the CUDA multi-tensor kernel (adabelief_step.cuh) launched through CuPy"
    profiles: Collection[str] = frozenset(SUPPORTED_PROFILES)
    dtypes: Collection[str] = frozenset(NUMPY_DTYPES)

    def __init__(self) -> None:
        from .. import __version__

        ok, reason = device_available()
        if not ok:
            raise AdapterError(f"cupy backend needs a CUDA device: {reason}")
        cp = _import_cupy()
        self.version = f"{__version__} (CuPy {cp.__version__})"
        self.device = reason

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
            return CupyFlatStepper(plan, w, m, s)

        return run_flat_request(request, make)
