"""Package data for the AdaBelief specification: profiles, JSON Schemas, and the Markdown text."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["load_json", "profiles"]


def load_json(name: str) -> Any:
    """Load a JSON file shipped with the specification (``profiles.json``, ``schema/*.json``)."""
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


@cache
def profiles() -> dict[str, dict[str, Any]]:
    """The normative profiles, keyed by name (without the ``$comment`` entry)."""
    return {k: v for k, v in load_json("profiles.json").items() if not k.startswith("$")}
