"""Diagnose a failing implementation: which profile or catalogued mistake reproduces its outputs?

``diagnose(impl, cases)`` runs the implementation on the cases, then runs every *entry* on the
cases it fails: each profile of spec/profiles.json (the catalogue's spec formula evaluated under
that profile) and every mutant of the mistake catalogue (spec/mistakes.md). An entry *explains* a
failing case when the implementation's outputs are within tolerance of the entry's outputs on
every element, with the metric of the error model (spec/error-model.md):

    |got - entry| <= N * max(ulp(got), ulp(entry), ulp(sigma))

where N is the case's tolerance for that output and sigma the vector's error scale; NaN matches
NaN and an infinity the same infinity. Where the two outputs differ but both pass the vector
(alternatives such as NaN or inf that depend on the order of operations, implementation-defined
elements) the element matches too: the specification cannot tell them apart.

Entries are ranked by the failing cases they explain, then by the passing cases whose outputs
they also reproduce (an entry that reproduces the failures *and* the passes is the
better explanation), then by the cases they reproduce bit for bit. Entries with bit-identical
outputs on every examined case are one row.

When no single entry explains every failure, pairs of mutants (both mistakes at once) are
screened on the failures left unexplained and the promising ones ranked too, so that an
implementation with two mistakes is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from itertools import combinations

import numpy as np
from adabelief_reference import profile_named, profile_names
from adabelief_reference._profiles import switch_label, switch_settings

from ._catalogue import MUTANTS, CatalogueImplementation, Knobs
from ._compare import CaseOutcome, compare_array, flatten_results
from ._errors import UsageError
from ._protocol import Implementation, ParamResult, RunRequest, request_from_case
from ._ulp import ulp
from ._vectors import KIND_ANY, VectorCase

__all__ = ["Diagnoses", "Diagnosis", "diagnose", "format_diagnosis"]

# Pairs of mutants are screened on this many failing cases, and at most PAIR_CANDIDATES of them
# (those explaining the most of the screened cases) are scored on every case.
PAIR_SCREEN_CASES = 12
PAIR_CANDIDATES = 5
# Failing case ids listed per row as examples of what the entry does not explain.
UNEXPLAINED_EXAMPLES = 5


@dataclass(frozen=True)
class Diagnosis:
    """One row of the ranking: an entry and how well it reproduces the implementation.

    ``kind`` is "profile", "mutant" or "pair". ``explained`` of ``failing`` failing cases have
    outputs within tolerance of the entry's; ``reproduced`` of ``passing`` passing cases too.
    ``equivalents`` are other entries whose outputs were bit-identical on every examined case.
    """

    name: str
    kind: str
    explained: int
    failing: int
    reproduced: int
    passing: int
    equivalents: tuple[str, ...] = ()
    unexplained: tuple[str, ...] = ()  # the first few failing case ids it does not explain

    @property
    def reproduced_passing(self) -> int:
        return self.reproduced

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.equivalents)

    @property
    def explains_all(self) -> bool:
        return self.failing > 0 and self.explained == self.failing

    def describe(self) -> str:
        label = " + ".join(_label(part) for part in self.name.split(" + "))
        text = f"outputs match {label} on {self.explained} of {self.failing} failing cases"
        if self.passing:
            text += f" (and {self.reproduced} of {self.passing} passing cases)"
        if self.equivalents:
            text += "; identical outputs: " + ", ".join(f"'{n}'" for n in self.equivalents)
        return text


def _label(entry: str) -> str:
    """profile 'NAME' with SWITCHES, or 'MUTANT'."""
    if entry.startswith("profile "):
        base, _, switches = entry.removeprefix("profile ").partition(" with ")
        return f"profile '{base}'" + (f" with {switches}" if switches else "")
    return f"'{entry}'"


class Diagnoses(list[Diagnosis]):
    """The ranked rows, best first, with the counts of the implementation's own run."""

    def __init__(self, rows: Sequence[Diagnosis] = (), *, implementation: str = "",
                 failing: int = 0, passing: int = 0, errored: int = 0, skipped: int = 0) -> None:
        super().__init__(rows)
        self.implementation = implementation
        self.failing = failing  # failed cases (with outputs): the ones to explain
        self.passing = passing
        self.errored = errored  # raised or returned malformed results: nothing to compare
        self.skipped = skipped


# ----- entries -----------------------------------------------------------------------------------

def profile_label(profile: str, switches: dict[str, bool]) -> str:
    """'profile NAME', with the switch settings when the profile has switches."""
    label = f"profile {profile}"
    if switches:
        label += " with " + switch_label(switches)
    return label


class _UnderProfile:
    """The catalogue's spec formula (or a mutant) evaluated as if every case were of ``profile``,
    with the profile's switches set as given."""

    version = "catalogue"
    dtypes = CatalogueImplementation.dtypes

    def __init__(self, profile: str, switches: dict[str, bool] | None = None,
                 knobs: Knobs | None = None, name: str | None = None) -> None:
        self.switches = dict(switches or {})
        self.name = name or profile_label(profile, self.switches)
        self.profile = profile
        self.profiles = frozenset(profile_names())
        self._inner = CatalogueImplementation(self.name, knobs or Knobs())

    def run(self, request: RunRequest) -> Sequence[Sequence[ParamResult]]:
        from adabelief_reference._model import SWITCHES

        hp = replace(request.hyperparameters, **{k: self.switches.get(k, False) for k in SWITCHES})
        return self._inner.run(replace(request, profile=self.profile, hyperparameters=hp))


def _merge(a: Knobs, b: Knobs) -> Knobs | None:
    """Both mistakes at once, or None when they set the same knob differently."""
    default = Knobs()
    changes = {}
    for f in fields(Knobs):
        va, vb, vd = getattr(a, f.name), getattr(b, f.name), getattr(default, f.name)
        if va != vd and vb != vd and va != vb:
            return None
        changes[f.name] = va if va != vd else vb
    return Knobs(**changes)


def _profile_entries() -> list[_UnderProfile]:
    return [_UnderProfile(p, sw) for p in profile_names() for sw in switch_settings(profile_named(p))]


def _entries() -> list[tuple[str, str, Implementation]]:
    out: list[tuple[str, str, Implementation]] = []
    for impl in _profile_entries():
        out.append((impl.name, "profile", impl))
    for name, kn in MUTANTS.items():
        out.append((name, "mutant", CatalogueImplementation(name, kn)))
    return out


# ----- matching ----------------------------------------------------------------------------------

def _outputs(entry: Implementation, vc: VectorCase) -> dict[str, np.ndarray] | None:
    try:
        with np.errstate(all="ignore"):
            return flatten_results(vc, entry.run(request_from_case(vc.case, vc.id)))
    except Exception:  # an entry that cannot run a case explains nothing there
        return None


@dataclass
class _Observed:
    """A case and the implementation's outputs on it, with what is computed once per case."""

    vc: VectorCase
    got: dict[str, np.ndarray]
    _admissible: dict[str, np.ndarray] = field(default_factory=dict)
    _ulp_sigma: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.fingerprint = _fingerprint(self.got)

    def admissible(self, name: str) -> np.ndarray:
        """Which of the implementation's elements pass the vector."""
        if name not in self._admissible:
            exp = self.vc.expected[name]
            tol = self.vc.tolerance.get(name, 2.0)
            self._admissible[name] = compare_array(exp, self.got[name], tol).ok
        return self._admissible[name]

    def ulp_sigma(self, name: str) -> np.ndarray:
        if name not in self._ulp_sigma:
            exp = self.vc.expected[name]
            self._ulp_sigma[name] = ulp(exp.sigma, exp.fmt)
        return self._ulp_sigma[name]


def _matches(obs: _Observed, ref: dict[str, np.ndarray]) -> bool:
    """Are the implementation's outputs within tolerance of the entry's on every element?

    An element also matches where both outputs are admissible for the vector (e.g. NaN and inf
    where the vector lists both as alternatives, or an implementation-defined element): there the
    two computations agree as far as the specification can tell.
    """
    vc, got = obs.vc, obs.got
    for n, exp in vc.expected.items():
        if n not in got or n not in ref:
            return False
        a, b = got[n], ref[n]
        with np.errstate(all="ignore"):
            ok = (a == b) | (np.isnan(a) & np.isnan(b))
            if ok.all():  # the common case: bit-identical up to NaN payloads and signed zeros
                continue
            tol = vc.tolerance.get(n, 2.0)
            # max(ulp(a), ulp(b)) is the ulp of the larger magnitude: ulp is monotonic in |x|.
            scale = np.maximum(ulp(np.maximum(np.abs(a), np.abs(b)), exp.fmt), obs.ulp_sigma(n))
            ok |= np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= tol * scale)
        ok |= exp.kind == KIND_ANY
        if ok.all():
            continue
        # Where they differ, both must pass the vector; the implementation's side is cached.
        if not (ok | obs.admissible(n)).all():
            return False
        if not (ok | compare_array(exp, b, tol).ok).all():
            return False
    return True


def _fingerprint(outs: dict[str, np.ndarray] | None) -> bytes:
    if outs is None:
        return b"-"
    # NaN payloads do not matter; -0.0 and 0.0 do not either (they compare equal).
    return b"|".join(np.where(np.isnan(v), np.nan, v + 0.0).tobytes()
                     for _, v in sorted(outs.items()))


@dataclass
class _Score:
    name: str
    kind: str
    order: int
    explained: int = 0
    reproduced: int = 0
    identical: int = 0  # cases with bit-identical outputs: breaks ties in favour of the exact entry
    unexplained: list[str] = field(default_factory=list)  # the first failing case ids not explained
    prints: list[bytes] = field(default_factory=list)  # fingerprints of its outputs, case by case


def _rank(s: _Score) -> tuple[int, int, int, int]:
    return (-s.explained, -s.reproduced, -s.identical, s.order)


def _score(name: str, kind: str, order: int, entry: Implementation,
           failing: Sequence[_Observed], passing: Sequence[_Observed]) -> _Score:
    sc = _Score(name, kind, order)
    for group, is_failing in ((failing, True), (passing, False)):
        for obs in group:
            ref = _outputs(entry, obs.vc)
            sc.prints.append(_fingerprint(ref))
            sc.identical += sc.prints[-1] == obs.fingerprint
            hit = ref is not None and _matches(obs, ref)
            if is_failing:
                sc.explained += hit
                if not hit and len(sc.unexplained) < max(UNEXPLAINED_EXAMPLES, PAIR_SCREEN_CASES):
                    sc.unexplained.append(obs.vc.id)
            else:
                sc.reproduced += hit
    return sc


def _pair_scores(singles: Sequence[_Score], failing: Sequence[_Observed],
                 passing: Sequence[_Observed]) -> list[_Score]:
    """Two explanations at once, for failures that no single entry explains.

    Every compatible pair of mutants, and every profile setting with every mutant (a library of
    another family with one of its quirks, e.g. TensorFlow's float32 hyperparameters), is
    screened on a few of the failing cases that the best single entry leaves unexplained; the
    pairs that explain some of those are scored in full. Screening the ~700 pairs on a dozen
    cases costs a few seconds.
    """
    best = min(singles, key=_rank)
    left = set(best.unexplained)
    sample = [obs for obs in failing if obs.vc.id in left] or list(failing)
    sample = sample[:PAIR_SCREEN_CASES]
    candidates: list[Implementation] = []
    for (na, ka), (nb, kb) in combinations(MUTANTS.items(), 2):
        merged = _merge(ka, kb)
        if merged is not None:
            candidates.append(CatalogueImplementation(f"{na} + {nb}", merged))
    for prof in _profile_entries():
        candidates += [_UnderProfile(prof.profile, prof.switches, kn, f"{prof.name} + {nm}")
                       for nm, kn in MUTANTS.items()]
    screened: list[tuple[int, int]] = []
    for k, entry in enumerate(candidates):
        hits = 0
        for obs in sample:
            ref = _outputs(entry, obs.vc)
            hits += ref is not None and _matches(obs, ref)
        if hits:
            screened.append((-hits, k))
    order = len(singles)
    out = []
    for _, k in sorted(screened)[:PAIR_CANDIDATES]:
        entry = candidates[k]
        out.append(_score(str(entry.name), "pair", order, entry, failing, passing))
        order += 1
    return out


# ----- the diagnosis -----------------------------------------------------------------------------

def _own_outcomes(impl: Implementation, cases: Sequence[VectorCase],
                  outcomes: Sequence[CaseOutcome] | None) -> list[CaseOutcome]:
    if outcomes is not None:
        by_id = {o.id: o for o in outcomes}
        missing = [c.id for c in cases if c.id not in by_id]
        if missing:
            raise UsageError(f"no outcome given for case {missing[0]} ({len(missing)} missing)")
        return [by_id[c.id] for c in cases]
    from ._runner import check

    report = check(impl, cases, max_failures=1)
    return [r.outcome for r in report.results]


def diagnose(impl: Implementation, cases: Sequence[VectorCase], *, top: int = 10,
             outcomes: Sequence[CaseOutcome] | None = None) -> Diagnoses:
    """Rank the profiles and the catalogued mistakes against ``impl``'s outputs on ``cases``.

    ``outcomes`` (one per case, matched by id, with ``outputs`` set, as :func:`check` and
    :func:`run_case` produce them) saves running ``impl`` again. Returns at most ``top`` rows,
    best first, as a :class:`Diagnoses` list that also carries the implementation's counts; it
    is empty when no case failed (see :func:`format_diagnosis`).
    """
    own = _own_outcomes(impl, cases, outcomes)
    failing = [_Observed(vc, o.outputs) for vc, o in zip(cases, own)
               if o.status == "failed" and o.outputs is not None]
    passing = [_Observed(vc, o.outputs) for vc, o in zip(cases, own)
               if o.status == "passed" and o.outputs is not None]
    errored = sum(o.status == "errored" or (o.status == "failed" and o.outputs is None) for o in own)
    def result(rows: Sequence[Diagnosis]) -> Diagnoses:
        return Diagnoses(rows, implementation=str(impl.name), failing=len(failing),
                         passing=len(passing), errored=errored,
                         skipped=sum(o.status == "skipped" for o in own))

    if not failing:
        return result([])
    entries = _entries()
    scores = [_score(name, kind, k, e, failing, passing)
              for k, (name, kind, e) in enumerate(entries)]
    if max(s.explained for s in scores) < len(failing):
        scores += _pair_scores(scores, failing, passing)
    scores.sort(key=_rank)
    rows: list[Diagnosis] = []
    seen: dict[bytes, int] = {}
    for s in scores:
        key = b"\0".join(s.prints)
        if key in seen:
            i = seen[key]
            rows[i] = replace(rows[i], equivalents=(*rows[i].equivalents, s.name))
            continue
        seen[key] = len(rows)
        rows.append(Diagnosis(s.name, s.kind, s.explained, len(failing), s.reproduced, len(passing),
                              unexplained=tuple(s.unexplained[:UNEXPLAINED_EXAMPLES])))
    return result(rows[: max(top, 1)])


def format_diagnosis(rows: Sequence[Diagnosis]) -> str:
    """A headline and a plain-text table of the ranking, for the terminal.

    The first line is the verdict: "conforms: nothing to diagnose", "outputs match 'ENTRY' on
    N of M failing cases", or "nothing explains the failures: ...".
    """
    if isinstance(rows, Diagnoses):
        failing, passing, errored = rows.failing, rows.passing, rows.errored
        who = rows.implementation or "the implementation"
    else:  # a plain list of rows
        failing = rows[0].failing if rows else 0
        passing = rows[0].passing if rows else 0
        errored, who = 0, "the implementation"
    if not failing:
        if errored:
            return (f"nothing to diagnose from outputs: {who} errored on {errored} case(s) "
                    "(raised or returned malformed results) and failed none; run `check` to see "
                    "the errors")
        return f"conforms: nothing to diagnose ({who} fails no case; {passing} passed)"
    best = rows[0] if rows else None
    lines = []
    if best is None or best.explained == 0:
        lines.append(f"nothing explains the failures: no profile or catalogued mistake reproduces "
                     f"the outputs of any of the {failing} failing cases (pairs of mistakes tried "
                     "too). The mistake is not in the catalogue (spec/mistakes.md); compare the "
                     "failing elements that `check` shows with spec/algorithm.md step by step.")
    else:
        lines.append(best.describe())
        if not best.explains_all:
            lines.append(f"no entry explains every failure; not explained by the best, e.g.: "
                         f"{', '.join(best.unexplained)}")
    lines.append(f"{who}: {failing} failing case(s), {passing} passing"
                 + (f", {errored} errored (not diagnosed)" if errored else ""))
    shown = [r for r in rows if r.explained]  # sorted: the rest explain nothing either
    if shown:
        width = min(max(len(r.name) for r in shown), 70)
        head = (f"{'#':>2}  {'entry':<{width}}  {'kind':<7}  {'failing explained':>17}  "
                f"{'passing reproduced':>18}")
        lines += ["", head, "-" * len(head)]
        for i, r in enumerate(shown, 1):
            name = r.name if len(r.name) <= width else r.name[: width - 1] + "…"
            lines.append(f"{i:>2}  {name:<{width}}  {r.kind:<7}  {f'{r.explained}/{r.failing}':>17}  "
                         f"{f'{r.reproduced}/{r.passing}':>18}")
            lines += [f"    = {eq}" for eq in r.equivalents]
        if len(shown) < len(rows):
            lines.append("(every other profile and catalogued mistake explains none of the "
                         "failing cases)")
    return "\n".join(lines)
