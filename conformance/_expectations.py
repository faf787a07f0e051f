"""Expectation files: the known deviations of an implementation, checked strictly.

The format is TOML (read with :mod:`tomllib`, or the ``tomli`` package before Python 3.11); a
file whose name ends in ``.json`` is read as JSON with the same structure::

    # adabelief-conformance expectations
    format = 1

    [[deviation]]
    id = "clipping-923f18091f72f8d1"      # a case id, or a shell glob such as "clipping-*"
    reason = "clip_gradient is not implemented yet"
    link = "https://example.org/issues/12"   # optional
    strict = true                            # optional, default true

A case listed by an entry that fails or errors counts as ``xfailed`` (known deviation): the run
stays conforming. Strictness keeps the file honest:

* ``strict = true``: every selected case the entry matches must still fail; a passing one is
  ``xpassed`` and makes the run fail, naming the entry (remove it, or narrow its glob).
* ``strict = false``: matched cases may pass, but an entry whose matched cases all pass is stale
  and makes the run fail.
* An entry that matches no case of the loaded vectors is reported as a warning (it may belong to
  vectors not loaded in this run), never silently ignored.

The first entry that matches a case applies to it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._deviation import Entry
from ._errors import InvalidExpectations

if TYPE_CHECKING:
    from ._runner import RunReport
    from ._vectors import VectorCase

__all__ = ["FORMAT_VERSION", "Entry", "Expectations", "dumps_toml", "load_expectations",
           "write_expectations"]

FORMAT_VERSION = 1
MAX_EXPECTATIONS_BYTES = 64 * 1024 * 1024  # spec/vector-format.md#limits
_KEYS = {"id", "reason", "link", "strict"}


@dataclass
class Expectations:
    entries: list[Entry]
    path: str | None = None
    # the case ids of every loaded vector (not only the selected ones): an entry matching one of
    # them is in use even when the selection leaves it out
    known_ids: Sequence[str] | None = None
    # the (bundled) suites whose files a --suite selection left unread
    unloaded_suites: frozenset[str] | None = None

    def match(self, case_id: str) -> Entry | None:
        for e in self.entries:
            if e.matches(case_id):
                return e
        return None

    def with_known(self, cases: Iterable[VectorCase], suites_only: bool = False) -> Expectations:
        """These entries, knowing every loaded case. ``suites_only``: only some suites' files
        were loaded (``--suite``), so an entry naming another suite is not reported unused."""
        cases = list(cases)
        skipped = None
        if suites_only:
            from adabelief_reference._suites import SUITES

            skipped = frozenset(SUITES) - {c.suite for c in cases}
        return Expectations(self.entries, self.path, [c.id for c in cases], skipped)

    def apply(self, report: RunReport) -> None:
        """Mark listed cases, and record stale and unused entries, in ``report``."""
        report.expectations_file = self.path
        report.expectation_entries = list(self.entries)
        matched: dict[int, list[str]] = {id(e): [] for e in self.entries}
        for r in report.results:
            e = self.match(r.id)
            r.expectation = e
            if e is not None:
                matched[id(e)].append(r.outcome.status)
        for e in self.entries:
            statuses = matched[id(e)]
            passing = statuses.count("passed")
            if e.strict and passing:
                report.stale_entries.append((e, f"{passing} listed case(s) now pass"))
            elif not e.strict and passing and passing == len(statuses):
                report.stale_entries.append((e, f"all {passing} listed case(s) now pass"))
            if not statuses:
                known = self.known_ids if self.known_ids is not None else [r.id for r in report.results]
                if self.unloaded_suites and _suite_of(e.id) in self.unloaded_suites:
                    continue  # an entry for a suite this run did not load
                if not any(e.matches(i) for i in known):
                    report.unused_entries.append(e)
                    report.warnings.append(f"{e.describe()} matches no case of the loaded vectors")


def _suite_of(pattern: str) -> str:
    """The suite a case id (``SUITE-<16 hex digits>``) or a glob such as ``SUITE-*`` names."""
    return pattern.rsplit("-", 1)[0]


def _read_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ModuleNotFoundError:
            raise InvalidExpectations(f"{path}: reading TOML needs Python >= 3.11 or the tomli "
                                      "package (pip install tomli); or write the file as .json") from None
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except RecursionError:
        raise InvalidExpectations(f"{path}: TOML nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidExpectations(f"{path}: not valid TOML ({' '.join(str(e).split())})") from None
    return doc


def load_expectations(path: Path) -> Expectations:
    """Read and validate an expectation file; every problem is a one-line InvalidExpectations."""
    from ._errors import InvalidVector
    from ._vectors import read_bounded

    try:
        text = read_bounded(path, MAX_EXPECTATIONS_BYTES, "an expectation file").decode("utf-8")
    except InvalidVector as e:
        raise InvalidExpectations(str(e)) from None
    except UnicodeDecodeError as e:
        raise InvalidExpectations(f"{path}: not UTF-8 text (byte {e.start})") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidExpectations(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        except (ValueError, RecursionError) as e:
            raise InvalidExpectations(f"{path}: not valid JSON ({type(e).__name__}: "
                                      f"{' '.join(str(e).split())[:200]})") from None
    else:
        doc = _read_toml(path, text)
    if not isinstance(doc, dict):
        raise InvalidExpectations(f"{path}: expected a table with a 'deviation' array")
    unknown = set(doc) - {"format", "deviation"}
    if unknown:
        raise InvalidExpectations(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                                  "expected 'format' and [[deviation]] entries")
    fmt = doc.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise InvalidExpectations(f"{path}: format = {fmt!r}; this version reads format {FORMAT_VERSION}")
    raw = doc.get("deviation", [])
    if not isinstance(raw, list):
        raise InvalidExpectations(f"{path}: 'deviation' must be an array of tables ([[deviation]])")
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(raw):
        where = f"{path}: deviation[{i}]"
        if not isinstance(item, dict):
            raise InvalidExpectations(f"{where}: expected a table with id and reason")
        extra = set(item) - _KEYS
        if extra:
            raise InvalidExpectations(f"{where}: unknown key(s) {', '.join(sorted(extra))}; "
                                      f"allowed: {', '.join(sorted(_KEYS))}")
        cid, reason, link, strict = item.get("id"), item.get("reason"), item.get("link"), item.get("strict", True)
        if not isinstance(cid, str) or not cid.strip():
            raise InvalidExpectations(f"{where}: 'id' must be a non-empty string (a case id or a glob)")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidExpectations(f"{where} (id {cid!r}): 'reason' must be a non-empty string")
        if link is not None and not isinstance(link, str):
            raise InvalidExpectations(f"{where} (id {cid!r}): 'link' must be a string")
        if not isinstance(strict, bool):
            raise InvalidExpectations(f"{where} (id {cid!r}): 'strict' must be true or false")
        if cid in seen:
            raise InvalidExpectations(f"{where}: id {cid!r} is already listed at {seen[cid]}")
        seen[cid] = f"deviation[{i}]"
        entries.append(Entry(cid, reason, link, strict, where))
    return Expectations(entries, str(path))


def _toml_str(text: str) -> str:
    # A JSON string is a valid TOML basic string once DEL (legal in JSON, not in TOML) is escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def dumps_toml(entries: Sequence[Entry], header: Sequence[str] = ()) -> str:
    lines = [f"# {h}" for h in header]
    lines += [f"format = {FORMAT_VERSION}", ""]
    for e in entries:
        lines.append("[[deviation]]")
        lines.append(f"id = {_toml_str(e.id)}")
        lines.append(f"reason = {_toml_str(e.reason)}")
        if e.link:
            lines.append(f"link = {_toml_str(e.link)}")
        if not e.strict:
            lines.append("strict = false")
        lines.append("")
    return "\n".join(lines)


def entries_from_report(report: RunReport) -> list[Entry]:
    """One strict entry per failing or errored case, the reason a placeholder quoting the first
    failure. Cases already listed keep their entry's reason and link."""
    out = []
    for r in report.results:
        if r.outcome.status not in ("failed", "errored"):
            continue
        old = r.expectation
        if old is not None:
            out.append(Entry(r.id, old.reason, old.link))
            continue
        first = " ".join(r.outcome.message.split())
        if len(first) > 300:
            first = first[:297] + "..."
        out.append(Entry(r.id, f"TODO: explain. {r.outcome.status}: {first}"))
    return out


def write_expectations(path: Path, report: RunReport) -> int:
    """Write an expectation file listing every failing or errored case of ``report`` (TOML, or
    JSON when the name ends in .json). Returns the number of entries."""
    entries = entries_from_report(report)
    impl = report.implementation
    header = [
        "adabelief-conformance expectations: known deviations, one [[deviation]] per case.",
        f"Written by `adabelief-conformance check --write-expectations` on "
        f"{datetime.date.today().isoformat()} for {impl.name} {impl.version}.",
        "Replace each TODO with the reason (and a link to the issue); a listed case that passes",
        "again makes the run fail, so the file cannot go stale silently.",
    ]
    if path.suffix.lower() == ".json":
        doc: dict[str, Any] = {"format": FORMAT_VERSION, "deviation": [
            {"id": e.id, "reason": e.reason, **({"link": e.link} if e.link else {})} for e in entries]}
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    else:
        text = dumps_toml(entries, header)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InvalidExpectations(f"{path}: cannot write: {e.strerror}") from None
    return len(entries)

