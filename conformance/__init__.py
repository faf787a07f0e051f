"""Conformance runner for MXNet's AdaBelief update: load vectors, run an implementation, compare."""

from __future__ import annotations

from ._protocol import (
    NUMPY_DTYPES,
    CaseSkipped,
    Implementation,
    ParamResult,
    ParamState,
    RunRequest,
    Step,
    request_from_case,
)

__version__ = "0.1.0"

__all__ = [
    "NUMPY_DTYPES",
    "CaseSkipped",
    "Implementation",
    "ParamResult",
    "ParamState",
    "RunRequest",
    "Step",
    "request_from_case",
]
