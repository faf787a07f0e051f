"""High-precision mpmath reference for MXNet's AdaBelief update (see spec/).

Public surface: the case model, :func:`golden` (provably correctly rounded expectations with
error scales), :func:`fast_golden` and :func:`fast_expected` (the same expectations from the fast
double-double path, mpmath only for the elements it cannot settle), the IEEE formats and the
vector generator.
"""

from __future__ import annotations

from ._fast import FastExpected, fast_expected, fast_golden
from ._formats import (
    FLOAT16,
    FLOAT32,
    FLOAT64,
    FORMATS,
    Format,
    format_named,
    hexfloat,
    parse_hexfloat,
)
from ._golden import (
    MAX_PRECISION,
    START_PRECISION,
    Expectation,
    Finite,
    GoldenCase,
    Special,
    golden,
    tolerances,
)
from ._model import (
    DEFAULT_HYPERPARAMETERS,
    DTYPES,
    CaseInputs,
    DtypeSpec,
    Hyperparameters,
    ParamInput,
    StepInput,
)
from ._profiles import Profile, profile_named, profile_names

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "DTYPES",
    "FLOAT16",
    "FLOAT32",
    "FLOAT64",
    "FORMATS",
    "MAX_PRECISION",
    "START_PRECISION",
    "CaseInputs",
    "DtypeSpec",
    "Expectation",
    "FastExpected",
    "Finite",
    "Format",
    "GoldenCase",
    "Hyperparameters",
    "ParamInput",
    "Profile",
    "Special",
    "StepInput",
    "fast_expected",
    "fast_golden",
    "format_named",
    "golden",
    "hexfloat",
    "parse_hexfloat",
    "profile_named",
    "profile_names",
    "tolerances",
]
