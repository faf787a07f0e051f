"""The compatibility matrix (docs/compatibility.md, .json) is current: its page is generated from
its JSON, and (where the PyTorch family and optax are installed, as in CI) a rerun of their rows
gives exactly the committed results, so a library or adapter change that moves any cell fails."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import needs

from adabelief_conformance.adapters.libraries import LIBRARIES
from adabelief_conformance.adapters.matrix import DOCS, EXPECTATIONS, ROWS, markdown

DOC = json.loads((DOCS / "compatibility.json").read_text(encoding="utf-8"))


def test_the_page_is_generated_from_the_json() -> None:
    assert (DOCS / "compatibility.md").read_text(encoding="utf-8") == markdown(DOC)


def test_every_row_and_profile_is_in_the_matrix() -> None:
    keys = {f"{r['library']}@{r['configuration']}" for r in DOC["rows"]}
    assert keys == {r.key for r in ROWS}
    assert all(set(r["cells"]) == set(DOC["profiles"]) for r in DOC["rows"])


def test_every_library_conforms_to_its_family_apart_from_listed_deviations() -> None:
    for row in DOC["rows"]:
        cell = row["cells"][row["family"]]
        key = f"{row['library']}@{row['configuration']}"
        assert cell["conforming"], key
        assert (cell["xfailed"] > 0) == (EXPECTATIONS / f"{key}.toml").is_file(), key
        if cell["xfailed"]:
            reasons = (EXPECTATIONS / f"{key}.toml").read_text(encoding="utf-8")
            stated = LIBRARIES[row["library"]].deviations if row["library"] in LIBRARIES else "MXNet"
            assert stated.split(" ")[0] in reasons


def test_rerunning_the_pytorch_family_and_optax_changes_no_cell() -> None:
    needs("torch")
    needs("optax")
    r = subprocess.run([sys.executable, "-m", "adabelief_conformance.adapters.matrix",
                        "--only", "torch,optax", "--check"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 differences" in r.stdout


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_each_library_has_a_pinned_install(name) -> None:
    lib = LIBRARIES[name]
    assert lib.pip and all("==" in a for args in lib.pip for a in args
                           if not a.startswith("-") and a not in (
                               "tabulate", "colorama", "huggingface_hub", "pyyaml", "safetensors"))
