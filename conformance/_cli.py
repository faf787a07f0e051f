"""``adabelief-conformance``: check an implementation, regenerate vectors, diagnose, fuzz,
benchmark, and compute reference values.

Exit codes: 0 conforming / success; 1 not conforming (a failed or errored case, or a stale
expectation entry); 2 usage or input error (bad option, vector file, target or expectation file),
reported on one line ``adabelief-conformance: error: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from ._errors import ConformanceError, UsageError

__all__ = ["build_parser", "main"]

PROG = "adabelief-conformance"
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away

_EPILOG = """\
targets: numpy, naive, numba, cupy, cuda-host (bundled backends); catalogue:ENTRY (a mutant or
variant of the mistake catalogue, e.g. 'catalogue:clip ignored'); library:NAME[@CONFIGURATION]
(a real AdaBelief library through its ready adapter, e.g. 'library:timm@mxnet-closest'; README,
'Checking a real library'); module:attr or file.py:attr (an Implementation object, class or
factory); or --cmd "PROGRAM ARGS" for any program speaking
the JSON-lines protocol. Exit codes: 0 conforming, 1 not conforming, 2 usage or input error."""


# ----- argument helpers --------------------------------------------------------------------------

def _dtypes() -> list[str]:
    from adabelief_reference import DTYPES

    return list(DTYPES)


def _profiles() -> list[str]:
    from adabelief_reference import profile_names

    return list(profile_names())


def _split(values: Sequence[str] | None) -> list[str] | None:
    """Repeatable options also take comma-separated lists."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _add_target(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="numpy | naive | numba | cupy | cuda-host | catalogue:ENTRY | "
                        "library:NAME[@CONFIGURATION] | module:attr")
    p.add_argument("--cmd", metavar="COMMAND",
                   help="run a program speaking the JSON-lines protocol instead of TARGET")
    p.add_argument("--isolate", action="store_true",
                   help="run TARGET in a worker process (`serve TARGET`) so that --timeout, crash "
                        "isolation and --validate-protocol apply to it as to --cmd")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per case for --cmd or --isolate (default 10)")
    p.add_argument("--validate-protocol", action="store_true",
                   help="validate every --cmd or --isolate message against the protocol's JSON Schema")


def _add_selection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection (repeatable; comma-separated lists allowed)")
    g.add_argument("--vectors", action="append", type=Path, metavar="PATH",
                   help="vector file or folder (default: the bundled vectors)")
    g.add_argument("--profile", action="append", metavar="NAME", help=f"profile: {', '.join(_profiles())}")
    g.add_argument("--dtype", action="append", metavar="NAME", help=f"dtype: {', '.join(_dtypes())}")
    g.add_argument("--suite", action="append", metavar="NAME", help="suite, e.g. clipping")
    g.add_argument("--flag", action="append", metavar="NAME", help="cases carrying this flag, e.g. ClipOrder")
    g.add_argument("--id", action="append", metavar="GLOB", help="case id or glob, e.g. 'clipping-*'")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog=PROG, description="Conformance suite for MXNet's AdaBelief update: check an "
                                 "implementation against\nthe golden vectors, diagnose, fuzz, "
                                 "benchmark, compute reference values.",
                                 epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("check", help="run the golden vectors through an implementation",
                       description="Run the golden vectors through an implementation and report "
                                   "conformance.", epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(c)
    _add_selection(c)
    e = c.add_argument_group("expectations")
    e.add_argument("--expectations", type=Path, metavar="FILE",
                   help="known deviations (TOML, or JSON if FILE ends in .json)")
    e.add_argument("--write-expectations", type=Path, metavar="FILE",
                   help="write every failing or errored case of this run to FILE")
    r = c.add_argument_group("reports")
    r.add_argument("--junit", type=Path, metavar="FILE", help="JUnit XML report")
    r.add_argument("--json", type=Path, metavar="FILE", help="JSON report (schema/report.schema.json)")
    r.add_argument("--markdown", type=Path, metavar="FILE", help="Markdown summary")
    r.add_argument("--step-summary", action="store_true",
                   help="append the Markdown summary to $GITHUB_STEP_SUMMARY (GitHub Actions)")
    o = c.add_argument_group("output")
    o.add_argument("--max-failures", type=int, default=10, metavar="N",
                   help="failing elements detailed per case (default 10)")
    o.add_argument("--show", type=int, default=20, metavar="N",
                   help="failing cases printed in full (default 20, 0 for all)")
    o.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="threads running cases (only for thread-safe implementations; default 1)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--quiet", "-q", action="store_true", help="print only problems and the verdict")
    c.set_defaults(handler=_cmd_check)

    g = sub.add_parser("generate", help="regenerate the golden vectors, or --check them",
                       description="Regenerate the golden vectors (mpmath), or check that they "
                                   "regenerate byte for byte.")
    g.add_argument("--check", action="store_true", help="verify the files regenerate byte for byte")
    g.add_argument("--out", type=Path, metavar="DIR", help="vector folder (default: the bundled one)")
    g.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: CPU count)")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(handler=_cmd_generate)

    d = sub.add_parser("diagnose", help="rank the catalogue's known mistakes against a failing implementation",
                       description="Run the selected vectors and rank the mistake catalogue's "
                                   "entries by how well they explain the implementation's outputs.")
    _add_target(d)
    _add_selection(d)
    d.set_defaults(handler=_cmd_diagnose)

    f = sub.add_parser("fuzz", help="property-based differential testing against the exact reference",
                       description="Generate random inputs (hypothesis) and compare the "
                                   "implementation with the exact reference; failing examples are "
                                   "shrunk and can be written as a vector file.")
    _add_target(f)
    f.add_argument("--profile", default="mxnet", choices=_profiles())
    f.add_argument("--dtype", default="float32", choices=_dtypes())
    f.add_argument("--max-examples", type=int, default=200, metavar="N")
    f.add_argument("--seed", type=int, default=0, metavar="S")
    f.add_argument("--out", type=Path, metavar="FILE",
                   help="where failing examples are written as a vector file (default "
                        "./fuzz-PROFILE-DTYPE-seedSEED.json; an existing file is replaced)")
    f.set_defaults(handler=_cmd_fuzz)

    cp = sub.add_parser(
        "campaign", help="certify over many random cases against the live reference, on every core or Dask",
        description="Run a certification campaign: random cases (profile/dtype pairs round-robin) "
                    "checked against the live exact reference, deterministic per seed and shard "
                    "whatever the number of workers. Failing cases are shrunk to one element and "
                    "written as vector files that `check --vectors FILE` reruns.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(cp)
    cp.add_argument("--elements", type=int, required=True, metavar="N", help="element-steps to check")
    cp.add_argument("--seed", type=int, default=0, metavar="S")
    cp.add_argument("--profile", action="append", metavar="NAME",
                    help="profiles (default: all the target declares); repeatable, comma-separated")
    cp.add_argument("--dtype", action="append", metavar="NAME", help="dtypes (default: all it declares)")
    cp.add_argument("--jobs", type=int, default=None, metavar="N", help="worker processes (default: all cores)")
    cp.add_argument("--shard", default="0/1", metavar="i/n", help="run the i-th of n shards (CI matrices)")
    cp.add_argument("--dask", metavar="ADDRESS",
                    help="run on a Dask cluster: a scheduler address, or 'local' for a LocalCluster "
                         "of --jobs worker processes (pip install 'adabelief-conformance[dask]')")
    cp.add_argument("--batch-elements", type=int, default=32768, metavar="N",
                    help="element-steps per regular random case (default 32768; every 4th case is an "
                         "edge case of at most 64, with special values)")
    cp.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                    help="folder for the shrunk counterexamples (default: the working directory)")
    cp.add_argument("--json", type=Path, metavar="FILE")
    cp.add_argument("--junit", type=Path, metavar="FILE")
    cp.add_argument("--markdown", type=Path, metavar="FILE")
    cp.add_argument("--no-progress", action="store_true")
    cp.set_defaults(handler=_cmd_campaign)

    b = sub.add_parser("bench", help="throughput of the bundled backends",
                       description="Measure the throughput of the bundled backends.")
    b.add_argument("--sizes", metavar="N,N,...", help="element counts, comma-separated")
    b.add_argument("--no-resnet", action="store_true", help="skip the ResNet-50 parameter-set benchmark")
    b.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    b.add_argument("--png", type=Path, metavar="FILE", help="write a plot (needs matplotlib)")
    b.add_argument("--quick", action="store_true", help="few repetitions, small sizes")
    b.add_argument("--threads", type=int, metavar="N",
                   help="numba-parallel's thread count (default: the usable cores)")
    b.add_argument("--load", action=argparse.BooleanOptionalAction, default=None,
                   help="time the CPU backends again with one core kept busy (default: on; off with --quick)")
    b.add_argument("--no-reference", action="store_true",
                   help="skip the reference and campaign throughput table")
    b.add_argument("--campaign", action=argparse.BooleanOptionalAction, default=None,
                   help="campaign throughput on 1 and 2 processes (default: on; off with --quick)")
    b.set_defaults(handler=_cmd_bench)

    sv = sub.add_parser(
        "serve", help="answer the JSON-lines protocol on stdin/stdout with an in-process target",
        description="Answer the subprocess protocol (spec/protocol.md) on stdin/stdout with an "
                    "in-process target, so that another environment can check it with --cmd, e.g.\n"
                    "  adabelief-conformance check --cmd \".tf-venv/bin/adabelief-conformance serve "
                    "library:tensorflow-addons\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sv.add_argument("target", metavar="TARGET",
                    help="a bundled backend, catalogue:ENTRY, library:NAME[@CONFIGURATION] or module:attr")
    sv.set_defaults(handler=_cmd_serve)

    ref = sub.add_parser(
        "reference", help="exact, correctly rounded outputs for given inputs",
        description="Correctly rounded outputs of the update for inputs given on the command line.\n"
                    "Numbers are decimal (0.1, 1e-3), hex (0x1.8p+0), inf or nan; lists are\n"
                    "comma-separated. Inputs are rounded to nearest in the dtype's formats first\n"
                    "(the tool says when that changed them); hyperparameters are doubles.\n\n"
                    "example: adabelief-conformance reference --dtype float32 --w 10 --g 0.3 \\\n"
                    "             --wd 0.05 --clip-gradient 0.5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ref.add_argument("--profile", default="mxnet", choices=_profiles())
    ref.add_argument("--dtype", default="float32", choices=_dtypes())
    ref.add_argument("--w", required=True, metavar="LIST", help="weights (the master weights for float16-mp)")
    ref.add_argument("--g", required=True, action="append", metavar="LIST",
                     help="gradients; repeat for several steps (write --g=-0.5,1 when a list starts with -)")
    ref.add_argument("--m", metavar="LIST", help="first moments before the step (default 0)")
    ref.add_argument("--s", metavar="LIST", help="second moments before the step (default 0)")
    ref.add_argument("--t", type=int, default=0, help="updates already applied (default 0)")
    ref.add_argument("--lr", "--learning-rate", dest="lr", default="0.001", metavar="X")
    ref.add_argument("--beta1", default="0.9", metavar="X")
    ref.add_argument("--beta2", default="0.999", metavar="X")
    ref.add_argument("--epsilon", default="1e-6", metavar="X")
    ref.add_argument("--wd", default="0", metavar="X")
    ref.add_argument("--rescale-grad", default="1", metavar="X")
    ref.add_argument("--clip-gradient", default=None, metavar="X", help="default: no clipping")
    ref.add_argument("--lr-mult", default="1", metavar="X")
    ref.add_argument("--wd-mult", default="1", metavar="X")
    ref.add_argument("--eps-root", default="0", metavar="X",
                     help="the epsilon stored in s under a profile whose stored_epsilon is eps_root "
                          "(optax; default 0)")
    ref.add_argument("--no-bias-correction", action="store_true", help="correct_bias=False")
    ref.add_argument("--s-max", metavar="LIST", help="AMSGrad's maximum of s before the step "
                                                      "(amsgrad only; default: s)")
    for switch in ("weight-decouple", "fixed-decay", "rectify", "degenerated-to-sgd", "amsgrad"):
        ref.add_argument(f"--{switch}", action=argparse.BooleanOptionalAction, default=None,
                         help=f"the switch {switch.replace('-', '_')} (default: the profile's own "
                              "default, spec/profiles.md#switches)")
    ref.add_argument("--json", action="store_true", help="print JSON instead of text")
    ref.add_argument("--fast", action="store_true",
                     help="the fast reference path where it decides, mpmath for the rest (for long "
                          "lists: the same values; σ and residuals may differ from mpmath's in their "
                          "last bits, far below what a verdict resolves)")
    ref.set_defaults(handler=_cmd_reference)
    return ap


# ----- check -------------------------------------------------------------------------------------

def _load_selection(args: argparse.Namespace) -> tuple[list[Any], list[Any], dict[str, list[str]]]:
    """(all loaded cases, selected cases, the selection) from the selection options."""
    from ._runner import load_cases, select_cases

    sel = {k: v for k, v in (("profiles", _split(args.profile)), ("dtypes", _split(args.dtype)),
                             ("suites", _split(args.suite)), ("flags", _split(args.flag)),
                             ("ids", _split(args.id))) if v}
    for key, allowed in (("profiles", _profiles()), ("dtypes", _dtypes())):
        bad = [v for v in sel.get(key, []) if v not in allowed]
        if bad:
            raise UsageError(f"unknown {key[:-1]} {bad[0]!r}; expected one of {', '.join(allowed)}")
    cases = load_cases(args.vectors, suites=sel.get("suites"))
    for key, known in (("suites", {c.suite for c in cases}), ("flags", {f for c in cases for f in c.flags})):
        bad = [v for v in sel.get(key, []) if v not in known]
        if bad:
            raise UsageError(f"unknown {key[:-1]} {bad[0]!r}; the vectors have {', '.join(sorted(known))}")
    selected = select_cases(cases, **sel)
    if not selected:
        raise UsageError(f"no case matches the selection ({_describe_selection(sel)}) among {len(cases)} cases")
    return cases, selected, sel


def _describe_selection(sel: dict[str, list[str]]) -> str:
    return "; ".join(f"{k} {', '.join(v)}" for k, v in sel.items()) or "everything"


def _resolve(args: argparse.Namespace) -> Any:
    from ._targets import resolve_target

    if args.cmd is None and args.target is None:
        raise UsageError("give a TARGET or --cmd COMMAND (see --help)")
    if args.cmd is not None and args.target is not None:
        raise UsageError("give a TARGET or --cmd COMMAND, not both")
    timeout = 10.0 if args.timeout is None else args.timeout
    if not timeout > 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")
    isolate = getattr(args, "isolate", False)
    if isolate and args.target is None:
        raise UsageError("--isolate runs a TARGET in a worker process; --cmd already runs one")
    if args.target is not None and not isolate:
        given = [o for o, v in (("--timeout", args.timeout is not None),
                                ("--validate-protocol", args.validate_protocol)) if v]
        if given:
            # An in-process target runs in this process: nothing could enforce either option.
            raise UsageError(f"{' and '.join(given)} apply to a process: add --isolate to run "
                             f"{args.target} in a worker process under them, or give --cmd")
    if isolate:
        cmd = f"{shlex.quote(sys.executable)} -m adabelief_conformance serve {shlex.quote(args.target)}"
        return resolve_target(None, cmd, timeout=timeout, validate=args.validate_protocol)
    return resolve_target(args.target, args.cmd, timeout=timeout, validate=args.validate_protocol)


def _close(impl: Any) -> None:
    close = getattr(impl, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing must not hide the run's outcome
            pass


def _rerun_args(args: argparse.Namespace) -> list[str]:
    from ._targets import target_args

    out = target_args(args.target, args.cmd)
    if args.cmd is not None:
        if args.timeout is not None:
            out += ["--timeout", f"{args.timeout:g}"]
        if args.validate_protocol:
            out.append("--validate-protocol")
    for v in args.vectors or ():
        out += ["--vectors", str(v)]
    return out


def _cmd_check(args: argparse.Namespace) -> int:
    from ._expectations import load_expectations, write_expectations
    from ._report import (
        print_console,
        progress_bar,
        step_summary_path,
        write_json,
        write_junit,
        write_markdown,
    )
    from ._runner import check, exit_code

    if args.max_failures < 0 or args.show < 0 or args.jobs < 1:
        raise UsageError("--max-failures and --show must be >= 0, --jobs >= 1")
    _check_writable((("--json", args.json), ("--junit", args.junit), ("--markdown", args.markdown),
                     ("--write-expectations", args.write_expectations)))
    t_load = time.perf_counter()
    expectations = load_expectations(args.expectations) if args.expectations else None
    cases, selected, sel = _load_selection(args)
    load_seconds = time.perf_counter() - t_load
    if expectations is not None:
        expectations = expectations.with_known(cases, suites_only=bool(args.suite))
    impl = _resolve(args)
    try:
        applicable = [c for c in selected if c.profile in impl.profiles and c.dtype in impl.dtypes]
        if not applicable:
            raise UsageError(f"none of the {len(selected)} selected cases applies to {impl.name} (profiles "
                             f"{', '.join(sorted(impl.profiles))}; dtypes {', '.join(sorted(impl.dtypes))})")
        show_bar = not (args.no_progress or args.quiet) and sys.stderr.isatty()
        with progress_bar(show_bar, len(selected), f"{impl.name}") as progress:
            report = check(impl, selected, jobs=args.jobs, max_failures=args.max_failures, progress=progress,
                           expectations=expectations)
    finally:
        _close(impl)
    from ._targets import describe_target

    report.load_seconds = load_seconds
    report.target = describe_target(args.target, args.cmd)
    report.rerun_args = tuple(_rerun_args(args))
    report.vectors = tuple(str(v) for v in args.vectors or ())
    report.selection = sel
    problems: list[str] = []
    for path, write in ((args.json, write_json), (args.junit, write_junit), (args.markdown, write_markdown)):
        if path is not None:
            try:
                write(report, path)
            except OSError as e:
                problems.append(f"{path}: cannot write: {e.strerror}")
    if args.step_summary:
        target = step_summary_path()
        if target is None:
            report.warnings.append("--step-summary: $GITHUB_STEP_SUMMARY is not set (not on GitHub Actions)")
        else:
            try:
                write_markdown(report, target, append=True)
            except OSError as e:  # the other reports are written; the run's verdict stays
                problems.append(f"--step-summary: {target}: cannot write: {e.strerror}")
    if args.write_expectations is not None:
        n = write_expectations(args.write_expectations, report)
        print(f"wrote {n} expectation entries to {args.write_expectations}", file=sys.stderr)
    print_console(report, show=args.show, quiet=args.quiet)
    if problems:
        raise UsageError(problems[0])
    return exit_code(report)


def _check_writable(outputs: Sequence[tuple[str, Path | None]]) -> None:
    """Refuse, before anything runs, a report path that could not be written afterwards."""
    for flag, path in outputs:
        if path is None:
            continue
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            problem = "is a directory"
        elif not parent.is_dir():
            problem = f"its folder {parent} does not exist"
        elif not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            problem = "not writable"
        else:
            continue
        raise UsageError(f"{flag} {path}: cannot write the report there: {problem}")


# ----- generate, diagnose, fuzz, bench -----------------------------------------------------------

def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(f"adabelief_conformance.{module}")
    except ImportError as e:
        raise UsageError(f"{what} is unavailable: cannot import adabelief_conformance.{module} ({e})") from None


def _cmd_generate(args: argparse.Namespace) -> int:
    from adabelief_reference._generate import main as generate_main

    argv = (["--check"] if args.check else []) + (["--out", str(args.out)] if args.out else [])
    if args.jobs is not None and args.jobs < 1:  # as check refuses it
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    argv += (["--jobs", str(args.jobs)] if args.jobs else []) + (["--no-progress"] if args.no_progress else [])
    return int(generate_main(argv))


def _cmd_diagnose(args: argparse.Namespace) -> int:
    mod = _import("_diagnose", "diagnose")
    _, selected, _ = _load_selection(args)
    impl = _resolve(args)
    try:
        rows = mod.diagnose(impl, selected)
    finally:
        _close(impl)
    print(mod.format_diagnosis(rows))
    # The exit status of `check`: 0 when the implementation conforms on the selection.
    return 0 if rows.failing == 0 and rows.errored == 0 else 1


def _cmd_campaign(args: argparse.Namespace) -> int:
    from . import _campaign as C

    _check_writable((("--json", args.json), ("--junit", args.junit), ("--markdown", args.markdown)))
    shard = C.parse_shard(args.shard)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    if args.batch_elements < 1:
        raise UsageError("--batch-elements must be >= 1")
    if args.isolate or args.timeout is not None or args.validate_protocol:
        raise UsageError("campaign runs TARGET (or --cmd) in each worker; --isolate, --timeout and "
                         "--validate-protocol are options of check")
    if (args.cmd is None) == (args.target is None):
        raise UsageError("give a TARGET or --cmd COMMAND (see --help)")
    impl = C._target(args.target, args.cmd)
    profiles = _split(args.profile) or sorted(impl.profiles)
    dtypes = _split(args.dtype) or sorted(impl.dtypes)
    for p in profiles:
        if p not in _profiles():
            raise UsageError(f"--profile {p}: unknown; expected one of {', '.join(_profiles())}")
    for d in dtypes:
        if d not in _dtypes():
            raise UsageError(f"--dtype {d}: unknown; expected one of {', '.join(_dtypes())}")
    pairs = [(p, d) for p in profiles for d in dtypes if p in impl.profiles and d in impl.dtypes]
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    show = not args.no_progress and sys.stderr.isatty()
    with Progress(TextColumn("campaign"), BarColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), disable=not show, transient=True) as bar:
        task = bar.add_task("campaign", total=None, rate="")
        t0 = time.perf_counter()

        def progress(done: int, total: int, elements: int) -> None:
            rate = elements / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} element-steps/s")

        report = C.run_campaign(args.target, args.cmd, elements=args.elements, seed=args.seed,
                                pairs=pairs, shard=shard, jobs=args.jobs, dask=args.dask,
                                batch_elements=args.batch_elements, out_dir=args.out, progress=progress)
    for path, write in ((args.json, C.write_json), (args.junit, C.write_junit),
                        (args.markdown, C.write_markdown)):
        if path is not None:
            write(report, path)
    print("\n".join(C.summary_lines(report)))
    return report.exit_code


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._subprocess import serve
    from ._targets import resolve_target

    # The protocol owns stdout: anything the target prints goes to stderr instead.
    protocol_out = sys.stdout
    sys.stdout = sys.stderr
    try:
        impl = resolve_target(args.target)
        serve(impl, stdout=protocol_out)
    finally:
        sys.stdout = protocol_out
        _close(impl if "impl" in locals() else None)
    return 0


def _cmd_fuzz(args: argparse.Namespace) -> int:
    mod = _import("_fuzz", "fuzz")
    if args.max_examples < 1:
        raise UsageError("--max-examples must be >= 1")
    impl = _resolve(args)
    try:
        result = mod.fuzz(impl, profile=args.profile, dtype=args.dtype, max_examples=args.max_examples,
                          seed=args.seed, out_path=Path(args.out) if args.out else None)
    finally:
        _close(impl)
    target = shlex.quote(args.target) if args.target else f"--cmd {shlex.quote(args.cmd)}"
    print(result.message.replace("check TARGET", f"check {target}"))
    return 1 if result.failed else 0


def _call_with(fn: Callable[..., Any], options: dict[str, tuple[tuple[str, ...], Any, bool]]) -> Any:
    """Call ``fn`` with each option under the first of its names that ``fn`` accepts.

    options: key -> (accepted names, value, given by the user). A user-given option that ``fn``
    has no parameter for is a usage error rather than silently ignored."""
    params = inspect.signature(fn).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, (names, value, given) in options.items():
        name = next((n for n in names if n in params), names[0] if var_kw else None)
        if name is None:
            if given:
                raise UsageError(f"--{key} is not supported by this version of the benchmark")
            continue
        kwargs[name] = value
    return fn(**kwargs)


def _cmd_bench(args: argparse.Namespace) -> int:
    mod = _import("_bench", "bench")
    sizes = None
    if args.sizes:
        try:
            sizes = [int(float(x)) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--sizes {args.sizes!r}: expected comma-separated integers") from None
        if not sizes or min(sizes) < 1:
            raise UsageError("--sizes: expected positive integers")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    result = _call_with(mod.run_bench, {
        "sizes": (("sizes",), sizes, sizes is not None),
        "no-resnet": (("resnet50", "resnet", "include_resnet"), not args.no_resnet, args.no_resnet),
        "json": (("json_path", "json_out", "json"), args.json, args.json is not None),
        "png": (("png_path", "png_out", "png"), args.png, args.png is not None),
        "quick": (("quick",), args.quick, args.quick),
        "threads": (("threads",), args.threads, args.threads is not None),
        "load": (("load",), args.load, args.load is not None),
        "no-reference": (("reference",), not args.no_reference, args.no_reference),
        "campaign": (("campaign",), args.campaign, args.campaign is not None),
    })
    if isinstance(result, str):
        print(result)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# ----- reference ---------------------------------------------------------------------------------

_HEX = re.compile(r"^([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?\d+))?$")


def _exact(text: str) -> Fraction | float:
    """The exact value a number spells: a Fraction, or a float for -0, inf and nan."""
    t = text.strip()
    low = t.lower().lstrip("+")
    if low in ("inf", "infinity"):
        return math.inf
    if low in ("-inf", "-infinity"):
        return -math.inf
    if low in ("nan", "-nan"):
        return math.nan
    m = _HEX.match(t)
    if m:
        sign, whole, frac, exp = m.groups()
        if not (whole or frac):
            raise UsageError(f"{text!r}: not a number")
        digits = (whole or "") + (frac or "")
        value = Fraction(int(digits, 16), 16 ** len(frac or "")) * Fraction(2) ** int(exp or 0)
        if sign == "-":
            value = -value
    else:
        try:
            value = Fraction(t)
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"{text!r}: not a number (decimal such as 0.1 or 1e-3, hex such as "
                             "0x1.8p+0, inf or nan)") from None
    if value == 0 and t.startswith("-"):
        return -0.0
    return value


def _round(text: str, fmt: Any, label: str, notes: list[str]) -> float:
    """``text`` rounded to nearest in ``fmt``; a note when that changed its value."""
    x = _exact(text)
    if isinstance(x, float):
        return x
    r = float(fmt.round_fraction(x))
    if math.isinf(r) or Fraction(r) != x:
        notes.append(f"{label} = {text.strip()} is not a {fmt.name} value; rounded to nearest: {_show(r)}")
    return r


def _show(x: float) -> str:
    from adabelief_reference import hexfloat

    return hexfloat(x) if not math.isfinite(x) else f"{hexfloat(x)} ({x!r})"


def _list(text: str | None, fmt: Any, label: str, notes: list[str], n: int | None) -> tuple[float, ...]:
    items = ["0"] if text is None else [x for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"--{label}: empty list")
    if n is not None and len(items) == 1 and n > 1:
        items = items * n  # a scalar applies to every element
    if n is not None and len(items) != n:
        raise UsageError(f"--{label} has {len(items)} values; --w has {n}")
    return tuple(_round(x, fmt, f"{label}[{i}]", notes) for i, x in enumerate(items))


def _cmd_reference(args: argparse.Namespace) -> int:
    from adabelief_reference import (
        DTYPES,
        FLOAT64,
        CaseInputs,
        Finite,
        Hyperparameters,
        ParamInput,
        StepInput,
        fast_golden,
        golden,
        hexfloat,
        profile_named,
    )
    from adabelief_reference._exact import outputs_of
    from adabelief_reference._model import SWITCHES

    spec = DTYPES[args.dtype]
    notes: list[str] = []
    w = _list(args.w, spec.master, "w", notes, None)
    n = len(w)
    m = _list(args.m, spec.compute, "m", notes, n)
    s = _list(args.s, spec.compute, "s", notes, n)
    grads = tuple(_list(g, spec.storage, f"g (step {k})" if len(args.g) > 1 else "g", notes, n)
                  for k, g in enumerate(args.g))
    if args.t < 0:
        raise UsageError("--t must be >= 0")

    def hp(text: str, name: str) -> float:
        # Hyperparameters are Python floats: a decimal rounds to the nearest double as usual;
        # only a hex spelling with more digits than a double gets a note.
        return _round(text, FLOAT64, name, notes if "x" in text.lower() else [])

    clip = None if args.clip_gradient is None else hp(args.clip_gradient, "clip_gradient")
    hyper = Hyperparameters(learning_rate=hp(args.lr, "lr"), beta1=hp(args.beta1, "beta1"),
                            beta2=hp(args.beta2, "beta2"), epsilon=hp(args.epsilon, "epsilon"),
                            correct_bias=not args.no_bias_correction, wd=hp(args.wd, "wd"),
                            rescale_grad=hp(args.rescale_grad, "rescale_grad"), clip_gradient=clip,
                            eps_root=hp(args.eps_root, "eps_root"),
                            **{name: (profile_named(args.profile).switches.get(name, (False,))[0]
                                      if getattr(args, name) is None else getattr(args, name))
                               for name in SWITCHES})
    if hyper.eps_root != 0.0 and profile_named(args.profile).stored_epsilon != "eps_root":
        raise UsageError(f"--eps-root: profile {args.profile} stores epsilon in s, not eps_root; "
                         "use a profile whose stored_epsilon is eps_root (e.g. optax)")
    s_max = None
    if hyper.amsgrad:
        s_max = s if args.s_max is None else _list(args.s_max, spec.compute, "s_max", notes, n)
    elif args.s_max is not None:
        raise UsageError("--s-max: only with --amsgrad (the maximum of s is AMSGrad's state)")
    param = ParamInput(w, m, s, t=args.t, lr_mult=hp(args.lr_mult, "lr_mult"), wd_mult=hp(args.wd_mult, "wd_mult"),
                       s_max=s_max)
    try:
        case = CaseInputs(args.profile, args.dtype, hyper, (param,), tuple(StepInput((g,)) for g in grads))
    except ValueError as e:
        raise UsageError(str(e)) from None
    fast = fast_golden(case) if args.fast else None
    result = golden(case) if fast is None else fast
    names = outputs_of(case)

    def alt_json(a: Any) -> dict[str, Any]:
        if isinstance(a, Finite):
            return {"value": hexfloat(a.value), "decimal": repr(a.value), "residual": hexfloat(a.residual),
                    "sigma": hexfloat(a.sigma)}
        return {"kind": a.kind}

    if args.json:
        doc = {
            "profile": args.profile, "dtype": args.dtype, "notes": notes,
            "inputs": {"w": [hexfloat(x) for x in w], "m": [hexfloat(x) for x in m], "s": [hexfloat(x) for x in s],
                       "g": [[hexfloat(x) for x in g] for g in grads], "t": args.t},
            "steps": [{"step": k, "t": args.t + k + 1,
                       "outputs": {nm: [[alt_json(a) for a in e] for e in step[0][nm]] for nm in names}}
                      for k, step in enumerate(result.steps)],
        }
        print(json.dumps(doc, indent=1))
        return 0
    print(f"profile {args.profile}, dtype {args.dtype}: w in {spec.master.name}, m and s in "
          f"{spec.compute.name}, g in {spec.storage.name}; hyperparameters are doubles")
    print("inputs are rounded to nearest in those formats first" + (":" if notes else " (all were exact)"))
    for note in notes:
        print(f"  {note}")
    for label, vals in (("w", w), ("m", m), ("s", s)):
        print(f"{label} = [{', '.join(_show(x) for x in vals)}]")
    for k, g in enumerate(grads):
        print(f"g (step {k}) = [{', '.join(_show(x) for x in g)}]")
    h = hyper
    print("hyperparameters: " + " ".join(f"{k}={_show(v)}" for k, v in (
        ("lr", h.learning_rate), ("beta1", h.beta1), ("beta2", h.beta2), ("epsilon", h.epsilon), ("wd", h.wd),
        ("rescale_grad", h.rescale_grad), ("lr_mult", param.lr_mult), ("wd_mult", param.wd_mult),
        ("eps_root", h.eps_root)))
        + f" clip_gradient={'None' if clip is None else _show(clip)} correct_bias={h.correct_bias}")
    for k, step in enumerate(result.steps):
        print(f"after step {k} (update count t = {args.t + k + 1}):")
        for nm in names:
            for j, expectation in enumerate(step[0][nm]):
                parts = []
                for a in expectation:
                    if isinstance(a, Finite):
                        parts.append(f"{_show(a.value)}  residual {hexfloat(a.residual)} "
                                     f"({a.residual:.3g})  sigma {hexfloat(a.sigma)} ({a.sigma:.3g})")
                    else:
                        parts.append("anything (implementation-defined)" if a.kind == "any" else a.kind)
                print(f"  {nm}[{j}] = {' | or '.join(parts)}")
    return 0


# ----- entry point -------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _terminate_as_interrupt()
    try:
        return int(args.handler(args))
    except ConformanceError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): nothing more can be shown. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _terminate_as_interrupt() -> Any:
    """SIGTERM (a CI job cancelled, `timeout`) ends a run as Ctrl-C does: the cases that ran are
    reported, marked incomplete, exit status 130. Only in the main thread of the main program."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _raise_interrupt)
    except (ValueError, OSError):
        return None


if __name__ == "__main__":
    sys.exit(main())
