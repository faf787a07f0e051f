"""The README's promises: the two set-up commands and the adapter example, which must conform."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs

from adabelief_conformance._compare import run_case

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_has_the_two_fresh_machine_commands() -> None:
    text = README.read_text()
    assert "adabelief-conformance check numpy" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest" in text and "-m pytest" in ci


def test_readme_adapter_conforms(tmp_path, monkeypatch, bundled_cases) -> None:
    code = re.search(r"```python\n(# my_adapter\.py.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "my_adapter.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_adapter

    port = my_adapter.Port()
    checked = 0
    for vc in bundled_cases:
        if vc.profile != "mxnet" or vc.dtype not in port.dtypes:
            continue
        with np.errstate(all="ignore"):  # special-value cases overflow on purpose
            out = run_case(port, vc)
        assert out.status == "passed", out.message
        checked += 1
    assert checked > 200


def _readme_file(name: str) -> str:
    return re.search(rf"```python\n(# {re.escape(name)} .*?)```", README.read_text(), re.S).group(1)


@pytest.mark.parametrize("name, framework, profile, extra", [
    ("check_torch.py", "adabelief_pytorch", "adabelief-pytorch", []),
    ("check_optax.py", "optax", "optax",
     ["--expectations", str(README.parent / "docs/compatibility/expectations/optax@case.toml")]),
])
def test_readme_library_examples_conform(name, framework, profile, extra, tmp_path) -> None:
    """The ten-line examples, run as the README says: the real CLI in a fresh process."""
    needs(framework)
    code = _readme_file(name)
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / name).write_text(code)
    r = subprocess.run([sys.executable, "-m", "adabelief_conformance", "check",
                        f"{name.removesuffix('.py')}:impl", "--profile", profile, "--no-progress",
                        *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "CONFORMING" in r.stdout
