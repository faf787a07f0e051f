"""The meta-test: the suite discriminates.

Every mutant of the mistake catalogue fails at least one vector at every dtype where its mistake
can occur, and every conforming variant passes every vector. Prints the discrimination matrix
(mutant x suite: number of failing cases) with ``pytest -s``.
"""

from __future__ import annotations

import collections

import pytest

from adabelief_conformance._catalogue import MUTANTS, VARIANTS, CatalogueImplementation
from adabelief_conformance._compare import run_case

DTYPES = ("float32", "float64", "float16-mp")
ONLY_AT = {"float16 state without master weights": {"float16-mp"}}


def _failures(name, knobs, cases):
    impl = CatalogueImplementation(name, knobs)
    by = collections.Counter()
    messages = []
    for vc in cases:
        out = run_case(impl, vc)
        assert out.status != "skipped"
        if out.status != "passed":
            by[(vc.suite, vc.dtype)] += 1
            messages.append(f"{vc.id} ({vc.dtype}/{vc.profile}, {vc.comment}): {out.message}")
    return by, messages


@pytest.fixture(scope="module")
def mutant_matrix(bundled_cases):
    return {name: _failures(name, kn, bundled_cases)[0] for name, kn in MUTANTS.items()}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_every_mutant_is_caught_at_every_dtype(name, mutant_matrix) -> None:
    by = mutant_matrix[name]
    for dtype in ONLY_AT.get(name, DTYPES):
        caught = sum(n for (_, d), n in by.items() if d == dtype)
        assert caught >= 1, f"mutant {name!r} passes every {dtype} vector: the suite cannot see it"


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
            row = [sum(n for (s, _), n in by.items() if s == suite) for suite in suites]
            print(f"{name:<{width}} " + " ".join(f"{n:>8}" for n in row))
    assert all(sum(by.values()) > 0 for by in mutant_matrix.values())
