"""The compatibility matrix: every known AdaBelief library, in each configuration, against every
profile; writes docs/compatibility.md and docs/compatibility.json.

    python -m adabelief_conformance.adapters.matrix                    # run, write both files
    python -m adabelief_conformance.adapters.matrix --check            # rerun, compare with them
    python -m adabelief_conformance.adapters.matrix --only torch,optax # some frameworks only

``nox -s compatibility`` installs the libraries (pinned, adapters/libraries.py) in three
environments, since they cannot share one: PyTorch and optax here, TensorFlow 2.15 (numpy < 2)
in ``.tf-venv``, MXNet 2.0.0b1 (numpy < 1.24) in ``.mxnet-venv``; those two are driven through
the subprocess protocol (``adabelief-conformance serve``, examples/mxnet_adapter/adapter.py).

A row's cell for its family's profile applies the row's expectation file,
``docs/compatibility/expectations/LIBRARY@CONFIGURATION.toml`` (written by
``--write-expectations`` with the library's stated reason, then reviewed): a known deviation is
``xfailed``, a new failure or a case that passes again fails ``--check``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from adabelief_reference import profile_names

from .._errors import ConformanceError
from .._expectations import dumps_toml, entries_from_report, load_expectations
from .._runner import RunReport, check, load_cases, select_cases
from .._targets import resolve_target
from .libraries import LIBRARIES, Library

__all__ = ["ROWS", "Row", "main", "run_matrix"]

FORMAT = "adabelief-conformance compatibility"
FORMAT_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXPECTATIONS = DOCS / "compatibility" / "expectations"
MXNET_ADAPTER = "examples/mxnet_adapter/adapter.py"
# MXNet runs through its example adapter in an environment of its own (no library: target).
MXNET = Library(
    "mxnet", "", "mxnet", notes="through examples/mxnet_adapter/adapter.py (fused multi-tensor update)",
    setup="bash examples/mxnet_adapter/setup.sh (mxnet==2.0.0b1 with numpy < 1.24, its own venv)",
    deviations="MXNet flushes subnormals to zero on the CPU by default (mxnet/base.py calls "
               "MXSetFlushDenorms(True)); the adapter's --denormals ieee turns that off",
    link="https://github.com/apache/mxnet/blob/b84609d3/python/mxnet/base.py")
CONFIGURATIONS = ("case", "defaults", "mxnet-closest")


@dataclass(frozen=True)
class Row:
    library: str
    configuration: str

    @property
    def key(self) -> str:
        return f"{self.library}@{self.configuration}"

    @property
    def lib(self) -> Library:
        return MXNET if self.library == "mxnet" else LIBRARIES[self.library]

    @property
    def framework(self) -> str:
        return self.lib.framework

    @property
    def family(self) -> str:
        return self.lib.family

    def target(self, envs: dict[str, Path]) -> tuple[str | None, str | None]:
        """(target, cmd) for resolve_target."""
        if self.framework == "mxnet":
            flush = " --denormals flush" if self.configuration == "defaults" else ""  # MXNet's own
            return None, (f"{envs['mxnet'] / 'bin' / 'python'} {ROOT / MXNET_ADAPTER} "
                          f"--mode fused-multi --profiles all{flush}")
        if self.framework == "keras":
            return None, f"{envs['tensorflow'] / 'bin' / 'adabelief-conformance'} serve library:{self.key}"
        return f"library:{self.key}", None


# MXNet's two rows: with IEEE subnormals (the adapter's default) and out of the box, flushing
# subnormals to zero.
ROWS: tuple[Row, ...] = (
    *(Row(lib, conf) for lib in LIBRARIES for conf in CONFIGURATIONS),
    Row("mxnet", "case"), Row("mxnet", "defaults"),
)


def _cell(report: RunReport) -> dict[str, Any]:
    t = report.totals.counts
    return {"passed": t["passed"], "failed": t["failed"], "errored": t["errored"],
            "skipped": t["skipped"], "xfailed": t["xfailed"], "xpassed": t["xpassed"],
            "conforming": report.conforming and not report.stale_entries}


def _expectations_path(row: Row) -> Path:
    return EXPECTATIONS / f"{row.key}.toml"


def run_row(row: Row, envs: dict[str, Path], cases: Sequence[Any], *, diagnose: bool,
            write_expectations: bool, log: Any = print) -> dict[str, Any]:
    """Run one row against every profile of ``cases``; the row's JSON object."""
    spec, cmd = row.target(envs)
    impl = resolve_target(spec, cmd, timeout=120.0)
    try:
        expectations = load_expectations(_expectations_path(row)) \
            if _expectations_path(row).is_file() else None
        out: dict[str, Any] = {"library": row.library, "configuration": row.configuration,
                               "framework": row.framework, "family": row.family,
                               "implementation": str(impl.name), "version": str(impl.version),
                               "cells": {}}
        for profile in profile_names():
            selected = select_cases(cases, profiles={profile})
            report = check(impl, selected, max_failures=1)
            if profile == row.family:
                if write_expectations:
                    _write_expectations(row, report)
                    path = _expectations_path(row)
                    expectations = load_expectations(path) if path.is_file() else None
                if expectations is not None:
                    expectations.apply(report)
            cell = _cell(report)
            if diagnose and report.totals.counts["failed"] and profile != row.family:
                from .._diagnose import diagnose as rank

                rows = rank(impl, selected, top=1, outcomes=[r.outcome for r in report.results])
                cell["diagnosis"] = rows[0].describe() if rows and rows[0].explained else \
                    "no profile or catalogued mistake explains the failures"
            out["cells"][profile] = cell
            log(f"  {row.key:40s} {profile:18s} " + ("conforming" if cell["conforming"] else
                f"{cell['failed']} failed, {cell['errored']} errored") +
                f" ({cell['passed']} passed, {cell['skipped']} skipped, {cell['xfailed']} known)")
        return out
    finally:
        close = getattr(impl, "close", None)
        if callable(close):
            close()


def _write_expectations(row: Row, report: RunReport) -> None:
    deviations, link = row.lib.deviations, row.lib.link
    entries = entries_from_report(report)
    if not entries:
        path = _expectations_path(row)
        if path.exists():
            path.unlink()
        return
    entries = [replace(e, reason=f"{deviations}: {e.reason.removeprefix('TODO: explain. ')}",
                       link=link or None) for e in entries]
    EXPECTATIONS.mkdir(parents=True, exist_ok=True)
    _expectations_path(row).write_text(dumps_toml(entries, [
        f"Known deviations of {row.key} from its family's profile '{row.family}' (compatibility matrix).",
        "Written by `python -m adabelief_conformance.adapters.matrix --write-expectations`, reviewed.",
    ]), encoding="utf-8")


def run_matrix(rows: Sequence[Row], envs: dict[str, Path], *, diagnose: bool = True,
               write_expectations: bool = False) -> list[dict[str, Any]]:
    results = []
    cases = load_cases()  # once for every row
    for row in rows:
        print(f"{row.key}:", flush=True)
        results.append(run_row(row, envs, cases, diagnose=diagnose,
                               write_expectations=write_expectations))
    return results


def _vector_set_version() -> str:
    from adabelief_vectors import __file__ as vectors_init

    manifest = json.loads((Path(vectors_init).parent / "manifest.json").read_text(encoding="utf-8"))
    return str(manifest["vectorSetVersion"])


def document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    order = {r.key: k for k, r in enumerate(ROWS)}
    rows = sorted(rows, key=lambda r: order.get(f"{r['library']}@{r['configuration']}", 1 << 30))
    return {"format": FORMAT, "formatVersion": FORMAT_VERSION,
            "vectorSetVersion": _vector_set_version(), "profiles": list(profile_names()),
            "rows": rows}


def _library_info(name: str) -> dict[str, str]:
    lib = MXNET if name == "mxnet" else LIBRARIES[name]
    return {"install": lib.install, "notes": lib.notes, "deviations": lib.deviations}


def _cell_text(cell: dict[str, Any], family: bool) -> str:
    ran = cell["passed"] + cell["failed"] + cell["errored"] + cell["xfailed"] + cell["xpassed"]
    if ran == 0:
        return "— (nothing it can express)"
    if cell["conforming"] and cell["xfailed"]:
        return f"{cell['passed']} of {ran} pass, {cell['xfailed']} listed deviations"
    if cell["conforming"]:
        return f"**conforms** ({cell['passed']}/{ran})"
    bad = cell["failed"] + cell["errored"] + cell["xpassed"]
    return f"{bad} of {ran} fail" + (" (**regression**)" if family else "")


def markdown(doc: dict[str, Any]) -> str:
    profiles = doc["profiles"]
    lines = [
        "# Compatibility of the AdaBelief libraries",
        "",
        "Generated by `nox -s compatibility` (`python -m adabelief_conformance.adapters.matrix`); "
        "do not edit. Machine-readable: [compatibility.json](compatibility.json).",
        "",
        f"Every library below, installed at the pinned version, ran vector set "
        f"{doc['vectorSetVersion']} through its ready adapter (`library:NAME@CONFIGURATION`, "
        "README, 'Checking a real library') against every profile. Each row is one "
        "configuration of the library's own options (its switches; `lr`, the betas, `eps` and "
        "the decay always come from the case):",
        "",
        "- **case**: every switch set as the case asks, where the library has an option for it: "
        "the library's whole range (`library:NAME`);",
        "- **defaults**: what a user who passes only `lr`, `betas`, `eps` and `weight_decay` gets;",
        "- **mxnet-closest**: every switch at MXNet's behaviour (no decoupled decay, no "
        "rectification, no AMSGrad), as close to MXNet as the library's options allow.",
        "",
        "A cell counts the cases the library can express in that configuration (clipping, "
        "`rescale_grad`, `correct_bias=False` and switch values it cannot take are skipped): "
        "**conforms** when all of them pass, else how many fail; in the library's family "
        "profile, how many pass and how many fail as listed, known deviations. For a profile that varies a "
        "switch, only the cases with the configuration's value run. The family profile's known "
        "deviations are listed, with their reasons, in "
        "[compatibility/expectations/](compatibility/expectations/); a failure there that is not "
        "listed would be a regression, and `--check` (CI) fails on any change in any cell.",
        "",
        "| library | configuration | " + " | ".join(f"`{p}`" for p in profiles) + " |",
        "| --- | --- | " + " | ".join("---" for _ in profiles) + " |",
    ]
    notes: list[str] = []
    for row in doc["rows"]:
        cells = []
        for p in profiles:
            cell = row["cells"].get(p)
            if cell is None:
                cells.append("not run")
                continue
            text = _cell_text(cell, p == row["family"])
            if p == row["family"]:
                text = f"{text} (family)"
            if cell.get("diagnosis"):
                notes.append(f"{row['library']}@{row['configuration']} against `{p}`: "
                             f"{cell['diagnosis']}")
                text += f" [{len(notes)}]"
            cells.append(text)
        lines.append(f"| {row['library']} | {row['configuration']} | " + " | ".join(cells) + " |")
    lines += ["", "## What the failures are", "",
              "The diagnosis (`adabelief-conformance diagnose`) of each failing cell outside the "
              "library's family: the profile, switch setting or catalogued mistake "
              "(spec/mistakes.md) whose outputs match the library's.", ""]
    lines += [f"{k}. {n}" for k, n in enumerate(notes, 1)] or ["(none)"]
    lines += ["", "## Versions and known deviations", "",
              "| library | family | notes | version | install | known deviations from its family |",
              "| --- | --- | --- | --- | --- | --- |"]
    seen = set()
    for row in doc["rows"]:
        if row["library"] in seen:
            continue
        seen.add(row["library"])
        info = _library_info(row["library"])
        dev = info["deviations"] if any(
            r["cells"].get(r["family"], {}).get("xfailed") for r in doc["rows"]
            if r["library"] == row["library"]) else "none"
        lines.append(f"| {row['library']} | `{row['family']}` | {info['notes'] or '-'} | "
                     f"{row['version']} | `{info['install']}` | {dev} |")
    lines += ["", "## Reproduce", "",
              "```sh",
              "nox -s compatibility            # installs the libraries, runs every row, rewrites this page",
              "nox -s compatibility -- --check # compares a rerun with the committed results",
              "adabelief-conformance check library:timm@mxnet-closest --profile mxnet   # one cell",
              "```", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adabelief_conformance.adapters.matrix",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--only", metavar="FRAMEWORKS",
                    help="comma-separated frameworks to run (torch, optax, keras, mxnet; default all)")
    ap.add_argument("--library", action="append", metavar="NAME", help="run only this library (repeatable)")
    ap.add_argument("--check", action="store_true",
                    help="compare the rows run with docs/compatibility.json; exit 1 on any difference")
    ap.add_argument("--write-expectations", action="store_true",
                    help="rewrite the rows' expectation files from this run (then review them)")
    ap.add_argument("--no-diagnose", action="store_true", help="skip the diagnosis of failing cells")
    ap.add_argument("--tf-venv", type=Path, default=ROOT / ".tf-venv", metavar="DIR")
    ap.add_argument("--mxnet-venv", type=Path, default=ROOT / ".mxnet-venv", metavar="DIR")
    ap.add_argument("--docs", type=Path, default=DOCS, metavar="DIR")
    args = ap.parse_args(argv)
    frameworks = set(args.only.split(",")) if args.only else {"torch", "optax", "keras", "mxnet"}
    rows = [r for r in ROWS if r.framework in frameworks
            and (not args.library or r.library in args.library)]
    envs = {"tensorflow": args.tf_venv, "mxnet": args.mxnet_venv}
    json_path, md_path = args.docs / "compatibility.json", args.docs / "compatibility.md"
    try:
        results = run_matrix(rows, envs, diagnose=not (args.no_diagnose or args.check),
                             write_expectations=args.write_expectations)
    except ConformanceError as e:
        print(f"matrix: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    committed = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else None
    if args.check:
        if committed is None:
            print(f"matrix: error: {json_path} does not exist; run without --check first", file=sys.stderr)
            return 2
        old = {f"{r['library']}@{r['configuration']}": r for r in committed["rows"]}
        differences = []
        for r in results:
            key = f"{r['library']}@{r['configuration']}"
            before = old.get(key)
            if before is None:
                differences.append(f"{key}: not in {json_path.name}")
                continue
            if before["version"] != r["version"]:
                differences.append(f"{key}: version {r['version']}, committed {before['version']}")
            for p, cell in r["cells"].items():
                was = {k: v for k, v in before["cells"].get(p, {}).items() if k != "diagnosis"}
                if was != cell:
                    differences.append(f"{key} against {p}: {cell}, committed {was}")
        for d in differences:
            print(f"matrix: {d}", file=sys.stderr)
        print(f"matrix: {len(results)} rows checked, {len(differences)} differences from {json_path}")
        return 1 if differences else 0
    merged = {f"{r['library']}@{r['configuration']}": r for r in (committed or {}).get("rows", [])}
    merged.update({f"{r['library']}@{r['configuration']}": r for r in results})
    doc = document(list(merged.values()))
    args.docs.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(doc), encoding="utf-8")
    print(f"matrix: wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
