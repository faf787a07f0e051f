"""`campaign` (issue 9 item 2): random cases against the live reference, deterministic per seed and
shard whatever the workers (processes, a real Dask LocalCluster), counterexamples shrunk to one
element and written as vector files that `check` reruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from adabelief_reference import DTYPES, profile_names
from conftest import needs

from adabelief_conformance._campaign import plan_batches, random_case, run_campaign
from adabelief_conformance._vectors import load_vectors

CLI = [sys.executable, "-m", "adabelief_conformance"]
PAIRS = [("mxnet", "float32"), ("optax", "float16-mp"), ("adabelief-pytorch", "float64")]


@pytest.mark.parametrize("profile", profile_names())
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_random_cases_are_valid_cases_of_their_formats(profile, dtype) -> None:
    for k in range(20):
        case = random_case(np.random.default_rng([7, k]), profile, dtype, 16)
        spec = DTYPES[dtype]
        for p in case.params:  # inputs are values of their formats (as the loader requires)
            for values, fmt in ((p.w, spec.master), (p.m, spec.compute), (p.s, spec.compute)):
                a = np.array(values)
                with np.errstate(over="ignore"):
                    back = a.astype(np.dtype(fmt.name)).astype(np.float64)
                assert ((back == a) | np.isnan(a)).all()
        assert repr(case) == repr(random_case(np.random.default_rng([7, k]), profile, dtype, 16))


def test_regular_batches_are_large_and_every_4th_is_a_small_edge_batch() -> None:
    plan = plan_batches(10**6, 8192, PAIRS, (0, 1))
    assert sum(b[3] for b in plan) == 10**6
    edges = [b for b in plan if b[4]]
    assert edges and all(b[0] % 4 == 3 and b[3] == 64 for b in edges)
    assert all(b[3] == 8192 for b in plan[:-1] if not b[4])
    assert {(b[1], b[2]) for b in edges} == set(PAIRS) == {(b[1], b[2]) for b in plan if not b[4]}


@pytest.mark.parametrize("profile", profile_names())
def test_regular_cases_are_finite_and_mostly_on_the_fast_path(profile) -> None:
    from adabelief_reference import fast_expected

    fast = slow = 0
    for k, dtype in enumerate(sorted(DTYPES)):
        case = random_case(np.random.default_rng([9, k]), profile, dtype, 2048, regular=True)
        hp = case.hyperparameters
        values = [x for p in case.params for x in (*p.w, *p.m, *p.s)] + [
            x for st in case.steps for g in st.grads for x in g]
        assert all(np.isfinite(values)) and all(np.isfinite([hp.learning_rate, hp.epsilon, hp.wd, hp.rescale_grad]))
        assert hp.clip_gradient is None or hp.clip_gradient > 0
        fx = fast_expected(case)
        fast += fx.fast_elements
        slow += fx.mpmath_elements
    assert slow <= 0.02 * (fast + slow), (fast, slow)


def test_shards_partition_the_batches() -> None:
    full = plan_batches(1000, 10, PAIRS, (0, 1))
    parts = [plan_batches(1000, 10, PAIRS, (i, 3)) for i in range(3)]
    assert sorted(b for part in parts for b in part) == full and len(full) == 100


def test_the_same_campaign_whatever_the_workers(tmp_path) -> None:
    one = run_campaign("numpy", None, elements=400, seed=3, pairs=PAIRS, jobs=1, batch_elements=32)
    two = run_campaign("numpy", None, elements=400, seed=3, pairs=PAIRS, jobs=2, batch_elements=32)
    assert one.exit_code == 0 and one.counts["passed"] == len(one.results) == 13
    assert one.fingerprint == two.fingerprint and two.workers == "2 processes"
    other = run_campaign("numpy", None, elements=400, seed=4, pairs=PAIRS, jobs=1, batch_elements=32)
    assert other.fingerprint != one.fingerprint


def test_a_real_dask_local_cluster_gives_the_same_campaign() -> None:
    needs("distributed")
    serial = run_campaign("numpy", None, elements=300, seed=5, pairs=PAIRS, jobs=1, batch_elements=32)
    on_dask = run_campaign("numpy", None, elements=300, seed=5, pairs=PAIRS, jobs=2, dask="local",
                           batch_elements=32)
    assert on_dask.workers == "Dask LocalCluster, 2 worker processes"
    assert on_dask.fingerprint == serial.fingerprint and on_dask.exit_code == 0


def test_a_mistake_is_found_shrunk_and_rerun_by_check(tmp_path) -> None:
    mutant = "catalogue:residual with the old m"
    r = subprocess.run([*CLI, "campaign", mutant, "--elements", "200", "--seed", "2", "--jobs", "1",
                        "--profile", "mxnet", "--dtype", "float32", "--no-progress", "--out", str(tmp_path),
                        "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
                        "--markdown", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["counts"]["failed"] >= 1 and doc["problems"][0]["file"]
    path = Path(doc["problems"][0]["file"])
    (case,) = load_vectors([path])
    assert sum(len(p.w) for p in case.case.params) == 1  # shrunk to one element
    again = subprocess.run([*CLI, "check", mutant, "--vectors", str(path), "--no-progress", "-q"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    right = subprocess.run([*CLI, "check", "numpy", "--vectors", str(path), "--no-progress", "-q"],
                           capture_output=True, text=True, timeout=300)
    assert right.returncode == 0
    assert "<failure" in (tmp_path / "r.xml").read_text() and "campaign" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--shard", "3/2"], "--shard"),
    (["--elements", "0"], "--elements"),
    (["--profile", "nope"], "--profile nope"),
    (["--timeout", "3"], "options of check"),
])
def test_usage_errors_are_one_line(args, needle) -> None:
    base = ["campaign", "numpy", "--elements", "10", "--no-progress"]
    r = subprocess.run([*CLI, *base, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_workers_keep_freed_memory_where_dasks_nanny_would_trim_it() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: every freed temporary of the
    fast path went back to the system and came back as page faults (a Dask worker ran campaigns at
    half speed). A campaign worker raises glibc's thresholds: counted in page faults, not time."""
    code = """
import resource, sys
import numpy as np
from adabelief_conformance import _campaign
if sys.argv[1] == "tuned":
    _campaign._tune_malloc()
x = np.ones(1 << 15)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):
    y = (x * 2.0 + 1.0) * x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    faults = {}
    for mode in ("plain", "tuned"):
        r = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        faults[mode] = int(r.stdout.split()[-1])
    assert faults["plain"] > 1000 and faults["tuned"] < faults["plain"] / 10, faults
