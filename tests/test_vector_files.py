"""The committed vectors: reproducible byte for byte, schema-valid, manifest-checked, and a
loader that names the file and field of every problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from adabelief_reference import profile_names
from adabelief_reference._generate import main as generate_main
from adabelief_spec import load_json

from adabelief_conformance._errors import InvalidVector
from adabelief_conformance._vectors import bundled_vectors_dir, load_file, load_vectors

VECTORS = bundled_vectors_dir()


def test_vectors_regenerate_byte_for_byte(capsys) -> None:
    assert generate_main(["--check", "--no-progress", "--out", str(VECTORS)]) == 0
    assert "regenerate byte for byte" in capsys.readouterr().out


def test_schema_is_valid_draft_2020_12_and_files_conform() -> None:
    for version in (1, 2):
        jsonschema.Draft202012Validator.check_schema(load_json(f"schema/vectors-v{version}.schema.json"))
    validator = jsonschema.Draft202012Validator(load_json("schema/vectors-v2.schema.json"))
    doc = json.loads((VECTORS / "defaults.json").read_text())
    assert not list(validator.iter_errors(doc))


def test_format_1_files_still_load_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    """A vector set 1.x file (format 1: no eps_root) is read with its own schema."""
    doc = json.loads((VECTORS / "defaults.json").read_text())
    doc["testGroups"] = [g for g in doc["testGroups"] if g["profile"] in ("mxnet", "mxnet-doc")]
    doc["numberOfTests"] = sum(len(g["tests"]) for g in doc["testGroups"])
    doc["formatVersion"], doc["schema"] = 1, "vectors-v1.schema.json"
    path = tmp_path / "defaults.json"
    path.write_text(json.dumps(doc))
    assert len(load_file(path)) == doc["numberOfTests"] > 0
    doc["formatVersion"] = 3
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidVector, match=r"defaults\.json: formatVersion = 3; .* reads formats \[1, 2\]"):
        load_file(path)


def test_bundled_set_covers_every_dtype_profile_and_flag(bundled_cases) -> None:
    assert {c.dtype for c in bundled_cases} == {"float32", "float64", "float16-mp"}
    assert {c.profile for c in bundled_cases} == set(profile_names())
    flags = {f for c in bundled_cases for f in c.flags}
    assert {"EpsilonPlacement", "EpsilonInState", "ClipOrder", "SkipRule", "Trajectory", "PerParameterT",
            "SpecialValue", "Subnormal", "MixedPrecision", "LargeT", "Cancellation"} <= flags
    assert max(len(c.case.steps) for c in bundled_cases) >= 100
    assert len({c.id for c in bundled_cases}) == len(bundled_cases)
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    assert sum(f["numberOfTests"] for f in manifest["files"].values()) == len(bundled_cases)


@pytest.fixture()
def vec_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "vectors"
    dst.mkdir()
    for name in ("manifest.json", "defaults.json"):
        shutil.copy(VECTORS / name, dst / name)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"] = {"defaults.json": manifest["files"]["defaults.json"]}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_manifest_mismatch_names_the_file(vec_copy: Path) -> None:
    load_vectors([vec_copy])  # intact copy loads
    path = vec_copy / "defaults.json"
    path.write_text(path.read_text().replace("0x1.", "0x1.0", 1))
    with pytest.raises(InvalidVector, match=r"defaults\.json: sha256 .* does not match manifest\.json"):
        load_vectors([vec_copy])


def test_bad_hex_value_names_file_and_field(vec_copy: Path) -> None:
    path = vec_copy / "defaults.json"
    doc = json.loads(path.read_text())
    doc["testGroups"][0]["tests"][0]["params"][0]["w"][2] = "0xZZ"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidVector, match=r"defaults\.json: .*params\[0\]\.w\[2\] must match pattern"):
        load_file(path)
    with pytest.raises(InvalidVector, match=r"params\[0\]\.w\[2\] = '0xZZ': not a hex float"):
        load_file(path, validate=False)


def test_invalid_json_and_missing_field(vec_copy: Path) -> None:
    path = vec_copy / "defaults.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(InvalidVector, match=r"defaults\.json: not valid JSON \(line \d+"):
        load_file(path)
    doc = json.loads(text)
    del doc["testGroups"][0]["tests"][0]["steps"][0]["expected"][0]["s"]
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidVector, match=r"defaults\.json: .*must contain \['s'\] properties"):
        load_file(path)
    with pytest.raises(InvalidVector, match=r"expected\[0\]\.s: missing"):
        load_file(path, validate=False)


def test_missing_path_and_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(InvalidVector, match="no such file or folder"):
        load_vectors([tmp_path / "nope.json"])
    one = tmp_path / "a.json"
    shutil.copy(VECTORS / "defaults.json", one)
    with pytest.raises(InvalidVector, match="also appears in"):
        load_vectors([one, one])


def test_number_of_tests_must_match(vec_copy: Path) -> None:
    path = vec_copy / "defaults.json"
    doc = json.loads(path.read_text())
    doc["numberOfTests"] += 1
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidVector, match=r"defaults\.json: numberOfTests = \d+ but the file holds \d+ tests"):
        load_file(path)


def test_bundled_files_pass_the_checks_that_trusted_loading_skips() -> None:
    """`check` trusts files whose sha256 is in the bundled manifest (issue 9: it skips the schema,
    the id recomputation and the input formats); here every bundled file gets all of them."""
    from adabelief_conformance._vectors import bundled_vectors_dir

    folder = bundled_vectors_dir()
    n = 0
    for path in sorted(folder.glob("*.json")):
        if path.name != "manifest.json":
            n += len(load_file(path, validate=True, trusted=False))
    assert n == len(load_vectors())
