"""Profiles: named sets of declared choices, loaded from spec/profiles.json (the one source)."""

from __future__ import annotations

from dataclasses import dataclass
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


@cache
def profile_named(name: str) -> Profile:
    table = _spec_profiles()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(table)}")
    entry = table[name]
    for choice, allowed in CHOICES.items():
        if entry.get(choice) not in allowed:
            raise ValueError(f"profile {name!r}: {choice} = {entry.get(choice)!r} is not one of {allowed}")
    return Profile(name=name, **entry)


def profile_names() -> tuple[str, ...]:
    return tuple(_spec_profiles())
