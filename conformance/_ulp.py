"""ULP arithmetic of spec/error-model.md, vectorised with NumPy.

``ulp(x)`` for |x| in [2**e, 2**(e+1)) is 2**(max(e, emin) - p + 1): the gap above |x| at a
power of two, the least subnormal at and below the normal range (so ulp(0) = least subnormal),
and infinity for non-finite x. ``ulp_distance`` counts the format values between two values with
integer arithmetic on their bit patterns, so it cannot overflow (inf vs -inf included).
"""

from __future__ import annotations

import numpy as np
from adabelief_reference import Format

__all__ = ["ordinal", "ulp", "ulp_distance"]

_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def ulp(x: np.ndarray | float, fmt: Format) -> np.ndarray:
    """ulp of each element of ``x`` in ``fmt`` (values are taken exactly, as float64)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(ax)
        _, e = np.frexp(np.where(finite, ax, 1.0))
        q = np.maximum(e.astype(np.int64) - 1, fmt.emin) - fmt.precision + 1
        out = np.ldexp(1.0, q)
    out = np.where(ax == 0, float(fmt.min_subnormal), out)
    return np.where(finite, out, np.inf)


def ordinal(x: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """(sign, magnitude) of the bit patterns of ``x`` stored in ``fmt``, magnitude as uint64.

    Magnitudes order the non-negative values of the format; -0 and +0 both have magnitude 0.
    """
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64).astype(fmt.name))
    bits = arr.view(_UINT[fmt.bits]).astype(np.uint64)
    sign_bit = np.uint64(1) << np.uint64(fmt.bits - 1)
    return (bits & sign_bit) != 0, bits & ~sign_bit


def ulp_distance(a: np.ndarray, b: np.ndarray, fmt: Format) -> np.ndarray:
    """Number of ``fmt`` values from a to b (uint64); NaN elements give the maximum uint64."""
    sa, ma = ordinal(a, fmt)
    sb, mb = ordinal(b, fmt)
    same = sa == sb
    diff = np.where(ma > mb, ma - mb, mb - ma)
    # Opposite signs: distance through zero; +0 and -0 are the same value.
    through_zero = ma + mb
    out = np.where(same, diff, through_zero)
    nan = np.isnan(np.asarray(a, dtype=np.float64)) | np.isnan(np.asarray(b, dtype=np.float64))
    return np.where(nan, np.iinfo(np.uint64).max, out).astype(np.uint64)
