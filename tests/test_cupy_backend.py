"""The CuPy backend. On a machine with a CUDA device (``-m gpu``): agreement with the reference
and bit-identity with the host build of the same kernel source. Without one: the GPU tests skip
with the reason, and the backend must refuse to start with a clear message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_native import (
    CLIPS,
    DTYPE_NAMES,
    PROFILES,
    SCENARIOS,
    bit_identity_failures,
    bundled_failures,
    golden_mismatches,
    make_case,
    same_bits,
)

from adabelief_conformance import Implementation, request_from_case
from adabelief_conformance import _vectors as V
from adabelief_conformance._errors import AdapterError
from adabelief_conformance.backends._cupy import (
    KERNEL_NAMES,
    KERNEL_SOURCE,
    NVRTC_OPTIONS,
    CupyBackend,
    CupyFlatStepper,
    _module_source,
    device_available,
)
from adabelief_conformance.backends._native import FlatPlan, FlatStepper, HostLibrary, host_library

HAVE_DEVICE, DEVICE = device_available()
needs_device = pytest.mark.skipif(not HAVE_DEVICE, reason=f"no CUDA device for CuPy: {DEVICE}")


def test_kernel_names_are_in_the_source() -> None:
    for name in KERNEL_NAMES.values():
        assert f'extern "C" __global__ void {name}(' in KERNEL_SOURCE
    assert "--fmad=false" in NVRTC_OPTIONS


@pytest.mark.skipif(HAVE_DEVICE, reason="a CUDA device is present")
def test_without_a_device_the_backend_refuses_clearly() -> None:
    with pytest.raises(AdapterError, match=r"^cupy backend needs a CUDA device: "):
        CupyBackend()


def test_nvrtc_compiles_the_kernels_without_a_device() -> None:
    """NVRTC, the compiler CuPy uses, needs no GPU: check it accepts the kernels and emits no
    FMA (uses CuPy internals, so it skips on any CuPy that lacks them)."""
    cupy = pytest.importorskip("cupy", reason="cupy not installed")
    try:
        from cupy.cuda import compiler

        prog = compiler._NVRTCProgram(_module_source(), "adabelief.cu", (), (), method="ptx")
    except Exception as e:  # no libnvrtc, or a CuPy without these internals
        pytest.skip(f"NVRTC unavailable through CuPy {cupy.__version__}: {type(e).__name__}: {e}")
    try:
        ptx, _ = prog.compile((*NVRTC_OPTIONS, "-arch=compute_80", "--device-as-default-execution-space"))
    except compiler.CompileException:
        raise
    except Exception as e:
        pytest.skip(f"NVRTC unavailable through CuPy {cupy.__version__}: {type(e).__name__}: {e}")
    text = ptx.decode() if isinstance(ptx, bytes) else str(ptx)
    for name in KERNEL_NAMES.values():
        assert f".entry {name}(" in text
    assert "fma." not in text and "cvt.rn.f16.f32" in text


# ----- on a device -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cupy_backend() -> CupyBackend:
    return CupyBackend()


@pytest.fixture(scope="module")
def host_lib() -> HostLibrary:
    return host_library()


@pytest.mark.gpu
@needs_device
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cupy_agrees_with_reference(cupy_backend: CupyBackend, scenario: str, profile: str,
                                    dtype: str) -> None:
    case = make_case(scenario, profile, dtype)
    bad = golden_mismatches(case, cupy_backend.run(request_from_case(case)))
    assert not bad, "\n".join(bad[:10])


@pytest.mark.gpu
@needs_device
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("profile", PROFILES)
def test_cupy_is_bit_identical_to_host_build(host_lib: HostLibrary, profile: str, dtype: str,
                                             clip: float | None) -> None:
    def make(plan: FlatPlan, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> FlatStepper:
        return CupyFlatStepper(plan, w, m, s)

    for seed in range(3):
        bad = bit_identity_failures(make, host_lib, profile, dtype, clip, seed)
        assert not bad, f"seed {seed}:\n" + "\n".join(bad[:10])


@pytest.mark.gpu
@needs_device
def test_cupy_passes_the_bundled_vectors(cupy_backend: CupyBackend,
                                         bundled_cases: list[V.VectorCase]) -> None:
    bad = bundled_failures(cupy_backend, bundled_cases)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.gpu
@needs_device
def test_cupy_stepper_works_in_place_on_device_arrays() -> None:
    import cupy as cp

    plan = FlatPlan([3, 4097], "float16-mp", "mxnet")
    n = plan.n_elements
    w: Any = cp.linspace(-1, 1, n, dtype=cp.float32)
    m, s = cp.zeros(n, cp.float32), cp.zeros(n, cp.float32)
    st = CupyFlatStepper(plan, w, m, s)
    assert st.w is w and st.m is m and st.s is s
    before = cp.asnumpy(w)
    g = cp.ones(n, cp.float16)
    assert not st.step(g, rescale_grad=float("nan"))  # skip rule: no launch
    assert same_bits(cp.asnumpy(w), before) and list(plan.t) == [1, 1]
    assert st.step(g)
    st.synchronize()
    assert (cp.asnumpy(w) < before).all()
    assert st.w16 is not None and same_bits(cp.asnumpy(st.w16), cp.asnumpy(w).astype(np.float16))


@pytest.mark.gpu
@needs_device
def test_is_an_implementation(cupy_backend: CupyBackend) -> None:
    assert isinstance(cupy_backend, Implementation)
    assert cupy_backend.name == "cupy"
    assert set(cupy_backend.profiles) == {"mxnet", "mxnet-doc"}
