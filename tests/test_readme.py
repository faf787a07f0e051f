"""The README's promises: the two set-up commands and the adapter example, which must conform."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

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
