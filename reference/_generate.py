"""Generate the golden vector files (spec/vector-format.md), or check them byte for byte.

    python -m adabelief_reference.generate [--out DIR] [--check] [--jobs N] [--suite NAME]

Deterministic: inputs come from ``random.Random`` seeded per suite and dtype, the cases are
evaluated in a fixed order (a process pool keeps the order), and the JSON is written with a fixed
layout. ``--check`` regenerates into memory and compares with the files in DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mpmath

from ._formats import hexfloat
from ._golden import START_PRECISION, Expectation, Finite, GoldenCase, Special, golden, tolerances
from ._model import DTYPES, SWITCHES, CaseInputs, Hyperparameters, ParamInput
from ._profiles import profile_names
from ._suites import FLAGS, SUITES, Builder, Test

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SEED",
    "SPEC_VERSION",
    "VECTOR_SET_VERSION",
    "case_id",
    "case_inputs_json",
    "generate",
    "main",
]

FORMAT_NAME = "adabelief-conformance-vectors"
FORMAT_VERSION = 2
SPEC_VERSION = "1.1.0"
VECTOR_SET_VERSION = "2.0.0"
SEED = 20261124
SCHEMA = "vectors-v2.schema.json"
GENERATOR_VERSION = "0.1.0"


def _hp_json(hp: Hyperparameters) -> dict[str, Any]:
    out = {
        "learning_rate": hexfloat(hp.learning_rate),
        "beta1": hexfloat(hp.beta1),
        "beta2": hexfloat(hp.beta2),
        "epsilon": hexfloat(hp.epsilon),
        "correct_bias": hp.correct_bias,
        "wd": hexfloat(hp.wd),
        "rescale_grad": hexfloat(hp.rescale_grad),
        "clip_gradient": None if hp.clip_gradient is None else hexfloat(hp.clip_gradient),
    }
    # Fields added after vector format 1.0 are written only when they differ from their
    # default, so that every earlier case keeps its bytes and its content-addressed id.
    if hp.eps_root != 0.0:
        out["eps_root"] = hexfloat(hp.eps_root)
    for name in SWITCHES:  # switches, written only when on
        if getattr(hp, name):
            out[name] = True
    return out


def _param_json(p: ParamInput) -> dict[str, Any]:
    out = {
        "index": p.index,
        "t": p.t,
        "lr_mult": hexfloat(p.lr_mult),
        "wd_mult": hexfloat(p.wd_mult),
        "w": [hexfloat(x) for x in p.w],
        "m": [hexfloat(x) for x in p.m],
        "s": [hexfloat(x) for x in p.s],
    }
    if p.s_max is not None:  # amsgrad cases only (format 2)
        out["s_max"] = [hexfloat(x) for x in p.s_max]
    return out


def case_inputs_json(case: CaseInputs) -> dict[str, Any]:
    """The inputs of a case in the vector format (without expectations)."""
    return {
        "profile": case.profile,
        "dtype": case.dtype,
        "hyperparameters": _hp_json(case.hyperparameters),
        "params": [_param_json(p) for p in case.params],
        "steps": [
            {
                "grads": [[hexfloat(x) for x in g] for g in st.grads],
                "rescale_grad": None if st.rescale_grad is None else hexfloat(st.rescale_grad),
            }
            for st in case.steps
        ],
    }


def case_id(suite: str, case: CaseInputs) -> str:
    """Content-addressed id: the suite and 16 hex digits of the sha256 of the canonical inputs."""
    canon = json.dumps(case_inputs_json(case), sort_keys=True, separators=(",", ":"))
    return f"{suite}-{hashlib.sha256(canon.encode()).hexdigest()[:16]}"


def _alt_json(a: Finite | Special) -> Any:
    if isinstance(a, Special):
        return a.kind
    return {"value": hexfloat(a.value), "residual": hexfloat(a.residual), "sigma": hexfloat(a.sigma)}


def _array_json(exps: Sequence[Expectation]) -> dict[str, list[Any]]:
    value: list[Any] = []
    residual: list[str] = []
    sigma: list[str] = []
    for e in exps:
        if len(e) == 1 and isinstance(e[0], Finite):
            value.append(hexfloat(e[0].value))
            residual.append(hexfloat(e[0].residual))
            sigma.append(hexfloat(e[0].sigma))
        else:
            value.append(_alt_json(e[0]) if len(e) == 1 else [_alt_json(a) for a in e])
            residual.append("0x0p+0")
            sigma.append("0x0p+0")
    return {"value": value, "residual": residual, "sigma": sigma}


def _result_class(g: GoldenCase) -> str:
    kinds = set()
    for step in g.steps:
        for outs in step:
            for exps in outs.values():
                for e in exps:
                    if any(isinstance(a, Special) and a.kind == "any" for a in e):
                        kinds.add("implementation-defined")
                    elif len(e) > 1:
                        kinds.add("alternatives")
    for k in ("implementation-defined", "alternatives"):
        if k in kinds:
            return k
    return "must-match"


def _test_json(suite: str, test: Test, g: GoldenCase) -> dict[str, Any]:
    inputs = case_inputs_json(test.case)
    steps = []
    for st_in, st_out in zip(inputs["steps"], g.steps):
        steps.append({**st_in, "expected": [{n: _array_json(v) for n, v in outs.items()} for outs in st_out]})
    return {
        "id": case_id(suite, test.case),
        "comment": test.comment,
        "flags": list(test.flags),
        "result": _result_class(g),
        "params": inputs["params"],
        "steps": steps,
    }


@dataclass
class _Stats:
    cases: int = 0
    values: int = 0
    escalated_cases: int = 0
    escalated_values: int = 0
    ties: int = 0
    max_precision: int = START_PRECISION


def _count_values(g: GoldenCase) -> int:
    return sum(len(v) for step in g.steps for outs in step for v in outs.values())


def _golden_task(case: CaseInputs) -> GoldenCase:
    return golden(case)


def collect_tests(suites: Iterable[str] | None = None) -> list[tuple[str, Test]]:
    """All (suite, test) pairs, in file order."""
    out = []
    for suite in suites or SUITES:
        _, fn = SUITES[suite]
        for dtype in DTYPES:
            for profile in profile_names():
                # Same seed for every profile: both profiles see the same inputs.
                import random

                rng = random.Random(f"{SEED}:{suite}:{dtype}")
                for t in fn(Builder(rng, dtype, profile)):
                    out.append((suite, t))
    return out


def _document(suite: str, items: list[tuple[Test, GoldenCase]], mpmath_version: str,
              description: str | None = None) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    used_flags: set[str] = set()
    for test, g in items:
        c = test.case
        key = json.dumps([c.profile, c.dtype, _hp_json(c.hyperparameters)], sort_keys=True)
        if key not in groups:
            groups[key] = {
                "profile": c.profile,
                "dtype": c.dtype,
                "hyperparameters": _hp_json(c.hyperparameters),
                "tolerance": tolerances()[c.dtype],
                "tests": [],
            }
        groups[key]["tests"].append(_test_json(suite, test, g))
        used_flags.update(test.flags)
    if description is None:
        description, _ = SUITES[suite]
    return {
        "format": FORMAT_NAME,
        "formatVersion": FORMAT_VERSION,
        "schema": SCHEMA,
        "specVersion": SPEC_VERSION,
        "vectorSetVersion": VECTOR_SET_VERSION,
        "suite": suite,
        "description": description,
        "generator": {
            "name": "adabelief_reference",
            "version": GENERATOR_VERSION,
            "mpmath": mpmath_version,
            "startPrecision": START_PRECISION,
            "maxPrecisionUsed": max((g.precision for _, g in items), default=START_PRECISION),
            "seed": SEED,
        },
        "numberOfTests": len(items),
        "notes": {
            f: {"bugType": FLAGS[f][0], "description": FLAGS[f][1]} for f in sorted(used_flags)
        },
        "testGroups": list(groups.values()),
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


def generate(suites: Iterable[str] | None = None, jobs: int | None = None,
             progress: bool = True, mpmath_version: str | None = None) -> tuple[dict[str, str], _Stats]:
    """Return {file name: text} for every suite and the manifest, plus statistics.

    ``mpmath_version`` overrides the version recorded in the headers (``--check`` passes the one
    the committed files record, so that only the values are compared).
    """
    pairs = collect_tests(suites)
    cases = [t.case for _, t in pairs]
    jobs = jobs or os.cpu_count() or 1
    results: list[GoldenCase] = []
    # Not "fork": the parent may hold threads (JAX, a BLAS pool, a test runner's) whose locks a
    # forked child would inherit held. The forkserver starts from a fresh interpreter.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    from rich.progress import Progress

    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("golden values", total=len(cases))
        if jobs > 1:
            with ctx.Pool(jobs) as pool:
                for g in pool.imap(_golden_task, cases, chunksize=4):
                    results.append(g)
                    bar.advance(task)
        else:
            for c in cases:
                results.append(golden(c))
                bar.advance(task)
    stats = _Stats()
    by_suite: dict[str, list[tuple[Test, GoldenCase]]] = {}
    for (suite, test), g in zip(pairs, results):
        by_suite.setdefault(suite, []).append((test, g))
        n = _count_values(g)
        stats.cases += 1
        stats.values += n
        stats.ties += g.ties
        if g.precision > START_PRECISION:
            stats.escalated_cases += 1
            stats.escalated_values += n
        stats.max_precision = max(stats.max_precision, g.precision)
    version = mpmath_version or mpmath.__version__
    files = {f"{suite}.json": dumps(_document(suite, items, version)) for suite, items in by_suite.items()}
    manifest = {
        "format": FORMAT_NAME,
        "formatVersion": FORMAT_VERSION,
        "specVersion": SPEC_VERSION,
        "vectorSetVersion": VECTOR_SET_VERSION,
        "files": {
            name: {"sha256": hashlib.sha256(text.encode()).hexdigest(),
                   "numberOfTests": json.loads(text)["numberOfTests"]}
            for name, text in sorted(files.items())
        },
        "statistics": {
            "cases": stats.cases,
            "values": stats.values,
            "casesNeedingMorePrecision": stats.escalated_cases,
            "valuesInThoseCases": stats.escalated_values,
            "exactTies": stats.ties,
            "maxPrecisionUsed": stats.max_precision,
        },
    }
    files["manifest.json"] = json.dumps(manifest, indent=1) + "\n"
    return files, stats


def _recorded_mpmath(out: Path) -> str | None:
    """The mpmath version the committed files record (the header is data, not a result)."""
    for path in sorted(out.glob("*.json")):
        if path.name == "manifest.json":
            continue
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["generator"]["mpmath"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def default_out_dir() -> Path:
    """The folder the installed package reads its bundled vectors from (the package
    ``adabelief_vectors``): the repository's vectors/ in an editable install, the installed copy
    otherwise, so that ``generate --check`` checks, and ``generate`` rewrites, the files that
    ``check`` reads."""
    from importlib import resources

    try:
        return Path(str(resources.files("adabelief_vectors")))
    except ModuleNotFoundError:  # running from a source tree without installing
        return Path(__file__).resolve().parent.parent / "vectors"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="adabelief-generate", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the bundled vectors the package reads: the repo's "
                         "vectors/ in an editable install)")
    ap.add_argument("--check", action="store_true", help="verify the files regenerate byte for byte")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    out: Path = args.out or default_out_dir()
    recorded = _recorded_mpmath(out) if args.check else None
    if args.jobs is not None and args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    files, stats = generate(jobs=args.jobs, progress=not args.no_progress, mpmath_version=recorded)
    summary = (f"{stats.cases} cases, {stats.values} values; {stats.escalated_cases} cases "
               f"({stats.escalated_values} values) needed more than {START_PRECISION} bits "
               f"(max {stats.max_precision}); {stats.ties} exact ties rounded to even")
    if args.check:
        bad = []
        for name, text in sorted(files.items()):
            path = out / name
            if not path.exists():
                bad.append(f"{path}: missing")
            elif path.read_text(encoding="utf-8") != text:
                bad.append(f"{path}: differs from a fresh generation")
        extra = sorted(p.name for p in out.glob("*.json") if p.name not in files)
        bad += [f"{out / n}: not produced by the generator" for n in extra]
        if bad:
            for b in bad:
                print(f"vectors check failed: {b}; regenerate with `python -m adabelief_reference.generate`",
                      file=sys.stderr)
            return 1
        note = ""
        if recorded and recorded != mpmath.__version__:
            note = f"; computed with mpmath {mpmath.__version__}, the files record {recorded}"
        print(f"vectors check passed: {len(files)} files regenerate byte for byte ({summary}{note})")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files to {out} ({summary}); python {platform.python_version()}")
    return 0
