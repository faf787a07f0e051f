"""IEEE 754 binary formats, exact rounding of mpmath values into them, and hex formatting.

Everything here works on exact values: an mpmath ``mpf`` is ``man * 2**exp`` with integer
``man``, so rounding to a format is integer arithmetic on the significand. Nothing is rounded
through float64 first, which would double-round float16 and float32 results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "FLOAT16",
    "FLOAT32",
    "FLOAT64",
    "FORMATS",
    "Format",
    "format_named",
    "hexfloat",
    "parse_hexfloat",
]


@dataclass(frozen=True)
class Format:
    """An IEEE 754 binary interchange format."""

    name: str
    bits: int
    precision: int  # significand bits, the hidden bit included
    emax: int

    @property
    def emin(self) -> int:
        return 1 - self.emax

    @property
    def unit_roundoff(self) -> Fraction:
        """u = 2**-p: the relative error bound of one round-to-nearest operation."""
        return Fraction(1, 2**self.precision)

    @property
    def min_subnormal(self) -> Fraction:
        return Fraction(1, 2 ** (self.precision - 1 - self.emin))

    @property
    def max_finite(self) -> Fraction:
        return Fraction(2 ** self.precision - 1, 2 ** (self.precision - 1)) * 2**self.emax

    @property
    def overflow_threshold(self) -> Fraction:
        """Exact values of at least this magnitude round to infinity (ties-to-even)."""
        return Fraction(2 ** (self.precision + 1) - 1, 2**self.precision) * 2**self.emax

    def quantum_exponent(self, e: int) -> int:
        """Exponent of the ulp for a value whose binary exponent is ``e`` (2**e <= |x| < 2**(e+1))."""
        return max(e, self.emin) - self.precision + 1

    def round_man_exp(self, man: int, exp: int) -> tuple[int, int] | None:
        """Round ``man * 2**exp`` (man >= 0) to nearest, ties to even.

        Returns (n, q) with the result ``n * 2**q``, or None when it overflows to infinity.
        """
        if man == 0:
            return (0, 0)
        e = exp + man.bit_length() - 1
        q = self.quantum_exponent(e)
        shift = q - exp
        if shift <= 0:
            n, q = man, exp
        else:
            n = man >> shift
            rem = man - (n << shift)
            half = 1 << (shift - 1)
            if rem > half or (rem == half and n & 1):
                n += 1
        if n and (n.bit_length() + q - 1) > self.emax:
            return None
        return (n, q)

    def round_fraction(self, x: Fraction) -> float:
        """Correctly round an exact rational to this format, returned as a Python float."""
        if x == 0:
            return 0.0
        sign = -1.0 if x < 0 else 1.0
        a = abs(x)
        # Scale to an integer significand with enough guard bits, keeping the sticky bit.
        e = a.numerator.bit_length() - a.denominator.bit_length()
        shift = self.precision + 3 - e + 64
        scaled = a * (Fraction(2) ** shift)
        man = scaled.numerator // scaled.denominator
        sticky = 1 if man * scaled.denominator != scaled.numerator else 0
        r = self.round_man_exp((man << 1) | sticky, -shift - 1)
        if r is None:
            return sign * math.inf
        n, q = r
        return sign * math.ldexp(float(n), q)

    def is_representable(self, x: float) -> bool:
        """True when the finite float ``x`` is exactly a value of this format."""
        if not math.isfinite(x):
            return True
        return self.round_fraction(Fraction(x)) == x

    def ulp(self, x: float) -> float:
        """ulp(x): the gap between the two format values around |x|, with ulp(0) = min subnormal.

        For |x| in [2**e, 2**(e+1)) this is 2**(max(e, emin) - p + 1); at a power of two it is the
        gap above. Non-finite x has ulp inf.
        """
        if not math.isfinite(x):
            return math.inf
        if x == 0:
            return float(self.min_subnormal)
        e = math.frexp(abs(x))[1] - 1
        return math.ldexp(1.0, self.quantum_exponent(e))


FLOAT16 = Format("float16", 16, 11, 15)
FLOAT32 = Format("float32", 32, 24, 127)
FLOAT64 = Format("float64", 64, 53, 1023)
FORMATS = {f.name: f for f in (FLOAT16, FLOAT32, FLOAT64)}


def format_named(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; expected one of {sorted(FORMATS)}") from None


def hexfloat(x: float) -> str:
    """C99 ``%a`` style hex without trailing zero digits: 0x1.8p+0, -0x0p+0, inf, -inf, nan."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    h = float.hex(x)
    mant, _, exp = h.partition("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{exp}"


def parse_hexfloat(text: str) -> float:
    """Inverse of :func:`hexfloat`; accepts any ``float.fromhex`` spelling and inf/nan."""
    return float.fromhex(text)
