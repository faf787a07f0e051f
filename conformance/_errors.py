"""The exception hierarchy: one root, user-facing subclasses that are also builtins."""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "ConformanceError",
    "InvalidExpectations",
    "InvalidVector",
    "UsageError",
]


class ConformanceError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidVector(ConformanceError, ValueError):
    """A vector file is malformed: the message names the file and the field."""


class InvalidExpectations(ConformanceError, ValueError):
    """An expectation file is malformed or stale."""


class AdapterError(ConformanceError, RuntimeError):
    """The implementation under test could not be loaded or answered something unusable."""


class UsageError(ConformanceError, ValueError):
    """The command line or API was called with arguments that cannot work."""
