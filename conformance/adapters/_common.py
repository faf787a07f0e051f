"""What every framework adapter shares: which library options a case asks for, and what a
library cannot express.

A library exposes some of the profile switches (spec/profiles.md#switches) as constructor
options, under its own names; the others are fixed by its code. An adapter runs a library in one
of three *configurations*:

* ``"case"`` (the default): every switch the case gives is set on the library;
* ``"defaults"``: the library's own defaults for every option that is not an MXNet
  hyperparameter (its switches, optax's ``eps_root``), as a user who only passes ``lr``, the
  betas, ``eps`` and ``weight_decay`` gets it;
* ``"mxnet-closest"``: every switch at MXNet's behaviour (all off), as close to MXNet as the
  library's options allow.

A case of a profile that lists a switch (its cases vary it) whose value the configuration cannot
give is skipped, saying so; a profile that does not list a switch has MXNet's behaviour for it,
and the library runs with the configuration's value, so that the report shows what that value
does to the profile's results.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable, Collection, Mapping
from typing import Any

from adabelief_reference import profile_named
from adabelief_reference._profiles import SWITCH_NAMES, SWITCH_PARENTS

from .._errors import AdapterError
from .._protocol import CaseSkipped, RunRequest

__all__ = [
    "ALL_DTYPES",
    "ALL_PROFILES",
    "CONFIGURATIONS",
    "SwitchSet",
    "distribution_version",
    "import_framework",
    "import_without_package_init",
    "inexpressible_inputs",
    "to_float16",
]

CONFIGURATIONS = ("case", "defaults", "mxnet-closest")
ALL_DTYPES = frozenset({"float32", "float64", "float16-mp"})
ALL_PROFILES = "all"


def import_framework(module: str, extra: str) -> Any:
    """Import a framework an adapter needs, or fail with one line saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise AdapterError(f"this adapter needs {module} ({' '.join(str(e).split())}); install it: "
                           f"pip install 'adabelief-conformance[{extra}]' (see README, "
                           "'Checking a real library')") from None


def import_without_package_init(dotted: str) -> Any:
    """Import ``a.b.c`` without running ``a/__init__.py`` and ``a/b/__init__.py`` when importing it
    the normal way fails (timm's package ``__init__`` imports torchvision, which its optimizers do
    not need)."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        pass
    parts = dotted.split(".")
    top = importlib.util.find_spec(parts[0])
    if top is None or not top.submodule_search_locations:
        raise AdapterError(f"cannot import {dotted}: {parts[0]} is not installed")
    roots = list(top.submodule_search_locations)
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            package = types.ModuleType(name)
            package.__path__ = ["/".join([r, *parts[1:i]]) for r in roots]
            sys.modules[name] = package
    return importlib.import_module(dotted)


def distribution_version(module_name: str) -> str:
    """The installed version of the distribution that provides the top-level ``module_name``."""
    top = module_name.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return getattr(sys.modules.get(top), "__version__", "unknown")


def inexpressible_inputs(req: RunRequest, library: str, *, rescale: bool = False,
                         clip: bool = False, eps_root: bool = False) -> str | None:
    """Why ``library`` cannot run this case whatever its options (MXNet-only inputs), or None.
    The keyword arguments say which of those inputs the adapter can express after all."""
    h = req.hyperparameters
    if not h.correct_bias:
        return f"{library} always corrects the bias (the case sets correct_bias=False)"
    if h.clip_gradient is not None and not clip:
        return f"{library} has no element-wise clip_gradient (the case clips at {h.clip_gradient!r})"
    if not rescale and any(st.rescale_grad != 1.0 for st in req.steps):
        return f"{library} has no rescale_grad (the case rescales by " \
               f"{next(st.rescale_grad for st in req.steps if st.rescale_grad != 1.0)!r})"
    if h.eps_root != 0.0 and not eps_root:
        return f"{library} has no eps_root (the case stores eps_root={h.eps_root!r} in s)"
    return None


def _relevant(switch: str, values: Mapping[str, bool], req: RunRequest) -> bool:
    """Whether a switch changes anything in this case with these values of the others."""
    parent = SWITCH_PARENTS.get(switch)
    if parent is not None and not values.get(parent, False):
        return False
    if switch in ("weight_decouple", "fixed_decay"):
        h = req.hyperparameters
        return any(h.wd * p.wd_mult != 0.0 for p in req.params)
    return True


class SwitchSet:
    """A library's switches: the constructor option each maps to (None: not an option), and the
    fixed behaviour of those that are not options."""

    def __init__(self, library: str, options: Mapping[str, str | None], fixed: Mapping[str, bool],
                 defaults: Mapping[str, bool], configuration: str | Mapping[str, bool]) -> None:
        self.library = library
        self.options = {s: options.get(s) for s in SWITCH_NAMES}
        self.fixed = {s: fixed.get(s, False) for s in SWITCH_NAMES}
        self.defaults = {s: defaults.get(s, self.fixed[s]) if self.options[s] else self.fixed[s]
                         for s in SWITCH_NAMES}
        if isinstance(configuration, str):
            if configuration not in CONFIGURATIONS:
                raise AdapterError(f"{library}: configuration {configuration!r}: expected one of "
                                   f"{', '.join(CONFIGURATIONS)} or a dict of switches")
            self.configuration: str | dict[str, bool] = configuration
        else:
            unknown = set(configuration) - set(SWITCH_NAMES)
            if unknown:
                raise AdapterError(f"{library}: unknown switches {sorted(unknown)}; expected some of "
                                   f"{', '.join(SWITCH_NAMES)}")
            self.configuration = dict(configuration)

    @classmethod
    def of_class(cls, library: str, factory: Callable[..., Any], options: Mapping[str, str | None],
                 fixed: Mapping[str, bool], configuration: str | Mapping[str, bool]) -> SwitchSet:
        """The switches of a library whose constructor ``factory`` takes ``options``; its defaults
        are read from the constructor's signature."""
        defaults = signature_defaults(factory)
        return cls(library, options, fixed,
                   {s: bool(defaults[o]) for s, o in options.items() if o and o in defaults},
                   configuration)

    def label(self) -> str:
        return self.configuration if isinstance(self.configuration, str) else \
            ",".join(f"{k}={v}" for k, v in sorted(self.configuration.items()))

    def values(self, req: RunRequest) -> dict[str, bool]:
        """The switch values to run this case with; CaseSkipped when they cannot be the case's
        where the profile varies them."""
        h = req.hyperparameters
        asked = {s: bool(getattr(h, s)) for s in SWITCH_NAMES}
        conf = self.configuration
        if conf == "case":
            wanted = {s: asked[s] if self.options[s] else self.fixed[s] for s in SWITCH_NAMES}
            varied: Collection[str] = SWITCH_NAMES
        else:
            if conf == "defaults":
                wanted = dict(self.defaults)
            elif conf == "mxnet-closest":
                wanted = {s: False if self.options[s] else self.fixed[s] for s in SWITCH_NAMES}
            else:
                assert isinstance(conf, dict)
                wanted = {s: conf.get(s, self.defaults[s]) if self.options[s] else self.fixed[s]
                          for s in SWITCH_NAMES}
            varied = profile_named(req.profile).switches
        for s in SWITCH_NAMES:
            if s in varied and wanted[s] != asked[s] and (_relevant(s, asked, req)
                                                         or _relevant(s, wanted, req)):
                how = "has no option for it, and always behaves as" if not self.options[s] \
                    else f"is configured ({self.label()}) with"
                raise CaseSkipped(f"the case asks {s}={asked[s]}; {self.library} {how} {s}={wanted[s]}")
        return wanted


def signature_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a constructor or function."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def resolve_profiles(profiles: Collection[str] | str) -> frozenset[str]:
    from adabelief_reference import profile_names

    if profiles == ALL_PROFILES:
        return frozenset(profile_names())
    if isinstance(profiles, str):
        return frozenset({profiles})
    return frozenset(profiles)


def to_float16(w: Any) -> Any:
    """The float16 weight the model sees: the master rounded (overflow to ±inf is expected)."""
    import numpy as np

    with np.errstate(over="ignore"):
        return np.asarray(w).astype(np.float16)
