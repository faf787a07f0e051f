"""Spec sync: the specification's code and tables agree with the reference and the JSON files.

The ``python`` blocks of spec/*.md are executed in one namespace, in the order of the table of
contents of spec/README.md (the spec is this project's own trusted text, so exec is appropriate
here). Their update rule, evaluated in float64, must conform to ``adabelief_reference.golden`` at
float64; their error analysis must reproduce the reference's sigma; the tables of defaults,
profiles and tolerances must equal the JSON and dataclasses they describe; and every node the
reference names (``spec: X``) must have a heading in the spec.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import sys
import types
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adabelief_reference import (
    FLOAT16,
    FLOAT32,
    FLOAT64,
    CaseInputs,
    Finite,
    Hyperparameters,
    ParamInput,
    Special,
    StepInput,
    _generate,
    golden,
    tolerances,
)
from adabelief_reference._exact import outputs_of
from adabelief_reference._generate import case_id as reference_case_id
from adabelief_reference._generate import case_inputs_json
from adabelief_reference._golden import _admissible
from adabelief_reference._model import SWITCHES
from adabelief_reference._profiles import CHOICES
from adabelief_reference._suites import FLAGS
from adabelief_spec import profiles as spec_profiles

from adabelief_conformance import _ulp
from adabelief_conformance._catalogue import MUTANTS, VARIANTS

SPEC = Path(__file__).resolve().parent.parent / "spec"
REFERENCE = Path(__file__).resolve().parent.parent / "reference"
VECTORS = Path(__file__).resolve().parent.parent / "vectors"
INF, NAN = math.inf, math.nan

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$", re.M)


# ----- reading the spec -----------------------------------------------------------------------


def _spec_files() -> list[Path]:
    """spec/*.md in the order of README's table of contents, then any others alphabetically."""
    readme = (SPEC / "README.md").read_text(encoding="utf-8")
    toc = readme.split("## Table of contents", 1)[1].split("\n## ", 1)[0]
    order = list(dict.fromkeys(re.findall(r"\]\(([a-z-]+\.md)\)", toc)))
    rest = sorted(p.name for p in SPEC.glob("*.md") if p.name not in order)
    return [SPEC / name for name in ["README.md", *order, *rest] if (SPEC / name).exists()]


def _text(name: str) -> str:
    return (SPEC / name).read_text(encoding="utf-8")


def _blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of each python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


@cache
def _namespace() -> dict[str, Any]:
    module = types.ModuleType("adabelief_spec_blocks")
    # dataclasses resolve string annotations through sys.modules[cls.__module__].
    sys.modules[module.__name__] = module
    ns = module.__dict__
    for path in _spec_files():
        for line, src in _blocks(path):
            # Pad with newlines so that tracebacks point at the Markdown file's own lines.
            code = compile("\n" * (line - 1) + src, str(path), "exec")
            exec(code, ns)
    return ns


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return _namespace()


def _section(text: str, heading: str) -> str:
    """The text under a heading line (exactly as written), up to the next heading of any level."""
    start = text.index(heading + "\n") + len(heading) + 1
    nxt = _HEADING.search(text, start)
    return text[start : nxt.start() if nxt else len(text)]


def _table(section: str) -> list[list[str]]:
    """The rows (header first, separator dropped) of the first Markdown table in a section."""
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


# ----- cases ----------------------------------------------------------------------------------


def _case(
    profile: str,
    dtype: str,
    hp: Hyperparameters,
    params: Sequence[ParamInput],
    steps: Sequence[Sequence[Sequence[float]]],
    rescales: Sequence[float | None] | None = None,
) -> CaseInputs:
    rescales = rescales or [None] * len(steps)
    if spec_profiles()[profile]["stored_epsilon"] == "eps_root" and hp.eps_root == 0.0:
        hp = dataclasses.replace(hp, eps_root=3 * hp.epsilon)  # a stored epsilon unlike epsilon
    for name, allowed in spec_profiles()[profile].get("switches", {}).items():
        if getattr(hp, name) not in allowed:  # a setting the profile has: its library's default
            hp = dataclasses.replace(hp, **{name: allowed[0]})
    return CaseInputs(
        profile,
        dtype,
        hp,
        tuple(params),
        tuple(StepInput(tuple(tuple(g) for g in st), r) for st, r in zip(steps, rescales)),
    )


def _p(
    w: Sequence[float],
    m: Sequence[float] | None = None,
    s: Sequence[float] | None = None,
    t: int = 0,
    lr_mult: float = 1.0,
    wd_mult: float = 1.0,
    index: int = 0,
) -> ParamInput:
    n = len(w)
    return ParamInput(
        tuple(w), tuple(m or [0.0] * n), tuple(s or [0.0] * n), t, lr_mult, wd_mult, index
    )


W4 = [1.25, -0.5, 3e-3, 0.0]
G4 = [0.3, -1.7, 2e-4, 0.05]


def _cases(dtype: str) -> list[tuple[str, CaseInputs]]:
    """Finite-input cases covering every profile, clipping, weight decay, rescale, skip, t > 0."""
    out = []
    for profile in spec_profiles():
        out += [
            (
                f"{profile} defaults, 2 steps",
                _case(profile, dtype, Hyperparameters(), [_p(W4)], [[G4], [G4[::-1]]]),
            ),
            (
                f"{profile} measurement example",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(wd=0.05, clip_gradient=0.5),
                    [_p([10.0, 1.0])],
                    [[[0.3, 1.0]]],
                ),
            ),
            (
                f"{profile} clip, wd, rescale, t=2",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(
                        wd=0.03, clip_gradient=0.4, rescale_grad=0.125, learning_rate=0.1
                    ),
                    [_p(W4, m=[0.01, -0.2, 1e-3, 0.0], s=[1e-3, 0.04, 1e-6, 2e-6], t=2)],
                    [[G4], [[x * 8 for x in G4]]],
                ),
            ),
            (
                f"{profile} rescale 0 in step 2",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(wd=0.01),
                    [_p(W4, t=1)],
                    [[G4], [G4], [G4[::-1]]],
                    [1.0, 0.0, 1.0],
                ),
            ),
            (
                f"{profile} three parameters, t = 0, 5, 100",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(wd=0.05, learning_rate=0.01),
                    [
                        _p(W4, t=0),
                        _p(
                            W4[::-1],
                            m=[0.1] * 4,
                            s=[0.02] * 4,
                            t=5,
                            lr_mult=0.5,
                            wd_mult=2.0,
                            index=1,
                        ),
                        _p(W4, m=[-0.1] * 4, s=[0.5] * 4, t=100, lr_mult=2.0, wd_mult=0.0, index=2),
                    ],
                    [[G4, G4, G4], [G4[::-1], G4, G4[::-1]], [G4, G4[::-1], G4]],
                ),
            ),
            (
                f"{profile} correct_bias False, t=4",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(correct_bias=False),
                    [_p(W4, m=[0.05] * 4, s=[0.01] * 4, t=4)],
                    [[G4], [G4]],
                ),
            ),
            (
                f"{profile} beta1 0, beta2 0.99999, eps 0, t=10**6",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(beta1=0.0, beta2=0.99999, epsilon=0.0),
                    [_p(W4, m=[0.05] * 4, s=[0.01] * 4, t=10**6)],
                    [[G4], [G4]],
                ),
            ),
            (
                f"{profile} t = 2**32, lr 0.5, eps 1e-3",
                _case(
                    profile,
                    dtype,
                    Hyperparameters(learning_rate=0.5, epsilon=1e-3),
                    [_p(W4, m=[0.05] * 4, s=[0.01] * 4, t=2**32)],
                    [[G4]],
                ),
            ),
        ]
    for fixed in (False, True):
        out.append(
            (
                f"adabelief-pytorch decoupled decay, fixed_decay {fixed}, clip, t=3",
                _case(
                    "adabelief-pytorch",
                    dtype,
                    Hyperparameters(wd=0.05, learning_rate=0.1, clip_gradient=0.4,
                                    weight_decouple=True, fixed_decay=fixed),
                    [_p([10.0, -3.0, 1e-3, 0.0], m=[0.01] * 4, s=[1e-3] * 4, t=3)],
                    [[G4], [[0.0] * 4]],
                ),
            )
        )
    for profile in ("adabelief-pytorch", "tensorflow"):
        for degenerate in (True, False) if profile == "adabelief-pytorch" else (True,):
            out.append(
                (
                    f"{profile} rectify, degenerated_to_sgd {degenerate}, beta2 0.99, t = 4..6",
                    _case(
                        profile,
                        dtype,
                        # beta2 0.99: N_t = 3.97, 4.96 (far enough from 5 for float32), 5.94
                        Hyperparameters(wd=0.01, beta2=0.99, rectify=True, degenerated_to_sgd=degenerate,
                                        weight_decouple=profile == "tensorflow"),
                        [_p([0.0, 0.5, -2.0, 1e-3], m=[1e-4, 0.01, -0.1, 0.0], s=[1e-8, 1e-4, 0.01, 0.0], t=3)],
                        [[G4], [G4[::-1]], [G4]],
                    ),
                )
            )
    for profile in ("adabelief-pytorch", "tensorflow"):
        for rectify in (False, True):
            out.append(
                (
                    f"{profile} amsgrad, rectify {rectify}, s_max above s, beta2 0.99, t = 4..6",
                    _case(
                        profile,
                        dtype,
                        Hyperparameters(wd=0.01, beta2=0.99, amsgrad=True, rectify=rectify,
                                        degenerated_to_sgd=True, weight_decouple=True),
                        [ParamInput((0.0, 0.5, -2.0, 1e-3), (1e-4, 0.01, -0.1, 0.0), (1e-8, 1e-4, 0.01, 0.0),
                                    3, s_max=(1e-6, 1e-4, 0.5, 0.0))],
                        [[G4], [[x / 4 for x in G4]], [[x / 16 for x in G4]]],
                    ),
                )
            )
    out.append(
        (
            "mxnet clip 0 (off)",
            _case("mxnet", dtype, Hyperparameters(clip_gradient=0.0, wd=0.05), [_p(W4)], [[G4]]),
        )
    )
    return out


def _special_cases() -> list[tuple[str, CaseInputs]]:
    """float64 cases with non-finite inputs: the spec gives the reference's classes."""
    g = [INF, -INF, NAN, 0.1, -0.0]
    w = [0.5, -0.25, 1.0, INF, -0.0]
    out = []
    for profile in spec_profiles():
        for clip in (None, 0.5):
            out.append(
                (
                    f"{profile} specials, clip {clip}",
                    _case(
                        profile,
                        "float64",
                        Hyperparameters(wd=0.01, clip_gradient=clip),
                        [_p(w, m=[0.01] * 5, s=[1e-3] * 5, t=2)],
                        [[g]],
                    ),
                )
            )
        out.append(
            (
                f"{profile} rescale NaN",
                _case(profile, "float64", Hyperparameters(), [_p(W4)], [[G4], [G4]], [NAN, 1.0]),
            )
        )
    out.append(
        (
            "mxnet eps 0, s 0, g == m",
            _case(
                "mxnet",
                "float64",
                Hyperparameters(epsilon=0.0),
                [_p([1.0, 0.0], m=[0.5, 0.0])],
                [[[0.5, 0.0]]],
            ),
        )
    )
    return out


def _spec_inputs(spec: dict[str, Any], case: CaseInputs) -> tuple[Any, Any, list[Any], list[Any]]:
    hp = spec["Hyperparameters"](**dataclasses.asdict(case.hyperparameters))
    profile = spec["Profile"](name=case.profile, **spec_profiles()[case.profile])
    params = [spec["ParameterState"](p.w, p.m, p.s, p.t, p.lr_mult, p.wd_mult, p.s_max)
              for p in case.params]
    steps = [(st.grads, st.rescale_grad) for st in case.steps]
    return hp, profile, params, steps


def _accepts(alternatives: Sequence[Finite | Special], got: float, ulp_of: Any, n: float) -> bool:
    for a in alternatives:
        if isinstance(a, Special):
            if (
                a.kind == "any"
                or (a.kind == "nan" and math.isnan(got))
                or (a.kind == "inf" and got == INF)
                or (a.kind == "-inf" and got == -INF)
            ):
                return True
        elif math.isfinite(got) and abs((got - a.value) - a.residual) <= n * ulp_of(a.sigma):
            return True
    return False


# ----- (a) the update rule agrees with the reference ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "case"),
    _cases("float64") + _special_cases(),
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_spec_update_conforms_to_reference_in_float64(
    spec: dict[str, Any], name: str, case: CaseInputs
) -> None:
    gold = golden(case)
    hp, profile, params, steps = _spec_inputs(spec, case)
    n = tolerances()["float64"]["w"]
    history = spec["adabelief_run"](hp, profile, params, steps)
    assert len(history) == len(gold.steps)
    for k, (state, expected) in enumerate(zip(history, gold.steps)):
        for i, (p, exp) in enumerate(zip(state, expected)):
            for out in [n for n in outputs_of(case) if n != "w16"]:
                for j, (got, e) in enumerate(zip(getattr(p, out), exp[out])):
                    assert _accepts(e, got, FLOAT64.ulp, n), (
                        f"{name}: step {k} param {i} {out}[{j}] = {got!r}, reference {e}"
                    )


def test_implementation_defined_clip(spec: dict[str, Any]) -> None:
    case = _case("mxnet-doc", "float64", Hyperparameters(clip_gradient=-0.5), [_p(W4)], [[G4]])
    assert all(
        e == (Special("any"),) for outs in golden(case).steps[0] for v in outs.values() for e in v
    )
    hp, profile, params, steps = _spec_inputs(spec, case)
    with pytest.raises(spec["ImplementationDefined"]):
        spec["adabelief_run"](hp, profile, params, steps)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16-mp"])
def test_spec_sigma_equals_reference_sigma(spec: dict[str, Any], dtype: str) -> None:
    """The error analysis of error-model.md reproduces the reference's sigma and exact values."""
    n = tolerances()[dtype]["w"]
    compared = 0
    for name, case in _cases(dtype):
        gold = golden(case)
        if all(e == (Special("any"),) for outs in gold.steps[0] for v in outs.values() for e in v):
            continue
        hp, profile, params, steps = _spec_inputs(spec, case)
        bounds = spec["bound_run"](hp, profile, dtype, params, steps)
        for k, (b_step, g_step) in enumerate(zip(bounds, gold.steps)):
            for i, (b_out, g_out) in enumerate(zip(b_step, g_step)):
                assert set(b_out) == set(outputs_of(case))
                for out in outputs_of(case):
                    fmt = spec["output_format"](dtype, out)
                    for j, (b, e) in enumerate(zip(b_out[out], g_out[out])):
                        where = f"{name} ({dtype}): step {k} param {i} {out}[{j}]"
                        assert len(e) == 1 and isinstance(e[0], Finite), where
                        sigma = spec["sigma"](b, fmt)
                        # The bounds are sums of positive terms evaluated in float64: they agree
                        # with the reference's 53-bit evaluation to a few units of 2**-53.
                        # (abs_tol: the floor eta_min/2 of a float64 site is not a float64
                        # value; the spec's float evaluation rounds it to 0.)
                        floor = math.ldexp(1.0, fmt.emin - fmt.precision + 1) / math.ldexp(1.0, -fmt.precision)
                        # Under rectify, N_t = N_inf - q cancels (N_inf ~ 200..2000, N_t ~ 5):
                        # the spec's float64 evaluation keeps about three digits fewer.
                        rel = 1e-9 if case.hyperparameters.rectify else 1e-12
                        assert math.isclose(sigma, e[0].sigma, rel_tol=rel, abs_tol=floor), (
                            f"{where}: sigma {sigma} != {e[0].sigma}"
                        )
                        # The spec evaluated in float64 is within the tolerance of the exact value.
                        assert spec["within_tolerance"](
                            b.v, e[0].value, e[0].residual, e[0].sigma, fmt, n
                        ), where
                        compared += 1
    assert compared >= 500


def test_clip_infinity_keeps_the_gradient_bound(spec: dict[str, Any]) -> None:
    hp_inf, hp_none = Hyperparameters(wd=0.05, clip_gradient=INF), Hyperparameters(wd=0.05)
    sig = [
        golden(_case("mxnet", "float32", hp, [_p([0.5, 2.0])], [[[0.3, -0.8]]]))
        .steps[0][0]["m"][0][0]
        .sigma
        for hp in (hp_inf, hp_none)
    ]
    assert sig[0] == sig[1]


# ----- (b) defaults --------------------------------------------------------------------------


def test_defaults_table_matches_reference(spec: dict[str, Any]) -> None:
    algo = _text("algorithm.md")
    rows = _table(_section(algo, "### Hyperparameter defaults"))
    assert rows[0][:2] == ["Name", "Value"]
    table = {_code(r[0]): ast.literal_eval(_code(r[1])) for r in rows[1:]}
    fields = {f.name: f.default for f in dataclasses.fields(Hyperparameters)}
    assert table == fields
    for name, value in fields.items():
        assert type(table[name]) is type(value), name
    assert dataclasses.asdict(spec["Hyperparameters"]()) == fields
    rows = _table(_section(algo, "### Per-parameter defaults"))
    per = {_code(r[0]): ast.literal_eval(_code(r[1])) for r in rows[1:]}
    defaults = {f.name: f.default for f in dataclasses.fields(ParamInput) if f.name in per}
    assert per == defaults and set(per) == {"t", "lr_mult", "wd_mult"}


# ----- (c) profiles --------------------------------------------------------------------------


def test_profiles_table_matches_profiles_json(spec: dict[str, Any]) -> None:
    rows = _table(_section(_text("profiles.md"), "## Profile table"))
    names = [_code(c) for c in rows[0][1:]]
    table: dict[str, dict[str, Any]] = {name: {} for name in names}
    for row in rows[1:]:
        for name, cell in zip(names, row[1:]):
            raw = _code(cell)
            table[name][_code(row[0])] = json.loads(raw) if raw in ("true", "false") else raw
    data = spec_profiles()
    assert set(table) == set(data)
    for name, choices in table.items():
        assert choices == {k: v for k, v in data[name].items() if k not in ("description", "switches")}, name
        spec["Profile"](name=name, **data[name])  # every declared value is one the spec defines
    assert spec["PROFILE_CHOICES"] == CHOICES


def test_switches_table_matches_profiles_json(spec: dict[str, Any]) -> None:
    rows = _table(_section(_text("profiles.md"), "## Switches"))
    names = [_code(c) for c in rows[0][1:]]
    data = spec_profiles()
    assert set(names) == set(data)
    for row in rows[1:]:
        switch = _code(row[0])
        for name, cell in zip(names, row[1:]):
            listed = data[name].get("switches", {}).get(switch)
            expected = "—" if listed is None else ", ".join(json.dumps(v) for v in listed)
            assert cell.replace("`", "") == expected, (switch, name)
    assert tuple(_code(r[0]) for r in rows[1:]) == spec["SWITCHES"] == SWITCHES


# ----- (d) tolerance -------------------------------------------------------------------------


def test_tolerance_in_text_matches_tolerances_json(spec: dict[str, Any]) -> None:
    text = _text("error-model.md")
    rows = {_code(r[0]): _code(r[1]) for r in _table(_section(text, "## Constants"))[1:]}
    n = int(rows["N"])
    values = {v for per_dtype in tolerances().values() for v in per_dtype.values()}
    assert values == {n}
    assert spec["N"] == n
    assert f"N = {n}" in _section(text, "## Tolerance")


# ----- (e) node names ------------------------------------------------------------------------


def test_every_reference_node_has_a_spec_heading() -> None:
    source = (REFERENCE / "_exact.py").read_text(encoding="utf-8")
    names = set()
    for group in re.findall(r"spec: ([a-z_]+(?:, [a-z_]+)*)", source):
        names.update(group.split(", "))
    assert {
        "effective_gradient",
        "first_moment",
        "second_moment",
        "update_direction",
        "adabelief_step",
        "effective_learning_rate",
        "bias_corrected_step_size",
    } <= names
    headings = set()
    for path in _spec_files():
        for _, title in _HEADING.findall(path.read_text(encoding="utf-8")):
            headings.add(title.strip("`"))
    missing = sorted(n for n in names if n not in headings)
    assert not missing, f"nodes named in reference/_exact.py without a heading in spec/: {missing}"


# ----- the spec's own structure and helpers ---------------------------------------------------


def test_every_definition_heading_has_one_block_with_a_one_line_docstring() -> None:
    for path in _spec_files():
        text = path.read_text(encoding="utf-8")
        marks = [(m.start(), "h", m.group(2)) for m in _HEADING.finditer(text)]
        marks += [(m.start(), "b", m.group(1)) for m in _FENCE.finditer(text)]
        marks.sort()
        current, seen = None, 0
        for _, kind, payload in marks:
            if kind == "h":
                current, seen = payload, 0
                continue
            seen += 1
            assert seen == 1, f"{path.name}: more than one python block under {current!r}"
            for node in ast.parse(payload).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    doc = ast.get_docstring(node, clean=False)
                    assert doc and "\n" not in doc, (
                        f"{path.name}: {node.name} needs a one-line docstring"
                    )
                    assert current is not None and f"`{node.name}`" in current, (
                        f"{path.name}: {node.name} is under heading {current!r}"
                    )


def test_ulp_round_to_and_ulp_distance_agree_with_the_runner(spec: dict[str, Any]) -> None:
    fmts = {
        "float16": (FLOAT16, spec["FLOAT16"]),
        "float32": (FLOAT32, spec["FLOAT32"]),
        "float64": (FLOAT64, spec["FLOAT64"]),
    }
    xs = [
        0.0,
        -0.0,
        1.0,
        1.5,
        2.0,
        -3.0,
        1e-3,
        2.0**-149,
        2.0**-24,
        2.0**-1074,
        6.1e-5,
        65504.0,
        0.1,
        3.4e38,
        1e300,
        INF,
        -INF,
    ]
    for ref_fmt, fmt in fmts.values():
        for x in xs:
            assert spec["ulp"](x, fmt) == float(_ulp.ulp(x, ref_fmt)), (fmt.name, x)
            r = spec["round_to"](x, fmt)
            if math.isfinite(x):
                assert r == ref_fmt.round_fraction(Fraction(x)), (fmt.name, x)
        vals = [spec["round_to"](x, fmt) for x in [*xs, *(-x for x in xs), NAN]]
        for a in vals:
            for b in vals:
                d = spec["ulp_distance"](a, b, fmt)
                want = int(_ulp.ulp_distance(np.array([a]), np.array([b]), ref_fmt)[0])
                assert (d is None and (math.isnan(a) or math.isnan(b))) or d == want, (
                    fmt.name,
                    a,
                    b,
                )


def test_admissible_matches_the_reference(spec: dict[str, Any]) -> None:
    def to_spec(e: Sequence[Finite | Special]) -> list[Any]:
        return [a.kind if isinstance(a, Special) else (a.value, a.residual, a.sigma) for a in e]

    samples = [
        (Finite(1.0, 0.0, 3.0),),
        (Finite(1e-3, 0.0, 2.0**24 * 2e-3),),
        (Finite(1e-40, 0.0, 1e-20),),
        (Finite(2.0**-120, 0.0, 2.0**-90),),
        (Special("nan"),),
        (Special("inf"), Special("nan")),
        (Finite(1.0, 0.0, 1.0), Special("inf")),
    ]
    for fmt_ref, fmt in ((FLOAT32, spec["FLOAT32"]), (FLOAT64, spec["FLOAT64"])):
        for e in samples:
            for overflowed in (False, True):
                assert spec["admissible"](to_spec(e), fmt, overflowed) == to_spec(
                    _admissible(e, fmt_ref, overflowed)
                )


def test_ids_recompute_from_the_vector_files(spec: dict[str, Any]) -> None:
    doc = json.loads((VECTORS / "defaults.json").read_text(encoding="utf-8"))
    count = 0
    for group in doc["testGroups"]:
        for test in group["tests"]:
            assert (
                spec["case_id"](doc["suite"], spec["canonical_inputs"](group, test)) == test["id"]
            )
            count += 1
    assert count == doc["numberOfTests"]
    case = _cases("float32")[0][1]
    assert spec["case_id"]("x", case_inputs_json(case)) == reference_case_id("x", case)


def test_mistakes_md_lists_the_whole_catalogue() -> None:
    text = _text("mistakes.md")
    missing = [
        n for n in [*MUTANTS, *VARIANTS, *FLAGS] if f"`{n}`" not in text and f"| {n} |" not in text
    ]
    assert not missing, f"spec/mistakes.md does not mention: {missing}"


def test_version_tables_match_the_generator() -> None:
    want = {
        "specification": _generate.SPEC_VERSION,
        "vector set": _generate.VECTOR_SET_VERSION,
        "vector format": str(_generate.FORMAT_VERSION),
    }
    for name, heading in (("README.md", "## Versions"), ("versioning.md", "## Version numbers")):
        rows = {r[0]: r[1] for r in _table(_section(_text(name), heading))[1:]}
        for key, value in want.items():
            assert rows[key] == f"`{value}`", (
                f"spec/{name}: {key} is {rows[key]}, the generator writes {value}"
            )
    assert _generate.SCHEMA == f"vectors-v{_generate.FORMAT_VERSION}.schema.json"


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_links_between_spec_documents_resolve() -> None:
    anchors: dict[str, set[str]] = {}
    for path in SPEC.glob("*.md"):
        seen: dict[str, int] = {}
        found = set()
        for _, title in _HEADING.findall(path.read_text(encoding="utf-8")):
            slug = _slug(title)
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
        anchors[path.name] = found
    broken = []
    for path in SPEC.glob("*.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            name, _, anchor = target.partition("#")
            name = name or path.name
            if name.endswith(".md") and "/" not in name:
                if name not in anchors or (anchor and anchor not in anchors[name]):
                    broken.append(f"{path.name}: ({target})")
    assert not broken, f"broken links: {broken}"
