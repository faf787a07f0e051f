"""scripts/gpu-check (issue 10) cannot rot unnoticed: its dry run, up to the first device call,
runs here (CI also runs it in a bare environment with CuPy 14, see .ci/run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check"


def test_dry_run_writes_its_results(tmp_path) -> None:
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(SCRIPT), str(out), "--dry-run"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["dryRun"] and results["steps"] == {"hostBuild": 0, "collect": 0}
    assert results["versions"]["installed"]["project"].startswith("installed")
    assert "Dry run" in (out / "summary.md").read_text()
    assert len(list(out.iterdir())) <= 8  # what a device run can send back


def test_a_missing_wheelhouse_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    """Where jsonschema is missing and no wheelhouse was prepared, the script says what to do."""
    code = (f"import sys, importlib.util; sys.argv = ['gpu-check', {str(tmp_path / 'o')!r}, '--dry-run'];"
            "real = importlib.util.find_spec;"
            "importlib.util.find_spec = lambda n, *a: None if n == 'jsonschema' else real(n, *a);"
            f"ns = {{'__name__': 'gpu_check', '__file__': {str(SCRIPT)!r}}}; exec(open({str(SCRIPT)!r}).read(), ns);"
            f"ns['WHEELHOUSE'] = __import__('pathlib').Path({str(tmp_path / 'none')!r});"
            "sys.exit(ns['main']())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--prepare" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_help_documents_the_modes(flag) -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), flag], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--prepare" in r.stdout and "--quick" in r.stdout
