"""Reports: JUnit XML that CI parsers read (counts match), JSON valid against its schema, Markdown
for step summaries, and failure details with exact inputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from adabelief_reference import profile_names

from adabelief_conformance._cli import main
from adabelief_conformance._report import SCHEMA_PATH

SPEC = "catalogue:spec formula in the compute dtype"
CLIP = "catalogue:clip ignored"

# the defaults suite: 5 cases per dtype and profile
N_DEFAULTS = 15 * len(profile_names())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _run(tmp_path: Path, target: str, *extra: str) -> tuple[int, dict, ET.Element, str]:
    paths = {k: tmp_path / f"report.{k}" for k in ("json", "xml", "md")}
    code = main(["check", target, "--suite", "defaults", "--no-progress", "--quiet", "--json", str(paths["json"]),
                 "--junit", str(paths["xml"]), "--markdown", str(paths["md"]), *extra])
    return (code, json.loads(paths["json"].read_text()), ET.parse(paths["xml"]).getroot(),
            paths["md"].read_text(encoding="utf-8"))


def _errors(validator, doc) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_reports_of_a_conforming_run(tmp_path: Path, validator) -> None:
    code, doc, xml, md = _run(tmp_path, SPEC)
    assert code == 0
    assert not _errors(validator, doc)
    assert doc["conforming"] is True and doc["exitCode"] == 0
    assert doc["format"] == "adabelief-conformance-report" and doc["formatVersion"] == 1
    assert doc["totals"]["cases"] == doc["totals"]["passed"] == N_DEFAULTS == len(doc["cases"])
    assert doc["target"] == SPEC
    assert xml.tag == "testsuites" and xml.get("tests") == str(N_DEFAULTS) and xml.get("failures") == "0"
    assert [s.get("name") for s in xml.findall("testsuite")] == ["defaults"]
    assert len(xml.findall("testsuite/testcase")) == N_DEFAULTS
    assert "✅ conforming" in md and f"| defaults | {N_DEFAULTS} | {N_DEFAULTS} | 0 | 0 | 0 |" in md


def test_reports_of_a_failing_run(tmp_path: Path, validator) -> None:
    code, doc, xml, md = _run(tmp_path, CLIP, "--max-failures", "3")
    assert code == 1
    assert not _errors(validator, doc)
    failed = [c for c in doc["cases"] if c["status"] == "failed"]
    assert len(failed) == doc["totals"]["failed"] > 0
    for c in failed:
        assert c["rerun"] == f"adabelief-conformance check 'catalogue:clip ignored' --id {c['id']}"
        assert 1 <= len(c["failures"]) <= 3 and c["failedElements"] >= len(c["failures"])
        f = c["failures"][0]
        assert f["inputs"]["g"] and f["inputs"]["w"].startswith(("0x", "-0x"))
        assert f["expected"]["kind"] in ("finite", "nan", "inf", "-inf", "alternatives")
        assert f["errorSigma"] == "inf" or f["errorSigma"] > f["tolerance"]
    # JUnit: the counts of the root, of the suite and of the <failure> elements agree
    suite = xml.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    failures = [tc for tc in cases if tc.find("failure") is not None]
    assert xml.get("failures") == suite.get("failures") == str(len(failures)) == str(len(failed))
    assert len(cases) == int(suite.get("tests") or -1) == N_DEFAULTS
    assert {tc.get("name") for tc in failures} == {c["id"] for c in failed}
    text = failures[0].find("failure").text or ""  # type: ignore[union-attr]
    assert "inputs: w=" in text and "rerun: adabelief-conformance check" in text
    assert failures[0].get("classname") == "adabelief.defaults"
    assert "❌ not conforming" in md and "### Failing cases" in md
    assert md.count("`adabelief-conformance check 'catalogue:clip ignored' --id defaults-") == len(failed)


def test_errored_and_skipped_cases_in_the_reports(tmp_path: Path, validator) -> None:
    impl = tmp_path / "half.py"
    impl.write_text(
        "from adabelief_conformance._catalogue import VARIANTS, CatalogueImplementation\n"
        "class Impl(CatalogueImplementation):\n"
        "    dtypes = frozenset({'float32', 'float64'})\n"
        "    def __init__(self):\n"
        "        super().__init__('half', VARIANTS['spec formula in the compute dtype'])\n"
        "    def run(self, request):\n"
        "        if request.dtype == 'float64' and request.profile == 'mxnet-doc':\n"
        "            raise RuntimeError('no \\x01 mxnet-doc in float64 <yet>')\n"
        "        return super().run(request)\n")
    code, doc, xml, _ = _run(tmp_path, f"{impl}:Impl")
    assert code == 1
    assert not _errors(validator, doc)
    t = doc["totals"]
    n = len(profile_names())  # float32 and float64 run (mxnet-doc float64 raises), float16-mp skipped
    assert (t["passed"], t["errored"], t["skipped"]) == (5 * (2 * n - 1), 5, 5 * n)
    assert xml.get("errors") == "5" and xml.get("skipped") == str(5 * n)
    suite = xml.find("testsuite")
    assert suite is not None
    assert len([tc for tc in suite.findall("testcase") if tc.find("error") is not None]) == 5
    skipped = [tc.find("skipped") for tc in suite.findall("testcase") if tc.find("skipped") is not None]
    assert len(skipped) == 5 * n and "does not support" in (skipped[0].get("message") or "")  # type: ignore[union-attr]


def test_step_summary_appends_to_github_step_summary(tmp_path: Path, monkeypatch, capsys) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("previous step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["check", SPEC, "--suite", "defaults", "--quiet", "--step-summary"]) == 0
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("previous step\n") and "## AdaBelief conformance: ✅ conforming" in text
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert main(["check", SPEC, "--suite", "defaults", "--quiet", "--step-summary"]) == 0
    assert "GITHUB_STEP_SUMMARY is not set" in capsys.readouterr().out


def test_unwritable_report_path_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["check", SPEC, "--suite", "defaults", "--quiet", "--json", str(tmp_path / "no" / "dir.json")])
    assert code == 2
    assert "cannot write" in capsys.readouterr().err
