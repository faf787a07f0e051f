"""The ready adapters (conformance/adapters/): real libraries conform to their family's profile,
a wrong optimizer is caught, what a library cannot express is skipped the same way in-process
and through serve(), and the package works without any framework installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from conftest import needs

from adabelief_conformance import CaseSkipped, request_from_case
from adabelief_conformance._runner import check, select_cases
from adabelief_conformance.adapters._common import SwitchSet

# ----- without any framework ------------------------------------------------------------------

_BLOCK = """
import sys
for name in ("torch", "jax", "optax", "tensorflow", "keras"):
    sys.modules[name] = None  # import fails as if not installed
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_the_package_works_without_frameworks() -> None:
    r = _python("""
        import adabelief_conformance.adapters.torch as t, adabelief_conformance.adapters.optax
        import adabelief_conformance.adapters.keras, adabelief_conformance.adapters.matrix
        from adabelief_conformance._errors import AdapterError
        try:
            t.TorchOptimizer(object)
        except AdapterError as e:
            print("ERR", e)
        from adabelief_conformance._cli import main
        print("RC", main(["check", "numpy", "--suite", "defaults", "-q", "--no-progress"]))
        """)
    assert r.returncode == 0, r.stderr
    assert "ERR this adapter needs torch" in r.stdout
    assert "pip install 'adabelief-conformance[torch]'" in r.stdout
    assert "RC 0" in r.stdout


def test_a_library_target_without_its_framework_is_a_one_line_error() -> None:
    r = _python("""
        from adabelief_conformance._cli import main
        raise SystemExit(main(["check", "library:timm", "--suite", "defaults"]))
        """)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "library:timm" in lines[0] and "torch" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_library_and_configuration() -> None:
    from adabelief_conformance._cli import main

    assert main(["check", "library:no-such-lib", "--suite", "defaults"]) == 2
    assert main(["check", "library:timm@sideways", "--suite", "defaults"]) == 2


# ----- which switches a case runs with ---------------------------------------------------------

def _request(bundled_cases, profile: str, **changes):
    vc = select_cases(bundled_cases, profiles={profile}, suites={"defaults"}, dtypes={"float32"})[0]
    req = request_from_case(vc.case, vc.id)
    return replace(req, hyperparameters=replace(req.hyperparameters, **changes))


def test_switches_follow_the_case_where_the_library_has_options(bundled_cases) -> None:
    lib = SwitchSet("lib", {"rectify": "rectify", "amsgrad": "amsgrad"}, {"weight_decouple": True},
                    {"rectify": True}, "case")
    req = _request(bundled_cases, "adabelief-pytorch", rectify=False, amsgrad=True, wd=0.0,
                   weight_decouple=False)
    values = lib.values(req)
    assert values["rectify"] is False and values["amsgrad"] is True
    # no option for weight_decouple: irrelevant without decay ...
    assert values["weight_decouple"] is True
    # ... and a skip, saying why, when the decay makes it matter
    with pytest.raises(CaseSkipped, match="weight_decouple=False; lib has no option"):
        lib.values(replace(req, hyperparameters=replace(req.hyperparameters, wd=0.01)))


def test_defaults_and_mxnet_closest_skip_only_where_the_profile_varies_a_switch(bundled_cases) -> None:
    options = {"rectify": "rectify", "weight_decouple": "weight_decouple"}
    defaults = SwitchSet("lib", options, {}, {"rectify": True, "weight_decouple": True}, "defaults")
    closest = SwitchSet("lib", options, {}, {"rectify": True, "weight_decouple": True}, "mxnet-closest")
    family = _request(bundled_cases, "adabelief-pytorch", rectify=False, wd=0.0)
    with pytest.raises(CaseSkipped, match="configured \\(defaults\\) with rectify=True"):
        defaults.values(family)
    assert closest.values(family)["rectify"] is False
    # MXNet's profile does not vary switches: the configuration runs as it is, to be judged
    mxnet = _request(bundled_cases, "mxnet")
    assert defaults.values(mxnet)["rectify"] is True
    assert closest.values(mxnet)["rectify"] is False


# ----- PyTorch ---------------------------------------------------------------------------------

def _run(target: str, bundled_cases, profile: str, **select):
    from adabelief_conformance._targets import resolve_target

    impl = resolve_target(target)
    return check(impl, select_cases(bundled_cases, profiles={profile}, **select), max_failures=1)


@pytest.mark.parametrize("library", ["adabelief-pytorch", "timm", "timm-foreach"])
def test_torch_libraries_conform_to_their_family(library, bundled_cases) -> None:
    needs("torch")
    report = _run(f"library:{library}", bundled_cases, "adabelief-pytorch")
    counts = report.totals.counts
    assert report.conforming, [r.outcome.message for r in report.problems()][:3]
    # every switch setting, multi-parameter cases with their own t, float16-mp: all ran
    assert counts["passed"] >= 400, counts
    skipped = {r.outcome.message.split(" (")[0] for r in report.results
               if r.outcome.status == "skipped"}
    assert all("clip_gradient" in s or "rescale_grad" in s or "corrects the bias" in s
               for s in skipped), skipped


def test_the_foreach_rows_take_the_multi_tensor_path(bundled_cases, monkeypatch) -> None:
    needs("torch")
    from adabelief_conformance.adapters._common import import_without_package_init

    timm_adabelief = import_without_package_init("timm.optim.adabelief")
    calls = []
    real = timm_adabelief._multi_tensor_adabelief
    monkeypatch.setattr(timm_adabelief, "_multi_tensor_adabelief",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    report = _run("library:timm-foreach", bundled_cases, "adabelief-pytorch", suites={"defaults"})
    assert report.conforming and calls


def test_a_wrong_optimizer_is_caught(bundled_cases) -> None:
    """torch.optim.Adam presented as AdaBelief: the adapter must not let it pass."""
    torch = needs("torch")
    from adabelief_conformance.adapters.torch import TorchOptimizer

    adam = TorchOptimizer(torch.optim.Adam, profiles={"adabelief-pytorch"},
                          configuration="mxnet-closest", state_names={"s": "exp_avg_sq"},
                          switches=dict.fromkeys(
                              ("weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd"), None),
                          options={"foreach": False})
    report = check(adam, select_cases(bundled_cases, profiles={"adabelief-pytorch"}), max_failures=1)
    counts = report.totals.counts
    assert counts["failed"] > 0.9 * (counts["passed"] + counts["failed"]), counts


def test_per_group_step_counts_keep_each_parameter_its_own_t(bundled_cases) -> None:
    """pytorch-optimizer keeps `step` in the parameter group: multi-parameter cases whose
    parameters have different t pass only if each parameter has its own group."""
    needs("torch")
    cases = [vc for vc in select_cases(bundled_cases, profiles={"adabelief-pytorch"},
                                       suites={"multi-parameter"})
             if len({p.t for p in vc.case.params}) > 1]
    assert cases
    from adabelief_conformance._targets import resolve_target

    report = check(resolve_target("library:pytorch-optimizer"), cases, max_failures=1)
    assert report.totals.counts["passed"] == len(cases)


def test_skips_are_the_same_in_process_and_through_serve(bundled_cases) -> None:
    needs("torch")
    suites = {"clipping", "defaults", "decoupled-weight-decay"}
    inproc = _run("library:timm@defaults", bundled_cases, "adabelief-pytorch", suites=suites)
    from adabelief_conformance._targets import resolve_target

    impl = resolve_target(None, f"{sys.executable} -m adabelief_conformance serve library:timm@defaults",
                          timeout=120)
    try:
        served = check(impl, select_cases(bundled_cases, profiles={"adabelief-pytorch"}, suites=suites))
    finally:
        impl.close()  # type: ignore[attr-defined]
    a = {r.id: (r.outcome.status, r.outcome.message if r.outcome.status == "skipped" else "")
         for r in inproc.results}
    b = {r.id: (r.outcome.status, r.outcome.message if r.outcome.status == "skipped" else "")
         for r in served.results}
    assert a == b
    assert sum(s == "skipped" for s, _ in a.values()) > 10


# ----- optax -----------------------------------------------------------------------------------

def test_optax_conforms_to_its_profile_apart_from_flushed_subnormals(bundled_cases) -> None:
    needs("optax")
    from adabelief_conformance._expectations import load_expectations
    from adabelief_conformance.adapters.matrix import EXPECTATIONS

    report = _run("library:optax", bundled_cases, "optax")
    expectations = load_expectations(EXPECTATIONS / "optax@case.toml")
    expectations.apply(report)
    assert report.conforming and not report.stale_entries
    counts = report.totals.counts
    assert counts["passed"] >= 190 and 0 < counts["xfailed"] <= 12, counts
    assert all("flush" in e.reason for e in expectations.entries)


def test_optax_with_eps_root_equal_to_eps_computes_adabelief_pytorch(bundled_cases) -> None:
    """The adapter expresses 'ε stored in s' as eps_root = eps: optax then conforms to the
    PyTorch family's profile on every case it can express."""
    needs("optax")
    report = _run("library:optax@mxnet-closest", bundled_cases, "adabelief-pytorch")
    assert report.conforming and report.totals.counts["passed"] >= 50
