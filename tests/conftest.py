from __future__ import annotations

import functools

import pytest

from adabelief_conformance._vectors import load_vectors


@functools.cache
def _bundled():
    return load_vectors()


@pytest.fixture(scope="session")
def bundled_cases():
    """Every bundled vector case, loaded once per session (manifest and schema checked)."""
    return _bundled()


def needs(module: str):
    """Import a framework for a test, or skip it; under .ci/run (ADABELIEF_REQUIRE_FRAMEWORKS=1)
    a missing framework is an install bug, not a reason to skip."""
    import os

    if os.environ.get("ADABELIEF_REQUIRE_FRAMEWORKS") == "1":
        return __import__(module)
    return pytest.importorskip(module)
