"""Out-of-process implementations: the JSON-lines protocol of spec/protocol.md.

:class:`SubprocessImplementation` starts any program that speaks the protocol (in any language)
and makes it an :class:`~adabelief_conformance.Implementation`: one ``run`` request per case, one
answer line back. Every float crosses the pipe as a hex string, so nothing is rounded on the way.

A case never takes the others down with it: a hang becomes :class:`CaseTimedOut`, an exit or a
garbled line :class:`ImplementationCrashed` / :class:`InvalidMessage`; the process is killed and
the next ``run`` starts a fresh one (with a new handshake). Messages of every exception are one
line. :func:`serve` is the other side, for Python implementations that must run in their own
interpreter (another virtual environment, an old framework release).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np
from adabelief_reference import Hyperparameters, hexfloat
from adabelief_reference._model import SWITCHES

from ._errors import AdapterError
from ._protocol import (
    NUMPY_DTYPES,
    Implementation,
    ParamResult,
    ParamState,
    RunRequest,
    Step,
    skip_request,
)
from ._protocol import CaseSkipped as PublicCaseSkipped

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "PROTOCOL_VERSION",
    "SCHEMA_PATH",
    "CaseErrored",
    "CaseSkipped",
    "CaseTimedOut",
    "HandshakeError",
    "ImplementationCrashed",
    "InvalidMessage",
    "ProtocolError",
    "SubprocessImplementation",
    "load_schema",
    "request_from_json",
    "request_to_json",
    "results_from_json",
    "results_to_json",
    "schema_violation",
    "serve",
]

PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT = 10.0  # seconds per case
# Starting a process can be much slower than a case (an interpreter, a JIT, a GPU context).
DEFAULT_STARTUP_TIMEOUT = 30.0
SCHEMA_PATH = Path(__file__).parent / "schema" / "protocol.schema.json"

_STOP_GRACE = 2.0  # seconds an implementation gets to exit after ``stop``
_EXIT_GRACE = 1.0  # seconds to collect the exit status after stdout closed
_STDERR_KEEP = 8192  # bytes of stderr kept for error messages
_STDERR_SHOW = 400  # characters of it put in a message
_SNIPPET = 120  # characters of an offending line put in a message
# The longest line read from an implementation (spec/protocol.md#limits): a longer one is an
# invalid answer, read no further, so that a runaway writer cannot exhaust the runner's memory.
MAX_LINE_BYTES = 64 * 1024 * 1024
_OVERLONG = b"\0overlong"  # what the reader queues for such a line (not a valid JSON line)
# Consecutive cases on which the process crashed, hung or broke the protocol, after which the
# remaining cases are not sent (each would cost a restart and a timeout).
CIRCUIT_BREAKER = 5

# The hexfloat pattern of the schema. Enforced even without ``validate``: float.fromhex would
# read a decimal "0.1" as hex 0x0.1 = 0.0625 and silently corrupt a result.
_HEX = re.compile(
    r"[+-]?(0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?"
    r"|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
_HYPER_FLOATS = ("learning_rate", "beta1", "beta2", "epsilon", "wd", "rescale_grad")


# ----- exceptions ------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 2000) -> str:
    """Collapse whitespace so every message is a single line; keep the end of long texts."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-(limit - 3):]


class ProtocolError(AdapterError):
    """Root of this module's errors. ``str(error)`` is always one line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class HandshakeError(ProtocolError):
    """The implementation could not be started, or did not answer ``start`` properly."""


class CaseSkipped(ProtocolError, PublicCaseSkipped):
    """The implementation declined the case (a ``skipped`` answer). Not a failure: catch it
    before :class:`ProtocolError`. Also an :class:`adabelief_conformance.CaseSkipped`, the
    exception an implementation raises to skip a case."""

    def __init__(self, reason: str, issue_url: str | None = None, case_id: str = "") -> None:
        self.case_id = case_id
        PublicCaseSkipped.__init__(self, _one_line(reason), issue_url)
        self.skip_reason = str(self)


class CaseErrored(ProtocolError):
    """A case produced no usable results. Raised as such when the implementation answered
    ``errored``; the subclasses say what else went wrong."""

    def __init__(self, message: str, case_id: str = "", context: Any = None) -> None:
        self.case_id = case_id
        self.context = context
        super().__init__(message)


class CaseTimedOut(CaseErrored):
    """No answer within the per-case timeout; the process was killed."""


class ImplementationCrashed(CaseErrored):
    """The process exited (or could not be restarted) before answering."""


class InvalidMessage(CaseErrored):
    """A message broke the protocol: not JSON, wrong seq, a schema violation, wrong lengths or
    values that are not of the case's dtype. The message names the field."""


class _FieldError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


# ----- the schema ------------------------------------------------------------------------------


@cache
def load_schema() -> dict[str, Any]:
    """The protocol's JSON Schema (Draft 2020-12), conformance/schema/protocol.schema.json."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@cache
def _validator(definition: str) -> Any:
    import jsonschema  # only validating mode needs it

    schema = {k: v for k, v in load_schema().items() if k != "oneOf"}
    schema["$ref"] = f"#/$defs/{definition}"
    return jsonschema.Draft202012Validator(schema)


def _field_path(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def schema_violation(definition: str, message: Any) -> str | None:
    """None when ``message`` is valid against ``$defs/definition`` of the schema, else one line
    naming the offending field, e.g. ``results[0][1].w[3]: 1.5 is not of type 'string'``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(definition).iter_errors(message))
    if error is None:
        return None
    where = _field_path(list(error.absolute_path)) or "(message)"
    return _one_line(f"{where}: {error.message}", 300)


# ----- serialisation ---------------------------------------------------------------------------


def _hex(x: float) -> str:
    return hexfloat(float(x))  # float(): an int hyperparameter (wd=0) is fine too


def _hex_list(a: np.ndarray) -> list[str]:
    # float.hex (trailing zeros and all) is several times faster than hexfloat on big arrays.
    return [float.hex(v) for v in np.asarray(a).astype(np.float64).tolist()]


def _parse_hex(value: Any, field: str) -> float:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        shown = json.dumps(value)[:40]
        raise _FieldError(field, f"expected a hex float string (C99 %a, inf, nan), got {shown}")
    try:
        return float.fromhex(value)
    except OverflowError:
        raise _FieldError(field, f"{value} overflows float64") from None


def _parse_array(values: Any, dtype: np.dtype, field: str, length: int | None = None) -> np.ndarray:
    """Parse a hexarray into ``dtype``; every value must be exactly a value of that dtype."""
    if not isinstance(values, list):
        raise _FieldError(field, f"expected an array of hex strings, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise _FieldError(field, f"expected {length} values, got {len(values)}")
    try:  # the hot path of big cases: check and convert in bulk, find the culprit only on error
        wide = np.array([float.fromhex(v) for v in values] if all(map(_HEX.fullmatch, values))
                        else None, np.float64)
    except (TypeError, OverflowError):
        wide = np.array(None, np.float64)
    if wide.ndim != 1:
        for j, v in enumerate(values):
            _parse_hex(v, f"{field}[{j}]")  # raises for the first bad value, with the reason
        raise _FieldError(field, "unreadable hex floats")  # not reached: the loop raised
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = wide.astype(dtype)
        back = narrow.astype(np.float64)
    bad = np.flatnonzero(~((back == wide) | (np.isnan(back) & np.isnan(wide))))
    if bad.size:
        j = int(bad[0])
        raise _FieldError(f"{field}[{j}]", f"{values[j]} is not a {dtype.name} value")
    return narrow


def _get(obj: Any, key: str, field: str) -> Any:
    if not isinstance(obj, Mapping):
        raise _FieldError(field or "(message)", "expected an object")
    if key not in obj:
        raise _FieldError(f"{field}.{key}" if field else key, "missing")
    return obj[key]


def _switch(hp: Mapping[str, Any], name: str) -> bool:
    value = hp.get(name, False)
    if not isinstance(value, bool):
        raise _FieldError(f"hyperparameters.{name}", "expected true or false")
    return value


def request_to_json(request: RunRequest) -> dict[str, Any]:
    """The ``case`` object of a ``run`` message (spec/protocol.md#run)."""
    hp = request.hyperparameters
    hyper: dict[str, Any] = {k: _hex(getattr(hp, k)) for k in _HYPER_FLOATS}
    hyper["correct_bias"] = bool(hp.correct_bias)
    hyper["clip_gradient"] = None if hp.clip_gradient is None else _hex(hp.clip_gradient)
    if hp.eps_root != 0.0:  # optional, default 0 (spec/protocol.md#run)
        hyper["eps_root"] = _hex(hp.eps_root)
    for name in SWITCHES:  # optional, default false: sent only when on
        if getattr(hp, name):
            hyper[name] = True
    return {
        "id": request.case_id,
        "profile": request.profile,
        "dtype": request.dtype,
        "hyperparameters": hyper,
        "params": [
            {
                "index": p.index,
                "t": p.t,
                "lr_mult": _hex(p.lr_mult),
                "wd_mult": _hex(p.wd_mult),
                "w": _hex_list(p.w),
                "m": _hex_list(p.m),
                "s": _hex_list(p.s),
                **({} if p.s_max is None else {"s_max": _hex_list(p.s_max)}),
            }
            for p in request.params
        ],
        "steps": [
            {"grads": [_hex_list(g) for g in st.grads], "rescale_grad": _hex(st.rescale_grad)}
            for st in request.steps
        ],
    }


def request_from_json(case: Any) -> RunRequest:
    """Inverse of :func:`request_to_json`, for implementations written in Python (:func:`serve`).

    Raises ValueError naming the field when the case is malformed.
    """
    try:
        return _request_from_json(case)
    except _FieldError as e:
        raise ValueError(f"case.{e}") from None


def _request_from_json(case: Any) -> RunRequest:
    dtype = _get(case, "dtype", "")
    if dtype not in NUMPY_DTYPES:
        raise _FieldError("dtype", f"unknown dtype {dtype!r}")
    g_dt, w_dt, s_dt = NUMPY_DTYPES[dtype]
    hp = _get(case, "hyperparameters", "")
    clip = _get(hp, "clip_gradient", "hyperparameters")
    correct_bias = _get(hp, "correct_bias", "hyperparameters")
    if not isinstance(correct_bias, bool):
        raise _FieldError("hyperparameters.correct_bias", "expected true or false")
    hyper = Hyperparameters(
        **{k: _parse_hex(_get(hp, k, "hyperparameters"), f"hyperparameters.{k}") for k in _HYPER_FLOATS},
        correct_bias=correct_bias,
        clip_gradient=None if clip is None else _parse_hex(clip, "hyperparameters.clip_gradient"),
        eps_root=_parse_hex(hp["eps_root"], "hyperparameters.eps_root") if "eps_root" in hp else 0.0,
        **{name: _switch(hp, name) for name in SWITCHES},
    )
    params = []
    raw_params = _get(case, "params", "")
    if not isinstance(raw_params, list):
        raise _FieldError("params", "expected an array")
    for i, p in enumerate(raw_params):
        f = f"params[{i}]"
        w = _parse_array(_get(p, "w", f), w_dt, f"{f}.w")
        params.append(ParamState(
            index=_int(_get(p, "index", f), f"{f}.index"),
            w=w,
            m=_parse_array(_get(p, "m", f), s_dt, f"{f}.m", w.size),
            s=_parse_array(_get(p, "s", f), s_dt, f"{f}.s", w.size),
            t=_int(_get(p, "t", f), f"{f}.t"),
            lr_mult=_parse_hex(_get(p, "lr_mult", f), f"{f}.lr_mult"),
            wd_mult=_parse_hex(_get(p, "wd_mult", f), f"{f}.wd_mult"),
            s_max=(_parse_array(p["s_max"], s_dt, f"{f}.s_max", w.size)
                   if isinstance(p, Mapping) and "s_max" in p else None),
        ))
    steps = []
    raw_steps = _get(case, "steps", "")
    if not isinstance(raw_steps, list):
        raise _FieldError("steps", "expected an array")
    for k, st in enumerate(raw_steps):
        grads = _get(st, "grads", f"steps[{k}]")
        if not isinstance(grads, list) or len(grads) != len(params):
            raise _FieldError(f"steps[{k}].grads", f"expected {len(params)} arrays")
        steps.append(Step(
            tuple(_parse_array(g, g_dt, f"steps[{k}].grads[{i}]", params[i].w.size)
                  for i, g in enumerate(grads)),
            _parse_hex(_get(st, "rescale_grad", f"steps[{k}]"), f"steps[{k}].rescale_grad"),
        ))
    case_id = _get(case, "id", "")
    profile = _get(case, "profile", "")
    return RunRequest(str(case_id), str(profile), dtype, hyper, tuple(params), tuple(steps))


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _FieldError(field, f"expected a non-negative integer, got {json.dumps(value)[:40]}")
    return value


def results_to_json(results: Sequence[Sequence[ParamResult]]) -> list[list[dict[str, list[str]]]]:
    """The ``results`` value of an answer: per step, per parameter, w/m/s (and w16) in hex."""
    out = []
    for step in results:
        row = []
        for r in step:
            obj = {"w": _hex_list(r.w), "m": _hex_list(r.m), "s": _hex_list(r.s)}
            if r.s_max is not None:
                obj["s_max"] = _hex_list(r.s_max)
            if r.w16 is not None:
                obj["w16"] = _hex_list(r.w16)
            row.append(obj)
        out.append(row)
    return out


def results_from_json(results: Any, request: RunRequest) -> list[list[ParamResult]]:
    """Parse the ``results`` of an answer to ``request`` into arrays of the case's dtypes.

    Raises :class:`InvalidMessage` naming the case and the field when the shape is wrong or a
    value is not exactly a value of its dtype (a float32 output must be a float32 number).
    """
    try:
        return _results_from_json(results, request)
    except _FieldError as e:
        raise InvalidMessage(f"case {request.case_id}: {e}", request.case_id) from None


def _results_from_json(results: Any, request: RunRequest) -> list[list[ParamResult]]:
    _, w_dt, s_dt = NUMPY_DTYPES[request.dtype]
    mp = request.dtype == "float16-mp"
    n_steps, n_params = len(request.steps), len(request.params)
    if not isinstance(results, list) or len(results) != n_steps:
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise _FieldError("results", f"expected one entry per step ({n_steps}), got {got}")
    out = []
    for k, step in enumerate(results):
        if not isinstance(step, list) or len(step) != n_params:
            got = len(step) if isinstance(step, list) else type(step).__name__
            raise _FieldError(f"results[{k}]", f"expected one entry per parameter ({n_params}), got {got}")
        row = []
        for i, (obj, p) in enumerate(zip(step, request.params, strict=True)):
            f = f"results[{k}][{i}]"
            n = p.w.size
            w = _parse_array(_get(obj, "w", f), w_dt, f"{f}.w", n)
            m = _parse_array(_get(obj, "m", f), s_dt, f"{f}.m", n)
            s = _parse_array(_get(obj, "s", f), s_dt, f"{f}.s", n)
            w16 = None
            if mp:
                w16 = _parse_array(_get(obj, "w16", f), np.dtype(np.float16), f"{f}.w16", n)
            elif "w16" in obj:
                raise _FieldError(f"{f}.w16", f"only float16-mp results have w16, not {request.dtype}")
            s_max = None
            if request.hyperparameters.amsgrad:
                s_max = _parse_array(_get(obj, "s_max", f), s_dt, f"{f}.s_max", n)
            row.append(ParamResult(w, m, s, w16, s_max))
        out.append(row)
    return out


# ----- the process -----------------------------------------------------------------------------


class _Timeout(Exception):
    pass


class _Process:
    """A started implementation: pipes, and threads so that no read or write can block the
    runner past a deadline (a child that stops reading stdin would otherwise block our write)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None, cwd: str | None) -> None:
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=cwd,
            # Its own process group, so a timeout kills a wrapper script's children too.
            start_new_session=os.name == "posix",
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._stderr = bytearray()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._write_stdin, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        stream = self.popen.stdout
        try:
            while line := stream.readline(MAX_LINE_BYTES + 1):
                if len(line) > MAX_LINE_BYTES:
                    self.lines.put(_OVERLONG)  # the runner kills the writer on seeing it
                    while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass  # drop the rest of the line unread into memory
                    continue
                self.lines.put(line)
            stream.close()
        except (OSError, ValueError):
            pass
        self.lines.put(None)  # EOF

    def _read_stderr(self) -> None:
        stream = self.popen.stderr
        assert stream is not None
        try:
            while chunk := os.read(stream.fileno(), 4096):
                with self._lock:
                    self._stderr += chunk
                    del self._stderr[:-_STDERR_KEEP]
            stream.close()
        except (OSError, ValueError):
            pass

    def _write_stdin(self) -> None:
        stream = self.popen.stdin
        assert stream is not None
        try:
            while (data := self._outbox.get()) is not None:
                stream.write(data)
                stream.flush()
            stream.close()
        except (OSError, ValueError):
            pass  # it exited or closed stdin: the reader sees EOF, or the deadline passes

    def send(self, message: Mapping[str, Any]) -> None:
        self._outbox.put(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def receive(self, deadline: float) -> bytes | None:
        """The next non-blank stdout line, None at EOF; raises _Timeout past ``deadline``."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise _Timeout from None
            if line is None or line.strip():
                return line

    def clear_stderr(self) -> None:
        with self._lock:
            self._stderr.clear()

    def stderr_tail(self) -> str:
        self._threads[1].join(timeout=0.2)  # let output written just before an exit arrive
        with self._lock:
            text = self._stderr.decode("utf-8", "replace")
        text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
        return text if len(text) <= _STDERR_SHOW else "..." + text[-_STDERR_SHOW:]

    def exit_status(self, wait: float) -> int | None:
        try:
            return self.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.popen.poll() is None or os.name == "posix":
            try:
                if os.name == "posix":
                    os.killpg(self.popen.pid, signal.SIGKILL)  # the group we created
                else:
                    self.popen.kill()
            except (ProcessLookupError, PermissionError, OSError):
                pass
        self.popen.wait()
        self._outbox.put(None)

    def stop(self) -> None:
        """Ask it to exit (``stop``, then EOF on stdin); kill it if it does not."""
        if self.popen.poll() is None:
            self.send({"cmd": "stop"})
            self._outbox.put(None)
            if self.exit_status(_STOP_GRACE) is None:
                self.kill()
                return
        self.kill()  # reaps, and ends what is left of its process group


def _argv(command: str | Sequence[str]) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if not argv:
        raise ValueError("empty implementation command")
    return argv


def _status_text(status: int | None) -> str:
    if status is None:
        return "closed its stdout"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


class SubprocessImplementation:
    """An implementation in another process, speaking spec/protocol.md on stdin/stdout.

    ``command`` is a shell-like string (split with :func:`shlex.split`, no shell involved) or an
    argument list. ``timeout`` bounds each case, ``startup_timeout`` each start and handshake, in
    seconds. ``validate`` checks every message, both ways, against the protocol's JSON Schema.
    ``env`` adds variables to the runner's own environment. The handshake happens here, so
    ``name``, ``version``, ``language``, ``profiles`` and ``dtypes`` are known after construction;
    a failure raises :class:`HandshakeError`. Not thread-safe: one ``run`` at a time.
    """

    def __init__(
        self,
        command: str | Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        validate: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        self.argv = _argv(command)
        self.command = shlex.join(self.argv)
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout)
        self.validate = validate
        self._env = None if env is None else {**os.environ, **env}
        self._cwd = None if cwd is None else os.fspath(cwd)
        self._proc: _Process | None = None
        self._seq = 0
        self._broken: str | None = None
        self._closed = False
        self.restarts = 0  # processes started after the first one
        self._failed_in_a_row = 0  # cases that ended with the process discarded (CIRCUIT_BREAKER)
        self.info: dict[str, Any] = self._start()
        self.name: str = self.info["name"]
        self.version: str = self.info["version"]
        self.language: str = self.info["language"]
        self.homepage: str | None = self.info.get("homepage")
        self.profiles: frozenset[str] = frozenset(self.info["profiles"])
        self.dtypes: frozenset[str] = frozenset(self.info["dtypes"])

    def __repr__(self) -> str:
        return f"SubprocessImplementation({self.command!r})"

    def __enter__(self) -> SubprocessImplementation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Send ``stop`` and wait for the process to exit (killing it after a grace period)."""
        self._closed = True
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.stop()

    # ----- handshake ---------------------------------------------------------------------------

    def _start(self) -> dict[str, Any]:
        try:
            proc = _Process(self.argv, self._env, self._cwd)
        except OSError as e:
            raise HandshakeError(f"cannot start {self.command!r}: {e.strerror or e}") from None
        try:
            info = self._handshake(proc)
        except HandshakeError:
            proc.kill()
            raise
        self._proc = proc
        return info

    def _handshake(self, proc: _Process) -> dict[str, Any]:
        def fail(problem: str, with_stderr: bool = True) -> HandshakeError:
            tail = proc.stderr_tail() if with_stderr else ""
            return HandshakeError(f"{self.command!r} failed the handshake: {problem}"
                                  + (f"; stderr: {tail}" if tail else ""))

        start = {"cmd": "start", "version": PROTOCOL_VERSION}
        proc.send(start)
        try:
            raw = proc.receive(time.monotonic() + self.startup_timeout)
        except _Timeout:
            raise fail(f"no answer to start within {self.startup_timeout:g} s") from None
        if raw is None:
            status = proc.exit_status(_EXIT_GRACE)
            raise fail(f"it {_status_text(status)} before answering start")
        try:
            msg = json.loads(raw)
        except ValueError:
            raise fail(f"answered start with a line that is not JSON: {_snippet(raw)}") from None
        if self.validate and (problem := schema_violation("handshake", msg)):
            raise fail(f"schema violation at {problem}", False)
        if not isinstance(msg, dict):
            raise fail("the answer is not a JSON object", False)
        if msg.get("version") != PROTOCOL_VERSION:
            raise fail(f"it speaks protocol version {json.dumps(msg.get('version'))}, "
                       f"this runner speaks {PROTOCOL_VERSION}", False)
        info = msg.get("implementation")
        if not isinstance(info, dict):
            raise fail("implementation: missing or not an object", False)
        for key in ("name", "version", "language"):
            if not isinstance(info.get(key), str):
                raise fail(f"implementation.{key}: missing or not a string", False)
        for key in ("profiles", "dtypes"):
            value = info.get(key)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(f"implementation.{key}: missing or not an array of strings", False)
        return info

    # ----- cases -------------------------------------------------------------------------------

    def _discard(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.kill()

    def _ensure_started(self, case_id: str) -> _Process:
        if self._proc is not None and self._proc.popen.poll() is not None:
            self._discard()  # it exited after its last answer: start afresh, blame no case
        if self._proc is None:
            if self._broken is None:
                try:
                    self._start()
                    self.restarts += 1
                except HandshakeError as e:
                    # Give up on this implementation rather than wait out every later case.
                    self._broken = f"could not restart the implementation: {e}"
            if self._broken is not None:
                raise ImplementationCrashed(f"case {case_id}: {self._broken}", case_id)
        assert self._proc is not None
        return self._proc

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        """Run one case in the implementation; raise :class:`CaseSkipped` or a
        :class:`CaseErrored` subclass (one-line message naming the case) when it gives none.

        After :data:`CIRCUIT_BREAKER` cases in a row on which the process crashed, timed out or
        broke the protocol, later cases are errored at once, saying so, without starting it again.
        """
        try:
            results = self._run(request)
        except (CaseSkipped, ProtocolError) as e:
            discarded = self._proc is None  # _discard() ran: it crashed, hung or broke the protocol
            if isinstance(e, CaseErrored) and discarded and self._broken is None:
                self._failed_in_a_row += 1
                if self._failed_in_a_row >= CIRCUIT_BREAKER:
                    self._broken = (f"not run: the implementation crashed, hung or broke the protocol "
                                    f"on {CIRCUIT_BREAKER} cases in a row (circuit breaker; the "
                                    f"first of them says why)")
            elif not isinstance(e, CaseErrored) or not discarded:
                self._failed_in_a_row = 0
            raise
        self._failed_in_a_row = 0
        return results

    def _run(self, request: RunRequest) -> list[list[ParamResult]]:
        if self._closed:
            raise ProtocolError(f"{self!r} is closed")
        cid = request.case_id
        for kind, value, declared in (("profile", request.profile, self.profiles),
                                      ("dtype", request.dtype, self.dtypes)):
            if value not in declared:  # the protocol never sends an undeclared case
                raise CaseSkipped(f"the implementation does not declare {kind} {value!r} "
                                  f"(it declares {', '.join(sorted(declared)) or 'none'})",
                                  case_id=cid)
        self._seq += 1
        seq = self._seq
        message = {"cmd": "run", "seq": seq, "case": request_to_json(request)}
        if self.validate and (problem := schema_violation("run", message)):
            raise InvalidMessage(f"case {cid}: the request violates the protocol schema at "
                                 f"{problem}", cid)
        proc = self._ensure_started(cid)
        proc.clear_stderr()
        proc.send(message)
        try:
            raw = proc.receive(time.monotonic() + self.timeout)
        except _Timeout:
            self._discard()
            raise CaseTimedOut(f"case {cid}: timed out after {self.timeout:g} s "
                               "(the process was killed; the next case restarts it)", cid) from None
        if raw == _OVERLONG:
            self._discard()
            raise InvalidMessage(f"case {cid}: the implementation wrote a line longer than "
                                 f"{MAX_LINE_BYTES // (1024 * 1024)} MiB (the protocol's limit); "
                                 "the process was killed", cid)
        if raw is None:
            status = proc.exit_status(_EXIT_GRACE)
            tail = proc.stderr_tail()
            self._discard()
            raise ImplementationCrashed(
                f"case {cid}: the implementation {_status_text(status)} before answering"
                + (f"; stderr: {tail}" if tail else ""), cid)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            tail = proc.stderr_tail()
            self._discard()  # the stream can no longer be trusted to be in step
            raise InvalidMessage(
                f"case {cid}: the implementation answered with a line that is not a JSON "
                f"object: {_snippet(raw)}" + (f"; stderr: {tail}" if tail else ""), cid)
        return self._answer(answer, seq, request)

    def _answer(self, answer: dict[str, Any], seq: int, request: RunRequest) -> list[list[ParamResult]]:
        cid = request.case_id
        if type(answer.get("seq")) is not int or answer["seq"] != seq:  # true == 1 in Python
            self._discard()  # answers are out of step with requests
            raise InvalidMessage(f"case {cid}: seq: the answer to request {seq} carries seq "
                                 f"{json.dumps(answer.get('seq'))[:40]}", cid)
        kinds = [k for k in ("results", "skipped", "errored") if k in answer]
        if len(kinds) != 1:
            raise InvalidMessage(f"case {cid}: the answer must have exactly one of results, "
                                 f"skipped, errored; it has {kinds or 'none'}", cid)
        kind = kinds[0]
        if self.validate and (problem := schema_violation(f"{kind}_response", answer)):
            raise InvalidMessage(f"case {cid}: the answer violates the protocol schema at "
                                 f"{problem}", cid)
        body = answer[kind]
        if kind == "results":
            return results_from_json(body, request)
        if not isinstance(body, dict) or not isinstance(body.get(_TEXT[kind]), str):
            raise InvalidMessage(f"case {cid}: {kind}.{_TEXT[kind]}: missing or not a string", cid)
        if kind == "skipped":
            url = body.get("issue_url")
            raise CaseSkipped(body["reason"], url if isinstance(url, str) else None, cid)
        raise CaseErrored(f"case {cid}: the implementation reported: {body['message']}", cid,
                          body.get("context"))


_TEXT = {"skipped": "reason", "errored": "message"}


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


# ----- the implementation side, for Python -----------------------------------------------------


def serve(
    implementation: Implementation,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    language: str = "python",
    homepage: str | None = None,
) -> None:
    """Answer the protocol on ``stdin``/``stdout`` (default: the process's) with an in-process
    :class:`Implementation`, until ``stop`` or end of input.

    ``run`` may raise :class:`adabelief_conformance.CaseSkipped` to skip a case (an exception
    with a ``skip_reason`` attribute skips too), exactly as in-process; any other exception
    becomes an ``errored`` answer carrying the traceback as context.
    """
    src = sys.stdin if stdin is None else stdin
    dst = sys.stdout if stdout is None else stdout

    def send(obj: Mapping[str, Any]) -> None:
        dst.write(json.dumps(obj, separators=(",", ":")) + "\n")
        dst.flush()

    for line in src:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg["cmd"]
        except (ValueError, KeyError, TypeError):
            print(f"serve: ignoring a line that is not a command: {line[:80]!r}", file=sys.stderr)
            continue
        if cmd == "start":
            info: dict[str, Any] = {
                "name": implementation.name,
                "version": implementation.version,
                "language": language,
                "profiles": sorted(implementation.profiles),
                "dtypes": sorted(implementation.dtypes),
            }
            if homepage:
                info["homepage"] = homepage
            send({"implementation": info, "version": PROTOCOL_VERSION})
        elif cmd == "stop":
            return
        elif cmd == "run":
            send({"seq": msg.get("seq"), **_serve_case(implementation, msg.get("case"))})
        else:
            send({"seq": msg.get("seq"), "errored": {"message": f"unknown command {cmd!r}"}})


def _serve_case(implementation: Implementation, case: Any) -> dict[str, Any]:
    try:
        request = request_from_json(case)
    except ValueError as e:
        return {"errored": {"message": f"malformed request: {e}"}}
    if request.profile not in implementation.profiles or request.dtype not in implementation.dtypes:
        return {"skipped": {"reason": f"{request.profile}/{request.dtype} is not implemented"}}
    try:
        return {"results": results_to_json(implementation.run(request))}
    except Exception as e:
        skip = skip_request(e)
        if skip is not None:  # the same rule as in-process (spec/protocol.md#skipping-a-case)
            body = {"reason": skip.reason}
            if skip.issue_url:
                body["issue_url"] = skip.issue_url
            return {"skipped": body}
        return {"errored": {"message": _one_line(f"{type(e).__name__}: {e}", 500),
                            "context": traceback.format_exc()}}

