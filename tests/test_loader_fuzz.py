"""Hypothesis against the loaders (issue 11): random and mutated vector files, manifests,
expectation files and protocol answers give a loaded result or the loader's own one-line error
(exit 2 from the CLI), never another exception, and a mutated file in a folder never loads
silently: its manifest catches it. CI runs a bounded number of examples; `pytest -m slow` many."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adabelief_conformance import request_from_case
from adabelief_conformance._compare import run_case
from adabelief_conformance._errors import ConformanceError
from adabelief_conformance._expectations import load_expectations
from adabelief_conformance._subprocess import request_to_json, results_from_json
from adabelief_conformance._targets import resolve_target
from adabelief_conformance._vectors import load_file, load_vectors

ROOT = Path(__file__).resolve().parent.parent
SOURCE = json.loads((ROOT / "vectors" / "defaults.json").read_text())
# a one-test file: mutations stay cheap to load
SOURCE["testGroups"] = [dict(SOURCE["testGroups"][0], tests=SOURCE["testGroups"][0]["tests"][:1])]
SOURCE["numberOfTests"] = 1
NUMPY = resolve_target("numpy")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["0x1p+0", "nan", "inf", "-inf", "any", "0x1.8p-149", "mxnet", "float32"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


ALL_PATHS = [p for p in _paths(SOURCE) if p]


@st.composite
def mutated_documents(draw):
    doc = json.loads(json.dumps(SOURCE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            key = path[-1]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(key, None)
            else:
                node[key] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the path
    return doc


@st.composite
def mutated_bytes(draw):
    text = json.dumps(SOURCE).encode()
    how = draw(st.sampled_from(["truncate", "insert", "flip"]))
    at = draw(st.integers(0, len(text) - 1))
    if how == "truncate":
        return text[:at]
    if how == "insert":
        return text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    return text[:at] + bytes([text[at] ^ draw(st.integers(1, 255))]) + text[at + 1:]


EXAMPLES = settings(max_examples=int(os.environ.get("ADABELIEF_FUZZ_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=list(HealthCheck))


def _load_and_run(path: Path) -> None:
    try:
        cases = load_vectors([path])
    except ConformanceError:
        return  # the one-line error the CLI turns into exit 2
    for vc in cases:  # whatever loaded runs to a verdict (unverified: no manifest vouches for it)
        assert not vc.verified
        with np.errstate(all="ignore"):
            assert run_case(NUMPY, vc).status in ("passed", "failed", "errored", "skipped")


@EXAMPLES
@given(mutated_documents())
def test_mutated_vector_documents(tmp_path_factory, doc) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "doc.json"
    path.write_text(json.dumps(doc, allow_nan=False))
    _load_and_run(path)


@EXAMPLES
@given(mutated_bytes())
def test_mutated_vector_bytes(tmp_path_factory, data) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "doc.json"
    path.write_bytes(data)
    _load_and_run(path)


@EXAMPLES
@given(mutated_documents())
def test_a_mutated_file_in_a_folder_never_loads_silently(tmp_path_factory, doc) -> None:
    folder = tmp_path_factory.mktemp("folder")
    original = json.dumps(SOURCE)
    (folder / "defaults.json").write_text(json.dumps(doc, allow_nan=False))
    import hashlib

    (folder / "manifest.json").write_text(json.dumps({"files": {"defaults.json": {
        "sha256": hashlib.sha256(original.encode()).hexdigest(), "numberOfTests": 1}}}))
    changed = json.dumps(doc, allow_nan=False) != original
    try:
        load_vectors([folder])
        assert not changed, "a mutated file loaded although its manifest lists another sha256"
    except ConformanceError:
        assert changed


@EXAMPLES
@given(json_values)
def test_random_manifests(tmp_path_factory, manifest) -> None:
    folder = tmp_path_factory.mktemp("folder")
    (folder / "defaults.json").write_text(json.dumps(SOURCE))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        load_vectors([folder])
    except ConformanceError:
        pass


toml_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from(["id", "reason", "link", "strict", "colour"]),
                       st.sampled_from(['"defaults-*"', '"x"', "1", "true", "[1]", '""'])),
             max_size=5).map(lambda kv: "format = 1\n[[deviation]]\n" + "".join(f"{k} = {v}\n" for k, v in kv)),
)


@EXAMPLES
@given(toml_texts)
def test_random_expectation_files(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("exp") / "e.toml"
    path.write_text(text)
    try:
        load_expectations(path)
    except ConformanceError:
        pass


@EXAMPLES
@given(json_values)
def test_random_expectation_json(tmp_path_factory, doc) -> None:
    path = tmp_path_factory.mktemp("exp") / "e.json"
    path.write_text(json.dumps(doc))
    try:
        load_expectations(path)
    except ConformanceError:
        pass


REQUEST = request_from_case(load_file(ROOT / "vectors" / "defaults.json")[0].case)
GOOD = [[{"w": ["0x1p+0"] * len(p.w), "m": ["0x0p+0"] * len(p.w), "s": ["0x0p+0"] * len(p.w)}
         for p in REQUEST.params] for _ in REQUEST.steps]


@EXAMPLES
@given(st.one_of(json_values, st.just(GOOD).map(lambda g: json.loads(json.dumps(g)))
                 .flatmap(lambda g: st.sampled_from(["w", "m", "s"]).flatmap(
                     lambda k: json_values.map(lambda v: [[{**g[0][0], k: v}]])))))
def test_random_protocol_answers(answer) -> None:
    try:
        results = results_from_json(answer, REQUEST)
    except ConformanceError:
        return  # an errored case, with a one-line message
    for step in results:
        for r in step:
            assert r.w.dtype == np.float32 and all(math.isfinite(x) or math.isnan(x) or math.isinf(x)
                                                    for x in r.w.tolist())


def test_the_request_fixture_round_trips() -> None:
    assert results_from_json(GOOD, REQUEST)
    assert request_to_json(REQUEST)["profile"] == REQUEST.profile


@pytest.mark.slow
def test_many_examples() -> None:
    """Every property above with 40 times the examples (pytest -m slow)."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                        __file__], env={**os.environ, "ADABELIEF_FUZZ_EXAMPLES": "2400"},
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:]
