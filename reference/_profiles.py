"""Profiles: named sets of declared choices, loaded from spec/profiles.json (the one source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from adabelief_spec import profiles as _spec_profiles

__all__ = ["CHOICES", "Profile", "profile_named", "profile_names"]

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
}


# The case switches a profile may allow (reference/_model.py, Hyperparameters).
SWITCH_NAMES: tuple[str, ...] = ("weight_decouple", "fixed_decay")


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
    # switch name -> the values a case of this profile may give it, the library's default first
    # (spec/profiles.md#switches); a switch not listed stays at its neutral value, False.
    switches: dict[str, tuple[bool, ...]] = field(default_factory=dict, hash=False)


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
