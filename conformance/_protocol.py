"""The in-process contract between the runner and an implementation under test.

An implementation is any object with the attributes and the ``run`` method of
:class:`Implementation`. The runner builds one :class:`RunRequest` per case and expects, for
every step and every parameter, a :class:`ParamResult`. Arrays in a request are fresh copies
that the implementation may modify in place.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from adabelief_reference import DTYPES, CaseInputs, Hyperparameters

__all__ = [
    "NUMPY_DTYPES",
    "Implementation",
    "ParamResult",
    "ParamState",
    "RunRequest",
    "Step",
    "request_from_case",
]

# dtype name -> (gradient/stored-weight dtype, master-weight dtype, state dtype)
NUMPY_DTYPES: dict[str, tuple[np.dtype, np.dtype, np.dtype]] = {
    name: (np.dtype(spec.storage.name), np.dtype(spec.master.name), np.dtype(spec.compute.name))
    for name, spec in DTYPES.items()
}


@dataclass(frozen=True)
class ParamState:
    """One parameter before the case's first step.

    ``w`` is the master weight (float32 for ``float16-mp``), ``m`` and ``s`` the state, all 1-D.
    ``t`` counts the updates already applied: the first step uses update count ``t + 1``.
    """

    index: int
    w: np.ndarray
    m: np.ndarray
    s: np.ndarray
    t: int
    lr_mult: float
    wd_mult: float
    s_max: np.ndarray | None = None  # the AMSGrad maximum of s (amsgrad cases only)


@dataclass(frozen=True)
class Step:
    """One optimizer step: one gradient per parameter (storage dtype) and this step's rescale_grad."""

    grads: tuple[np.ndarray, ...]
    rescale_grad: float


@dataclass(frozen=True)
class RunRequest:
    case_id: str
    profile: str
    dtype: str
    hyperparameters: Hyperparameters
    params: tuple[ParamState, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class ParamResult:
    """A parameter's state after one step. ``w16`` is required for ``float16-mp`` only: the
    float16 weight the model sees, alongside the float32 master ``w``."""

    w: np.ndarray
    m: np.ndarray
    s: np.ndarray
    w16: np.ndarray | None = None
    s_max: np.ndarray | None = None  # required for amsgrad cases only


class CaseSkipped(Exception):
    """Raised by an implementation's ``run`` to decline a case it cannot express (a switch or
    an option its library lacks, clipping, a dtype): the case is reported as *skipped*, with the
    reason, never as failed or errored. The same in-process and through ``serve()``
    (spec/protocol.md#skipping-a-case)."""

    def __init__(self, reason: str, issue_url: str | None = None) -> None:
        self.reason = " ".join(str(reason).split()) or "skipped"
        self.issue_url = issue_url
        super().__init__(self.reason + (f" ({issue_url})" if issue_url else ""))


def skip_request(e: BaseException) -> CaseSkipped | None:
    """The skip an exception raised by ``run`` asks for: a :class:`CaseSkipped`, or (for adapters
    written before it existed) any exception with a string attribute ``skip_reason``."""
    if isinstance(e, CaseSkipped):
        return e
    reason = getattr(e, "skip_reason", None)
    return CaseSkipped(reason) if isinstance(reason, str) else None


@runtime_checkable
class Implementation(Protocol):
    """What the runner needs from an implementation under test."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def profiles(self) -> Collection[str]:
        """The profiles it implements, e.g. {"mxnet"}."""
        ...

    @property
    def dtypes(self) -> Collection[str]:
        """Of "float32", "float64", "float16-mp"."""
        ...

    def run(self, request: RunRequest) -> Sequence[Sequence[ParamResult]]:
        """Apply every step of ``request``; return, per step, one result per parameter."""
        ...


def request_from_case(case: CaseInputs, case_id: str = "") -> RunRequest:
    """Build the request for a case, with arrays in the dtypes the implementation receives."""
    g_dt, w_dt, s_dt = NUMPY_DTYPES[case.dtype]
    params = tuple(
        ParamState(
            index=p.index,
            w=np.array(p.w, dtype=w_dt),
            m=np.array(p.m, dtype=s_dt),
            s=np.array(p.s, dtype=s_dt),
            t=p.t,
            lr_mult=p.lr_mult,
            wd_mult=p.wd_mult,
            s_max=None if p.s_max is None else np.array(p.s_max, dtype=s_dt),
        )
        for p in case.params
    )
    steps = tuple(
        Step(tuple(np.array(g, dtype=g_dt) for g in st.grads), case.rescale_at(k))
        for k, st in enumerate(case.steps)
    )
    return RunRequest(case_id, case.profile, case.dtype, case.hyperparameters, params, steps)
