"""The out-of-process protocol: the C port, a misbehaving fake, validation, handshakes, serve()."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from adabelief_reference import (
    FLOAT16,
    CaseInputs,
    Finite,
    Hyperparameters,
    ParamInput,
    Special,
    StepInput,
    golden,
    tolerances,
)

from adabelief_conformance import Implementation, ParamResult, RunRequest, request_from_case
from adabelief_conformance._subprocess import (
    CaseErrored,
    CaseSkipped,
    CaseTimedOut,
    HandshakeError,
    ImplementationCrashed,
    InvalidMessage,
    ProtocolError,
    SubprocessImplementation,
    load_schema,
    request_from_json,
    request_to_json,
    results_from_json,
    results_to_json,
    schema_violation,
    serve,
)

C_PORT = Path(__file__).resolve().parent.parent / "examples" / "c_port" / "adabelief_port.c"
PY = sys.executable

# ----- cases and the comparison ------------------------------------------------------------------


def _round(values: np.ndarray, dtype: str) -> tuple[float, ...]:
    """Inputs must be values of their format, or the reference and the port see different data."""
    return tuple(float(v) for v in np.asarray(values).astype(dtype).astype(np.float64))


def make_case(
    profile: str,
    dtype: str,
    seed: int,
    hp: Hyperparameters | None = None,
    n: int = 4,
    n_params: int = 2,
    n_steps: int = 3,
    rescales: Sequence[float | None] = (),
    specials: bool = False,
) -> CaseInputs:
    rng = np.random.default_rng(seed)
    storage, master, state = {"float32": ("float32",) * 3, "float64": ("float64",) * 3,
                              "float16-mp": ("float16", "float32", "float32")}[dtype]
    params = tuple(
        ParamInput(
            w=_round(rng.normal(size=n), master),
            m=_round(rng.normal(scale=0.1, size=n), state),
            s=_round(rng.uniform(0, 0.01, size=n), state),
            t=int(rng.integers(0, 5)),
            lr_mult=float(rng.choice([1.0, 0.5, 2.0])),
            wd_mult=float(rng.choice([1.0, 0.5, 0.25])),
            index=i,
        )
        for i in range(n_params)
    )
    steps = []
    for k in range(n_steps):
        grads = [rng.normal(size=n) for _ in range(n_params)]
        if specials and k == 1:
            grads[0][0], grads[0][1] = math.nan, math.inf
            grads[-1][-1] = 2.0**-140 if dtype != "float16-mp" else 2.0**-20  # subnormal
        rescale = rescales[k] if k < len(rescales) else None
        steps.append(StepInput(tuple(_round(g, storage) for g in grads), rescale))
    return CaseInputs(profile, dtype, hp or Hyperparameters(), params, tuple(steps))


def _accepts(got: float, alt: Finite | Special, fmt_ulp: Fraction) -> bool:
    if isinstance(alt, Special):
        return {"any": True, "nan": math.isnan(got), "inf": got == math.inf,
                "-inf": got == -math.inf}[alt.kind]
    if not math.isfinite(got):
        return False
    return abs(Fraction(got) - Fraction(alt.value) - Fraction(alt.residual)) <= fmt_ulp


def assert_conforms(case: CaseInputs, results: Sequence[Sequence[ParamResult]]) -> None:
    """|got - (value + residual)| <= N * ulp(sigma) in the output's format, Special by class."""
    expected = golden(case)
    spec = case.dtype_spec
    formats = {"w": spec.master, "m": spec.compute, "s": spec.compute, "w16": FLOAT16}
    n_ulps = tolerances()[case.dtype]
    assert len(results) == len(expected.steps)
    for k, step in enumerate(expected.steps):
        for i, outputs in enumerate(step):
            for name, elements in outputs.items():
                got = getattr(results[k][i], name)
                assert got is not None, f"step {k} param {i}: no {name}"
                fmt = formats[name]
                for j, alts in enumerate(elements):
                    x = float(got[j])
                    ok = any(
                        _accepts(x, a, n_ulps[name] * Fraction(fmt.ulp(a.sigma)) if
                                 isinstance(a, Finite) else Fraction(0))
                        for a in alts)
                    assert ok, f"step {k} param {i} {name}[{j}] = {x!r}, expected {alts}"


# ----- the C port --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def c_port(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH to build examples/c_port")
    exe = tmp_path_factory.mktemp("c_port") / "adabelief_port"
    subprocess.run([cc, "-std=c99", "-O2", "-ffp-contract=off", "-o", str(exe), str(C_PORT), "-lm"],
                   check=True, capture_output=True, timeout=60)
    return exe


C_CASES = [
    ("mxnet", "float32", {}),
    ("mxnet", "float64", {}),
    ("mxnet", "float16-mp", {}),
    ("mxnet", "float32", {"hp": Hyperparameters(wd=0.01, clip_gradient=0.5)}),
    ("mxnet", "float64", {"hp": Hyperparameters(learning_rate=0.1, wd=0.1, clip_gradient=0.25,
                                                correct_bias=False)}),
    ("mxnet", "float32", {"rescales": (0.5, 0.0, math.nan), "specials": True}),
    ("mxnet", "float64", {"specials": True, "hp": Hyperparameters(clip_gradient=1.0)}),
    ("mxnet", "float16-mp", {"specials": True, "hp": Hyperparameters(wd=0.01, clip_gradient=0.5)}),
    ("mxnet-doc", "float32", {"hp": Hyperparameters(wd=0.05, clip_gradient=0.3)}),
    ("mxnet-doc", "float64", {"rescales": (1.0, 0.0), "hp": Hyperparameters(wd=0.05)}),
]


def test_c_port_conforms(c_port: Path) -> None:
    with SubprocessImplementation([str(c_port)], validate=True) as impl:
        assert isinstance(impl, Implementation)
        assert impl.name == "adabelief-c-port"
        assert impl.language == "c"
        assert {"mxnet", "mxnet-doc"} <= impl.profiles
        assert {"float32", "float64"} <= impl.dtypes
        for seed, (profile, dtype, kwargs) in enumerate(C_CASES):
            if dtype not in impl.dtypes:
                continue
            case = make_case(profile, dtype, seed, **kwargs)
            results = impl.run(request_from_case(case, f"c-{seed}"))
            assert_conforms(case, results)
        assert impl.restarts == 0


def test_undeclared_cases_are_skipped_without_a_request(c_port: Path) -> None:
    impl = SubprocessImplementation(str(c_port))
    request = request_from_case(make_case("mxnet", "float32", 0), "pt")
    other = RunRequest("pt", "pytorch", request.dtype, request.hyperparameters, request.params,
                       request.steps)
    with pytest.raises(CaseSkipped, match="does not declare profile 'pytorch' "
                                          r"\(it declares mxnet, mxnet-doc\)"):
        impl.run(other)
    assert impl._seq == 0  # nothing was sent
    proc = impl._proc
    assert proc is not None
    impl.close()
    assert proc.popen.returncode == 0  # it exited by itself on stop


def _spec_example() -> list[str]:
    """The example session of spec/protocol.md, its wrapped lines joined."""
    text = (C_PORT.parents[2] / "spec" / "protocol.md").read_text()
    block = text.split("## Example", 1)[1].split("```", 2)[1]
    lines: list[str] = []
    for line in block.strip().splitlines():
        if line.startswith("  "):
            lines[-1] += line.strip()
        else:
            lines.append(line)
    return lines


def test_spec_example_is_valid_and_is_what_the_c_port_says(c_port: Path) -> None:
    import json

    lines = _spec_example()
    kinds = ["start", "handshake", "run", "results_response", "stop"]
    assert len(lines) == len(kinds)
    for line, kind in zip(lines, kinds, strict=True):
        assert schema_violation(kind, json.loads(line)) is None, line
    pytorch = lines[2].replace('"profile":"mxnet"', '"profile":"pytorch"').replace('"seq":1', '"seq":2')
    sent = "\n".join([lines[0], lines[2], "", pytorch, "not json", lines[4]]) + "\n"
    done = subprocess.run([str(c_port)], input=sent, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        lines[1], lines[3],
        '{"seq":2,"skipped":{"reason":"this port implements profiles mxnet and mxnet-doc"}}']
    assert "not JSON" in done.stderr


# ----- a misbehaving implementation ----------------------------------------------------------------

NUMERICS = '''
import math
import numpy as np

def adabelief_f64(hp, params, steps):
    """MXNet's update in float64 (profile mxnet). params: dicts of w, m, s arrays, t, lr_mult,
    wd_mult; steps: (grads, rescale). Returns, per step, per param, (w, m, s)."""
    state = [dict(p) for p in params]
    out = []
    for grads, rescale in steps:
        row = []
        for p, g in zip(state, grads):
            p["t"] += 1
            if rescale != 0 and math.isfinite(rescale):
                lr, wd = hp["learning_rate"] * p["lr_mult"], hp["wd"] * p["wd_mult"]
                b1, b2, eps, t = hp["beta1"], hp["beta2"], hp["epsilon"], p["t"]
                eta = lr * (math.sqrt(1 - b2**t) / (1 - b1**t)) if hp["correct_bias"] else lr
                with np.errstate(all="ignore"):
                    gg = rescale * g + wd * p["w"]
                    clip = hp["clip_gradient"]
                    if clip is not None and clip > 0:
                        gg = np.clip(gg, -clip, clip)
                    p["m"] = b1 * p["m"] + (1 - b1) * gg
                    p["s"] = b2 * p["s"] + (1 - b2) * (gg - p["m"]) ** 2 + eps
                    p["w"] = p["w"] - eta * (p["m"] / (np.sqrt(p["s"]) + eps))
            row.append((p["w"], p["m"], p["s"]))
        out.append(row)
    return out
'''

FAKE = '''
import json, os, sys, time
import numpy as np
from numerics import adabelief_f64

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"

def send(obj):
    sys.stdout.write(json.dumps(obj) + "\\n")
    sys.stdout.flush()

def hexes(a):
    return [float(v).hex() for v in a]

def unhex(a):
    return np.array([float.fromhex(v) for v in a])

def answer(seq, case):
    cid = case["id"]
    if cid == "hang":
        time.sleep(3600)
    if cid == "crash":
        sys.stderr.write("fake: exploding on purpose\\n")
        sys.stderr.flush()
        os._exit(3)
    if cid == "garbage":
        print("this is not json", flush=True)
        return
    if cid == "skip":
        return send({"seq": seq, "skipped": {"reason": "not today",
                                             "issue_url": "https://example.org/issue/1"}})
    if cid == "error":
        return send({"seq": seq, "errored": {"message": "boom", "context": {"why": "testing"}}})
    if cid == "wrongseq":
        return send({"seq": seq + 100, "results": []})
    hp = {k: (None if v is None else v if isinstance(v, bool) else float.fromhex(v))
          for k, v in case["hyperparameters"].items()}
    params = [{"w": unhex(p["w"]), "m": unhex(p["m"]), "s": unhex(p["s"]), "t": p["t"],
               "lr_mult": float.fromhex(p["lr_mult"]), "wd_mult": float.fromhex(p["wd_mult"])}
              for p in case["params"]]
    steps = [([unhex(g) for g in st["grads"]], float.fromhex(st["rescale_grad"]))
             for st in case["steps"]]
    results = [[{"w": hexes(w), "m": hexes(m), "s": hexes(s)} for w, m, s in row]
               for row in adabelief_f64(hp, params, steps)]
    if cid == "short":
        results[0][0]["w"] = results[0][0]["w"][:-1]
    if cid == "extra":
        results[0][0]["extra"] = 1
    if cid == "decimal":
        results[0][0]["m"][1] = "0.5"
    send({"seq": seq, "results": results})

for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "start":
        if mode == "hang":
            time.sleep(3600)
        if mode == "garbage":
            print("hello", flush=True)
            continue
        if mode == "once":  # a first start succeeds, every later one fails
            if os.path.exists(sys.argv[2]):
                sys.exit(5)
            open(sys.argv[2], "w").close()
        if mode == "die":
            sys.stderr.write("fake: cannot load libadabelief.so\\n")
            sys.exit(2)
        info = {"name": "fake", "version": "0", "language": "python", "profiles": ["mxnet"],
                "dtypes": ["float64"]}
        if mode == "no-dtypes":
            del info["dtypes"]
        send({"implementation": info, "version": 2 if mode == "v2" else 1})
    elif msg["cmd"] == "run":
        answer(msg["seq"], msg["case"])
    elif msg["cmd"] == "stop":
        break
'''


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fake")
    (d / "numerics.py").write_text(textwrap.dedent(NUMERICS))
    (d / "fake.py").write_text(textwrap.dedent(FAKE))
    return d / "fake.py"


def _request(case: CaseInputs, case_id: str) -> RunRequest:
    return request_from_case(case, case_id)


def test_each_failure_is_isolated_to_its_case(fake: Path) -> None:
    case = make_case("mxnet", "float64", 7, hp=Hyperparameters(wd=0.01, clip_gradient=0.5))
    outcomes: dict[str, object] = {}
    order = ["ok1", "hang", "ok2", "crash", "ok3", "garbage", "ok4", "short", "ok5", "skip",
             "ok6", "error", "wrongseq", "ok7"]
    with SubprocessImplementation([PY, str(fake)], timeout=1.0) as impl:
        assert (impl.name, impl.dtypes) == ("fake", frozenset({"float64"}))
        for cid in order:
            try:
                results = impl.run(_request(case, cid))
            except ProtocolError as e:
                outcomes[cid] = e
                assert "\n" not in str(e)
            else:
                assert_conforms(case, results)
                outcomes[cid] = "ok"
        restarts = impl.restarts
    assert all(outcomes[c] == "ok" for c in order if c.startswith("ok")), outcomes
    assert isinstance(outcomes["hang"], CaseTimedOut)
    assert str(outcomes["hang"]).startswith("case hang: timed out after 1 s")
    crash = outcomes["crash"]
    assert isinstance(crash, ImplementationCrashed)
    assert "exited with status 3" in str(crash) and "exploding on purpose" in str(crash)
    assert isinstance(outcomes["garbage"], InvalidMessage)
    assert "not a JSON object: 'this is not json'" in str(outcomes["garbage"])
    short = outcomes["short"]
    assert isinstance(short, InvalidMessage) and short.case_id == "short"
    assert str(short) == "case short: results[0][0].w: expected 4 values, got 3"
    skip = outcomes["skip"]
    assert isinstance(skip, CaseSkipped)
    assert (skip.reason, skip.issue_url) == ("not today", "https://example.org/issue/1")
    error = outcomes["error"]
    assert isinstance(error, CaseErrored) and not isinstance(error, InvalidMessage)
    assert error.context == {"why": "testing"}
    assert str(error) == "case error: the implementation reported: boom"
    assert isinstance(outcomes["wrongseq"], InvalidMessage) and "seq" in str(outcomes["wrongseq"])
    assert restarts == 4  # after hang, crash, garbage and wrongseq


def test_validating_mode_names_the_field(fake: Path) -> None:
    case = make_case("mxnet", "float64", 3, n_params=1, n_steps=1)
    with SubprocessImplementation([PY, str(fake)]) as lax:
        lax.run(_request(case, "extra"))  # an unknown key is not the parser's business
        with pytest.raises(InvalidMessage, match=r"results\[0\]\[0\]\.m\[1\]: expected a hex"):
            lax.run(_request(case, "decimal"))  # but a decimal string would be misread as hex
    with SubprocessImplementation([PY, str(fake)], validate=True) as strict:
        with pytest.raises(InvalidMessage, match=r"schema at results\[0\]\[0\]: Additional "
                                                 r"properties .*'extra' was unexpected"):
            strict.run(_request(case, "extra"))
        with pytest.raises(InvalidMessage, match=r"schema at results\[0\]\[0\]\.m\[1\]: '0\.5' "
                                                 "does not match"):
            strict.run(_request(case, "decimal"))
        request = _request(case, "index")
        bad = RunRequest("index", "mxnet", "float64", request.hyperparameters,
                         (replace(request.params[0], index=-1),), request.steps)
        with pytest.raises(InvalidMessage, match=r"request violates the protocol schema at "
                                                 r"case\.params\[0\]\.index: -1 is less than"):
            strict.run(bad)
        assert_conforms(case, strict.run(_request(case, "fine")))


def test_a_failed_restart_fails_the_remaining_cases_quickly(fake: Path, tmp_path: Path) -> None:
    case = make_case("mxnet", "float64", 2, n_params=1, n_steps=1)
    with SubprocessImplementation([PY, str(fake), "once", str(tmp_path / "started")]) as impl:
        assert_conforms(case, impl.run(_request(case, "first")))
        with pytest.raises(ImplementationCrashed, match="exited with status 3"):
            impl.run(_request(case, "crash"))
        for cid in ("second", "third"):
            with pytest.raises(ImplementationCrashed, match=rf"case {cid}: could not restart the "
                                                            r"implementation: .*status 5"):
                impl.run(_request(case, cid))


@pytest.mark.parametrize(("mode", "message"), [
    ("garbage", "answered start with a line that is not JSON: 'hello'"),
    ("die", "exited with status 2 before answering start; stderr: fake: cannot load "
            "libadabelief.so"),
    ("v2", "it speaks protocol version 2, this runner speaks 1"),
    ("no-dtypes", "implementation.dtypes: missing or not an array of strings"),
    ("hang", "no answer to start within 0.5 s"),
])
def test_handshake_failures_are_one_clear_line(fake: Path, mode: str, message: str) -> None:
    with pytest.raises(HandshakeError) as info:
        SubprocessImplementation([PY, str(fake), mode], startup_timeout=0.5)
    text = str(info.value)
    assert "\n" not in text and "failed the handshake" in text and message in text


def test_handshake_schema_violation_and_missing_command(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(HandshakeError, match="schema violation at implementation: 'dtypes' is a "
                                             "required property"):
        SubprocessImplementation([PY, str(fake), "no-dtypes"], validate=True)
    with pytest.raises(HandshakeError, match=r"cannot start '.*no-such-port': No such file"):
        SubprocessImplementation(str(tmp_path / "no-such-port"))


# ----- serialisation and serve() ---------------------------------------------------------------------


def test_round_trip_and_schema() -> None:
    case = make_case("mxnet", "float16-mp", 5, specials=True,
                     hp=Hyperparameters(clip_gradient=0.5))
    request = request_from_case(case, "rt")
    message = {"cmd": "run", "seq": 1, "case": request_to_json(request)}
    assert schema_violation("run", message) is None
    back = request_from_json(message["case"])
    assert back.hyperparameters == request.hyperparameters
    for a, b in zip(back.params, request.params, strict=True):
        for name in ("w", "m", "s"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert getattr(a, name).dtype == getattr(b, name).dtype
    assert back.steps[1].grads[0].dtype == np.float16
    results = [[ParamResult(p.w, p.m, p.s, p.w.astype(np.float16)) for p in request.params]
               for _ in request.steps]
    wire = results_to_json(results)
    assert schema_violation("results_response", {"seq": 1, "results": wire}) is None
    parsed = results_from_json(wire, request)
    assert parsed[0][0].w16 is not None and parsed[0][0].w16.dtype == np.float16
    wire[0][1]["s"][0] = (1.0 + 2.0**-40).hex()  # not a float32 value
    with pytest.raises(InvalidMessage, match=r"case rt: results\[0\]\[1\]\.s\[0\]: .* is not a "
                                             "float32 value"):
        results_from_json(wire, request)
    del wire[0][1]["w16"]
    wire[0][1]["s"][0] = "0x0p+0"
    with pytest.raises(InvalidMessage, match=r"results\[0\]\[1\]\.w16: missing"):
        results_from_json(wire, request)
    assert "$defs" in load_schema()


SERVE = '''
import sys
import numpy as np
from numerics import adabelief_f64
from adabelief_conformance import ParamResult
from adabelief_conformance._subprocess import CaseSkipped, serve

class Impl:
    name, version, profiles, dtypes = "served", "1.0", {"mxnet"}, {"float64"}

    def run(self, request):
        if request.case_id == "skip":
            raise CaseSkipped("not this one")
        if request.case_id == "raise":
            raise RuntimeError("kaput")
        hp = dict(vars(request.hyperparameters))
        params = [dict(w=p.w, m=p.m, s=p.s, t=p.t, lr_mult=p.lr_mult, wd_mult=p.wd_mult)
                  for p in request.params]
        steps = [(st.grads, st.rescale_grad) for st in request.steps]
        return [[ParamResult(w, m, s) for w, m, s in row]
                for row in adabelief_f64(hp, params, steps)]

serve(Impl())
'''


def test_serve_speaks_the_protocol(fake: Path) -> None:
    script = fake.parent / "served.py"
    script.write_text(textwrap.dedent(SERVE))
    case = make_case("mxnet", "float64", 11, hp=Hyperparameters(wd=0.01))
    with SubprocessImplementation([PY, str(script)], validate=True) as impl:
        assert (impl.name, impl.version, impl.language) == ("served", "1.0", "python")
        assert_conforms(case, impl.run(request_from_case(case, "ok")))
        with pytest.raises(CaseSkipped, match="not this one"):
            impl.run(request_from_case(case, "skip"))
        with pytest.raises(CaseErrored, match="reported: RuntimeError: kaput") as info:
            impl.run(request_from_case(case, "raise"))
        assert "Traceback" in info.value.context


def test_serve_in_process() -> None:
    import io
    import json

    class Nothing:
        name, version, profiles, dtypes = "nothing", "0", {"mxnet"}, {"float64"}

        def run(self, request: RunRequest) -> list[list[ParamResult]]:
            raise AssertionError("not reached")

    f32 = request_to_json(request_from_case(make_case("mxnet", "float32", 1), "f32"))
    lines = ['{"cmd":"start","version":1}', "", "garbage",
             json.dumps({"cmd": "run", "seq": 4, "case": f32}),
             json.dumps({"cmd": "run", "seq": 5, "case": {"dtype": "float32"}}),
             '{"cmd":"dance","seq":6}', '{"cmd":"stop"}', '{"cmd":"start","version":1}']
    out = io.StringIO()
    serve(Nothing(), io.StringIO("\n".join(lines) + "\n"), out, homepage="https://example.org")
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert answers[0]["implementation"]["homepage"] == "https://example.org"
    assert answers[1] == {"seq": 4, "skipped": {"reason": "mxnet/float32 is not implemented"}}
    assert answers[2]["errored"]["message"] == "malformed request: case.hyperparameters: missing"
    assert answers[3] == {"seq": 6, "errored": {"message": "unknown command 'dance'"}}
    assert len(answers) == 4  # nothing after stop
    for answer, kind in zip(answers, ["handshake"] + ["response"] * 3, strict=True):
        assert schema_violation(kind, answer) is None
