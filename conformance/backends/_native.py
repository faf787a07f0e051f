"""The CUDA kernel's per-element source compiled for the host, and the host side of every
flat-buffer backend (this one, CuPy's and Numba's).

``kernels/adabelief_step.cuh`` holds the arithmetic once. ``kernels/adabelief_host.c`` includes
it and loops over flat buffers the way the device kernel does; :func:`build_host_library`
compiles that with the system C compiler into a per-user cache, and :class:`NativeHostBackend`
("cuda-host") runs conformance cases through it, so CI checks the GPU arithmetic without a GPU.
:func:`check_device_compile` compiles the real kernels with nvcc for given architectures.

:class:`FlatPlan` is the host side of one optimizer over many parameters laid end to end: the
per-tensor update counts, the bias-corrected step sizes, the skip rule and the scalars, all
rounded to the compute dtype here, once, so that every backend launches with the same values.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from adabelief_reference import (
    DEFAULT_HYPERPARAMETERS,
    Hyperparameters,
    Profile,
    profile_named,
    profile_names,
)

from .._errors import AdapterError, UsageError
from .._protocol import NUMPY_DTYPES, ParamResult, RunRequest
from ._kernel_source import KERNEL_SOURCE

__all__ = [
    "DEVICE_OPTIONS",
    "FLAG_CLIP",
    "FLAG_WD_AFTER_CLIP",
    "HOST_CFLAGS",
    "HOST_SOURCE",
    "KERNELS_DIR",
    "PLAN_PROFILES",
    "STEP_HEADER",
    "SUPPORTED_PROFILES",
    "DeviceCompileResult",
    "FlatPlan",
    "FlatStepper",
    "HostBuild",
    "HostLibrary",
    "NativeFlatStepper",
    "NativeHostBackend",
    "StepScalars",
    "build_host_library",
    "check_device_compile",
    "device_ptx",
    "find_nvcc",
    "host_library",
    "require_kernel_profile",
    "run_flat_request",
]

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
STEP_HEADER = KERNELS_DIR / "adabelief_step.cuh"
HOST_SOURCE = KERNELS_DIR / "adabelief_host.c"

# Host build: no contraction into FMA and no fast-math, so the host evaluates exactly the
# operations the .cuh spells, as the device does (see the contract at the top of the .cuh).
HOST_CFLAGS: tuple[str, ...] = (
    "-std=c99", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math",
)
# Device build (nvcc and NVRTC alike): no FMA contraction, subnormals kept, IEEE division and
# square root. The .cuh's _rn intrinsics already guarantee the first; these make it hold for
# any code the intrinsics miss.
DEVICE_OPTIONS: tuple[str, ...] = ("--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")



def _plan_supports(profile: Profile) -> bool:
    """The choices a FlatPlan (and the NumPy backend) implements: coupled weight decay in either
    order or decoupled (weight_decouple, fixed_decay), either skip rule, either stored epsilon,
    every epsilon placement."""
    return profile.weight_decay in ("coupled-before-clip", "coupled-after-clip")


def _kernel_supports(profile: Profile) -> bool:
    """The one-pass kernel's choices (numba, cuda-host, cupy): as the plan's, with the epsilon
    of the denominator stored in s and added to sqrt(s) before the bias correction, and no
    switch (decoupled decay, rectification, AMSGrad) that a case may turn on."""
    return (_plan_supports(profile) and profile.stored_epsilon == "epsilon"
            and profile.epsilon_denominator == "before-bias-correction"
            and not any(True in values for values in profile.switches.values()))


# The profiles of spec/profiles.json whose choices the backends implement, read from the data.
PLAN_PROFILES: tuple[str, ...] = tuple(p for p in profile_names() if _plan_supports(profile_named(p)))
SUPPORTED_PROFILES: tuple[str, ...] = tuple(
    p for p in profile_names() if _kernel_supports(profile_named(p)))


def require_kernel_profile(plan: FlatPlan, who: str) -> None:
    """Refuse a plan whose profile the one-pass kernel does not implement."""
    if plan.profile not in SUPPORTED_PROFILES:
        raise UsageError(f"profile {plan.profile!r}: {who} implements {list(SUPPORTED_PROFILES)} "
                         "(the kernel adds epsilon to sqrt(s) before the bias correction)")


FLAG_CLIP = 1  # AB_FLAG_CLIP in the .cuh
FLAG_WD_AFTER_CLIP = 2  # AB_FLAG_WD_AFTER_CLIP in the .cuh
_ABI_VERSION = 1  # ab_host_abi_version() in adabelief_host.c


# ----- the host side of a step ------------------------------------------------------------------

# Steps whose scalars (bias corrections, eta, rectification) one pass of NumPy computes ahead:
# the per-call overhead of a dozen small NumPy operations is paid once per _AHEAD steps.
_AHEAD = 32


@dataclass(frozen=True)
class StepScalars:
    """One step's launch arguments, every float rounded to the compute dtype."""

    eta: np.ndarray  # per tensor: the bias-corrected step size (lr_i/bc1 with root_scale)
    hyper: tuple[np.floating[Any], ...]  # rescale, beta1, 1-beta1, beta2, 1-beta2, epsilon, clip
    flags: int
    # epsilon after the bias correction (NumPy backend only): per tensor sqrt(bc2), dividing
    # sqrt(s); None when epsilon sits before the bias correction.
    root_scale: np.ndarray | None = None
    eps_state: np.floating[Any] | None = None  # the epsilon stored in s (None: epsilon's)
    transient: bool = False  # epsilon added to s again, not stored, before the root
    # rectify (NumPy backend only): per tensor 0 = the (rectified) adaptive step, 1 = SGD step
    # eta*m, 2 = no step; None without rectification.
    mode: np.ndarray | None = None


class FlatPlan:
    """Many parameters in flat buffers: tensor k owns elements ``offsets[k]:offsets[k+1]``.

    Holds each tensor's update count ``t`` (updates already applied) and computes, per step,
    what the kernel needs. ``eta`` is evaluated as MXNet's Python does, in float64
    (``lr * lr_mult * (sqrt(1 - beta2**t) / (1 - beta1**t))``) and rounded once to the compute
    dtype; ``wd * wd_mult`` likewise. ``beta1``, ``beta2``, ``epsilon``, ``rescale_grad`` and
    ``clip_gradient`` are rounded to the compute dtype and ``1 - beta`` is computed in it.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        dtype: str = "float32",
        profile: str = "mxnet",
        hyperparameters: Hyperparameters = DEFAULT_HYPERPARAMETERS,
        lr_mults: Sequence[float] | None = None,
        wd_mults: Sequence[float] | None = None,
        t: Sequence[int] | None = None,
    ) -> None:
        if dtype not in NUMPY_DTYPES:
            raise UsageError(f"dtype {dtype!r}: expected one of {sorted(NUMPY_DTYPES)}")
        if profile not in PLAN_PROFILES:
            raise UsageError(f"profile {profile!r}: the flat backends implement {list(PLAN_PROFILES)}")
        prof = profile_named(profile)
        self.dtype = dtype
        self.profile = profile
        self.hyperparameters = hp = hyperparameters
        self.storage_dtype, self.master_dtype, self.compute_dtype = NUMPY_DTYPES[dtype]
        n = len(sizes)
        self.sizes = np.array(sizes, dtype=np.int64).reshape(n)
        if (self.sizes < 0).any():
            raise UsageError(f"sizes must be >= 0, got {list(sizes)}")
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.sizes, out=self.offsets[1:])
        self.t = np.zeros(n, dtype=np.int64) if t is None else np.array(t, dtype=np.int64).reshape(n)
        if (self.t < 0).any():
            raise UsageError(f"t must be >= 0, got {list(self.t)}")
        lr_m = np.ones(n) if lr_mults is None else np.array(lr_mults, dtype=np.float64).reshape(n)
        wd_m = np.ones(n) if wd_mults is None else np.array(wd_mults, dtype=np.float64).reshape(n)
        cd = self.compute_dtype
        with np.errstate(all="ignore"):
            self._lr = np.float64(hp.learning_rate) * lr_m
            wd64 = np.float64(hp.wd) * wd_m
            # weight_decouple: no coupled term; w is multiplied by keep = 1 - lr_i*wd_i (or
            # 1 - wd_i with fixed_decay), formed in float64 and rounded once, before the step.
            self.decay_keep: np.ndarray | None = None
            if hp.weight_decouple:
                c = wd64 if hp.fixed_decay else self._lr * wd64
                self.decay_keep = (1.0 - c).astype(cd)
                wd64 = np.zeros(n)
            self.wd = wd64.astype(cd)
            self._beta1 = np.float64(hp.beta1)
            self._beta2 = np.float64(hp.beta2)
            b1, b2 = self._to_compute(hp.beta1), self._to_compute(hp.beta2)
            one = cd.type(1)
            clip = hp.clip_gradient
            # MXNet's kernels clip only for clip_gradient > 0 (NaN compares false). For
            # mxnet-doc, clip <= 0 is implementation-defined: it is disabled here too.
            clip_on = clip is not None and clip > 0
            self._hyper_tail = (b1, one - b1, b2, one - b2, self._to_compute(hp.epsilon),
                                self._to_compute(clip if clip_on and clip is not None else 0.0))
        self.flags = (FLAG_CLIP if clip_on else 0) | (
            FLAG_WD_AFTER_CLIP if prof.weight_decay == "coupled-after-clip" else 0)
        self._skip_rule = prof.rescale_skip == "skip-when-zero-or-nonfinite"
        self._after_bc = prof.epsilon_denominator != "before-bias-correction"
        self._transient = prof.epsilon_denominator == "after-bias-correction-with-transient-epsilon"
        self._eps_state = None if prof.stored_epsilon == "epsilon" else self._to_compute(hp.eps_root)
        self._rectify = hp.rectify
        self._rect_before = prof.rectification.endswith("before-bias-correction")
        self.amsgrad = hp.amsgrad  # the NumPy backend keeps a running maximum of s
        self.amsgrad_rectified_on_s = prof.amsgrad == "max-of-s-unrectified"
        self._hyper_cache: tuple[float, tuple[np.floating[Any], ...]] | None = None
        self._ahead_row = _AHEAD  # the next row of self._ahead to use; _AHEAD: none computed
        self._ahead: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] = (
            np.zeros((0, n)), None, None)

    @classmethod
    def from_request(cls, request: RunRequest) -> FlatPlan:
        ps = request.params
        return cls([len(p.w) for p in ps], request.dtype, request.profile, request.hyperparameters,
                   [p.lr_mult for p in ps], [p.wd_mult for p in ps], [p.t for p in ps])

    @property
    def n_tensors(self) -> int:
        return len(self.sizes)

    @property
    def n_elements(self) -> int:
        return int(self.offsets[-1])

    @property
    def multi_precision(self) -> bool:
        return self.storage_dtype != self.master_dtype

    def _to_compute(self, x: float) -> np.floating[Any]:
        with np.errstate(all="ignore"):  # overflow to inf is the rounding asked for
            value: np.floating[Any] = self.compute_dtype.type(x)
        return value

    def skips(self, rescale_grad: float) -> bool:
        """The skip rule: rescale_grad 0 or non-finite leaves w, m, s untouched (mxnet)."""
        return self._skip_rule and (rescale_grad == 0 or not math.isfinite(rescale_grad))

    def hyper(self, rescale_grad: float) -> tuple[np.floating[Any], ...]:
        """(rescale, beta1, 1-beta1, beta2, 1-beta2, epsilon, clip) in the compute dtype; the
        last one is cached, since rescale_grad rarely changes between steps."""
        cached = self._hyper_cache
        if cached is not None and cached[0] == rescale_grad and not math.isnan(rescale_grad):
            return cached[1]
        hyper = (self._to_compute(rescale_grad), *self._hyper_tail)
        self._hyper_cache = (rescale_grad, hyper)
        return hyper

    def advance(self, rescale_grad: float | None = None) -> StepScalars | None:
        """Count one update on every tensor; return the step's scalars, or None to skip it."""
        r = self.hyperparameters.rescale_grad if rescale_grad is None else float(rescale_grad)
        self.t += 1  # even when the step is skipped, as MXNet does
        k = self._ahead_row
        if k >= _AHEAD:  # the per-step scalars of the next _AHEAD steps, in one pass
            self._ahead = self._scalars(self.t[None, :] + np.arange(_AHEAD, dtype=np.int64)[:, None])
            k = 0
        self._ahead_row = k + 1
        if self.skips(r):
            return None
        eta, root_scale, mode = self._ahead
        return StepScalars(eta[k], self.hyper(r), self.flags, None if root_scale is None else root_scale[k],
                           self._eps_state, self._transient, None if mode is None else mode[k])

    def _scalars(self, t_int: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """eta, root_scale and mode (module doc) for update counts ``t_int`` (any shape whose last
        axis is the tensors): every element computed exactly as for a single step."""
        root_scale = None
        with np.errstate(all="ignore"):
            lr = np.ascontiguousarray(np.broadcast_to(self._lr, t_int.shape))
            if self.hyperparameters.correct_bias:
                t = t_int.astype(np.float64)
                bc1 = 1.0 - np.power(self._beta1, t)
                bc2 = 1.0 - np.power(self._beta2, t)
                if self._after_bc:  # (lr_i/bc1) * m / (sqrt(s)/sqrt(bc2) + eps)
                    eta64 = lr / bc1
                    root_scale = np.sqrt(bc2).astype(self.compute_dtype)
                else:
                    eta64 = lr * (np.sqrt(bc2) / bc1)
            else:
                eta64 = lr
            mode = None
            if self._rectify:
                eta64, root_scale, mode = self._rectified(t_int, eta64, root_scale)
            eta = np.ascontiguousarray(eta64, dtype=self.compute_dtype)
        # rows are handed to C and kernels by pointer: each must be contiguous
        return (eta, None if root_scale is None else np.ascontiguousarray(root_scale),
                None if mode is None else np.ascontiguousarray(mode))

    def _rectified(self, t_int: np.ndarray, eta64: np.ndarray, root_scale: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tensor: RAdam's SMA length N_t (binary64, as the PyTorch libraries compute it)
        decides between the rectified step (eta times rho; the rectified branch's epsilon
        placement through root_scale, 1 for epsilon before the bias correction, exact), the SGD
        step (lr_i/bc1)*m and no step."""
        t = t_int.astype(np.float64)
        b2 = self._beta2
        n_inf = 2.0 / (1.0 - b2) - 1.0
        p = np.power(b2, t)
        n = n_inf - 2.0 * t * p / (1.0 - p)
        with np.errstate(invalid="ignore"):
            rho = np.sqrt((n - 4.0) * (n - 2.0) * n_inf / ((n_inf - 4.0) * (n_inf - 2.0) * n))
        hp = self.hyperparameters
        bc1 = 1.0 - np.power(self._beta1, t) if hp.correct_bias else np.ones_like(t)
        rb = np.sqrt(1.0 - p) if hp.correct_bias else np.ones_like(t)
        rectified = n >= 5.0
        mode = np.where(rectified, 0, 1 if hp.degenerated_to_sgd else 2).astype(np.int8)
        if self._rect_before:  # lr_i*rho*sqrt(bc2)/bc1 * m/(sqrt(s) + eps)
            eta_rect, roots = self._lr * rho * rb / bc1, np.ones_like(t)
        else:  # lr_i*rho/bc1 * m/(sqrt(s)/sqrt(bc2) + eps)
            eta_rect, roots = self._lr * rho / bc1, rb
        eta = np.where(rectified, eta_rect, self._lr / bc1)
        return eta, roots.astype(self.compute_dtype), mode

    def chunks(self, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(tensor id int32, first element int64) of each chunk of at most ``chunk_size``
        elements; a chunk never spans two tensors, so each reads one eta and one wd."""
        counts = -(-self.sizes // chunk_size)  # ceil division; empty tensors get no chunk
        tensor = np.repeat(np.arange(self.n_tensors, dtype=np.int32), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        start = self.offsets[:-1][tensor] + (np.arange(len(tensor), dtype=np.int64) - first) * chunk_size
        return tensor, start.astype(np.int64)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        return [flat[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]


class FlatStepper(Protocol):
    """A backend's optimizer over one :class:`FlatPlan` (the benchmark-level API)."""

    plan: FlatPlan

    def step(self, g: Any, rescale_grad: float | None = None) -> bool:
        """Apply one step with flat gradient ``g``; False when the skip rule skipped it."""
        ...

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Host copies of the flat w, m, s and (float16-mp) w16."""
        ...


def _concat(arrays: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if not arrays:
        return np.zeros(0, dtype=dtype)
    return np.ascontiguousarray(np.concatenate([np.asarray(a).ravel() for a in arrays]), dtype=dtype)


def run_flat_request(
    request: RunRequest,
    make_stepper: Callable[[FlatPlan, np.ndarray, np.ndarray, np.ndarray], FlatStepper],
) -> list[list[ParamResult]]:
    """Run a conformance request through a flat stepper: all parameters in one launch per step."""
    plan = FlatPlan.from_request(request)
    ps = request.params
    stepper = make_stepper(
        plan,
        _concat([p.w for p in ps], plan.master_dtype),
        _concat([p.m for p in ps], plan.compute_dtype),
        _concat([p.s for p in ps], plan.compute_dtype),
    )
    s_max = getattr(stepper, "s_max", None)
    if plan.amsgrad:
        if s_max is None:
            raise UsageError("amsgrad: this backend keeps no maximum of s")
        s_max[...] = _concat([p.s_max for p in ps if p.s_max is not None], plan.compute_dtype)
    results = []
    for step in request.steps:
        stepper.step(_concat(step.grads, plan.storage_dtype), step.rescale_grad)
        w, m, s, w16 = stepper.snapshot()
        parts = [plan.split(a) for a in (w, m, s)]
        parts16 = plan.split(w16) if w16 is not None else [None] * plan.n_tensors
        partsx = plan.split(s_max.copy()) if plan.amsgrad and s_max is not None else [None] * plan.n_tensors
        results.append([ParamResult(wi, mi, si, hi, xi)
                        for wi, mi, si, hi, xi in zip(*parts, parts16, partsx)])
    return results


def _flat_array(x: Any, dtype: np.dtype, n: int, name: str) -> np.ndarray:
    """``x`` as a contiguous 1-D array of ``dtype`` (no copy when it already is one)."""
    a = np.ascontiguousarray(x, dtype=dtype)
    if a.ndim != 1 or a.shape[0] != n:
        raise UsageError(f"{name}: expected {n} elements of {dtype.name} in one flat array, got shape {a.shape}")
    return a


# ----- building and loading the host library -----------------------------------------------------

@dataclass(frozen=True)
class HostBuild:
    path: Path
    command: tuple[str, ...]
    compiler: str  # the compiler's first --version line
    key: str  # sha256 of the sources, compiler and flags
    seconds: float  # compile time; 0.0 when loaded from the cache
    cached: bool


def _compiler() -> list[str]:
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    raise AdapterError("cuda-host backend needs a C compiler: none of cc, gcc, clang is on PATH (or set CC)")


def _cache_root() -> Path:
    env = os.environ.get("ADABELIEF_CONFORMANCE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "adabelief-conformance"


def _writable_dir(path: Path) -> Path | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def build_host_library(cache_dir: Path | None = None, force: bool = False) -> HostBuild:
    """Compile adabelief_host.c (with the .cuh) into a shared library, cached by content hash.

    The cache is ``$ADABELIEF_CONFORMANCE_CACHE``, else ``$XDG_CACHE_HOME/adabelief-conformance``
    or ``~/.cache/adabelief-conformance``, else a folder in the temp dir: never the package.
    """
    cc = _compiler()
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=60,
                                 check=False).stdout.splitlines()[:1]
    except OSError as e:
        raise AdapterError(f"cuda-host backend: cannot run C compiler {cc[0]!r}: {e}") from None
    compiler = version[0].strip() if version else cc[0]
    h = hashlib.sha256()
    for part in (STEP_HEADER.read_bytes(), HOST_SOURCE.read_bytes(), compiler.encode(),
                 " ".join(cc + list(HOST_CFLAGS)).encode(), platform.machine().encode()):
        h.update(hashlib.sha256(part).digest())
    key = h.hexdigest()
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    folder = _writable_dir(cache_dir or _cache_root()) or _writable_dir(
        Path(tempfile.gettempdir()) / f"adabelief-conformance-{os.getuid() if hasattr(os, 'getuid') else 0}")
    if folder is None:
        raise AdapterError("cuda-host backend: no writable cache folder (set ADABELIEF_CONFORMANCE_CACHE)")
    target = folder / f"adabelief_host-{key[:16]}{suffix}"
    command = (*cc, *HOST_CFLAGS, f"-I{KERNELS_DIR}", "-o", str(target), str(HOST_SOURCE))
    if target.exists() and not force:
        return HostBuild(target, command, compiler, key, 0.0, True)
    # Build beside the target and rename: concurrent builders (pytest-xdist) never see half a file.
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    cmd = (*cc, *HOST_CFLAGS, f"-I{KERNELS_DIR}", "-o", str(tmp), str(HOST_SOURCE))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise AdapterError(f"cuda-host backend: compiling {HOST_SOURCE.name} failed "
                           f"({shlex.join(cmd)}):\n{proc.stderr.strip()}")
    os.replace(tmp, target)
    return HostBuild(target, command, compiler, key, seconds, False)


_P = ctypes.c_void_p
_LL = ctypes.c_longlong


class HostLibrary:
    """The loaded host build: typed wrappers that check every array before handing it to C."""

    def __init__(self, build: HostBuild) -> None:
        self.build = build
        lib = ctypes.CDLL(str(build.path))
        lib.ab_host_abi_version.restype = ctypes.c_int
        if lib.ab_host_abi_version() != _ABI_VERSION:
            raise AdapterError(f"{build.path}: ABI version {lib.ab_host_abi_version()}, expected {_ABI_VERSION}")
        f32, f64, i32 = ctypes.c_float, ctypes.c_double, ctypes.c_int
        # n_tensors, offsets, w, m, s, [w16,] g, eta, wd, 7 scalars, flags
        arrays: list[Any] = [_LL, _P, _P, _P, _P, _P, _P, _P]
        lib.ab_host_step_f32.argtypes = [*arrays, *[f32] * 7, i32]
        lib.ab_host_step_f64.argtypes = [*arrays, *[f64] * 7, i32]
        lib.ab_host_step_f16_master.argtypes = [*arrays, _P, *[f32] * 7, i32]
        for fn in (lib.ab_host_step_f32, lib.ab_host_step_f64, lib.ab_host_step_f16_master):
            fn.restype = None
        lib.ab_host_half_to_float.argtypes = [_LL, _P, _P]
        lib.ab_host_float_to_half.argtypes = [_LL, _P, _P]
        lib.ab_host_flush_flags.restype = ctypes.c_uint
        self._lib = lib

    def flush_flags(self) -> int:
        """The calling thread's FTZ/DAZ bits (0: subnormals are honoured)."""
        return int(self._lib.ab_host_flush_flags())

    def half_to_float(self, h: np.ndarray) -> np.ndarray:
        src = np.ascontiguousarray(h, dtype=np.float16).view(np.uint16).ravel()
        out = np.empty(src.shape[0], dtype=np.float32)
        self._lib.ab_host_half_to_float(src.shape[0], src.ctypes.data, out.ctypes.data)
        return out

    def float_to_half(self, f: np.ndarray) -> np.ndarray:
        src = np.ascontiguousarray(f, dtype=np.float32).ravel()
        out = np.empty(src.shape[0], dtype=np.uint16)
        self._lib.ab_host_float_to_half(src.shape[0], src.ctypes.data, out.ctypes.data)
        return out.view(np.float16)

    def step(self, plan: FlatPlan, sc: StepScalars, w: np.ndarray, m: np.ndarray, s: np.ndarray,
             g: np.ndarray, w16: np.ndarray | None = None) -> None:
        """One multi-tensor step in place on w, m, s (and w16)."""
        n = plan.n_elements
        for name, a, dt in (("w", w, plan.master_dtype), ("m", m, plan.compute_dtype),
                            ("s", s, plan.compute_dtype), ("g", g, plan.storage_dtype)):
            if a.dtype != dt or a.ndim != 1 or a.shape[0] != n or not a.flags.c_contiguous:
                raise UsageError(f"{name}: expected a contiguous array of {n} {dt.name}")
        if (w16 is None) == plan.multi_precision:
            raise UsageError("w16 is required for float16-mp and only for it")
        offsets = plan.offsets
        head = (plan.n_tensors, offsets.ctypes.data, w.ctypes.data, m.ctypes.data, s.ctypes.data)
        tail = (sc.eta.ctypes.data, plan.wd.ctypes.data, *sc.hyper, sc.flags)
        if w16 is not None:
            if w16.dtype != np.float16 or w16.shape != (n,) or not w16.flags.c_contiguous:
                raise UsageError(f"w16: expected a contiguous array of {n} float16")
            self._lib.ab_host_step_f16_master(*head, w16.ctypes.data, g.ctypes.data, *tail)
        elif plan.compute_dtype == np.float64:
            self._lib.ab_host_step_f64(*head, g.ctypes.data, *tail)
        else:
            self._lib.ab_host_step_f32(*head, g.ctypes.data, *tail)


@cache
def host_library() -> HostLibrary:
    """The host build for this process: compiled on first use (or found in the cache)."""
    return HostLibrary(build_host_library())


class NativeFlatStepper:
    """Flat-buffer optimizer on the host build; w, m, s are updated in place."""

    def __init__(self, plan: FlatPlan, w: Any, m: Any, s: Any, lib: HostLibrary | None = None) -> None:
        require_kernel_profile(plan, "the cuda-host kernel")
        self.plan = plan
        self.lib = lib or host_library()
        n = plan.n_elements
        self.w = _flat_array(w, plan.master_dtype, n, "w")
        self.m = _flat_array(m, plan.compute_dtype, n, "m")
        self.s = _flat_array(s, plan.compute_dtype, n, "s")
        self.w16 = self.lib.float_to_half(self.w) if plan.multi_precision else None

    def step(self, g: Any, rescale_grad: float | None = None) -> bool:
        sc = self.plan.advance(rescale_grad)
        if sc is None:
            return False
        if self.lib.flush_flags():
            raise AdapterError("cuda-host backend: this thread flushes subnormals to zero (FTZ/DAZ set, "
                               "probably by a library built with -ffast-math); refusing to run")
        gf = _flat_array(g, self.plan.storage_dtype, self.plan.n_elements, "g")
        self.lib.step(self.plan, sc, self.w, self.m, self.s, gf, self.w16)
        return True

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        return (self.w.copy(), self.m.copy(), self.s.copy(),
                None if self.w16 is None else self.w16.copy())


class NativeHostBackend:
    """``cuda-host``: the CUDA kernel's per-element source compiled for the host."""

    name: str = "cuda-host"
    description = "the CUDA kernel's per-element source compiled for the host"
    profiles: Collection[str] = frozenset(SUPPORTED_PROFILES)
    dtypes: Collection[str] = frozenset(NUMPY_DTYPES)

    def __init__(self) -> None:
        from .. import __version__

        self.lib = host_library()
        self.version = f"{__version__}+host.{self.lib.build.key[:12]}"
        self.device = f"host CPU ({platform.machine()}), {self.lib.build.compiler}"

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
            return NativeFlatStepper(plan, w, m, s, self.lib)

        return run_flat_request(request, make)


# ----- compiling the device kernels -----------------------------------------------------------

@dataclass(frozen=True)
class DeviceCompileResult:
    arch: str
    status: str  # "ok", "failed" or "skipped"
    detail: str  # the skip reason, or the compiler's diagnostics
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def find_nvcc() -> str | None:
    """nvcc from $NVCC, PATH, $CUDA_HOME/$CUDA_PATH or /usr/local/cuda; None when absent."""
    env = os.environ.get("NVCC")
    if env:
        return env
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None


def _write_kernels(folder: Path) -> Path:
    src = folder / "adabelief_kernels.cu"
    src.write_text(KERNEL_SOURCE, encoding="utf-8")
    return src


def _nvcc(nvcc: str, arch: str, output: str, src: Path) -> tuple[subprocess.CompletedProcess[str], Path, float]:
    out = src.parent / f"adabelief_{arch}.{output}"
    cmd = [nvcc, f"-{output}", f"-arch={arch}", *DEVICE_OPTIONS, f"-I{KERNELS_DIR}", "-o", str(out), str(src)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    return proc, out, time.perf_counter() - start


def check_device_compile(archs: Sequence[str] = ("sm_80", "sm_90"), nvcc: str | None = None) -> dict[str, DeviceCompileResult]:
    """Compile the device kernels (``_kernel_source.KERNEL_SOURCE`` with the .cuh) to a cubin
    for each architecture with nvcc and the device options. Needs no GPU; every arch reports
    ``skipped`` when nvcc is not installed."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        reason = "nvcc not found (set NVCC or CUDA_HOME, or put the CUDA toolkit's bin on PATH)"
        return {a: DeviceCompileResult(a, "skipped", reason) for a in archs}
    with tempfile.TemporaryDirectory(prefix="adabelief-nvcc-") as tmp:
        src = _write_kernels(Path(tmp))

        def one(arch: str) -> DeviceCompileResult:
            try:
                proc, out, secs = _nvcc(nvcc, arch, "cubin", src)
            except (OSError, subprocess.TimeoutExpired) as e:
                return DeviceCompileResult(arch, "failed", f"{nvcc}: {e}")
            if proc.returncode != 0 or not out.exists():
                return DeviceCompileResult(arch, "failed", (proc.stderr or proc.stdout).strip(), secs)
            return DeviceCompileResult(arch, "ok", proc.stderr.strip(), secs)

        with ThreadPoolExecutor(max_workers=max(1, min(len(archs), os.cpu_count() or 1))) as pool:
            return dict(zip(archs, pool.map(one, archs)))


def device_ptx(arch: str = "sm_80", nvcc: str | None = None) -> str:
    """The kernels' PTX for ``arch`` (to audit it: it must hold no ``fma`` instruction)."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise AdapterError("device_ptx: nvcc not found (set NVCC or CUDA_HOME)")
    with tempfile.TemporaryDirectory(prefix="adabelief-nvcc-") as tmp:
        src = _write_kernels(Path(tmp))
        proc, out, _ = _nvcc(nvcc, arch.replace("sm_", "compute_"), "ptx", src)
        if proc.returncode != 0:
            raise AdapterError(f"device_ptx: nvcc failed for {arch}:\n{proc.stderr.strip()}")
        return out.read_text(encoding="utf-8")
