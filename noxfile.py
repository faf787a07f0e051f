"""Maintainer sessions: `nox -l` lists them; `nox -s NAME -- ARGS` forwards ARGS."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "types", "vectors-check", "conformance-numpy"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (the same command as README and CI)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint with ruff."""
    session.install("ruff>=0.4")
    session.run("ruff", "check", "spec", "reference", "conformance", "tests", "examples", "noxfile.py",
                "scripts/gpu-check", *session.posargs)


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """Type-check the packages with mypy."""
    session.install("-e", ".[dev]")
    session.run("mypy", "spec", "reference", "conformance", *session.posargs)


@nox.session(name="vectors-check", python=PYTHON)
def vectors_check(session: nox.Session) -> None:
    """Prove that the committed vectors regenerate byte for byte."""
    session.install("-e", ".")
    session.run("python", "-m", "adabelief_reference.generate", "--check", *session.posargs)


@nox.session(name="vectors", python=PYTHON, default=False)
def vectors(session: nox.Session) -> None:
    """Regenerate the golden vectors (then commit them)."""
    session.install("-e", ".")
    session.run("python", "-m", "adabelief_reference.generate", *session.posargs)


@nox.session(name="conformance-numpy", python=PYTHON)
def conformance_numpy(session: nox.Session) -> None:
    """Check the bundled NumPy backend against every vector."""
    session.install("-e", ".")
    session.run("adabelief-conformance", "check", "numpy", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmark the backends side by side (ratios to a bandwidth probe)."""
    session.install("-e", ".[numba,plot]")
    session.run("adabelief-conformance", "bench", *session.posargs)


@nox.session(venv_backend="none", default=False)
def gpu(session: nox.Session) -> None:
    """GPU checks on a CUDA machine, installing nothing from the network: scripts/gpu-check
    (the gpu tests, `check cupy`, bit identity with the host build, the benchmark). Give the
    output folder after `--`; `-- OUT --quick` for the short run. Run `scripts/gpu-check
    --prepare` on a networked machine first and carry .whl/ along."""
    args = session.posargs or ["gpu-check-out"]
    session.run("python3", "scripts/gpu-check", *args, external=True)


@nox.session(python=PYTHON, default=False)
def mxnet(session: nox.Session) -> None:
    """Check the real MXNet 2.0.0b1 AdaBelief (CPU; creates .mxnet-venv on first use)."""
    session.install("-e", ".[dev]")
    if not Path(".mxnet-venv/bin/python").exists():
        session.run("bash", "examples/mxnet_adapter/setup.sh", external=True)
    adapter = ".mxnet-venv/bin/python examples/mxnet_adapter/adapter.py --mode"
    for mode in ("fused-multi", "fused-single"):
        session.run("adabelief-conformance", "check", "--profile", "mxnet", "--cmd", f"{adapter} {mode}",
                    *session.posargs)
    session.run("adabelief-conformance", "check", "--profile", "mxnet", "--cmd", f"{adapter} step",
                "--expectations", "examples/mxnet_adapter/expectations-step.json", *session.posargs)
    session.run("pytest", "-m", "slow", "tests/test_mxnet_adapter.py")


@nox.session(python=PYTHON, default=False)
def compatibility(session: nox.Session) -> None:
    """The compatibility matrix of the real AdaBelief libraries: installs them (pinned, in three
    environments), runs every row against every profile, rewrites docs/compatibility.md and
    .json. `-- --check` compares instead; `-- --only torch,optax` runs some frameworks only."""
    session.install("-e", ".")
    session.run("python", "-m", "adabelief_conformance.adapters.libraries", "--install", "torch,optax")
    args = " ".join(session.posargs)
    if "--only" not in args or "keras" in args:
        if not Path(".tf-venv/bin/python").exists():
            # TensorFlow 2.15 needs numpy < 2: an environment of its own, driven through `serve`
            session.run("python3", "-m", "venv", ".tf-venv", external=True)
            session.run(".tf-venv/bin/python", "-m", "pip", "install", "-q", "-e", ".", external=True)
            session.run(".tf-venv/bin/python", "-m", "adabelief_conformance.adapters.libraries",
                        "--install", "keras", external=True)
            session.run(".tf-venv/bin/python", "-m", "pip", "install", "-q", "pytest", external=True)
        # the Keras adapter's legacy (OptimizerV2) path, on the real TensorFlow Addons
        session.run(".tf-venv/bin/python", "-m", "pytest", "-q", "tests/test_keras_adapter.py",
                    external=True, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    if ("--only" not in args or "mxnet" in args) and not Path(".mxnet-venv/bin/python").exists():
        session.run("bash", "examples/mxnet_adapter/setup.sh", external=True)
    session.run("python", "-m", "adabelief_conformance.adapters.matrix", *session.posargs,
                env={"TF_CPP_MIN_LOG_LEVEL": "3"})
