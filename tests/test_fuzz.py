"""fuzz: nothing found for a conforming implementation; a mutant's failure is shrunk into a
vector file that check reruns."""

from __future__ import annotations

import json

import pytest
from adabelief_reference import DEFAULT_HYPERPARAMETERS, CaseInputs, ParamInput, StepInput
from adabelief_reference._generate import case_inputs_json

from adabelief_conformance._catalogue import MUTANTS, VARIANTS, CatalogueImplementation
from adabelief_conformance._cli import main
from adabelief_conformance._compare import run_case
from adabelief_conformance._errors import UsageError
from adabelief_conformance._fuzz import fuzz, vector_document
from adabelief_conformance._vectors import load_vectors

SPEC = CatalogueImplementation("spec", VARIANTS["spec formula in the compute dtype"])
FUSED = CatalogueImplementation("fused", VARIANTS["MXNet fused-kernel algebra"])


@pytest.mark.parametrize(("impl", "profile", "dtype"), [
    (SPEC, "mxnet", "float32"), (FUSED, "mxnet-doc", "float64"), (SPEC, "mxnet", "float16-mp"),
])
def test_conforming_variant_survives_fuzzing(impl, profile, dtype) -> None:
    result = fuzz(impl, profile=profile, dtype=dtype, max_examples=30, seed=3)
    assert not result.failed, result.message
    assert result.examples == 30 and result.vector_path is None
    assert "no counterexample" in result.message


@pytest.mark.parametrize(("name", "dtype"), [
    ("residual with the old m", "float64"), ("clip ignored", "float32"),
])
def test_mutant_is_found_shrunk_and_written_as_a_vector(name, dtype, tmp_path) -> None:
    mutant = CatalogueImplementation(name, MUTANTS[name])
    out = tmp_path / "found.json"
    result = fuzz(mutant, profile="mxnet", dtype=dtype, max_examples=100, seed=1, out_path=out)
    assert result.failed and result.vector_path == out
    assert result.message.splitlines()[-1] == (
        f"You can reproduce this with: adabelief-conformance check TARGET --vectors {out}")
    cases = load_vectors([out])  # schema-valid, loads like any vector file
    assert len(cases) == 1 and result.case is not None
    assert case_inputs_json(cases[0].case) == case_inputs_json(result.case)
    doc = json.loads(out.read_text())
    assert doc["numberOfTests"] == 1 and doc["suite"] == "fuzz" and doc["generator"]["seed"] == 1
    assert run_case(mutant, cases[0]).status == "failed"
    assert run_case(SPEC, cases[0]).status == "passed"
    # Shrunk: a minimal case has a single parameter of one element and one step.
    case = cases[0].case
    assert len(case.params) == 1 and len(case.params[0].w) == 1 and len(case.steps) == 1


def test_the_cli_reruns_what_fuzz_found(tmp_path, capsys) -> None:
    out = tmp_path / "case.json"
    target = "catalogue:residual with the old m"
    argv = ["fuzz", target, "--dtype", "float32", "--max-examples", "50", "--seed", "2", "--out", str(out)]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert f"You can reproduce this with: adabelief-conformance check '{target}' --vectors {out}" in printed
    assert main(["check", target, "--vectors", str(out), "--no-progress"]) == 1
    spec = "catalogue:spec formula in the compute dtype"
    assert main(["check", spec, "--vectors", str(out), "--no-progress"]) == 0


def test_runs_are_reproducible(tmp_path) -> None:
    mutant = CatalogueImplementation("decoupled weight decay", MUTANTS["decoupled weight decay"])
    a, b = (fuzz(mutant, profile="mxnet", dtype="float32", max_examples=40, seed=7, out_path=tmp_path / name)
            for name in ("a.json", "b.json"))
    assert a.failed and b.failed and a.examples == b.examples
    assert a.message.replace("a.json", "b.json") == b.message
    assert a.vector_path and b.vector_path
    assert a.vector_path.read_text() == b.vector_path.read_text()


def test_unsupported_profile_or_dtype_is_a_usage_error() -> None:
    class Float32Only(CatalogueImplementation):
        dtypes = frozenset({"float32"})

    with pytest.raises(UsageError, match="does not implement"):
        fuzz(Float32Only("f32", VARIANTS["spec formula in the compute dtype"]), dtype="float64")
    with pytest.raises(UsageError, match="unknown profile"):
        fuzz(SPEC, profile="pytorch")


def test_vector_document_round_trips(tmp_path) -> None:
    case = CaseInputs("mxnet", "float16-mp", DEFAULT_HYPERPARAMETERS,
                      # inputs are values of their formats (float32 state, float16 gradients)
                      (ParamInput((0.5, -0.0), (0.0, 2.0**-10), (0.0, 2.0**-20), t=4),),
                      (StepInput(((0.25, float("inf")),)), StepInput(((2.0**-23, 0.0),), 0.0)))
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(vector_document(case, "a comment")))
    (vc,) = load_vectors([path])
    assert vc.case == case and vc.comment == "a comment" and vc.id.startswith("fuzz-")
    assert run_case(SPEC, vc).status == "passed"
