"""Issue 11: every bad input and misbehaving implementation gets a one-line error, the documented
exit status (0, 1, 2, 130; 141 when stdout's reader goes away) and the reports it asked for.
Real processes, real files, real signals; no mocks."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adabelief_conformance._subprocess import CIRCUIT_BREAKER, MAX_LINE_BYTES

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "adabelief_conformance"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, **kw)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
    return lines[0]


PROTOCOL_PRELUDE = """
import json, os, sys
INFO = {"implementation": {"name": "bad", "version": "1", "language": "python",
                           "profiles": ["mxnet"], "dtypes": ["float32"]}, "version": 1}
for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "start":
        print(json.dumps(INFO), flush=True)
    elif msg["cmd"] == "run":
"""


def program(tmp_path: Path, name: str, on_run: str) -> str:
    path = tmp_path / name
    path.write_text(PROTOCOL_PRELUDE + textwrap.indent(textwrap.dedent(on_run), " " * 8))
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


# ----- misbehaving implementations ------------------------------------------------------------

def test_a_crash_on_every_case_trips_the_circuit_breaker(tmp_path) -> None:
    cmd = program(tmp_path, "crash.py", "os._exit(3)")
    t0 = time.monotonic()
    r = cli("check", "--cmd", cmd, "--profile", "mxnet", "--dtype", "float32", "--no-progress",
            "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1
    cases = json.loads((tmp_path / "r.json").read_text())["cases"]
    assert len(cases) > 100 and all(c["status"] == "errored" for c in cases)
    assert sum("circuit breaker" in c["message"] for c in cases) == len(cases) - CIRCUIT_BREAKER
    assert "exited with status 3" in cases[0]["message"]
    # errored messages say what happened, not where in the runner it was noticed
    assert not any("_subprocess.py" in c["message"] for c in cases)
    assert time.monotonic() - t0 < 60  # not one restart per case


def test_a_line_without_end_is_cut_off_at_the_limit(tmp_path) -> None:
    cmd = program(tmp_path, "flood.py", """
        chunk = b"x" * (1 << 20)
        while True:
            os.write(1, chunk)
        """)
    r = cli("check", "--cmd", cmd, "--profile", "mxnet", "--dtype", "float32", "--suite", "defaults",
            "--id", "defaults-*", "--no-progress", "--timeout", "60", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1
    first = json.loads((tmp_path / "r.json").read_text())["cases"][0]
    assert f"longer than {MAX_LINE_BYTES // 2**20} MiB" in first["message"]


def test_in_process_options_that_need_a_process_are_refused() -> None:
    for option in (["--timeout", "5"], ["--validate-protocol"]):
        r = cli("check", "numpy", *option, "--suite", "defaults")
        assert r.returncode == 2
        assert "--isolate" in one_line_error(r)


def test_isolate_puts_a_hung_in_process_adapter_under_the_timeout(tmp_path) -> None:
    (tmp_path / "hangs.py").write_text(textwrap.dedent("""
        import time
        class Impl:
            name, version, profiles, dtypes = "hangs", "1", {"mxnet"}, {"float32"}
            def run(self, request):
                time.sleep(3600)
        """))
    t0 = time.monotonic()
    r = cli("check", "hangs:Impl", "--isolate", "--timeout", "1", "--suite", "defaults",
            "--no-progress", "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert r.returncode == 1
    cases = json.loads((tmp_path / "r.json").read_text())["cases"]
    assert "timed out after 1 s" in cases[0]["message"]
    assert time.monotonic() - t0 < 60


def test_numpy_warnings_of_an_implementation_stay_out_of_the_report(tmp_path) -> None:
    (tmp_path / "noisy.py").write_text(textwrap.dedent("""
        import numpy as np
        from adabelief_conformance._targets import resolve_target
        class Impl:
            name, version, profiles, dtypes = "noisy", "1", {"mxnet"}, {"float32"}
            def __init__(self):
                self.inner = resolve_target("numpy")
            def run(self, request):
                np.float32(3e38) * np.float32(10)  # overflows, as special-value cases do
                return self.inner.run(request)
        """))
    r = cli("check", "noisy:Impl", "--suite", "special-values", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-1500:]
    assert "RuntimeWarning" not in r.stderr + r.stdout


def test_an_interrupt_still_writes_every_report_marked_incomplete(tmp_path) -> None:
    (tmp_path / "interrupts.py").write_text(textwrap.dedent("""
        import os, signal
        from adabelief_conformance._targets import resolve_target
        class Impl:
            name, version, profiles, dtypes = "interrupts", "1", {"mxnet"}, {"float32"}
            def __init__(self):
                self.inner, self.n = resolve_target("numpy"), 0
            def run(self, request):
                self.n += 1
                if self.n == 5:
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, for real
                return self.inner.run(request)
        """))
    reports = {k: tmp_path / f"r.{k}" for k in ("json", "xml", "md")}
    args = ["check", "interrupts:Impl", "--suite", "defaults,clipping", "--no-progress",
            "--json", str(reports["json"]), "--junit", str(reports["xml"]), "--markdown", str(reports["md"])]
    # A shell without job control starts background jobs with SIGINT ignored (CI does): give
    # the run Python's usual Ctrl-C handling, as an interactive terminal does.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from adabelief_conformance._cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 130, r.stderr[-1500:]
    doc = json.loads(reports["json"].read_text())
    assert doc["incomplete"].startswith("interrupted after 4 of ") and doc["exitCode"] == 130
    assert len(doc["cases"]) == 4 and not doc["conforming"]
    assert 'name="incomplete"' in reports["xml"].read_text()
    assert "incomplete: interrupted after 4" in reports["md"].read_text()
    assert "INCOMPLETE (interrupted after 4" in r.stdout


# ----- bad input --------------------------------------------------------------------------------

def test_report_paths_are_checked_before_anything_runs(tmp_path) -> None:
    for option in ("--json", "--junit", "--markdown", "--write-expectations"):
        r = cli("check", "numpy", option, str(tmp_path / "no-such-folder" / "r"))
        assert r.returncode == 2 and r.stdout == ""
        assert option in one_line_error(r) and "does not exist" in r.stderr
    r = cli("check", "numpy", "--json", str(tmp_path))
    assert r.returncode == 2 and "is a directory" in one_line_error(r)


def test_a_closed_stdout_is_not_a_traceback() -> None:
    many = ",".join(["1.5"] * 4000)
    proc = subprocess.Popen([*CLI, "reference", "--w", many, "--g", many],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_fuzz_help_says_what_happens_to_an_existing_file() -> None:
    r = cli("fuzz", "--help")
    assert "an existing file is replaced" in " ".join(r.stdout.split())


def _edited(tmp_path: Path, edit) -> Path:
    doc = json.loads((ROOT / "vectors" / "defaults.json").read_text())
    edit(doc["testGroups"][0]["tests"][0])
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_single_file_with_edited_inputs_is_refused(tmp_path) -> None:
    def change_w(test):  # still a float32 value, but another one: the id no longer matches
        test["params"][0]["w"][0] = "0x1.8p+0" if test["params"][0]["w"][0] != "0x1.8p+0" else "0x1p+0"

    r = cli("check", "numpy", "--vectors", str(_edited(tmp_path, change_w)))
    assert r.returncode == 2 and "does not match the case's inputs" in one_line_error(r)

    def not_float32(test):
        test["params"][0]["w"][0] = "0x1.0000000000001p+0"

    r = cli("check", "numpy", "--vectors", str(_edited(tmp_path, not_float32)))
    line = one_line_error(r)
    assert r.returncode == 2 and "is not a float32 value" in line and "params[0].w[0]" in line


def test_a_single_file_no_manifest_vouches_for_is_reported_unverified(tmp_path) -> None:
    def change_expected(test):
        test["steps"][0]["expected"][0]["w"]["value"][0] = "0x1p+0"

    path = _edited(tmp_path, change_expected)
    r = cli("check", "numpy", "--vectors", str(path), "--no-progress", "--json", str(tmp_path / "r.json"),
            "--junit", str(tmp_path / "r.xml"), "--markdown", str(tmp_path / "r.md"))
    assert r.returncode == 1  # the edited value is trusted, and the run says it was not verified
    assert f"{path}: unverified" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["unverifiedFiles"] == [str(path)]
    assert 'name="unverified"' in (tmp_path / "r.xml").read_text()
    assert "unverified" in (tmp_path / "r.md").read_text()
    # a byte-for-byte copy of a bundled file is vouched for by the bundled manifest
    copy = tmp_path / "copy.json"
    copy.write_bytes((ROOT / "vectors" / "defaults.json").read_bytes())
    r = cli("check", "numpy", "--vectors", str(copy), "--no-progress", "--json", str(tmp_path / "c.json"))
    assert r.returncode == 0 and json.loads((tmp_path / "c.json").read_text())["unverifiedFiles"] == []


def _folder(tmp_path: Path, files: dict) -> Path:
    folder = tmp_path / "vectors"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


@pytest.mark.parametrize("name", ["../outside.json", "/dev/zero", "sub/dir.json", "manifest.json",
                                  ".hidden.json", "notes.txt"])
def test_a_manifest_names_only_files_of_its_own_folder(tmp_path, name) -> None:
    folder = _folder(tmp_path, {name: {"sha256": "0" * 64, "numberOfTests": 1}})
    r = cli("check", "numpy", "--vectors", str(folder), timeout=60)
    assert r.returncode == 2 and "plain *.json names" in one_line_error(r)


def test_a_link_out_of_the_folder_is_refused(tmp_path) -> None:
    folder = _folder(tmp_path, {"defaults.json": {"sha256": "0" * 64, "numberOfTests": 1}})
    (folder / "defaults.json").symlink_to(ROOT / "vectors" / "defaults.json")
    r = cli("check", "numpy", "--vectors", str(folder), timeout=60)
    assert r.returncode == 2 and "outside" in one_line_error(r)


def test_a_fifo_or_an_oversized_file_is_refused_without_reading_it(tmp_path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it would block forever
    r = cli("check", "numpy", "--vectors", str(fifo), timeout=60)
    assert r.returncode == 2 and "not a regular file" in one_line_error(r)
    big = tmp_path / "big.json"
    with big.open("wb") as f:  # sparse: 257 MiB that take no disk
        f.truncate(257 * 2**20)
    r = cli("check", "numpy", "--vectors", str(big), timeout=60)
    assert r.returncode == 2 and "more than the" in one_line_error(r)


def test_a_non_editable_install_checks_and_regenerates_its_own_vectors(tmp_path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "from adabelief_reference._generate import default_out_dir; print(default_out_dir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout.strip()
    assert Path(out) == target / "adabelief_vectors"
    r = cli("check", "numpy", "--suite", "defaults", "--no-progress", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_a_terminated_run_writes_its_reports_too(tmp_path) -> None:
    """SIGTERM (a cancelled CI job) ends a run as Ctrl-C does."""
    (tmp_path / "terminates.py").write_text(textwrap.dedent("""
        import os, signal
        from adabelief_conformance._targets import resolve_target
        class Impl:
            name, version, profiles, dtypes = "terminates", "1", {"mxnet"}, {"float32"}
            def __init__(self):
                self.inner, self.n = resolve_target("numpy"), 0
            def run(self, request):
                self.n += 1
                if self.n == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                return self.inner.run(request)
        """))
    r = cli("check", "terminates:Impl", "--suite", "defaults", "--no-progress",
            "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert r.returncode == 130
    assert json.loads((tmp_path / "r.json").read_text())["incomplete"].startswith("interrupted after 2 of")


def test_suite_selection_with_expectations_warns_only_about_its_own_suites(tmp_path) -> None:
    path = tmp_path / "e.toml"
    path.write_text('format = 1\n[[deviation]]\nid = "clipping-*"\nreason = "other suite"\n'
                    '[[deviation]]\nid = "cliping-*"\nreason = "a typo"\n')
    r = cli("check", "numpy", "--suite", "defaults", "--expectations", str(path), "--no-progress", "-q")
    assert r.returncode == 0
    assert "clipping-*" not in r.stdout and "'cliping-*') matches no case" in r.stdout
