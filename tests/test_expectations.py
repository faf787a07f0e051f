"""Expectation files: known deviations pass the run, stale entries fail it, unused entries are
reported, malformed files are input errors, and --write-expectations round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adabelief_reference import profile_names

from adabelief_conformance._cli import main
from adabelief_conformance._errors import InvalidExpectations
from adabelief_conformance._expectations import Entry, dumps_toml, load_expectations

CLIP = "catalogue:clip ignored"
SPEC = "catalogue:spec formula in the compute dtype"

N_PROFILES = len(profile_names())


def check(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv, "--suite", "defaults", "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def failing_ids(tmp_path: Path, capsys) -> list[str]:
    report = tmp_path / "r.json"
    assert check(capsys, CLIP, "--quiet", "--json", str(report))[0] == 1
    ids = [c["id"] for c in json.loads(report.read_text())["cases"] if c["status"] == "failed"]
    assert ids
    return ids


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_write_expectations_round_trips(tmp_path: Path, capsys, failing_ids, suffix) -> None:
    path = tmp_path / f"known{suffix}"
    code, _, err = check(capsys, CLIP, "--quiet", "--write-expectations", str(path))
    assert code == 1
    assert f"wrote {len(failing_ids)} expectation entries" in err
    exp = load_expectations(path)
    assert [e.id for e in exp.entries] == failing_ids
    assert all(e.reason.startswith("TODO: explain. failed: ") and e.strict for e in exp.entries)
    report = tmp_path / "r.json"
    code, out, _ = check(capsys, CLIP, "--expectations", str(path), "--json", str(report))
    assert code == 0, out
    assert f"{len(failing_ids)} known deviations, 0 xpassed" in out and out.splitlines()[-1].startswith("CONFORMING")
    doc = json.loads(report.read_text())
    assert doc["conforming"] and doc["totals"]["xfailed"] == len(failing_ids)
    assert {c["id"] for c in doc["cases"] if c["status"] == "xfailed"} == set(failing_ids)
    # rewriting from a run with the file keeps the entries (and their reasons)
    again = tmp_path / f"again{suffix}"
    check(capsys, CLIP, "--quiet", "--expectations", str(path), "--write-expectations", str(again))
    assert [(e.id, e.reason) for e in load_expectations(again).entries] == [(e.id, e.reason) for e in exp.entries]


def test_stale_entry_fails_the_run_naming_the_entry(tmp_path: Path, capsys, failing_ids) -> None:
    path = tmp_path / "known.toml"
    path.write_text(dumps_toml([Entry(i, "clip not implemented") for i in failing_ids]))
    assert check(capsys, CLIP, "--expectations", str(path), "--quiet")[0] == 0
    # the conforming implementation passes every listed case: every entry is stale
    code, out, _ = check(capsys, SPEC, "--expectations", str(path))
    assert code == 1
    assert f"XPASSED {failing_ids[0]}" in out
    assert f"stale expectation: {path}: deviation[0] (id '{failing_ids[0]}'): 1 listed case(s) now pass" in out
    assert out.splitlines()[-1].startswith("NOT CONFORMING")


def test_glob_entries_and_strict_false(tmp_path: Path, capsys) -> None:
    path = tmp_path / "known.toml"
    path.write_text('[[deviation]]\nid = "defaults-*"\nreason = "whole suite"\nstrict = false\n')
    # clip ignored fails some defaults cases: the others may pass under a non-strict entry
    assert check(capsys, CLIP, "--expectations", str(path), "--quiet")[0] == 0
    # but an entry whose cases all pass is stale even when not strict
    code, out, _ = check(capsys, SPEC, "--expectations", str(path), "--quiet")
    assert code == 1 and f"all {15 * N_PROFILES} listed case(s) now pass" in out
    # a strict glob covering passing cases is stale
    path.write_text('[[deviation]]\nid = "defaults-*"\nreason = "whole suite"\n')
    code, out, _ = check(capsys, CLIP, "--expectations", str(path), "--quiet")
    assert code == 1 and "now pass" in out


def test_entry_matching_no_case_is_reported(tmp_path: Path, capsys, failing_ids) -> None:
    path = tmp_path / "known.toml"
    entries = [Entry(i, "r", link="https://example.org/1") for i in failing_ids]
    path.write_text(dumps_toml([*entries, Entry("no-such-case-*", "typo")]))
    code, out, _ = check(capsys, CLIP, "--expectations", str(path), "--quiet")
    assert code == 0
    assert "warning: " in out and "(id 'no-such-case-*') matches no case of the loaded vectors" in out


def test_entries_for_unselected_cases_are_not_reported(tmp_path: Path, capsys, failing_ids) -> None:
    path = tmp_path / "known.toml"
    path.write_text(dumps_toml([Entry(i, "r") for i in failing_ids]))
    code, out, _ = check(capsys, CLIP, "--expectations", str(path), "--dtype", "float64", "--quiet")
    assert code == 0 and "warning" not in out


@pytest.mark.parametrize("text, needle", [
    ("[[deviation]\nid = 1", "not valid TOML"),
    ('[[deviation]]\nid = "x"\n', "'reason' must be a non-empty string"),
    ('[[deviation]]\nreason = "x"\n', "'id' must be a non-empty string"),
    ('[[deviation]]\nid = "x"\nreason = "y"\ncolour = "red"\n', "unknown key(s) colour"),
    ('[[deviation]]\nid = "x"\nreason = "y"\nstrict = "yes"\n', "'strict' must be true or false"),
    ('format = 2\n', "format = 2"),
    ('[[deviation]]\nid = "x"\nreason = "y"\n[[deviation]]\nid = "x"\nreason = "z"\n', "already listed"),
    ('deviations = []\n', "unknown key(s) deviations"),
])
def test_malformed_expectation_files_exit_2(tmp_path: Path, capsys, text, needle) -> None:
    path = tmp_path / "known.toml"
    path.write_text(text)
    with pytest.raises(InvalidExpectations, match=r"known\.toml"):
        load_expectations(path)
    code, _, err = check(capsys, SPEC, "--expectations", str(path))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("adabelief-conformance: error: ") and str(path) in line and needle in line


def test_missing_and_invalid_json_files_exit_2(tmp_path: Path, capsys) -> None:
    code, _, err = check(capsys, SPEC, "--expectations", str(tmp_path / "none.toml"))
    assert code == 2 and "cannot read" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, _, err = check(capsys, SPEC, "--expectations", str(bad))
    assert code == 2 and "not valid JSON" in err


def test_toml_strings_are_escaped(tmp_path: Path) -> None:
    tricky = 'a "quoted" \\ reason\nwith a newline, a tab\t, DEL \x7f and ünïcode'
    path = tmp_path / "k.toml"
    path.write_text(dumps_toml([Entry("x-*", tricky, link="https://e.org/?a=1&b=\"2\"", strict=False)]))
    (e,) = load_expectations(path).entries
    assert (e.id, e.reason, e.link, e.strict) == ("x-*", tricky, 'https://e.org/?a=1&b="2"', False)
