"""Presenting a :class:`~adabelief_conformance._runner.RunReport`: progress bar, console summary,
failure details with rerun commands, JUnit XML, JSON (schema: schema/report.schema.json) and
Markdown for CI step summaries.

Every failing element is shown with the inputs that produce it, in hex (exact) and decimal: the
parameter's w, m, s, t, lr_mult and wd_mult before the case, and its gradient at every step up
to the failing one, so that a port can be debugged on that one element.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from adabelief_reference import Finite, Special, hexfloat
from adabelief_reference._model import SWITCHES

from ._compare import ElementFailure
from ._runner import OUTPUTS, CaseResult, Progress, RunReport, SuiteSummary, exit_code
from ._vectors import (
    KIND_ALTERNATIVES,
    KIND_ANY,
    KIND_FINITE,
    KIND_NAN,
    KIND_NINF,
    KIND_PINF,
    VectorCase,
)

__all__ = [
    "REPORT_FORMAT",
    "REPORT_FORMAT_VERSION",
    "SCHEMA_PATH",
    "element_inputs",
    "failure_text",
    "print_console",
    "progress_bar",
    "rerun_command",
    "to_json",
    "to_junit",
    "to_markdown",
    "verdict",
    "write_json",
    "write_junit",
    "write_markdown",
]

REPORT_FORMAT = "adabelief-conformance-report"
REPORT_FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schema" / "report.schema.json"
PROGRAM = "adabelief-conformance"
_GRAD_STEPS_SHOWN = 6  # console: gradients of the last steps before a failure


# ----- small helpers -----------------------------------------------------------------------------

def _num(x: float) -> float | str:
    """A JSON-safe number: non-finite values as the strings 'inf', '-inf', 'nan'."""
    return x if math.isfinite(x) else hexfloat(x)


def _err(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def _hd(x: float) -> str:
    """hex (exact) and decimal."""
    return hexfloat(x) if not math.isfinite(x) else f"{hexfloat(x)} ({x!r})"


def rerun_command(report: RunReport, case_id: str) -> str:
    """A command that reruns exactly one case, with the same target and vectors."""
    args = list(report.rerun_args) or [report.target or report.implementation.name]
    return shlex.join([PROGRAM, "check", *args, "--id", case_id])


def _flat_index(vc: VectorCase, f: ElementFailure) -> int:
    for step, param, off, _ in vc.layout:
        if step == f.step and param == f.param:
            return off + f.element
    raise IndexError((f.step, f.param))


def element_inputs(vc: VectorCase, f: ElementFailure) -> dict[str, Any]:
    """The inputs behind one failing element (hex strings): the parameter's state before the
    case and its gradient (and rescale_grad) at steps 0..f.step."""
    case = vc.case
    p = case.params[f.param]
    j = f.element
    return {
        "w": hexfloat(p.w[j]), "m": hexfloat(p.m[j]), "s": hexfloat(p.s[j]), "t": p.t,
        "lr_mult": hexfloat(p.lr_mult), "wd_mult": hexfloat(p.wd_mult),
        "g": [hexfloat(case.steps[k].grads[f.param][j]) for k in range(f.step + 1)],
        "rescale_grad": [hexfloat(case.rescale_at(k)) for k in range(f.step + 1)],
    }


def _expected_json(vc: VectorCase, f: ElementFailure) -> dict[str, Any]:
    exp = vc.expected[f.output]
    i = _flat_index(vc, f)
    kind = int(exp.kind[i])
    if kind == KIND_FINITE:
        return {"kind": "finite", "value": hexfloat(float(exp.value[i])),
                "residual": hexfloat(float(exp.residual[i])), "sigma": hexfloat(float(exp.sigma[i]))}
    if kind == KIND_ALTERNATIVES:
        alts: list[dict[str, Any]] = []
        for a in exp.alternatives[i]:
            if isinstance(a, Special):
                alts.append({"kind": a.kind})
            else:
                assert isinstance(a, Finite)
                alts.append({"kind": "finite", "value": hexfloat(a.value), "residual": hexfloat(a.residual),
                             "sigma": hexfloat(a.sigma)})
        return {"kind": "alternatives", "alternatives": alts}
    return {"kind": {KIND_NAN: "nan", KIND_PINF: "inf", KIND_NINF: "-inf", KIND_ANY: "any"}[kind]}


def _hyper_text(vc: VectorCase) -> str:
    hp = vc.case.hyperparameters
    parts = [f"{k}={hexfloat(v)} ({v!r})" for k, v in (
        ("lr", hp.learning_rate), ("beta1", hp.beta1), ("beta2", hp.beta2), ("epsilon", hp.epsilon),
        ("wd", hp.wd), ("rescale_grad", hp.rescale_grad))]
    if hp.eps_root != 0.0:
        parts.append(f"eps_root={hexfloat(hp.eps_root)} ({hp.eps_root!r})")
    clip = "None" if hp.clip_gradient is None else _hd(hp.clip_gradient)
    switches = [f"{name}=True" for name in SWITCHES if getattr(hp, name)]
    return " ".join([*parts, f"clip_gradient={clip}", f"correct_bias={hp.correct_bias}", *switches])


def _inputs_text(vc: VectorCase, f: ElementFailure) -> str:
    inp = element_inputs(vc, f)
    g = inp["g"]
    shown = g[-_GRAD_STEPS_SHOWN:]
    more = f"... {len(g) - len(shown)} earlier steps, " if len(g) > len(shown) else ""
    text = (f"inputs: w={inp['w']} m={inp['m']} s={inp['s']} t={inp['t']} lr_mult={inp['lr_mult']} "
            f"wd_mult={inp['wd_mult']} g[steps 0..{f.step}]=[{more}{', '.join(shown)}]")
    hp_r = hexfloat(vc.case.hyperparameters.rescale_grad)
    if any(r != hp_r for r in inp["rescale_grad"]):
        text += f" rescale_grad[steps]=[{', '.join(inp['rescale_grad'][-_GRAD_STEPS_SHOWN:])}]"
    return text


def _where(vc: VectorCase) -> str:
    return f"{vc.suite}, {vc.profile}/{vc.dtype}"


def failure_text(report: RunReport, r: CaseResult) -> list[str]:
    """The console lines for one failed, errored or xpassed case."""
    vc, o = r.case, r.outcome
    status = r.status.upper()
    rerun = f"  rerun: {rerun_command(report, r.id)}"
    if r.status == "xpassed":
        e = r.expectation
        assert e is not None
        return [f"XPASSED {r.id} [{_where(vc)}]: passes, but {e.describe()} lists it as a known "
                f"deviation ({e.reason}); remove or narrow the entry", rerun]
    head = f"{status} {r.id} [{_where(vc)}]"
    if vc.comment:
        head += f" ({vc.comment})"
    if o.status == "errored":
        return [f"{head}: {o.message}", rerun]
    lines = [f"{head}: {o.n_failed_elements} of {o.n_elements} elements outside the tolerance",
             f"  hyperparameters: {_hyper_text(vc)}"]
    for f in o.failures:
        lines.append(f"  {f.output}[{f.element}] step {f.step} param {f.param}: got {_hd(f.got)}, expected "
                     f"{f.expected}: {_err(f.err_sigma)} ulp(σ) > {f.tolerance:g}, {_err(f.err_ulp)} ulp")
        lines.append(f"    {_inputs_text(vc, f)}")
    if o.n_failed_elements > len(o.failures):
        lines.append(f"  ... {o.n_failed_elements - len(o.failures)} more failing elements "
                     "(raise --max-failures to see them)")
    lines.append(rerun)
    return lines


# ----- progress ----------------------------------------------------------------------------------

@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Progress | None]:
    """A rich progress bar on stderr; yields the runner's progress callback (None if disabled)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bad = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, bad="")

        def advance(r: CaseResult, done: int, total_: int) -> None:
            nonlocal bad
            if r.status in ("failed", "errored", "xpassed"):
                bad += 1
            bar.update(task, completed=done, bad=f"{bad} failing" if bad else "")

        yield advance


# ----- console -----------------------------------------------------------------------------------

def _max_errors(s: SuiteSummary, which: str) -> str:
    d = s.max_err_sigma if which == "sigma" else s.max_err_ulp
    return " ".join(f"{n} {_err(d[n])}" for n in OUTPUTS if n in d) or "-"


def _count(s: SuiteSummary, status: str) -> int:
    return s.counts[status]


def verdict(report: RunReport) -> str:
    """The last line of a run: CONFORMING / NOT CONFORMING with the counts."""
    t = report.totals
    impl = report.implementation
    ok = exit_code(report) == 0
    parts = [f"{t.counts['passed']} passed", f"{t.counts['failed']} failed", f"{t.counts['errored']} errored",
             f"{t.counts['skipped']} skipped"]
    if report.expectation_entries or t.counts["xfailed"] or t.counts["xpassed"]:
        parts += [f"{t.counts['xfailed']} known deviations", f"{t.counts['xpassed']} xpassed"]
    if report.stale_entries:
        parts.append(f"{len(report.stale_entries)} stale expectation entries")
    rate = report.throughput
    speed = f", {rate:.3g} elements/s compared" if math.isfinite(rate) else ""
    if report.load_seconds > 0 and math.isfinite(report.end_to_end_throughput):
        speed += (f"; end to end {report.end_to_end_seconds:.2f} s with loading, "
                  f"{report.end_to_end_throughput:.3g} elements/s")
    head = f"INCOMPLETE ({report.incomplete})" if report.incomplete else \
        "CONFORMING" if ok else "NOT CONFORMING"
    return (f"{head}: {impl.name} {impl.version}: {', '.join(parts)} "
            f"({t.elements} elements checked in {report.elapsed:.2f} s{speed})")


def _table(report: RunReport) -> Any:
    from rich.table import Table

    table = Table()
    known = any(report.totals.counts[k] for k in ("xfailed", "xpassed")) or bool(report.expectation_entries)
    cols = ["suite", "cases", "passed", "failed", "errored", "skipped"] + (["known", "xpassed"] if known else [])
    for c in cols:
        table.add_column(c, justify="left" if c == "suite" else "right")
    table.add_column("max error, ulp(σ)")
    table.add_column("max error, ulp")
    rows = [*sorted(report.suites.values(), key=lambda s: s.name), report.totals]
    for i, s in enumerate(rows):
        counts = [str(s.cases), str(_count(s, "passed")), str(_count(s, "failed")), str(_count(s, "errored")),
                  str(_count(s, "skipped"))] + ([str(_count(s, "xfailed")), str(_count(s, "xpassed"))] if known else [])
        bad = _count(s, "failed") + _count(s, "errored") + _count(s, "xpassed")
        style = "bold" if i == len(rows) - 1 else None
        name = s.name if not bad else f"[red]{s.name}[/red]"
        table.add_row(name, *counts, _max_errors(s, "sigma"), _max_errors(s, "ulp"), style=style,
                      end_section=i == len(rows) - 2)
    return table


def print_console(report: RunReport, out: IO[str] | None = None, show: int = 20, quiet: bool = False) -> None:
    """The summary table, then up to ``show`` failing cases in full (0: all), then the verdict."""
    out = out or sys.stdout
    if not quiet:
        from rich.console import Console

        impl = report.implementation
        print(f"implementation: {impl.name} {impl.version}" + (f" ({impl.description})" if impl.description else "")
              + f"; profiles {', '.join(impl.profiles)}; dtypes {', '.join(impl.dtypes)}", file=out)
        out.flush()
        console = Console(file=out, width=None if out.isatty() else 160, highlight=False)
        console.print(_table(report))
        bad = report.problems()
        for r in bad[: show or None]:
            print("\n".join(failure_text(report, r)), file=out)
        if show and len(bad) > show:
            print(f"... {len(bad) - show} more failing cases (--show 0 lists all; the JSON and JUnit "
                  "reports have every one)", file=out)
    for e, why in report.stale_entries:
        print(f"stale expectation: {e.describe()}: {why}; remove or narrow the entry", file=out)
    for w in report.warnings:
        print(f"warning: {w}", file=out)
    print(verdict(report), file=out)


# ----- JSON --------------------------------------------------------------------------------------

def _errs(d: dict[str, float]) -> dict[str, float | str]:
    return {n: _num(v) for n, v in d.items()}


def _case_json(report: RunReport, r: CaseResult) -> dict[str, Any]:
    vc, o = r.case, r.outcome
    out: dict[str, Any] = {
        "id": r.id, "suite": vc.suite, "profile": vc.profile, "dtype": vc.dtype, "file": vc.file,
        "flags": list(vc.flags), "comment": vc.comment, "status": r.status, "outcome": o.status,
        "message": o.message, "seconds": r.seconds, "elements": o.n_elements,
        "failedElements": o.n_failed_elements, "maxErrorSigma": _errs(o.max_err_sigma),
        "maxErrorUlp": _errs(o.max_err_ulp), "expectation": None, "failures": [],
    }
    if r.expectation is not None:
        e = r.expectation
        out["expectation"] = {"id": e.id, "reason": e.reason, "link": e.link, "strict": e.strict}
    if r.status in ("failed", "errored", "xpassed", "xfailed"):
        out["rerun"] = rerun_command(report, r.id)
    for f in o.failures:
        out["failures"].append({
            "output": f.output, "step": f.step, "param": f.param, "element": f.element,
            "got": hexfloat(f.got), "gotDecimal": repr(f.got), "expected": _expected_json(vc, f),
            "expectedText": f.expected, "errorSigma": _num(f.err_sigma), "errorUlp": _num(f.err_ulp),
            "tolerance": f.tolerance, "inputs": element_inputs(vc, f),
        })
    return out


def _suite_json(s: SuiteSummary) -> dict[str, Any]:
    return {"name": s.name, "cases": s.cases, **{k: s.counts[k] for k in s.counts}, "elements": s.elements,
            "seconds": s.seconds, "maxErrorSigma": _errs(s.max_err_sigma), "maxErrorUlp": _errs(s.max_err_ulp)}


def to_json(report: RunReport) -> dict[str, Any]:
    from . import __version__

    impl = report.implementation
    t = report.totals
    rate = report.throughput
    return {
        "format": REPORT_FORMAT,
        "formatVersion": REPORT_FORMAT_VERSION,
        "tool": {"name": PROGRAM, "version": __version__, "python": platform.python_version(),
                 "platform": platform.platform()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": report.target,
        "implementation": {"name": impl.name, "version": impl.version, "profiles": list(impl.profiles),
                           "dtypes": list(impl.dtypes), "description": impl.description},
        "vectors": list(report.vectors),
        "selection": report.selection,
        "conforming": exit_code(report) == 0,
        "exitCode": exit_code(report),
        "elapsedSeconds": report.elapsed,
        "compareSeconds": report.compare_seconds,
        "elementsPerSecond": rate if math.isfinite(rate) else None,
        "loadSeconds": report.load_seconds,
        "endToEndElementsPerSecond": (report.end_to_end_throughput
                                      if math.isfinite(report.end_to_end_throughput) else None),
        "totals": _suite_json(t),
        "suites": [_suite_json(s) for s in sorted(report.suites.values(), key=lambda s: s.name)],
        "expectations": {
            "file": report.expectations_file,
            "entries": [{"id": e.id, "reason": e.reason, "link": e.link, "strict": e.strict}
                        for e in report.expectation_entries],
            "stale": [{"id": e.id, "where": e.where, "why": why} for e, why in report.stale_entries],
            "unused": [{"id": e.id, "where": e.where} for e in report.unused_entries],
        },
        "warnings": list(report.warnings),
        "incomplete": report.incomplete,
        "unverifiedFiles": list(report.unverified_files),
        "cases": [_case_json(report, r) for r in report.results],
    }


def write_json(report: RunReport, path: Path) -> None:
    path.write_text(json.dumps(to_json(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")


# ----- JUnit XML ---------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (control characters from a misbehaving port)."""
    return "".join(ch for ch in text if ch in "\t\n\r" or (ord(ch) >= 0x20 and ord(ch) not in (0xFFFE, 0xFFFF)))


def to_junit(report: RunReport) -> ET.ElementTree:
    """One <testsuite> per suite, one <testcase> per case (classname = suite, name = case id).

    failed/xpassed -> <failure>, errored -> <error>, skipped -> <skipped>, and a known deviation
    (xfailed) -> <skipped> with its reason, as pytest writes xfail."""
    impl = report.implementation
    t = report.totals
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    root = ET.Element("testsuites", name=PROGRAM, tests=str(t.cases),
                      failures=str(t.counts["failed"] + t.counts["xpassed"]), errors=str(t.counts["errored"]),
                      skipped=str(t.counts["skipped"] + t.counts["xfailed"]), time=f"{report.elapsed:.3f}")
    by_suite: dict[str, list[CaseResult]] = {}
    for r in report.results:
        by_suite.setdefault(r.case.suite, []).append(r)
    for name in sorted(by_suite):
        s = report.suites[name]
        el = ET.SubElement(root, "testsuite", name=name, tests=str(s.cases),
                           failures=str(s.counts["failed"] + s.counts["xpassed"]), errors=str(s.counts["errored"]),
                           skipped=str(s.counts["skipped"] + s.counts["xfailed"]), time=f"{s.seconds:.3f}",
                           timestamp=stamp, hostname=platform.node() or "localhost")
        props = ET.SubElement(el, "properties")
        for k, v in (("implementation", impl.name), ("version", impl.version), ("target", report.target),
                     ("profiles", ",".join(impl.profiles)), ("dtypes", ",".join(impl.dtypes)),
                     *((("incomplete", report.incomplete),) if report.incomplete else ()),
                     *((("unverified", ",".join(report.unverified_files)),)
                       if report.unverified_files else ())):
            ET.SubElement(props, "property", name=k, value=_clean(v))
        for r in by_suite[name]:
            tc = ET.SubElement(el, "testcase", classname=f"adabelief.{name}", name=r.id, time=f"{r.seconds:.6f}",
                               file=r.case.file)
            msg = _clean(r.outcome.message)
            if r.status == "failed":
                f = ET.SubElement(tc, "failure", message=msg, type="NonConforming")
                f.text = _clean("\n".join(failure_text(report, r)))
            elif r.status == "xpassed":
                e = r.expectation
                assert e is not None
                ET.SubElement(tc, "failure", type="StaleExpectation",
                              message=_clean(f"passes but {e.describe()} lists it: {e.reason}")).text = _clean(
                    "\n".join(failure_text(report, r)))
            elif r.status == "errored":
                ET.SubElement(tc, "error", message=msg, type="Errored").text = _clean(
                    "\n".join(failure_text(report, r)))
            elif r.status == "skipped":
                ET.SubElement(tc, "skipped", message=msg)
            elif r.status == "xfailed":
                e = r.expectation
                assert e is not None
                reason = e.reason + (f" ({e.link})" if e.link else "")
                ET.SubElement(tc, "skipped", type="xfail", message=_clean(f"known deviation: {reason}")).text = msg
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: RunReport, path: Path) -> None:
    to_junit(report).write(path, encoding="utf-8", xml_declaration=True)


# ----- Markdown ----------------------------------------------------------------------------------

def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(report: RunReport, max_rows: int = 50) -> str:
    impl = report.implementation
    ok = exit_code(report) == 0
    t = report.totals
    state = f"⚠️ incomplete: {report.incomplete}" if report.incomplete else \
        "✅ conforming" if ok else "❌ not conforming"
    lines = [f"## AdaBelief conformance: {state}", "",
             f"**{_md(impl.name)} {_md(impl.version)}** (target `{_md(report.target)}`); profiles "
             f"{', '.join(impl.profiles)}; dtypes {', '.join(impl.dtypes)}", "",
             "| suite | cases | passed | failed | errored | skipped | known deviations | max error, ulp(σ) | max error, ulp |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in [*sorted(report.suites.values(), key=lambda s: s.name), t]:
        name = f"**{s.name}**" if s is t else s.name
        lines.append(f"| {name} | {s.cases} | {s.counts['passed']} | {s.counts['failed']} | {s.counts['errored']} | "
                     f"{s.counts['skipped']} | {s.counts['xfailed']} | {_max_errors(s, 'sigma')} | "
                     f"{_max_errors(s, 'ulp')} |")
    bad = report.problems()
    if bad:
        lines += ["", f"### Failing cases ({len(bad)})", "", "| case | status | first problem | rerun |",
                  "|---|---|---|---|"]
        for r in bad[:max_rows]:
            msg = r.outcome.message if r.status != "xpassed" else "passes but is listed as a known deviation"
            lines.append(f"| `{r.id}` | {r.status} | {_md(msg)[:300]} | `{_md(rerun_command(report, r.id))}` |")
        if len(bad) > max_rows:
            lines.append(f"\n... and {len(bad) - max_rows} more (see the JSON or JUnit report)")
    for e, why in report.stale_entries:
        lines.append(f"\n- stale expectation {_md(e.describe())}: {_md(why)}")
    for w in report.warnings:
        lines.append(f"\n- warning: {_md(w)}")
    lines += ["", f"_{_md(verdict(report))}_", ""]
    return "\n".join(lines)


def write_markdown(report: RunReport, path: Path, append: bool = False) -> None:
    with path.open("a" if append else "w", encoding="utf-8") as f:
        f.write(to_markdown(report))


def step_summary_path() -> Path | None:
    """$GITHUB_STEP_SUMMARY, where GitHub Actions collects a step's Markdown."""
    value = os.environ.get("GITHUB_STEP_SUMMARY")
    return Path(value) if value else None
