"""Profiles: named sets of declared choices, loaded from spec/profiles.json (the one source)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cache

from adabelief_spec import profiles as _spec_profiles

__all__ = ["CHOICES", "SWITCH_PARENTS", "Profile", "profile_named", "profile_names", "switch_label",
           "switch_settings"]

# Every value the reference knows for each choice. A new profile is data in spec/profiles.json as
# long as its values are listed here.
CHOICES: dict[str, tuple[object, ...]] = {
    "weight_decay": ("coupled-before-clip", "coupled-after-clip"),
    "clip_nonpositive": ("disabled", "implementation-defined"),
    "rescale_skip": ("skip-when-zero-or-nonfinite", "never"),
    "epsilon_in_state": (True,),
    "stored_epsilon": ("epsilon", "eps_root"),
    "epsilon_denominator": ("before-bias-correction", "after-bias-correction",
                            "after-bias-correction-with-transient-epsilon"),
    "rectification": ("none", "radam-epsilon-before-bias-correction",
                      "radam-epsilon-after-bias-correction"),
    "amsgrad": ("none", "max-of-s", "max-of-s-unrectified"),
}


# The case switches a profile may allow (reference/_model.py, Hyperparameters).
SWITCH_NAMES: tuple[str, ...] = ("weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd", "amsgrad")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    weight_decay: str
    clip_nonpositive: str
    rescale_skip: str
    epsilon_in_state: bool
    stored_epsilon: str
    epsilon_denominator: str
    rectification: str
    amsgrad: str
    # switch name -> the values a case of this profile may give it, the library's default first
    # (spec/profiles.md#switches); a switch not listed stays at its neutral value, False.
    switches: dict[str, tuple[bool, ...]] = field(default_factory=dict, hash=False)


# A switch that changes nothing while its parent switch is off.
SWITCH_PARENTS: dict[str, str] = {"fixed_decay": "weight_decouple", "degenerated_to_sgd": "rectify"}


def switch_settings(profile: Profile) -> list[dict[str, bool]]:
    """Every distinct setting of the profile's switches, its library's defaults first: all
    combinations of the values it lists, except that a switch whose parent is off keeps its
    default (other values would only repeat a setting). One empty setting without switches."""
    allowed = profile.switches
    names = sorted(allowed)
    combos = [dict(zip(names, values)) for values in itertools.product(*(allowed[n] for n in names))]
    return [c for c in combos
            if all(c[k] == allowed[k][0] or c.get(p, False) for k, p in SWITCH_PARENTS.items() if k in c)]


def switch_label(setting: dict[str, bool]) -> str:
    """'a=True, b=False' for the switches that matter in this setting (parents on)."""
    shown = {k: v for k, v in setting.items()
             if k not in SWITCH_PARENTS or setting.get(SWITCH_PARENTS[k], False)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))


@cache
def profile_named(name: str) -> Profile:
    table = _spec_profiles()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(table)}")
    entry = table[name]
    for choice, allowed in CHOICES.items():
        if entry.get(choice) not in allowed:
            raise ValueError(f"profile {name!r}: {choice} = {entry.get(choice)!r} is not one of {allowed}")
    switches = {k: tuple(v) for k, v in entry.get("switches", {}).items()}
    for k, v in switches.items():
        if k not in SWITCH_NAMES or not v or any(x not in (True, False) for x in v):
            raise ValueError(f"profile {name!r}: switches.{k} = {v!r}: expected a known switch "
                             f"({', '.join(SWITCH_NAMES)}) with a non-empty list of booleans")
    return Profile(name=name, **{**entry, "switches": switches})


def profile_names() -> tuple[str, ...]:
    return tuple(_spec_profiles())
