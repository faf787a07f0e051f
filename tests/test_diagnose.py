"""diagnose names the mistake a failing implementation makes, and says when nothing does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adabelief_conformance._catalogue import MUTANTS, VARIANTS, CatalogueImplementation, Knobs
from adabelief_conformance._compare import run_case
from adabelief_conformance._diagnose import diagnose, format_diagnosis
from adabelief_conformance._protocol import ParamResult

SUITES = {"epsilon", "clipping", "multi-parameter", "weight-decay", "defaults", "timestep"}
SPEC = VARIANTS["spec formula in the compute dtype"]


@pytest.fixture(scope="module")
def cases(bundled_cases):
    """A few suites at float32: every mutant below fails some of them, in ~1 s per diagnosis."""
    return [c for c in bundled_cases if c.suite in SUITES and c.dtype == "float32"]


@pytest.mark.parametrize("mutant", [
    "epsilon after bias correction, sqrt(s_hat)+eps",
    "clip ignored",
    "one global t",
    "residual with the old m",
    "decoupled weight decay",
    "t off by one (t+1)",
    "bc2 instead of sqrt(bc2)",
])
def test_the_mutant_explains_all_its_failures(mutant, cases) -> None:
    rows = diagnose(CatalogueImplementation(mutant, MUTANTS[mutant]), cases)
    best = rows[0]
    assert best.failing > 0 and best.explained == best.failing
    # The mutant itself ranks first (entries with bit-identical outputs share its row).
    assert mutant in best.names
    assert best.reproduced == best.passing == rows.passing
    text = format_diagnosis(rows)
    n = best.failing
    assert text.startswith(f"outputs match '{best.name}' on {n} of {n} failing cases")
    assert mutant in text


def test_a_mistake_with_other_admissible_arithmetic_is_still_named(cases) -> None:
    """A real implementation rounds differently from the catalogue entry: the tolerance absorbs
    the difference."""
    kn = replace(MUTANTS["epsilon after bias correction, sqrt(s_hat)+eps"], moments_form="fused",
                 fma=True)
    rows = diagnose(CatalogueImplementation("eps outside, fused FMA", kn), cases)
    assert rows[0].name == "epsilon after bias correction, sqrt(s_hat)+eps"
    assert rows[0].explained == rows[0].failing


def test_two_mistakes_are_named_as_a_pair(cases) -> None:
    impl = CatalogueImplementation("two mistakes", Knobs(clip="ignored", residual="old-m"))
    rows = diagnose(impl, cases)
    best = rows[0]
    assert best.kind == "pair" and best.explained == best.failing
    assert set(best.name.split(" + ")) == {"clip ignored", "residual with the old m"}
    # Each mistake alone explains only part of the failures.
    singles = {r.name: r for r in rows if r.kind != "pair"}
    assert singles["residual with the old m"].explained < best.failing


def test_the_other_profile_is_recognised(cases) -> None:
    class DocOrder(CatalogueImplementation):
        def run(self, request):
            return super().run(replace(request, profile="mxnet-doc"))

    rows = diagnose(DocOrder("doc order", SPEC), [c for c in cases if c.profile == "mxnet"])
    assert rows[0].name == "profile mxnet-doc" and rows[0].explained == rows[0].failing
    assert format_diagnosis(rows).startswith("outputs match profile 'mxnet-doc' on ")


def test_a_conforming_implementation_has_nothing_to_diagnose(cases) -> None:
    rows = diagnose(CatalogueImplementation("v", VARIANTS["MXNet fused-kernel algebra"]), cases)
    assert rows == [] and rows.passing == len(cases)
    assert format_diagnosis(rows).startswith("conforms: nothing to diagnose")
    assert format_diagnosis([]).startswith("conforms: nothing to diagnose")


def test_unexplained_failures_are_reported(cases) -> None:
    class Broken(CatalogueImplementation):
        def run(self, request):
            out = super().run(request)
            return [[ParamResult(r.w * 3, r.m * 3, r.s * 3, r.w16) for r in step] for step in out]

    rows = diagnose(Broken("broken", SPEC), cases[:20])
    assert rows and all(r.explained == 0 for r in rows)
    text = format_diagnosis(rows)
    assert text.startswith("nothing explains the failures: "
                           "no profile or catalogued mistake reproduces")


def test_errors_are_not_diagnosed(cases) -> None:
    class Raises(CatalogueImplementation):
        def run(self, request):
            raise RuntimeError("no kernel")

    rows = diagnose(Raises("raises", SPEC), cases[:5])
    assert rows == [] and rows.errored == 5
    assert "errored on 5 case(s)" in format_diagnosis(rows)


def test_outcomes_already_computed_are_reused(cases) -> None:
    mutant = CatalogueImplementation("clip ignored", MUTANTS["clip ignored"])
    outcomes = [run_case(mutant, c) for c in cases]

    class MustNotRun(CatalogueImplementation):
        def run(self, request):
            raise AssertionError("diagnose ran the implementation again")

    impl = MustNotRun("clip ignored", MUTANTS["clip ignored"])
    rows = diagnose(impl, cases, outcomes=outcomes, top=3)
    assert len(rows) == 3 and "clip ignored" in rows[0].names and rows[0].explains_all


class _AsProfile(CatalogueImplementation):
    """A library of another family: it computes its own profile whatever the case's profile."""

    def __init__(self, name, knobs, profile, **switches):
        super().__init__(name, knobs)
        self.profile, self.switches = profile, switches

    def run(self, request):
        hp = replace(request.hyperparameters, **self.switches)
        return super().run(replace(request, profile=self.profile, hyperparameters=hp))


@pytest.mark.parametrize("rectify, label", [
    (False, "amsgrad=False, fixed_decay=False, rectify=False, weight_decouple=True"),
    (True, "amsgrad=False, degenerated_to_sgd=True, fixed_decay=False, rectify=True, weight_decouple=True"),
])
def test_a_pytorch_library_is_named_with_its_profile_and_switches(cases, rectify, label) -> None:
    """A PyTorch library (lerp, zero decay left out, sqrt(s)/sqrt(bc2)) with its default
    weight_decouple, rectification off or on (its default), checked against MXNet's vectors, is
    named as what it is."""
    pytorch = VARIANTS["lerp first moment, zero decay left out, sqrt(s)/sqrt(bc2) (PyTorch libraries)"]
    impl = _AsProfile("torch-like", pytorch, "adabelief-pytorch", weight_decouple=True,
                      rectify=rectify, degenerated_to_sgd=True)
    rows = diagnose(impl, [c for c in cases if c.profile == "mxnet"])
    best = rows[0]
    assert best.kind == "profile" and best.explains_all
    assert f"profile adabelief-pytorch with {label}" in best.names
    text = format_diagnosis(rows)
    assert text.startswith(f"outputs match profile 'adabelief-pytorch' with {label} on "
                           f"{best.failing} of {best.failing} failing cases")


@pytest.mark.parametrize("quirk, dtype", [
    ("TensorFlow quirk: hyperparameters held in float32", "float64"),
    ("TensorFlow quirk: epsilon 0 replaced by 1e-7", "float32"),
    ("XLA/TensorFlow quirk: subnormals flushed to zero", "float32"),
])
def test_library_quirks_are_named(bundled_cases, quirk, dtype) -> None:
    cases = [c for c in bundled_cases if c.profile == "tensorflow" and c.dtype == dtype
             and c.suite in ("epsilon", "special-values", "defaults", "hyperparameter-grid")]
    rows = diagnose(CatalogueImplementation("tf", MUTANTS[quirk]), cases)
    assert quirk in rows[0].names and rows[0].explains_all
