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
