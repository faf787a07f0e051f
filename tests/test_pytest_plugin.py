"""The pytest plugin, run in inner pytest sessions (pytester): one item per case, -k by id,
expectations as strict xfail, xdist and JUnit, usage errors, and nothing at all without options."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest
from adabelief_reference import profile_names

from adabelief_conformance._expectations import Entry, dumps_toml
from adabelief_conformance._runner import check, load_cases
from adabelief_conformance._targets import resolve_target

pytest_plugins = ["pytester"]

SPEC = "catalogue:spec formula in the compute dtype"
CLIP = "catalogue:clip ignored"

# the defaults suite: 5 cases per dtype and profile
N_DEFAULTS = 15 * len(profile_names())
PROFILES = ", ".join(sorted(profile_names()))


# Plugins that cost ~1 s in every inner session: pytest-benchmark calibrates its timer, and
# hypothesis is imported afresh (pytester restores sys.modules after each in-process run).
QUIET = ("-p", "no:benchmark", "-p", "no:hypothesispytest")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, *args)


@pytest.fixture(scope="module")
def clip_failures() -> list[str]:
    report = check(resolve_target(CLIP), load_cases(suites=["defaults"]))
    return [r.id for r in report.results if r.status == "failed"]


def test_without_options_the_plugin_adds_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one():\n    assert True\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert "adabelief-conformance:" not in result.stdout.str()
    assert "adabelief" in "\n".join(run(pytester, "--help").outlines)


def test_conforming_target_one_item_per_case(pytester: pytest.Pytester) -> None:
    result = run(pytester, f"--adabelief-impl={SPEC}", "--adabelief-suite=defaults")
    result.assert_outcomes(passed=N_DEFAULTS)
    result.stdout.fnmatch_lines([
        "adabelief-conformance: implementation spec formula in the compute dtype catalogue",
        f"adabelief-conformance: dtypes float16-mp, float32, float64; profiles {PROFILES}; {N_DEFAULTS} cases*",
        f"collected {N_DEFAULTS} items",
    ])


def test_failing_target_and_k_by_id(pytester: pytest.Pytester, clip_failures) -> None:
    result = run(pytester, f"--adabelief-impl={CLIP}", "--adabelief-suite=defaults")
    result.assert_outcomes(passed=N_DEFAULTS - len(clip_failures), failed=len(clip_failures))
    out = result.stdout.str()
    assert "inputs: w=" in out and "rerun: adabelief-conformance check 'catalogue:clip ignored' --id" in out
    one = clip_failures[0]
    result = run(pytester, f"--adabelief-impl={CLIP}", "--adabelief-suite=defaults", "-k", one, "-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*adabelief-conformance/defaults::{one} FAILED*"])
    # keywords: suite, profile, dtype and flags
    result = run(pytester, f"--adabelief-impl={SPEC}", "--adabelief-suite=defaults",
                                "--adabelief-dtype=float16-mp", "-k", "mxnet-doc and MixedPrecision")
    result.assert_outcomes(passed=4)  # the fifth mxnet-doc case is flagged ClipOrder only


def test_expectations_become_strict_xfail(pytester: pytest.Pytester, clip_failures) -> None:
    path = pytester.path / "known.toml"
    path.write_text(dumps_toml([Entry(i, "clip not implemented", link="https://e.org/1") for i in clip_failures]))
    args = [f"--adabelief-expectations={path}", "--adabelief-suite=defaults", "-rxX"]
    result = run(pytester, f"--adabelief-impl={CLIP}", *args)
    result.assert_outcomes(passed=N_DEFAULTS - len(clip_failures), xfailed=len(clip_failures))
    result.stdout.fnmatch_lines(["*known deviation: clip not implemented (https://e.org/1)*"])
    result = run(pytester, f"--adabelief-impl={SPEC}", *args)
    result.assert_outcomes(passed=N_DEFAULTS - len(clip_failures), failed=len(clip_failures))
    assert "XPASS(strict)" in result.stdout.str()


def test_module_attr_implementation_with_an_erroring_case(pytester: pytest.Pytester) -> None:
    bad = load_cases(suites=["defaults"])[4].id
    pytester.makepyfile(fakeimpl=textwrap.dedent(f'''
        from adabelief_conformance._catalogue import VARIANTS, CatalogueImplementation

        class Impl(CatalogueImplementation):
            def __init__(self):
                super().__init__("fake", VARIANTS["spec formula in the compute dtype"])
                self.version = "9.9"

            def run(self, request):
                if request.case_id == {bad!r}:
                    raise MemoryError("out of device memory")
                return super().run(request)
    '''))
    result = run(pytester, "--adabelief-impl=fakeimpl.py:Impl", "--adabelief-suite=defaults",
                                "--adabelief-profile=mxnet")
    result.assert_outcomes(passed=14, failed=1)
    result.stdout.fnmatch_lines(["adabelief-conformance: implementation fake 9.9",
                                 f"*ERRORED {bad}*MemoryError: out of device memory*"])


def test_xdist_and_junitxml(pytester: pytest.Pytester, clip_failures) -> None:
    pytest.importorskip("xdist")
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(*QUIET, f"--adabelief-impl={CLIP}", "--adabelief-suite=defaults", "-n", "2",
                                           f"--junitxml={junit}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=N_DEFAULTS - len(clip_failures), failed=len(clip_failures))
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == N_DEFAULTS and suite.get("failures") == str(len(clip_failures))
    failed = {tc.get("name") for tc in cases if tc.find("failure") is not None}
    assert failed == set(clip_failures)
    assert {tc.get("classname") for tc in cases} == {"adabelief-conformance.defaults"}


@pytest.mark.parametrize("args, needle", [
    (["--adabelief-impl=nope"], "target nope: unknown"),
    ([f"--adabelief-impl={SPEC}", "--adabelief-cmd=x"], "not both"),
    ([f"--adabelief-impl={SPEC}", "--adabelief-vectors=/no/such/dir"], "/no/such/dir: no such file or folder"),
    ([f"--adabelief-impl={SPEC}", "--adabelief-expectations=missing.toml"], "missing.toml: cannot read"),
])
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args, needle) -> None:
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in result.stderr.str()


def test_expectation_entry_matching_nothing_is_reported(pytester: pytest.Pytester) -> None:
    path = pytester.path / "known.json"
    path.write_text(json.dumps({"deviation": [{"id": "zzz-*", "reason": "typo"}]}))
    result = run(pytester, f"--adabelief-impl={SPEC}", "--adabelief-suite=defaults",
                                f"--adabelief-expectations={path}", "--adabelief-dtype=float64")
    result.assert_outcomes(passed=N_DEFAULTS // 3)
    result.stdout.fnmatch_lines(["*warning: *(id 'zzz-*') matches no case of the loaded vectors"])
