"""Loading golden vector files: manifest check, schema validation, parsing into cases.

Every problem becomes an :class:`InvalidVector` whose one-line message names the file, the case
and the field, and says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from adabelief_reference import (
    DTYPES,
    CaseInputs,
    Finite,
    Format,
    Hyperparameters,
    ParamInput,
    Special,
    StepInput,
)
from adabelief_reference._exact import outputs_of
from adabelief_reference._formats import FLOAT16
from adabelief_reference._generate import case_id
from adabelief_reference._model import SWITCHES
from adabelief_spec import load_json

from ._errors import InvalidVector

__all__ = [
    "KIND_ALTERNATIVES",
    "KIND_ANY",
    "KIND_FINITE",
    "KIND_NAN",
    "KIND_NINF",
    "KIND_PINF",
    "ExpectedArray",
    "VectorCase",
    "bundled_vectors_dir",
    "live_vector_case",
    "load_file",
    "load_vectors",
]

KIND_FINITE, KIND_NAN, KIND_PINF, KIND_NINF, KIND_ANY, KIND_ALTERNATIVES = range(6)
_SPECIAL_KIND = {"nan": KIND_NAN, "inf": KIND_PINF, "-inf": KIND_NINF, "any": KIND_ANY}


@dataclass(frozen=True)
class ExpectedArray:
    """One output of a case, flattened over steps, parameters and elements in that order."""

    fmt: Format
    kind: np.ndarray  # int8, one of the KIND_* codes
    value: np.ndarray  # float64: correctly rounded expected value (finite entries)
    residual: np.ndarray  # float64: exact - value
    sigma: np.ndarray  # float64: error scale
    alternatives: dict[int, tuple[Finite | Special, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorCase:
    id: str
    suite: str
    file: str
    comment: str
    flags: tuple[str, ...]
    result: str
    case: CaseInputs
    tolerance: dict[str, float]
    expected: dict[str, ExpectedArray]
    # (step, parameter index, offset, length) of each block of the flattened outputs
    layout: tuple[tuple[int, int, int, int], ...]
    # False for a file that no manifest.json vouches for (its sha256): its expected values are
    # taken as they are, and the reports say so
    verified: bool = True

    @property
    def profile(self) -> str:
        return self.case.profile

    @property
    def dtype(self) -> str:
        return self.case.dtype

    @property
    def n_elements(self) -> int:
        return sum(len(e.kind) for e in self.expected.values())

    def locate(self, flat: int) -> tuple[int, int, int]:
        """(step, parameter position, element) of a flat output index."""
        for step, param, off, n in self.layout:
            if off <= flat < off + n:
                return step, param, flat - off
        raise IndexError(flat)


def bundled_vectors_dir() -> Path:
    """The vectors shipped with the package (the repository's vectors/ folder)."""
    return Path(str(resources.files("adabelief_vectors")))


# The vector formats this loader reads (spec/versioning.md): format 2 added the optional
# hyperparameter eps_root; format 1 files (vector sets 1.x) are still read, with their own schema.
FORMAT_VERSIONS = (1, 2)


@cache
def _validator(version: int = FORMAT_VERSIONS[-1]) -> tuple[Any, type[Exception]]:
    """The compiled schema check of a format version and the exception class it raises.

    The class travels with the function: a cached validator raises the class of the module that
    compiled it, even if ``fastjsonschema`` has since been re-imported (pytester does that).
    """
    # fastjsonschema compiles the schema to Python: ~30x faster than jsonschema on 10 MB of
    # vectors. tests/ check that the schema is valid Draft 2020-12 with jsonschema itself.
    import fastjsonschema

    return (fastjsonschema.compile(load_json(f"schema/vectors-v{version}.schema.json")),
            fastjsonschema.JsonSchemaValueException)


def _hex(text: Any, where: str) -> float:
    if not isinstance(text, str):
        raise InvalidVector(f"{where} = {text!r}: expected a hex float string such as '0x1.8p+0'")
    try:
        return float.fromhex(text)
    except (ValueError, OverflowError):
        raise InvalidVector(f"{where} = {text!r}: not a hex float (C99 %a, e.g. '0x1.8p+0', 'inf', 'nan')") from None


def _hexes(items: Any, where: str) -> tuple[float, ...]:
    if not isinstance(items, list):
        raise InvalidVector(f"{where}: expected a list of hex floats")
    return tuple(_hex(x, f"{where}[{i}]") for i, x in enumerate(items))


def _alternative(entry: Any, where: str) -> Finite | Special:
    if isinstance(entry, str):
        if entry in _SPECIAL_KIND:
            return Special(entry)
        return Finite(_hex(entry, where), 0.0, 0.0)
    if isinstance(entry, dict):
        return Finite(_hex(entry.get("value"), f"{where}.value"), _hex(entry.get("residual"), f"{where}.residual"),
                      _hex(entry.get("sigma"), f"{where}.sigma"))
    raise InvalidVector(f"{where} = {entry!r}: expected a hex float, a class name or an alternative object")


def _check_representable(where: str, values: Sequence[float], fmt: Any, dtype: str, what: str) -> None:
    """Inputs must be values of their format: a float32 case's w holding 0.1 (a double) would be
    rounded silently by any implementation, and the case would test something else."""
    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):
        back = arr.astype(np.dtype(fmt.name)).astype(np.float64)
    bad = ~((back == arr) | np.isnan(arr))
    if bad.any():
        j = int(np.argmax(bad))
        raise InvalidVector(f"{where}: {what}[{j}] = {float(arr[j]).hex()} is not a {fmt.name} value, "
                            f"as a {dtype} case needs; restore the file or regenerate the vectors")


def _parse_case(doc_file: str, suite: str, group: dict[str, Any], test: dict[str, Any],
                verified: bool = True, trusted: bool = False) -> VectorCase:
    tid = test.get("id", "?")
    where = f"{doc_file}: case {tid}"
    hpj = group["hyperparameters"]
    clip = hpj.get("clip_gradient")
    hp = Hyperparameters(
        learning_rate=_hex(hpj["learning_rate"], f"{where}: hyperparameters.learning_rate"),
        beta1=_hex(hpj["beta1"], f"{where}: hyperparameters.beta1"),
        beta2=_hex(hpj["beta2"], f"{where}: hyperparameters.beta2"),
        epsilon=_hex(hpj["epsilon"], f"{where}: hyperparameters.epsilon"),
        correct_bias=bool(hpj["correct_bias"]),
        wd=_hex(hpj["wd"], f"{where}: hyperparameters.wd"),
        rescale_grad=_hex(hpj["rescale_grad"], f"{where}: hyperparameters.rescale_grad"),
        clip_gradient=None if clip is None else _hex(clip, f"{where}: hyperparameters.clip_gradient"),
        eps_root=_hex(hpj["eps_root"], f"{where}: hyperparameters.eps_root") if "eps_root" in hpj else 0.0,
        **{name: bool(hpj.get(name, False)) for name in SWITCHES},
    )
    try:
        params, steps = _inputs(where, test)
    except ValueError as e:  # lengths that do not agree, a negative t
        raise InvalidVector(f"{where}: {e}") from None
    try:
        case = CaseInputs(group["profile"], group["dtype"], hp, tuple(params), tuple(steps))
    except ValueError as e:
        raise InvalidVector(f"{where}: {e}") from None
    return _with_expectations(doc_file, suite, group, test, case, where, verified, trusted)


def _inputs(where: str, test: dict[str, Any]) -> tuple[list[ParamInput], list[StepInput]]:
    params = []
    for i, p in enumerate(test["params"]):
        pw = f"{where}: params[{i}]"
        params.append(ParamInput(
            w=_hexes(p["w"], f"{pw}.w"), m=_hexes(p["m"], f"{pw}.m"), s=_hexes(p["s"], f"{pw}.s"),
            t=int(p["t"]), lr_mult=_hex(p["lr_mult"], f"{pw}.lr_mult"),
            wd_mult=_hex(p["wd_mult"], f"{pw}.wd_mult"), index=int(p["index"]),
            s_max=_hexes(p["s_max"], f"{pw}.s_max") if "s_max" in p else None,
        ))
    steps = []
    for k, st in enumerate(test["steps"]):
        r = st.get("rescale_grad")
        steps.append(StepInput(
            tuple(_hexes(g, f"{where}: steps[{k}].grads[{i}]") for i, g in enumerate(st["grads"])),
            None if r is None else _hex(r, f"{where}: steps[{k}].rescale_grad"),
        ))
    return params, steps


def _with_expectations(doc_file: str, suite: str, group: dict[str, Any], test: dict[str, Any],
                       case: CaseInputs, where: str, verified: bool, trusted: bool) -> VectorCase:
    tid = test.get("id", "?")
    if not trusted:
        _check_inputs(case, suite, tid, where)
    return _expected(doc_file, suite, group, test, case, where, verified, tid)


def _check_inputs(case: CaseInputs, suite: str, tid: str, where: str) -> None:
    spec = DTYPES[case.dtype]
    for i, p in enumerate(case.params):
        for what, values, fmt in (("w", p.w, spec.master), ("m", p.m, spec.compute),
                                  ("s", p.s, spec.compute), ("s_max", p.s_max or (), spec.compute)):
            _check_representable(where, values, fmt, case.dtype, f"params[{i}].{what}")
    for k, st in enumerate(case.steps):
        for i, g in enumerate(st.grads):
            _check_representable(where, g, spec.storage, case.dtype, f"steps[{k}].grads[{i}]")
    # Ids are content-addressed (spec/vector-format.md#ids): an edited input shows here.
    recomputed = case_id(suite, case)
    if recomputed != tid:
        raise InvalidVector(f"{where}: the id does not match the case's inputs (they give "
                            f"{recomputed}): the inputs were edited; restore the file or "
                            "regenerate the vectors")


def _expected(doc_file: str, suite: str, group: dict[str, Any], test: dict[str, Any],
              case: CaseInputs, where: str, verified: bool, tid: str) -> VectorCase:
    spec = DTYPES[case.dtype]
    fmts = {"w": spec.master, "m": spec.compute, "s": spec.compute, "s_max": spec.compute, "w16": FLOAT16}
    names = outputs_of(case)
    cols: dict[str, dict[str, list[Any]]] = {n: {"kind": [], "value": [], "residual": [], "sigma": []} for n in names}
    alts: dict[str, dict[int, tuple[Finite | Special, ...]]] = {n: {} for n in names}
    layout = []
    offset = 0
    for k, st in enumerate(test["steps"]):
        exp = st["expected"]
        if len(exp) != len(case.params):
            raise InvalidVector(f"{where}: steps[{k}].expected has {len(exp)} entries for {len(case.params)} parameters")
        for i, entry in enumerate(exp):
            n_el = len(case.params[i].w)
            layout.append((k, i, offset, n_el))
            offset += n_el
            for n in names:
                ew = f"{where}: steps[{k}].expected[{i}].{n}"
                if n not in entry:
                    raise InvalidVector(f"{ew}: missing (dtype {case.dtype} has outputs {', '.join(names)})")
                arr = entry[n]
                vals, res, sig = arr.get("value"), arr.get("residual"), arr.get("sigma")
                if not (isinstance(vals, list) and isinstance(res, list) and isinstance(sig, list)) or not (
                        len(vals) == len(res) == len(sig) == n_el):
                    raise InvalidVector(f"{ew}: value, residual and sigma must be lists of {n_el} entries")
                c = cols[n]
                for j, v in enumerate(vals):
                    if isinstance(v, list):
                        flat = len(c["kind"])
                        alts[n][flat] = tuple(_alternative(a, f"{ew}.value[{j}][{q}]") for q, a in enumerate(v))
                        c["kind"].append(KIND_ALTERNATIVES)
                        c["value"].append(0.0)
                    elif v in _SPECIAL_KIND:
                        c["kind"].append(_SPECIAL_KIND[v])
                        c["value"].append(0.0)
                    else:
                        x = _hex(v, f"{ew}.value[{j}]")
                        c["kind"].append(KIND_FINITE)
                        c["value"].append(x)
                    c["residual"].append(_hex(res[j], f"{ew}.residual[{j}]"))
                    c["sigma"].append(_hex(sig[j], f"{ew}.sigma[{j}]"))
    expected = {
        n: ExpectedArray(fmts[n], np.array(c["kind"], dtype=np.int8), np.array(c["value"], dtype=np.float64),
                         np.array(c["residual"], dtype=np.float64), np.array(c["sigma"], dtype=np.float64),
                         alts[n])
        for n, c in cols.items()
    }
    return VectorCase(
        id=tid, suite=suite, file=doc_file, comment=test.get("comment", ""),
        flags=tuple(test.get("flags", ())), result=test.get("result", "must-match"), case=case,
        tolerance={k: float(v) for k, v in group["tolerance"].items()}, expected=expected, layout=tuple(layout),
        verified=verified,
    )


# Size limits on untrusted input (spec/vector-format.md#limits): the bundled files are far below.
MAX_VECTOR_FILE_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; InvalidVector (one line, naming
    the file) for anything else: a folder, a device or FIFO (which could block or never end), a
    larger file, an unreadable one."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidVector(f"{path}: cannot read {what}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InvalidVector(f"{path}: {kind}; {what} must be a regular file")
    if st.st_size > limit:
        raise InvalidVector(f"{path}: {st.st_size} bytes, more than the {limit} bytes {what} may have")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InvalidVector(f"{path}: cannot read {what}: {e.strerror}") from None
    if len(data) > limit:
        raise InvalidVector(f"{path}: more than the {limit} bytes {what} may have")
    return data


def load_file(path: Path, validate: bool = True, verified: bool | None = True,
              trusted: bool = False) -> list[VectorCase]:
    """Parse one vector file. Raises InvalidVector naming the file and field on any problem.

    ``trusted``: the file is byte for byte one of the package's own (its sha256 is in the bundled
    manifest, which tests/test_vector_files.py validates in full), so the schema, the ids and the
    input formats are not checked again: that is most of the loading time. ``verified`` None:
    whether a manifest vouches for the file is found out from the bytes read (a file given alone)."""
    name = str(path)
    data = read_bounded(path, MAX_VECTOR_FILE_BYTES, "a vector file")
    if verified is None:
        verified = _vouched_for(path, hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidVector(f"{name}: not UTF-8 text (byte {e.start}); restore the file or "
                            "regenerate the vectors") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidVector(f"{name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                            "restore the file or regenerate the vectors") from None
    except RecursionError:
        raise InvalidVector(f"{name}: JSON nested too deeply; restore the file or regenerate the "
                            "vectors") from None
    except ValueError as e:  # e.g. an integer literal longer than Python converts
        raise InvalidVector(f"{name}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    if validate and not trusted:
        version = doc.get("formatVersion") if isinstance(doc, dict) else None
        if type(version) is not int or version not in FORMAT_VERSIONS:  # true == 1 in Python
            raise InvalidVector(f"{name}: formatVersion = {version!r}; this version of "
                                f"adabelief-conformance reads formats {list(FORMAT_VERSIONS)}")
        check_schema, schema_error = _validator(version)
        try:
            check_schema(doc)
        except schema_error as e:
            raise InvalidVector(f"{name}: {getattr(e, 'message', e)} "
                                f"(schema vectors-v{version})") from None
    suite = doc.get("suite", path.stem)
    cases = []
    for group in doc["testGroups"]:
        for test in group["tests"]:
            cases.append(_parse_case(name, suite, group, test, verified, trusted))
    if doc.get("numberOfTests") != len(cases):
        raise InvalidVector(f"{name}: numberOfTests = {doc.get('numberOfTests')!r} but the file holds "
                            f"{len(cases)} tests; the file is truncated or edited: restore or regenerate it")
    return cases


def verify_manifest(directory: Path) -> dict[str, Any]:
    """Check every file listed in manifest.json against its sha256; return the manifest."""
    mpath = directory / "manifest.json"
    if not mpath.exists():
        raise InvalidVector(f"{mpath}: missing; a vector folder needs its manifest.json")
    try:
        manifest = json.loads(read_bounded(mpath, MAX_MANIFEST_BYTES, "a manifest").decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidVector(f"{mpath}: not UTF-8 text; restore the manifest") from None
    except json.JSONDecodeError as e:
        raise InvalidVector(f"{mpath}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise InvalidVector(f"{mpath}: JSON nested too deeply; restore the manifest") from None
    except ValueError as e:
        raise InvalidVector(f"{mpath}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(manifest, dict):
        raise InvalidVector(f"{mpath}: expected a JSON object")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise InvalidVector(f"{mpath}: 'files' must map file names to {{sha256, numberOfTests}}")
    root = directory.resolve()
    for fname, meta in files.items():
        # The manifest names files in its own folder, nothing else (spec/vector-format.md#limits).
        if (not fname.endswith(".json") or fname == "manifest.json" or "/" in fname or "\\" in fname
                or fname.startswith(".") or "\0" in fname):
            raise InvalidVector(f"{mpath}: file name {fname[:80]!r}: a manifest lists plain *.json "
                                "names of files in its own folder")
        if not isinstance(meta, dict):
            raise InvalidVector(f"{mpath}: files[{fname!r}] must be an object {{sha256, numberOfTests}}")
        fpath = directory / fname
        if not fpath.exists():
            raise InvalidVector(f"{fpath}: listed in manifest.json but missing")
        if fpath.resolve().parent != root:
            raise InvalidVector(f"{fpath}: a link to a file outside {directory}; a vector folder "
                                "holds its files")
        digest = hashlib.sha256(read_bounded(fpath, MAX_VECTOR_FILE_BYTES, "a vector file")).hexdigest()
        if digest != meta.get("sha256"):
            raise InvalidVector(f"{fpath}: sha256 {digest[:16]}… does not match manifest.json "
                                f"({str(meta.get('sha256'))[:16]}…); the file was modified: restore or regenerate it")
    return manifest


@cache
def _bundled_digests() -> frozenset[str]:
    """The sha256 of every file of the package's own vector set (its manifest)."""
    try:
        manifest = json.loads(read_bounded(bundled_vectors_dir() / "manifest.json", MAX_MANIFEST_BYTES,
                                           "a manifest"))
        return frozenset(m["sha256"] for m in manifest["files"].values())
    except (InvalidVector, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def _vouched_for(path: Path, digest: str) -> bool:
    """Whether a manifest vouches for a single vector file of this sha256: the manifest.json
    beside it lists it, or the file is byte for byte one of the bundled files."""
    if digest in _bundled_digests():
        return True
    try:
        manifest = json.loads(read_bounded(path.parent / "manifest.json", MAX_MANIFEST_BYTES, "a manifest"))
        return digest in {m.get("sha256") for m in manifest["files"].values() if isinstance(m, dict)}
    except (InvalidVector, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return False


def load_vectors(paths: Sequence[Path] | None = None, validate: bool = True,
                 check_manifest: bool = True, suites: Collection[str] | None = None) -> list[VectorCase]:
    """Load vector files or folders (default: the bundled vectors), checking manifests.

    With ``suites``, a folder's files named ``<suite>.json`` are the only ones parsed (when every
    requested suite has such a file): a one-suite run does not pay for parsing 10 MB of JSON.
    Every listed file is still checked against the manifest's sha256.
    """
    targets = list(paths) if paths else [bundled_vectors_dir()]
    cases: list[VectorCase] = []
    for target in targets:
        if target.is_dir():
            if check_manifest:
                manifest = verify_manifest(target)
                files: Iterable[Path] = [target / f for f in sorted(manifest["files"])]
            else:
                files = sorted(p for p in target.glob("*.json") if p.name != "manifest.json")
            if suites:
                stems = {f.stem: f for f in files}
                if all(s in stems for s in suites):
                    files = sorted(stems[s] for s in set(suites))
            own = _bundled_digests()
            for f in files:
                digest = manifest["files"][f.name].get("sha256") if check_manifest else None
                loaded = load_file(f, validate, trusted=check_manifest and digest in own)
                if check_manifest:
                    listed = manifest["files"][f.name].get("numberOfTests")
                    if listed != len(loaded):
                        raise InvalidVector(f"{f}: holds {len(loaded)} tests, manifest.json lists {listed!r}; "
                                            "restore or regenerate the vectors")
                cases.extend(loaded)
        elif target.exists():
            cases.extend(load_file(target, validate, verified=None))
        else:
            raise InvalidVector(f"{target}: no such file or folder")
    seen: dict[str, str] = {}
    for c in cases:
        if c.id in seen:
            raise InvalidVector(f"{c.file}: case id {c.id} also appears in {seen[c.id]}; ids must be unique")
        seen[c.id] = c.file
    return cases


def live_vector_case(case: CaseInputs, case_id: str, suite: str) -> tuple[VectorCase, int, int]:
    """``case`` with its expectations from the live reference, as :func:`load_file` would give it
    from a vector file, without one in between: from the fast reference path
    (reference/_fast.py), and from mpmath for the elements it cannot settle. Also the
    element-steps each path settled (fast, mpmath). ``campaign`` and ``fuzz`` check with it; the
    files they write are mpmath's."""
    from adabelief_reference import tolerances
    from adabelief_reference._fast import fast_expected

    fx = fast_expected(case)
    assert fx is not None  # with the mpmath fallback, always a result
    spec = DTYPES[case.dtype]
    fmts = {"w": spec.master, "m": spec.compute, "s": spec.compute, "s_max": spec.compute, "w16": FLOAT16}
    expected = {}
    for name in outputs_of(case):
        kind = np.full(len(fx.value[name]), KIND_FINITE, dtype=np.int8)
        alternatives = {}
        for flat, e in fx.special[name].items():
            if len(e) == 1 and isinstance(e[0], Special):
                kind[flat] = _SPECIAL_KIND[e[0].kind]
            else:
                kind[flat] = KIND_ALTERNATIVES
                alternatives[flat] = e
        expected[name] = ExpectedArray(fmts[name], kind, fx.value[name], fx.residual[name], fx.sigma[name],
                                       alternatives)
    layout, offset = [], 0
    for k in range(len(case.steps)):
        for i, p in enumerate(case.params):
            layout.append((k, i, offset, len(p.w)))
            offset += len(p.w)
    vc = VectorCase(id=case_id, suite=suite, file=f"<{suite}>", comment="", flags=(), result="must-match",
                    case=case, tolerance={k: float(v) for k, v in tolerances()[case.dtype].items()},
                    expected=expected, layout=tuple(layout))
    return vc, fx.fast_elements, fx.mpmath_elements
