"""``fuzz``: property-based differential testing against the live exact reference (Hypothesis).

Cases of one profile and dtype are drawn over the whole input space: every value of the storage
formats (``floats(width=16/32/64)`` with NaN, infinities and subnormals), hyperparameters
(learning_rate, beta1 and beta2 in [0, 1), epsilon 0 and tiny, wd, rescale_grad 0/NaN/inf,
clip_gradient None, positive, 0, negative), t from 0 to 2**53 - 1, and small shapes (1-2
parameters of 1-4 elements, 1-3 steps). Each case's expectations come from the live reference
(the fast path of reference/_fast.py, mpmath for what it cannot settle) and are checked with the
runner's comparison (:func:`~adabelief_conformance._compare.run_case`). A failing case is judged
again on its mpmath-proven expectations (``adabelief_reference.golden``), written in the vector
format, validated against the schema and parsed back by the loader's own parser: exactly what
``check`` does with a vector file. Hypothesis shrinks it to a minimal one, written as a one-case
vector file that ``adabelief-conformance check TARGET --vectors FILE`` reruns.

Half of the cases hold only moderate values and, in the other half, one value in four is
exotic: most mistakes show on ordinary inputs and a failure then shrinks to an ordinary case.
Hyperparameters whose rounding to the compute format changes their class (underflow to 0,
overflow to infinity, a beta rounding to 1) are drawn too: the reference makes such cases
implementation-defined (see ``HYPERPARAMETERS_CHANGING_CLASS``).

Runs are reproducible: the seed fixes Hypothesis' choices and no example database is used.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
from adabelief_reference import (
    DTYPES,
    CaseInputs,
    Format,
    Hyperparameters,
    ParamInput,
    StepInput,
    golden,
    profile_named,
    profile_names,
)
from adabelief_reference._generate import _document, dumps
from adabelief_reference._suites import Test as _VectorTest
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as _hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from ._compare import CaseOutcome, run_case
from ._errors import UsageError
from ._protocol import Implementation
from ._vectors import VectorCase, _parse_case, _validator, live_vector_case

__all__ = ["SUITE", "FuzzResult", "case_strategy", "describe_case", "fuzz", "vector_document"]

SUITE = "fuzz"  # the suite name of the vector files fuzz writes (case ids are fuzz-<sha256>)
_DESCRIPTION = "A failing case found and shrunk by adabelief-conformance fuzz."
_MAX_T = 2**53 - 1  # the largest t the vector format holds (spec/vector-format.md)
# Draw hyperparameters whose rounding to the compute format changes their class: nonzero values
# that round to 0 (|x| <= half the least subnormal), finite values that round to infinity
# (|x| >= the overflow threshold), and betas below 1 that round to 1. An implementation may round
# hyperparameters (MXNet does), and then gets 0 * inf = NaN (or 1 - beta1 = 0 and a division by
# zero) where the reference's first-order analysis of the exact values expects a number; e.g.
# float32, beta2 = 1e-123 and s = inf: the reference expects s = inf, the rounded beta2 gives NaN.
# The reference makes such cases implementation-defined (reference/_exact.py,
# _rounding_changes_class); set this to False to draw such values as what they round to instead.
HYPERPARAMETERS_CHANGING_CLASS = True


@dataclass(frozen=True)
class FuzzResult:
    """What a fuzzing run found.

    ``failed``: a counterexample (or a reference error) was found. ``message``: a report for the
    terminal; on failure its last line is ``You can reproduce this with: adabelief-conformance
    check TARGET --vectors FILE`` (the CLI substitutes the real target for ``TARGET``).
    ``vector_path``: the vector file holding the shrunk case, or None. ``examples``: how many
    cases were checked, shrinking included. ``case`` and ``outcome``: the shrunk case and the
    implementation's outcome on it.
    """

    failed: bool
    message: str
    vector_path: Path | None = None
    examples: int = 0
    case: CaseInputs | None = None
    outcome: CaseOutcome | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


# ----- strategies --------------------------------------------------------------------------------

def _mostly(ordinary: st.SearchStrategy[Any],
            unusual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Ordinary values three times in four: most mistakes only show on ordinary inputs, and
    Hypothesis shrinks towards the first alternative. (Not ``one_of``, which draws uniformly
    among the branches of its flattened, deduplicated alternatives.)"""
    return st.sampled_from((ordinary, ordinary, ordinary, unusual)).flatmap(_same)


def _same(x: Any) -> Any:
    return x


def _float_values(fmt: Format, *, nonnegative: bool = False,
                  exotic: bool = True) -> st.SearchStrategy[float]:
    """Values of ``fmt`` (as Python floats): moderate ones, and where ``exotic``, one in four
    anything in the whole range (subnormals, the largest values, infinities, NaN) or an edge."""
    width: Any = fmt.bits
    moderate = st.floats(0.0 if nonnegative else -4.0, 4.0, width=width)
    if not exotic:
        return moderate
    biggest = float(fmt.max_finite)
    tiny = float(fmt.min_subnormal)
    edges = [0.0, 1.0, math.inf, math.nan, biggest, tiny, math.ldexp(1.0, fmt.emin)]
    if not nonnegative:
        edges += [-0.0, -1.0, -math.inf, -biggest, -tiny]
    # s >= 0 is the state's invariant, but a NaN that reached s is a state too.
    anything = st.floats(min_value=0.0 if nonnegative else None, width=width,
                         allow_nan=not nonnegative, allow_infinity=True, allow_subnormal=True)
    return _mostly(moderate, st.one_of(anything, st.sampled_from(edges)))


def _keep_class(fmt: Format, *, beta: bool = False) -> Any:
    """A map that replaces a binary64 hyperparameter whose rounding to ``fmt`` changes its class
    by the value it rounds to: the signed zero or infinity, or for a ``beta`` that rounds to 1,
    the largest value of ``fmt`` below 1 (see HYPERPARAMETERS_CHANGING_CLASS)."""
    half_tiny = float(fmt.min_subnormal) / 2
    threshold = float(fmt.overflow_threshold) if fmt.bits < 64 else math.inf
    rounds_to_one = 1.0 - math.ldexp(1.0, -fmt.precision - 1)  # halfway: ties to even give 1
    below_one = 1.0 - math.ldexp(1.0, -fmt.precision)

    def keep(x: float) -> float:
        if HYPERPARAMETERS_CHANGING_CLASS or not math.isfinite(x):
            return x
        if abs(x) <= half_tiny:  # rounds to zero (ties to even at exactly half)
            return math.copysign(0.0, x)
        if abs(x) >= threshold:
            return math.copysign(math.inf, x)
        if beta and fmt.bits < 64 and x >= rounds_to_one:
            return below_one
        return x

    return keep


def _rescale_values() -> st.SearchStrategy[float]:
    """rescale_grad: mostly 1 or moderate, else 0, NaN, infinities (the skip rule) or anything."""
    special = [0.0, -0.0, math.nan, math.inf, -math.inf, -1.0, 1e30, 5e-324]
    return _mostly(st.one_of(st.just(1.0), st.floats(1e-3, 10.0)),
                   st.one_of(st.sampled_from(special), st.floats()))


def _hyperparameters(compute: Format) -> st.SearchStrategy[Hyperparameters]:
    keep = _keep_class(compute)
    keep_beta = _keep_class(compute, beta=True)
    below_one = math.nextafter(1.0, 0.0)

    def beta(default: float) -> st.SearchStrategy[float]:
        return _mostly(st.one_of(st.just(default), st.floats(0.0, 1.0, exclude_max=True)),
                       st.sampled_from([0.0, 0.5, below_one, 1e-30])).map(keep_beta)

    def clip(c: float | None) -> float | None:
        return None if c is None else keep(c)

    return st.builds(
        Hyperparameters,
        learning_rate=_mostly(st.one_of(st.just(1e-3), st.floats(1e-4, 1.0)),
                              st.sampled_from([0.0, 1e-30, 10.0, 1e3])).map(keep),
        beta1=beta(0.9),
        beta2=beta(0.999),
        epsilon=_mostly(st.one_of(st.just(1e-6), st.sampled_from([1e-8, 1e-3]), st.floats(1e-8, 1e-2)),
                        st.one_of(st.sampled_from([0.0, 5e-324, 1e-45, 1e-30, 1.0]),
                                  st.floats(0.0, 1e3))).map(keep),
        correct_bias=st.sampled_from([True, True, True, False]),
        wd=_mostly(st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
                   st.sampled_from([1e-4, 10.0, 1e30])).map(keep),
        rescale_grad=_rescale_values().map(keep),
        # None or positive (applied); 0, negative or NaN disable it (mxnet) or are
        # implementation-defined (mxnet-doc); inf clamps nothing.
        clip_gradient=_mostly(
            st.one_of(st.none(), st.floats(0.0, 4.0, exclude_min=True)),
            st.one_of(st.sampled_from([0.0, -0.0, -1.0, math.inf, -math.inf, math.nan, 1e-30]),
                      st.floats(-10.0, 0.0))).map(clip),
    )


def case_strategy(profile: str, dtype: str) -> st.SearchStrategy[CaseInputs]:
    """Small cases of ``profile`` and ``dtype`` over the whole input space."""
    spec = DTYPES[dtype]
    # Half of the cases hold only moderate values (most mistakes show there, and a failure
    # shrinks to such a case when it can); in the other half any element may be exotic.
    values_of = {
        exotic: (_float_values(spec.master, exotic=exotic),
                 _float_values(spec.compute, exotic=exotic),
                 _float_values(spec.compute, nonnegative=True, exotic=exotic),
                 _float_values(spec.storage, exotic=exotic))
        for exotic in (False, True)
    }
    t_values = _mostly(st.integers(0, 10),
                       st.one_of(st.integers(0, _MAX_T),
                                 st.sampled_from([10**6, 2**31 - 1, 2**32, _MAX_T])))
    mults = st.sampled_from([1.0, 0.5, 2.0, 0.0])
    hp_values = _hyperparameters(spec.compute)
    prof = profile_named(profile)
    if prof.stored_epsilon == "eps_root":  # optax: its own stored epsilon
        keep = _keep_class(spec.compute)
        eps_roots = _mostly(st.sampled_from([0.0, 1e-16, 1e-8]),
                            st.one_of(st.sampled_from([5e-324, 1e-45, 1.0]), st.floats(0.0, 1e3)))
        hp_values = st.tuples(hp_values, eps_roots.map(keep)).map(
            lambda x: replace(x[0], eps_root=x[1]))
    rescales = _mostly(st.none(), _rescale_values().map(_keep_class(spec.compute)))

    @st.composite
    def build(draw: st.DrawFn) -> CaseInputs:
        hp = draw(hp_values)
        w_values, m_values, s_values, g_values = values_of[draw(st.booleans())]
        sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
        n_steps = draw(st.integers(1, 3))

        def values(strategy: st.SearchStrategy[float], n: int) -> tuple[float, ...]:
            return tuple(draw(st.lists(strategy, min_size=n, max_size=n)))

        # the profile's switches (spec/profiles.md#switches), each one of the values it lists
        switches = {k: draw(st.sampled_from(v)) for k, v in sorted(prof.switches.items())}
        hp = replace(hp, **switches)
        params = tuple(
            ParamInput(w=values(w_values, n), m=values(m_values, n), s=values(s_values, n),
                       t=draw(t_values), lr_mult=draw(mults), wd_mult=draw(mults), index=i,
                       s_max=values(s_values, n) if hp.amsgrad else None)
            for i, n in enumerate(sizes))
        steps = tuple(StepInput(tuple(values(g_values, n) for n in sizes), draw(rescales))
                      for _ in range(n_steps))
        return CaseInputs(profile, dtype, hp, params, steps)

    return build()


# ----- cases through the vector format -----------------------------------------------------------

def vector_document(case: CaseInputs, comment: str = "", seed: int | None = None) -> dict[str, Any]:
    """A complete one-case vector file (spec/vector-format.md) holding ``case`` and its golden
    expectations, in suite ``fuzz``."""
    doc = _document(SUITE, [(_VectorTest(case, comment, ()), golden(case))], mpmath.__version__,
                    description=_DESCRIPTION)
    if seed is not None:
        doc["generator"]["seed"] = seed
    return doc


def _load_document(text: str, name: str) -> VectorCase:
    """Parse a document as ``load_file`` parses a file: JSON, the schema, the loader's parser."""
    doc = json.loads(text)
    _validator()[0](doc)
    group = doc["testGroups"][0]
    return _parse_case(name, doc["suite"], group, group["tests"][0])


def _fmt(xs: Sequence[float]) -> str:
    return "[" + ", ".join(repr(x) for x in xs) + "]"


def describe_case(case: CaseInputs) -> str:
    """A compact description: non-default hyperparameters, then one line per parameter and step."""
    hp, default = case.hyperparameters, Hyperparameters()
    changed = [f"{k}={getattr(hp, k)!r}" for k in default.__dataclass_fields__
               if repr(getattr(hp, k)) != repr(getattr(default, k))]
    lines = [f"{case.profile}/{case.dtype}, hyperparameters: {', '.join(changed) or 'defaults'}"]
    for p in case.params:
        mult = ("" if (p.lr_mult, p.wd_mult) == (1.0, 1.0)
                else f" lr_mult={p.lr_mult!r} wd_mult={p.wd_mult!r}")
        lines.append(f"param {p.index}: w={_fmt(p.w)} m={_fmt(p.m)} s={_fmt(p.s)} t={p.t}{mult}")
    for k, stp in enumerate(case.steps):
        r = "" if stp.rescale_grad is None else f" rescale_grad={stp.rescale_grad!r}"
        lines.append(f"step {k}: g={', '.join(_fmt(g) for g in stp.grads)}{r}")
    return "\n".join(lines)


# ----- the run -----------------------------------------------------------------------------------

class _Counterexample(AssertionError):
    """The implementation failed (or errored on) a drawn case."""


class _ReferenceFailure(AssertionError):
    """The reference itself could not evaluate a drawn case (a reference bug)."""


@dataclass
class _Found:
    case: CaseInputs
    text: str | None  # the vector file, when the reference evaluated the case
    outcome: CaseOutcome | None
    error: str = ""


def fuzz(impl: Implementation, *, profile: str = "mxnet", dtype: str = "float32",
         max_examples: int = 100, seed: int = 0, out_path: Path | None = None) -> FuzzResult:
    """Check ``impl`` against the live reference on ``max_examples`` drawn cases.

    On a failure, Hypothesis shrinks the case; the shrunk case is written as a vector file to
    ``out_path`` (default ``./fuzz-PROFILE-DTYPE-seedSEED.json``) and the message ends with the
    ``check`` command that reruns it. Raises :class:`UsageError` for an unknown profile or dtype,
    or one that ``impl`` does not declare.
    """
    if profile not in profile_names():
        raise UsageError(f"unknown profile {profile!r}; expected one of "
                         f"{', '.join(profile_names())}")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if profile not in impl.profiles or dtype not in impl.dtypes:
        raise UsageError(f"{impl.name} does not implement profile {profile} / dtype {dtype} (it "
                         f"declares profiles {', '.join(sorted(impl.profiles))}; dtypes "
                         f"{', '.join(sorted(impl.dtypes))})")
    if max_examples < 1:
        raise UsageError(f"max_examples must be >= 1, got {max_examples}")
    found: list[_Found] = []
    calls = 0
    first_failure_at = 0

    def reference_failed(case: CaseInputs, error: str) -> _ReferenceFailure:
        """Record that the reference (or the format), not impl, failed on ``case``."""
        nonlocal first_failure_at
        found.append(_Found(case, None, None, error))
        first_failure_at = first_failure_at or calls
        return _ReferenceFailure(error)

    @_hypothesis_seed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
              report_multiple_bugs=False, verbosity=Verbosity.quiet, print_blob=False,
              suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink))
    @given(case_strategy(profile, dtype))
    def check_one(case: CaseInputs) -> None:
        nonlocal calls, first_failure_at
        calls += 1
        try:
            vc = live_vector_case(case, "<fuzz>", SUITE)[0]  # the fast reference path, mpmath behind
        except Exception as e:
            raise reference_failed(case, f"{type(e).__name__}: {e}") from e
        with np.errstate(all="ignore"):
            outcome = run_case(impl, vc, max_failures=3)
        if outcome.status not in ("failed", "errored"):
            return
        # A failure: judged again on the mpmath-proven vector file that will be written, read
        # back by the loader's own parser (schema included)
        try:
            text = dumps(vector_document(case, "found by adabelief-conformance fuzz", seed))
            vc = _load_document(text, "<fuzz>")
        except Exception as e:
            raise reference_failed(case, f"{type(e).__name__}: {e}") from e
        with np.errstate(all="ignore"):
            proven = run_case(impl, vc, max_failures=3)
        if proven.status not in ("failed", "errored"):
            raise reference_failed(case, "the fast reference path and mpmath disagree on this case")
        found.append(_Found(case, text, proven))
        first_failure_at = first_failure_at or calls
        raise _Counterexample(proven.message)

    try:
        check_one()
    except (AssertionError, HypothesisException):
        if not found:
            raise
    if not found:
        return FuzzResult(False, f"fuzz: {impl.name} passed {calls} cases of {profile}/{dtype} "
                                 f"(seed {seed}): no counterexample found", examples=calls)
    # Hypothesis replays the shrunk example last, so the last failure recorded is the minimal one.
    last = found[-1]
    head = (f"fuzz: {impl.name} fails a case of {profile}/{dtype} found after {first_failure_at} "
            f"cases (seed {seed}) and shrunk in {calls - first_failure_at} more:")
    if last.text is None or last.outcome is None:
        return FuzzResult(True, f"{head}\n{describe_case(last.case)}\nbut the reference itself failed "
                                f"on it ({last.error}): please report this case; it says nothing "
                                f"about {impl.name}", examples=calls, case=last.case)
    path = out_path if out_path is not None else Path(f"fuzz-{profile}-{dtype}-seed{seed}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(last.text, encoding="utf-8")
    out = last.outcome
    if out.failures:
        details = "\n".join(f"  {f.describe(out.id)}" for f in out.failures)
        verdict = f"failed ({out.n_failed_elements} failing elements):\n{details}"
    else:
        verdict = f"{out.status}: {out.message}"
    message = (f"{head}\n{describe_case(last.case)}\n{verdict}\nwrote the case to {path}\n"
               f"You can reproduce this with: adabelief-conformance check TARGET --vectors "
               f"{shlex.quote(str(path))}")
    return FuzzResult(True, message, path, calls, last.case, out)
