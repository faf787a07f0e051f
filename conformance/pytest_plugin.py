"""pytest plugin: the golden vectors as test items, one per case.

    pytest --adabelief-impl numpy                       # a bundled backend
    pytest --adabelief-impl mypkg.adabelief:Backend     # module:attr
    pytest --adabelief-cmd "./my_port --serve"          # the JSON-lines protocol
    pytest --adabelief-impl numpy --adabelief-suite clipping -k float32 -n 4 --junitxml out.xml

Items are named by case id (``-k <id>`` selects one), carry the suite, profile, dtype and flags
as keywords (``-k "clipping and float16-mp"``) and are collected the same way in every process,
so pytest-xdist works: each worker loads the vectors and its own instance of the implementation.
Entries of ``--adabelief-expectations`` become ``xfail(strict=<entry strict>)``.

Without ``--adabelief-impl`` / ``--adabelief-cmd`` the plugin only registers its options: it
imports nothing heavy and adds no item.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._expectations import Expectations
    from ._runner import CaseResult
    from ._vectors import VectorCase

_ROOT = "adabelief-conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("adabelief", "AdaBelief conformance (adabelief-conformance)")
    group.addoption("--adabelief-impl", metavar="TARGET", default=None,
                    help="implementation to check: numpy, naive, numba, cupy, cuda-host, "
                         "catalogue:ENTRY or module:attr; adds one test per vector case")
    group.addoption("--adabelief-cmd", metavar="COMMAND", default=None,
                    help="check a program speaking the JSON-lines protocol instead")
    group.addoption("--adabelief-vectors", metavar="PATH", action="append", default=None,
                    help="vector file or folder (repeatable; default: the bundled vectors)")
    group.addoption("--adabelief-profile", metavar="NAME", action="append", default=None,
                    help="only cases of this profile (repeatable)")
    group.addoption("--adabelief-dtype", metavar="NAME", action="append", default=None,
                    help="only cases of this dtype (repeatable)")
    group.addoption("--adabelief-suite", metavar="NAME", action="append", default=None,
                    help="only cases of this suite (repeatable)")
    group.addoption("--adabelief-expectations", metavar="FILE", default=None,
                    help="known deviations (TOML or JSON), run as strict xfail")
    group.addoption("--adabelief-timeout", metavar="S", type=float, default=10.0,
                    help="seconds per case for --adabelief-cmd (default 10)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("adabelief_impl") is None and config.getoption("adabelief_cmd") is None:
        return
    config.pluginmanager.register(_Conformance(config), "adabelief-conformance-run")


class CaseFailed(Exception):
    """A case failed or errored; the message is the runner's detailed text."""


def _split(values: Iterable[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


class _Conformance:
    """The plugin's state for a run with an implementation."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.target: str | None = config.getoption("adabelief_impl")
        self.cmd: str | None = config.getoption("adabelief_cmd")
        self.vectors = [Path(p) for p in config.getoption("adabelief_vectors") or ()]
        self.profiles = _split(config.getoption("adabelief_profile"))
        self.dtypes = _split(config.getoption("adabelief_dtype"))
        self.suites = _split(config.getoption("adabelief_suite"))
        exp = config.getoption("adabelief_expectations")
        self.expectations_path = Path(exp) if exp else None
        self.timeout: float = config.getoption("adabelief_timeout")
        self.impl: Any = None
        self.cases: list[VectorCase] = []
        self.expectations: Expectations | None = None
        self.warnings: list[str] = []

    # -- setup: everything that can be wrong with the options is a usage error, reported once --
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from ._errors import ConformanceError
        from ._expectations import load_expectations
        from ._runner import load_cases, select_cases
        from ._targets import resolve_target

        if self.target is not None and self.cmd is not None:
            raise pytest.UsageError("give --adabelief-impl or --adabelief-cmd, not both")
        try:
            if self.expectations_path is not None:
                self.expectations = load_expectations(self.expectations_path)
            loaded = load_cases(self.vectors or None, suites=self.suites)
            self.cases = select_cases(loaded, profiles=self.profiles, dtypes=self.dtypes, suites=self.suites)
            if self.expectations is not None:
                self.expectations = self.expectations.with_known(loaded, suites_only=bool(self.suites))
                known = [c.id for c in loaded]
                unloaded = self.expectations.unloaded_suites or frozenset()
                for e in self.expectations.entries:
                    if e.id.rsplit("-", 1)[0] in unloaded:
                        continue  # an entry for a suite this run did not load
                    if not any(e.matches(i) for i in known):
                        self.warnings.append(f"{e.describe()} matches no case of the loaded vectors")
            self.impl = resolve_target(self.target, self.cmd, timeout=self.timeout)
        except ConformanceError as e:
            raise pytest.UsageError(f"adabelief-conformance: {' '.join(str(e).split())}") from None

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        impl = self.impl
        if impl is None:
            return []
        from ._runner import ImplementationInfo

        info = ImplementationInfo.of(impl)
        where = ", ".join(str(v) for v in self.vectors) or "bundled vectors"
        return [
            f"adabelief-conformance: implementation {info.name} {info.version}"
            + (f" ({info.description})" if info.description else ""),
            f"adabelief-conformance: dtypes {', '.join(info.dtypes)}; profiles {', '.join(info.profiles)}; "
            f"{len(self.cases)} cases from {where}",
        ]

    @pytest.hookimpl(tryfirst=True)  # before -k / -m deselect, so they apply to these items
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        by_suite: dict[str, list[VectorCase]] = {}
        for c in self.cases:
            by_suite.setdefault(c.suite, []).append(c)
        for suite, cases in by_suite.items():
            col = SuiteCollector.from_parent(session, name=suite, nodeid=f"{_ROOT}/{suite}",
                                             path=Path(cases[0].file))
            new: list[pytest.Item | pytest.Collector] = []
            for c in cases:
                item = VectorItem.from_parent(col, name=c.id, case=c)
                entry = self.expectations.match(c.id) if self.expectations is not None else None
                if entry is not None:
                    reason = f"known deviation: {entry.reason}" + (f" ({entry.link})" if entry.link else "")
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=entry.strict, raises=CaseFailed))
                new.append(item)
            # report them as collected, so that "collected N items" and -k's counts include them
            session.ihook.pytest_collectreport(report=pytest.CollectReport(col.nodeid, "passed", None, new))
            items.extend(i for i in new if isinstance(i, pytest.Item))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for w in self.warnings:
            terminalreporter.write_line(f"adabelief-conformance: warning: {w}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        close = getattr(self.impl, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing must not hide the results
                pass

    # -- running ------------------------------------------------------------------------------
    def run(self, case: VectorCase) -> CaseResult:
        from ._runner import check

        return check(self.impl, [case]).results[0]

    def failure_text(self, result: CaseResult) -> str:
        from ._report import failure_text
        from ._runner import ImplementationInfo, RunReport
        from ._targets import describe_target, target_args

        args = target_args(self.target, self.cmd) + [a for v in self.vectors for a in ("--vectors", str(v))]
        report = RunReport(ImplementationInfo.of(self.impl), [result], target=describe_target(self.target, self.cmd),
                           rerun_args=tuple(args))
        # the first line is what pytest's short summary shows
        return "\n".join([result.outcome.message, *failure_text(report, result)])


class SuiteCollector(pytest.Collector):
    """The cases of one suite (added by the plugin, not found on disk)."""

    def collect(self) -> list[pytest.Item]:  # the plugin adds the items itself
        return []


class VectorItem(pytest.Item):
    def __init__(self, *, case: VectorCase, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.extra_keyword_matches.update({case.suite, case.profile, case.dtype, *case.flags})

    def _plugin(self) -> _Conformance:
        plugin = self.config.pluginmanager.get_plugin("adabelief-conformance-run")
        assert isinstance(plugin, _Conformance)
        return plugin

    def runtest(self) -> None:
        plugin = self._plugin()
        result = plugin.run(self.case)
        status = result.outcome.status
        if status == "skipped":
            pytest.skip(result.outcome.message)
        if status in ("failed", "errored"):
            raise CaseFailed(plugin.failure_text(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        c = self.case
        return Path(c.file), None, f"{c.id} [{c.suite}, {c.profile}/{c.dtype}]"
