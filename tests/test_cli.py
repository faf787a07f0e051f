"""The command line: exit codes 0/1/2, one-line input errors naming the file, targets, rerun
commands that rerun exactly one case, the reference subcommand and the delegating subcommands."""

from __future__ import annotations

import collections
import json
import shlex
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
from adabelief_reference import (
    DTYPES,
    CaseInputs,
    Finite,
    Hyperparameters,
    ParamInput,
    StepInput,
    golden,
    hexfloat,
    profile_names,
)

from adabelief_conformance._cli import main
from adabelief_conformance._diagnose import Diagnoses
from adabelief_conformance._vectors import bundled_vectors_dir

SPEC = "catalogue:spec formula in the compute dtype"
CLIP = "catalogue:clip ignored"
VECTORS = bundled_vectors_dir()

N_PROFILES = len(profile_names())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("adabelief-conformance: error: "), err
    return lines[0]


# ----- exit codes --------------------------------------------------------------------------------

def test_conforming_target_exits_0(capsys) -> None:
    code, out, _ = run(capsys, "check", SPEC, "--suite", "defaults", "--no-progress")
    assert code == 0
    assert "CONFORMING: spec formula in the compute dtype" in out
    assert "defaults" in out and f"{15 * N_PROFILES} passed" in out


def test_mutant_exits_1_and_prints_failures(capsys) -> None:
    code, out, _ = run(capsys, "check", CLIP, "--suite", "defaults", "--no-progress", "--max-failures", "2")
    assert code == 1
    assert "NOT CONFORMING: clip ignored" in out
    assert "FAILED defaults-" in out
    assert "inputs: w=" in out and " g[steps 0..0]=[" in out
    assert "ulp(σ) > 2" in out
    assert "rerun: adabelief-conformance check 'catalogue:clip ignored' --id defaults-" in out


def test_quiet_prints_only_the_verdict(capsys) -> None:
    code, out, _ = run(capsys, "check", CLIP, "--suite", "defaults", "--quiet")
    assert code == 1
    assert out.strip().splitlines() == [out.strip()] and out.startswith("NOT CONFORMING")


def test_rerun_command_reruns_exactly_that_case(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "check", CLIP, "--suite", "defaults", "--no-progress")
    assert code == 1
    reruns = [ln.split("rerun: ", 1)[1] for ln in out.splitlines() if ln.strip().startswith("rerun: ")]
    assert reruns
    argv = shlex.split(reruns[0])
    assert argv[:3] == ["adabelief-conformance", "check", "catalogue:clip ignored"]
    case_id = argv[argv.index("--id") + 1]
    report = tmp_path / "one.json"
    code, out, _ = run(capsys, *argv[1:], "--json", str(report), "--no-progress")
    assert code == 1
    cases = json.loads(report.read_text())["cases"]
    assert [(c["id"], c["status"]) for c in cases] == [(case_id, "failed")]


def test_rerun_command_keeps_the_vectors_option(capsys, tmp_path: Path) -> None:
    vec = tmp_path / "defaults.json"
    shutil.copy(VECTORS / "defaults.json", vec)
    code, out, _ = run(capsys, "check", CLIP, "--vectors", str(vec), "--no-progress", "--show", "1")
    assert code == 1
    rerun = next(ln for ln in out.splitlines() if "rerun: " in ln).split("rerun: ", 1)[1]
    assert f"--vectors {vec}" in rerun
    code, out, _ = run(capsys, *shlex.split(rerun)[1:], "--quiet")
    assert code == 1 and "0 passed, 1 failed" in out


@pytest.mark.parametrize("argv, needle", [
    (["check", "no-such-target", "--suite", "defaults"], "target no-such-target: unknown"),
    (["check", "catalogue:no such entry", "--suite", "defaults"], "no such catalogue entry"),
    (["check", "--suite", "defaults"], "give a TARGET or --cmd"),
    (["check", SPEC, "--cmd", "x", "--suite", "defaults"], "not both"),
    (["check", SPEC, "--suite", "no-such-suite"], "unknown suite 'no-such-suite'"),
    (["check", SPEC, "--flag", "NoSuchFlag", "--suite", "defaults"], "unknown flag 'NoSuchFlag'"),
    (["check", SPEC, "--dtype", "bfloat16"], "unknown dtype 'bfloat16'"),
    (["check", SPEC, "--suite", "defaults", "--id", "nothing-*"], "no case matches the selection"),
    (["check", SPEC, "--vectors", "/no/such/vectors"], "/no/such/vectors: no such file or folder"),
    (["check", "numpy_nope_module:Impl", "--suite", "defaults"], "cannot import numpy_nope_module"),
    (["check", "--cmd", "/no/such/program", "--suite", "defaults"], "--cmd /no/such/program"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, needle) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in _one_error_line(err)


def test_argparse_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["check", SPEC, "--max-failures", "many"])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


# ----- corrupted vectors -------------------------------------------------------------------------

@pytest.fixture()
def vec_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "vectors"
    dst.mkdir()
    shutil.copy(VECTORS / "defaults.json", dst / "defaults.json")
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    manifest["files"] = {"defaults.json": manifest["files"]["defaults.json"]}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _rehash(folder: Path) -> None:
    import hashlib

    manifest = json.loads((folder / "manifest.json").read_text())
    digest = hashlib.sha256((folder / "defaults.json").read_bytes()).hexdigest()
    manifest["files"]["defaults.json"]["sha256"] = digest
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _break_value(folder: Path, replacement: str) -> None:
    path = folder / "defaults.json"
    doc = json.loads(path.read_text())
    doc["testGroups"][0]["tests"][0]["steps"][0]["expected"][0]["w"]["value"][0] = replacement
    path.write_text(json.dumps(doc, indent=1))


def test_intact_copy_passes(capsys, vec_copy: Path) -> None:
    assert run(capsys, "check", SPEC, "--vectors", str(vec_copy), "--quiet")[0] == 0


def test_modified_file_fails_the_manifest_hash(capsys, vec_copy: Path) -> None:
    _break_value(vec_copy, "0x1.8p+0")
    code, _, err = run(capsys, "check", SPEC, "--vectors", str(vec_copy))
    assert code == 2
    line = _one_error_line(err)
    assert str(vec_copy / "defaults.json") in line and "does not match manifest.json" in line


def test_broken_value_with_a_matching_hash_names_file_and_field(capsys, vec_copy: Path) -> None:
    _break_value(vec_copy, "0xZZ")
    _rehash(vec_copy)
    code, _, err = run(capsys, "check", SPEC, "--vectors", str(vec_copy))
    assert code == 2
    assert str(vec_copy / "defaults.json") in _one_error_line(err)


def test_invalid_json_names_the_file(capsys, vec_copy: Path) -> None:
    path = vec_copy / "defaults.json"
    path.write_text(path.read_text()[:-200])
    _rehash(vec_copy)
    code, _, err = run(capsys, "check", SPEC, "--vectors", str(vec_copy))
    assert code == 2
    line = _one_error_line(err)
    assert str(path) in line and "not valid JSON" in line


def test_a_single_vector_file_needs_no_manifest(capsys, vec_copy: Path) -> None:
    code, _, _ = run(capsys, "check", CLIP, "--vectors", str(vec_copy / "defaults.json"), "--quiet")
    assert code == 1


# ----- module:attr targets -----------------------------------------------------------------------

FAKE = textwrap.dedent('''
    import numpy as np
    from adabelief_conformance import ParamResult
    from adabelief_conformance._catalogue import VARIANTS, CatalogueImplementation

    BAD = set()

    class Impl:
        name = "fake"
        version = "0.0.1"
        profiles = {"mxnet", "mxnet-doc"}
        dtypes = {"float32", "float64", "float16-mp"}

        def __init__(self):
            self.inner = CatalogueImplementation("x", VARIANTS["spec formula in the compute dtype"])

        def run(self, request):
            if request.case_id in BAD:
                raise ValueError("cannot handle " + request.case_id)
            return self.inner.run(request)

    class WrongShape(Impl):
        def run(self, request):
            out = self.inner.run(request)
            if request.case_id in BAD:
                r = out[0][0]
                out[0][0] = ParamResult(r.w[:-1], r.m, r.s, r.w16)
            return out

    class OnlyFloat64(Impl):
        dtypes = {"float64"}

    def factory():
        return Impl()

    instance = Impl()

    def broken_factory():
        raise OSError("no device")

    class NotAnImpl:
        name = "x"
        version = 1
        profiles = "mxnet"
''')


@pytest.fixture()
def fake(tmp_path: Path, defaults_ids) -> Path:
    path = tmp_path / "fake_adabelief_impl.py"
    path.write_text(FAKE.replace("BAD = set()", f"BAD = {{{defaults_ids[2]!r}}}"))
    return path


@pytest.fixture(scope="module")
def defaults_ids() -> list[str]:
    from adabelief_conformance._runner import load_cases

    return [c.id for c in load_cases(suites=["defaults"])]


@pytest.mark.parametrize("attr", ["Impl", "factory", "instance"])
def test_module_attr_target_with_one_raising_case(capsys, tmp_path: Path, fake: Path, defaults_ids, attr,
                                                   monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "check", f"fake_adabelief_impl:{attr}", "--suite", "defaults", "--json", str(report))
    assert code == 1
    doc = json.loads(report.read_text())
    statuses = {c["id"]: c["status"] for c in doc["cases"]}
    assert statuses.pop(defaults_ids[2]) == "errored"
    # the fake declares mxnet and mxnet-doc: every other profile's cases are skipped
    assert collections.Counter(statuses.values()) == {"passed": 29, "skipped": 15 * (N_PROFILES - 2)}
    assert f"ERRORED {defaults_ids[2]}" in out and "ValueError: cannot handle" in out


def test_file_path_target_and_wrong_shape(capsys, fake: Path, defaults_ids) -> None:
    code, out, _ = run(capsys, "check", f"{fake}:WrongShape", "--suite", "defaults", "--no-progress")
    assert code == 1
    assert f"ERRORED {defaults_ids[2]}" in out and "malformed result" in out and "shape" in out
    assert "28 errored" not in out and "29 passed, 0 failed, 1 errored" in out


@pytest.mark.parametrize("attr, needle", [
    ("broken_factory", "calling broken_factory() failed: OSError: no device"),
    ("NotAnImpl", "is not an Implementation: 'version' must be a string; 'profiles' must be"),
    ("missing", "has no attribute missing"),
])
def test_bad_module_attr_targets_exit_2(capsys, fake: Path, attr, needle) -> None:
    code, _, err = run(capsys, "check", f"{fake}:{attr}", "--suite", "defaults")
    assert code == 2
    assert needle in _one_error_line(err)


def test_no_applicable_case_exits_2(capsys, fake: Path) -> None:
    code, _, err = run(capsys, "check", f"{fake}:OnlyFloat64", "--suite", "defaults", "--dtype", "float32")
    assert code == 2
    assert f"none of the {5 * N_PROFILES} selected cases applies to fake" in _one_error_line(err)
    code, out, _ = run(capsys, "check", f"{fake}:OnlyFloat64", "--suite", "defaults", "--quiet")
    assert code == 0 and f"10 passed, 0 failed, 0 errored, {15 * N_PROFILES - 10} skipped" in out


# ----- --cmd -------------------------------------------------------------------------------------

def test_cmd_target_through_the_protocol(capsys, tmp_path: Path) -> None:
    script = tmp_path / "serve_clip_ignored.py"
    script.write_text(textwrap.dedent('''
        from adabelief_conformance._catalogue import MUTANTS, CatalogueImplementation
        from adabelief_conformance._subprocess import serve
        serve(CatalogueImplementation("clip ignored", MUTANTS["clip ignored"]))
    '''))
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    code, out, _ = run(capsys, "check", "--cmd", cmd, "--suite", "defaults", "--flag", "ClipOrder",
                       "--dtype", "float32", "--timeout", "30", "--validate-protocol", "--no-progress")
    assert code == 1
    assert f"0 passed, {N_PROFILES} failed" in out  # one ClipOrder case per profile
    rerun = next(ln for ln in out.splitlines() if "rerun: " in ln).split("rerun: ", 1)[1]
    argv = shlex.split(rerun)
    assert argv[2:4] == ["--cmd", cmd] and "--timeout" in argv and "--validate-protocol" in argv


# ----- python -m, reference, delegation ----------------------------------------------------------

def test_python_m_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "adabelief_conformance", "check", SPEC, "--suite", "defaults",
                           "--dtype", "float64", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CONFORMING")
    bad = subprocess.run([sys.executable, "-m", "adabelief_conformance", "check", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("adabelief-conformance: error:")


def _golden(dtype: str, profile: str, w, g, hp: Hyperparameters, t: int = 0):
    spec = DTYPES[dtype]
    w_r = tuple(spec.master.round_fraction(Fraction(x)) for x in w)
    g_r = tuple(spec.storage.round_fraction(Fraction(x)) for x in g)
    z = tuple(0.0 for _ in w)
    case = CaseInputs(profile, dtype, hp, (ParamInput(w_r, z, z, t=t),), (StepInput((g_r,)),))
    return golden(case)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16-mp"])
def test_reference_prints_the_correctly_rounded_values(capsys, dtype) -> None:
    code, out, _ = run(capsys, "reference", "--dtype", dtype, "--profile", "mxnet", "--w", "10,-0.1",
                       "--g", "0.3,0x1.8p-3", "--m", "0", "--s", "0", "--t", "4", "--wd", "0.05",
                       "--clip-gradient", "0.5", "--json")
    assert code == 0
    doc = json.loads(out)
    hp = Hyperparameters(wd=0.05, clip_gradient=0.5)
    want = _golden(dtype, "mxnet", ["10", "-0.1"], ["0.3", "0.1875"], hp, t=4)
    (step,) = doc["steps"]
    assert step["t"] == 5
    for name, exps in want.steps[0][0].items():
        for j, e in enumerate(exps):
            (a,) = e
            assert isinstance(a, Finite)
            got = step["outputs"][name][j][0]
            assert got["value"] == hexfloat(a.value)
            assert got["residual"] == hexfloat(a.residual) and got["sigma"] == hexfloat(a.sigma)
    assert any("0.3 is not a" in n for n in doc["notes"])
    if dtype != "float64":
        assert any("w[1] = -0.1 is not a float32 value" in n for n in doc["notes"])


def test_reference_text_output(capsys) -> None:
    code, out, _ = run(capsys, "reference", "--w", "10", "--g", "0.3", "--wd", "0.05", "--clip-gradient", "0.5")
    assert code == 0
    want = _golden("float32", "mxnet", ["10"], ["0.3"], Hyperparameters(wd=0.05, clip_gradient=0.5))
    (w,) = want.steps[0][0]["w"]
    assert f"w[0] = {hexfloat(w[0].value)} ({w[0].value!r})" in out
    assert "g[0] = 0.3 is not a float32 value; rounded to nearest: 0x1.333334p-2" in out
    assert "residual" in out and "sigma" in out


def test_reference_bad_number_exits_2(capsys) -> None:
    code, _, err = run(capsys, "reference", "--w", "ten", "--g", "1")
    assert code == 2 and "'ten': not a number" in _one_error_line(err)
    code, _, err = run(capsys, "reference", "--w", "1,2", "--g", "1,2,3")
    assert code == 2 and "--g has 3 values; --w has 2" in _one_error_line(err)


def test_generate_delegates_to_the_generator(capsys, monkeypatch, tmp_path: Path) -> None:
    import adabelief_reference._generate as gen

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(gen, "main", fake_main)
    assert main(["generate", "--check", "--out", str(tmp_path), "--jobs", "2", "--no-progress"]) == 0
    assert seen == [["--check", "--out", str(tmp_path), "--jobs", "2", "--no-progress"]]


def test_missing_optional_modules_give_a_clear_error(capsys, monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name in ("adabelief_conformance._bench", "adabelief_conformance._diagnose",
                    "adabelief_conformance._fuzz"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    for argv in (["bench", "--quick"], ["diagnose", CLIP, "--suite", "defaults"], ["fuzz", CLIP]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is unavailable" in _one_error_line(err)


def test_delegated_commands_get_their_arguments(capsys, monkeypatch) -> None:
    import types

    calls: dict[str, object] = {}
    bench = types.ModuleType("adabelief_conformance._bench")

    def run_bench(sizes=None, resnet50=True, json_path=None, png_path=None, quick=False):
        calls["bench"] = (sizes, resnet50, json_path, png_path, quick)
        return 0

    bench.run_bench = run_bench  # type: ignore[attr-defined]
    diag = types.ModuleType("adabelief_conformance._diagnose")
    diag.diagnose = lambda impl, cases: Diagnoses([], implementation=f"{impl.name}, {len(cases)}",  # type: ignore[attr-defined]
                                                  failing=1)
    diag.format_diagnosis = lambda rows: f"rows: {rows.implementation}"  # type: ignore[attr-defined]
    fuzz = types.ModuleType("adabelief_conformance._fuzz")

    def fuzz_fn(impl, *, profile, dtype, max_examples, seed, out_path):
        calls["fuzz"] = (impl.name, profile, dtype, max_examples, seed, out_path)
        return types.SimpleNamespace(failed=True, message="a counterexample")

    fuzz.fuzz = fuzz_fn  # type: ignore[attr-defined]
    for mod in (bench, diag, fuzz):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    assert main(["bench", "--sizes", "10,1e3", "--no-resnet", "--quick", "--json", "b.json"]) == 0
    assert calls["bench"] == ([10, 1000], False, Path("b.json"), None, True)
    assert main(["diagnose", CLIP, "--suite", "defaults"]) == 1  # a failing case: not conforming
    assert f"rows: clip ignored, {15 * N_PROFILES}" in capsys.readouterr().out
    assert main(["fuzz", CLIP, "--dtype", "float64", "--max-examples", "5", "--seed", "3"]) == 1
    assert calls["fuzz"] == ("clip ignored", "mxnet", "float64", 5, 3, None)


def test_diagnose_exit_status_says_whether_it_conforms(capsys) -> None:
    code, out, _ = run(capsys, "diagnose", SPEC, "--suite", "defaults", "--dtype", "float32")
    assert code == 0 and out.startswith("conforms: nothing to diagnose")
    code, out, _ = run(capsys, "diagnose", CLIP, "--suite", "defaults", "--dtype", "float32")
    assert code == 1 and out.startswith("outputs match 'clip ignored' on ")


DECLINING = textwrap.dedent('''
    from adabelief_conformance import CaseSkipped
    from adabelief_conformance._catalogue import VARIANTS, CatalogueImplementation


    class OldStyle(Exception):
        skip_reason = "no clipping in this library"


    class Impl(CatalogueImplementation):
        """Declines what a library could not express, the two documented ways."""

        def __init__(self):
            super().__init__("declining", VARIANTS["spec formula in the compute dtype"])

        def run(self, request):
            if request.dtype == "float16-mp":
                raise CaseSkipped("no float16 master weights here", "https://example.org/i/1")
            if request.hyperparameters.clip_gradient is not None:
                raise OldStyle()
            return super().run(request)


    if __name__ == "__main__":
        from adabelief_conformance._subprocess import serve

        serve(Impl())
''')


def test_skipping_a_case_is_the_same_in_process_and_through_serve(capsys, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """One documented way to decline a case: CaseSkipped (or a skip_reason attribute) gives a
    skipped case with its reason, in-process and through serve() alike."""
    path = tmp_path / "declining_impl.py"
    path.write_text(DECLINING)
    monkeypatch.syspath_prepend(str(tmp_path))
    outcomes = {}
    for label, target in (("in-process", ["declining_impl:Impl"]),
                          ("serve", ["--cmd", f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}",
                                     "--timeout", "60"])):
        report = tmp_path / f"{label}.json"
        code, _, _ = run(capsys, "check", *target, "--suite", "clipping", "--profile", "mxnet",
                         "--json", str(report), "--no-progress")
        assert code == 0, label
        doc = json.loads(report.read_text())
        outcomes[label] = {c["id"]: (c["status"], c.get("message", "")) for c in doc["cases"]}
    assert outcomes["in-process"] == outcomes["serve"]
    statuses = collections.Counter(s for s, _ in outcomes["serve"].values())
    assert statuses["skipped"] > 0 and statuses["passed"] > 0 and set(statuses) == {"passed", "skipped"}
    messages = {m for s, m in outcomes["serve"].values() if s == "skipped"}
    assert messages == {"no float16 master weights here (https://example.org/i/1)",
                        "no clipping in this library"}


def test_generate_refuses_zero_jobs_as_check_does(capsys) -> None:
    code, _, err = run(capsys, "generate", "--check", "--jobs", "0")
    assert code == 2 and "--jobs must be >= 1, got 0" in _one_error_line(err)
    code, _, err = run(capsys, "check", "numpy", "--jobs", "0")
    assert code == 2 and "--jobs >= 1" in _one_error_line(err)


# ----- hardening (issue 11) ----------------------------------------------------------------------

def test_binary_and_deeply_nested_vector_files_are_input_errors(capsys, tmp_path: Path) -> None:
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    code, _, err = run(capsys, "check", "numpy", "--vectors", str(binary))
    assert code == 2 and f"{binary}: not UTF-8 text" in _one_error_line(err)
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 200_000 + "]" * 200_000)
    code, _, err = run(capsys, "check", "numpy", "--vectors", str(nested))
    assert code == 2 and f"{nested}: JSON nested too deeply" in _one_error_line(err)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"files": ' + "[" * 200_000 + "]" * 200_000 + "}")
    code, _, err = run(capsys, "check", "numpy", "--vectors", str(folder))
    assert code == 2 and "manifest.json: JSON nested too deeply" in _one_error_line(err)


def test_sys_exit_in_an_adapter_is_an_errored_case(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "exiting_impl.py").write_text(textwrap.dedent('''
        import sys
        from adabelief_conformance._catalogue import VARIANTS, CatalogueImplementation

        class Impl(CatalogueImplementation):
            def __init__(self):
                super().__init__("exiting", VARIANTS["spec formula in the compute dtype"])

            def run(self, request):
                if request.dtype == "float64":
                    sys.exit(3)
                return super().run(request)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "check", "exiting_impl:Impl", "--suite", "defaults", "--json", str(report),
                       "--no-progress")
    assert code == 1 and "SystemExit: 3" in out
    statuses = collections.Counter(c["status"] for c in json.loads(report.read_text())["cases"])
    assert statuses == {"passed": 10 * N_PROFILES, "errored": 5 * N_PROFILES}


def test_unwritable_step_summary_is_one_line_and_keeps_the_other_reports(capsys, tmp_path: Path,
                                                                          monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder: cannot be opened for append
    report = tmp_path / "r.json"
    code, _, err = run(capsys, "check", SPEC, "--suite", "defaults", "--step-summary", "--json",
                       str(report), "--no-progress")
    assert code == 2 and "--step-summary: " in _one_error_line(err) and "cannot write" in err
    assert json.loads(report.read_text())["totals"]["passed"] == 15 * N_PROFILES


def test_reference_fast_gives_the_same_values(capsys) -> None:
    argv = ["reference", "--dtype", "float32", "--profile", "tensorflow", "--w", "10,-0.1,3", "--g", "0.3,0x1.8p-3,-2",
            "--g", "0.1,0.2,0.3", "--t", "4", "--wd", "0.05", "--json"]
    code, out, _ = run(capsys, *argv)
    code_fast, out_fast, _ = run(capsys, *argv, "--fast")
    assert code == code_fast == 0
    slow, fast = json.loads(out), json.loads(out_fast)
    for a, b in zip(slow["steps"], fast["steps"]):
        for name, exps in a["outputs"].items():
            for e, f in zip(exps, b["outputs"][name]):
                assert [x.get("value", x.get("kind")) for x in e] == [x.get("value", x.get("kind")) for x in f]
                for x, y in zip(e, f):
                    if "sigma" in x:
                        assert abs(float.fromhex(x["sigma"]) - float.fromhex(y["sigma"])) <= 1e-12 * float.fromhex(x["sigma"])
