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


def error_location(e: BaseException) -> str:
    """" at FILE:LINE" of the innermost frame that raised ``e``, for an errored case's message;
    empty for the runner's own errors (a crashed or misbehaving subprocess, a malformed answer),
    whose message already says what happened and whose location would only point at the runner."""
    import traceback

    if isinstance(e, ConformanceError):
        return ""
    tb = traceback.extract_tb(e.__traceback__)
    return f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
