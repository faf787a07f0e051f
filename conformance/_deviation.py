"""An expectation entry: one known deviation (a case id or glob, and why). The data model that
the run report and the expectation files share, below both (conformance/_runner.py and
conformance/_expectations.py import it; neither imports the other for it)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

__all__ = ["Entry"]


@dataclass(frozen=True)
class Entry:
    id: str  # a case id or a glob
    reason: str
    link: str | None = None
    strict: bool = True
    where: str = ""  # "FILE: deviation[3]", for messages

    def matches(self, case_id: str) -> bool:
        return fnmatch.fnmatchcase(case_id, self.id)

    def describe(self) -> str:
        return f"{self.where} (id {self.id!r})" if self.where else f"entry {self.id!r}"
