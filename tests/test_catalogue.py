"""The meta-test: the suite discriminates.

Every mutant of the mistake catalogue fails at least one vector of every profile it is a mistake
under (``applies_to``: read from the profile's choices) at every dtype where its mistake can occur,
and every conforming variant passes every vector of every profile. Prints the discrimination matrix
(mutant x suite: number of failing cases) with ``pytest -s``.
"""

from __future__ import annotations

import collections

import pytest
from adabelief_reference import profile_named, profile_names

from adabelief_conformance._catalogue import MUTANTS, VARIANTS, CatalogueImplementation, applies_to
from adabelief_conformance._compare import run_case

DTYPES = ("float32", "float64", "float16-mp")
ONLY_AT = {"float16 state without master weights": {"float16-mp"},
           # float32 hyperparameters are what float32 and float16-mp compute with anyway
           "TensorFlow quirk: hyperparameters held in float32": {"float64"}}


def _failures(name, knobs, cases):
    impl = CatalogueImplementation(name, knobs)
    by = collections.Counter()
    messages = []
    for vc in cases:
        out = run_case(impl, vc)
        assert out.status != "skipped"
        if out.status != "passed":
            by[(vc.suite, vc.dtype, vc.profile)] += 1
            messages.append(f"{vc.id} ({vc.dtype}/{vc.profile}, {vc.comment}): {out.message}")
    return by, messages


@pytest.fixture(scope="module")
def mutant_matrix(bundled_cases):
    return {name: _failures(name, kn, bundled_cases)[0] for name, kn in MUTANTS.items()}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_every_mutant_is_caught_at_every_dtype_of_every_profile(name, mutant_matrix, bundled_cases) -> None:
    by = mutant_matrix[name]
    profiles = sorted({c.profile for c in bundled_cases})
    assert profiles == sorted(profile_names()), "the bundled vectors cover every profile"
    applies = [p for p in profiles if applies_to(MUTANTS[name], profile_named(p))]
    assert applies, f"mutant {name!r} is a mistake under no profile"
    for profile in applies:
        for dtype in ONLY_AT.get(name, DTYPES):
            caught = sum(n for (_, d, p), n in by.items() if d == dtype and p == profile)
            assert caught >= 1, (f"mutant {name!r} passes every {profile}/{dtype} vector: "
                                 "the suite cannot see it")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_conforming_variant_passes_every_vector(name, bundled_cases) -> None:
    _, messages = _failures(name, VARIANTS[name], bundled_cases)
    assert not messages, f"conforming variant {name!r} fails {len(messages)} cases, first: {messages[0]}"


def test_print_discrimination_matrix(mutant_matrix, bundled_cases, capsys) -> None:
    suites = sorted({c.suite for c in bundled_cases})
    width = max(len(n) for n in MUTANTS)
    with capsys.disabled():
        print("\ndiscrimination matrix: failing cases per suite (all dtypes and profiles)")
        print(" " * width + " " + " ".join(f"{s[:8]:>8}" for s in suites))
        for name, by in mutant_matrix.items():
            row = [sum(n for (s, _, _), n in by.items() if s == suite) for suite in suites]
            print(f"{name:<{width}} " + " ".join(f"{n:>8}" for n in row))
    assert all(sum(by.values()) > 0 for by in mutant_matrix.values())
