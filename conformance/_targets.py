"""Turning a target named on the command line into an :class:`Implementation`.

Targets:

* ``numpy``, ``naive``, ``numba``, ``cupy``, ``cuda-host``: the bundled backends;
* ``catalogue:<entry>``: an entry of the mistake catalogue (a mutant or a conforming variant), for
  demonstrations, e.g. ``catalogue:clip ignored``;
* ``module:attr`` or ``path/to/file.py:attr``: ``attr`` (a dotted path) is an Implementation
  object, a class or a zero-argument factory returning one;
* ``--cmd "..."``: a program speaking the JSON-lines protocol (spec/protocol.md).

Backend modules are imported when named, so a missing optional dependency (numba, cupy, a C
compiler) is a one-line :class:`AdapterError` for that target only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

from ._errors import AdapterError, ConformanceError, UsageError
from ._protocol import Implementation

__all__ = ["BUILTIN_TARGETS", "describe_target", "resolve_target", "target_args", "validate_implementation"]

# name -> (module of this package, class): the bundled backends (conformance/backends/)
BUILTIN_TARGETS: dict[str, tuple[str, str]] = {
    "numpy": ("backends._numpy", "NumpyBackend"),
    "naive": ("backends._naive", "NaiveNumpy"),
    "numba": ("backends._numba", "NumbaBackend"),
    "cupy": ("backends._cupy", "CupyBackend"),
    "cuda-host": ("backends._native", "NativeHostBackend"),
}
_CATALOGUE = "catalogue:"
_LIBRARY = "library:"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _builtin(name: str) -> Implementation:
    module, cls = BUILTIN_TARGETS[name]
    try:
        mod = importlib.import_module(f"adabelief_conformance.{module}")
    except ImportError as e:
        raise AdapterError(f"target {name}: cannot import adabelief_conformance.{module}: "
                           f"{_one_line(str(e))}") from None
    factory = getattr(mod, cls, None)
    if factory is None:
        raise AdapterError(f"target {name}: adabelief_conformance.{module} has no {cls}")
    try:
        impl = factory()
    except ConformanceError as e:  # the backend's own explanation (no device, no compiler)
        raise AdapterError(f"target {name}: {_one_line(str(e))}") from None
    except Exception as e:
        raise AdapterError(f"target {name}: {cls}() failed: {type(e).__name__}: {_one_line(str(e))}") from None
    return validate_implementation(impl, f"target {name}")


def _catalogue(entry: str) -> Implementation:
    from ._catalogue import MUTANTS, VARIANTS, CatalogueImplementation

    knobs = MUTANTS.get(entry) or VARIANTS.get(entry)
    if knobs is None:
        names = ", ".join(repr(n) for n in [*VARIANTS, *MUTANTS])
        raise AdapterError(f"target {_CATALOGUE}{entry}: no such catalogue entry; entries: {names}")
    return cast(Implementation, CatalogueImplementation(entry, knobs))


def _library(entry: str) -> Implementation:
    from .adapters.libraries import library_target

    try:
        impl = library_target(entry)
    except ConformanceError as e:
        raise AdapterError(f"target {_LIBRARY}{entry}: {_one_line(str(e))}") from None
    except Exception as e:
        raise AdapterError(f"target {_LIBRARY}{entry}: {type(e).__name__}: {_one_line(str(e))}") from None
    return validate_implementation(impl, f"target {_LIBRARY}{entry}")


def _import_target(module: str, where: str) -> Any:
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise AdapterError(f"{where}: {module}: no such file")
        name = f"_adabelief_target_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise AdapterError(f"{where}: {module}: cannot be imported as a Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            raise AdapterError(f"{where}: importing {module} failed: {type(e).__name__}: "
                               f"{_one_line(str(e))}") from None
        return mod
    # Like `python -m`, look in the working directory too (a console script does not).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(module)
    except Exception as e:
        raise AdapterError(f"{where}: cannot import {module}: {type(e).__name__}: {_one_line(str(e))}") from None


def _module_attr(spec: str) -> Implementation:
    module, _, attr = spec.rpartition(":")
    where = f"target {spec}"
    if not module or not attr:
        raise AdapterError(f"{where}: expected module:attr (e.g. mypkg.adabelief:Backend)")
    obj: Any = _import_target(module, where)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AdapterError(f"{where}: {module} has no attribute {attr}") from None
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "run")):
        try:
            obj = obj()
        except Exception as e:
            raise AdapterError(f"{where}: calling {attr}() failed: {type(e).__name__}: "
                               f"{_one_line(str(e))}") from None
    return validate_implementation(obj, where)


def validate_implementation(obj: Any, where: str) -> Implementation:
    """Check that ``obj`` has what the runner needs; raise a one-line AdapterError otherwise."""
    problems = []
    for attr in ("name", "version"):
        if not isinstance(getattr(obj, attr, None), str):
            problems.append(f"'{attr}' must be a string")
    for attr in ("profiles", "dtypes"):
        value = getattr(obj, attr, None)
        if isinstance(value, str | bytes) or not isinstance(value, Collection) or not all(
                isinstance(x, str) for x in value):
            problems.append(f"'{attr}' must be a collection of strings such as {{'mxnet'}}")
    if not callable(getattr(obj, "run", None)):
        problems.append("'run(request)' must be a method")
    if problems:
        raise AdapterError(f"{where}: {type(obj).__name__} is not an Implementation: {'; '.join(problems)}")
    return cast(Implementation, obj)


def resolve_target(spec: str | None, cmd: str | None = None, timeout: float = 10.0,
                   validate: bool = False) -> Implementation:
    """The implementation named by ``spec`` (see the module doc) or run by ``cmd``."""
    if (spec is None) == (cmd is None):
        raise UsageError("give a target (numpy, naive, numba, cupy, cuda-host, catalogue:ENTRY, library:NAME, "
                         "module:attr) or --cmd COMMAND, not both")
    if cmd is not None:
        try:
            from ._subprocess import SubprocessImplementation
        except ImportError as e:
            raise AdapterError(f"--cmd: the subprocess protocol is unavailable: {_one_line(str(e))}") from None
        try:
            return cast(Implementation, SubprocessImplementation(cmd, timeout=timeout, validate=validate))
        except Exception as e:
            raise AdapterError(f"--cmd {cmd}: {_one_line(str(e))}") from None
    assert spec is not None
    if spec in BUILTIN_TARGETS:
        return _builtin(spec)
    if spec.startswith(_CATALOGUE):
        return _catalogue(spec[len(_CATALOGUE):])
    if spec.startswith(_LIBRARY):
        return _library(spec[len(_LIBRARY):])
    if ":" in spec:
        return _module_attr(spec)
    raise AdapterError(f"target {spec}: unknown; expected one of {', '.join(BUILTIN_TARGETS)}, "
                       "catalogue:ENTRY, library:NAME, module:attr or --cmd COMMAND")


def target_args(spec: str | None, cmd: str | None) -> list[str]:
    """The arguments of ``check`` that name this target again."""
    return ["--cmd", cmd] if cmd is not None else [spec or ""]


def describe_target(spec: str | None, cmd: str | None) -> str:
    """The target for display (reports, headers); rerun commands quote target_args instead."""
    return f"--cmd {cmd}" if cmd is not None else (spec or "")
