"""The measured tables of spec/mistakes.md, computed from the bundled vectors.

    python -m adabelief_conformance._catalogue_tables > /tmp/tables.md

Runs every catalogue entry on every bundled case and prints, as Markdown: per mutant the cases it
fails (per dtype, and per profile under which it is a mistake at all) with the median and least
of each failing case's largest error in ulp(σ); per conforming variant its largest error; and the
discrimination matrix (mutant × suite). The spec's tables are pasted from this output, so that
every number in them is one this command reproduces.
"""

from __future__ import annotations

import collections
import math
import statistics
import sys
from collections.abc import Sequence

import numpy as np
from adabelief_reference import profile_named, profile_names

from ._catalogue import MUTANTS, VARIANTS, CatalogueImplementation, Knobs, applies_to
from ._compare import run_case
from ._vectors import VectorCase, load_vectors

__all__ = ["main", "tables"]

_DTYPES = ("float32", "float64", "float16-mp")
_SHORT = {"amsgrad": "ams", "decoupled-weight-decay": "dwd", "rectification": "rect", "cancellation": "canc", "clipping": "clip", "defaults": "def", "epsilon": "eps",
          "hyperparameter-grid": "grid", "magnitudes": "mag", "multi-parameter": "multi",
          "no-bias-correction": "nobc", "rescale": "resc", "special-values": "spec",
          "timestep": "time", "trajectories": "traj", "weight-decay": "wd"}


def _worst(out: object) -> float:
    errs = getattr(out, "max_err_sigma", {}) or {}
    return max(errs.values(), default=math.inf)


def _num(x: float) -> str:
    if math.isinf(x):
        return "∞"
    if x >= 1e4:
        m, e = f"{x:.1e}".split("e")
        return f"{m}·10^{int(e)}"
    return f"{x:.3g}"


def _run(name: str, knobs: Knobs, cases: Sequence[VectorCase]) -> list[tuple[VectorCase, str, float]]:
    impl = CatalogueImplementation(name, knobs)
    rows = []
    with np.errstate(all="ignore"):
        for vc in cases:
            out = run_case(impl, vc)
            rows.append((vc, out.status, _worst(out)))
    return rows


def tables(cases: Sequence[VectorCase]) -> str:
    profiles = list(profile_names())
    lines = ["### Mutants: cases caught", "",
             "| Mutant | Caught (f32 / f64 / f16-mp) | per profile (" + " / ".join(profiles)
             + "; – where not a mistake) | median / least ulp(σ) |",
             "| --- | --- | --- | --- |"]
    matrix: dict[str, collections.Counter[str]] = {}
    for name, kn in MUTANTS.items():
        rows = _run(name, kn, cases)
        failed = [(vc, e) for vc, st, e in rows if st != "passed"]
        matrix[name] = collections.Counter(vc.suite for vc, _ in failed)
        by_dtype = [sum(vc.dtype == d for vc, _ in failed) for d in _DTYPES]
        per_profile = [str(sum(vc.profile == p for vc, _ in failed))
                       if applies_to(kn, profile_named(p)) else "–" for p in profiles]
        errs = [e for _, e in failed]
        margin = f"{_num(statistics.median(errs))} / {_num(min(errs))}" if errs else "—"
        lines.append(f"| `{name}` | {len(failed)} ({' / '.join(map(str, by_dtype))}) | "
                     f"{' / '.join(per_profile)} | {margin} |")
    lines += ["", "### Conforming variants: largest error", "",
              "| Variant | Largest error, ulp(σ) | failing cases |", "| --- | --- | --- |"]
    for name, kn in VARIANTS.items():
        rows = _run(name, kn, cases)
        worst = max((e for _, st, e in rows if st == "passed"), default=0.0)
        lines.append(f"| `{name}` | {worst:.2f} | {sum(st != 'passed' for _, st, _ in rows)} |")
    suites = sorted({vc.suite for vc in cases})
    total = collections.Counter(vc.suite for vc in cases)
    lines += ["", "### Discrimination matrix", "",
              "| Mutant | " + " | ".join(f"`{_SHORT.get(s, s)}`" for s in suites) + " |",
              "| --- | " + " | ".join("---:" for _ in suites) + " |",
              "| *cases in the suite* | " + " | ".join(str(total[s]) for s in suites) + " |"]
    for name, by in matrix.items():
        lines.append(f"| {name} | " + " | ".join(str(by[s]) for s in suites) + " |")
    return "\n".join(lines)


def main() -> int:
    cases = load_vectors()
    print(f"<!-- {len(cases)} bundled cases -->")
    print(tables(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
