"""The AdaBelief libraries this suite knows, ready configured: ``library:NAME`` targets.

``library:NAME`` runs NAME in the ``case`` configuration; ``library:NAME@defaults`` and
``library:NAME@mxnet-closest`` in the others (adapters/_common.py). Each entry says how to import
the library's class and how its options are named; its defaults are read from its signature.
The compatibility matrix (docs/compatibility.md) runs every entry against every profile.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import AdapterError
from ._common import CONFIGURATIONS, import_framework, import_without_package_init

__all__ = ["LIBRARIES", "Library", "install", "library_target"]


@dataclass(frozen=True)
class Library:
    """How to build an adapter for one library (name: its PyPI distribution)."""

    framework: str                       # "torch", "optax" or "keras": the adapter module
    load: str                            # "module:attr" of the optimizer class or factory
    family: str                          # the profile its authors' algorithm belongs to
    switches: Mapping[str, str | None] = field(default_factory=dict)
    fixed: Mapping[str, bool] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    # pip install commands (argument lists, run in order) that install it here, pinned
    pip: tuple[tuple[str, ...], ...] = ()
    notes: str = ""
    # why it does not conform to its family's profile (the reason in its expectation files)
    deviations: str = ""
    link: str = ""
    legacy_keras_base: bool = False      # import it with tf.keras.optimizers.Optimizer = legacy
    setup: str = ""                      # how it is installed where pip alone cannot (MXNet)

    @property
    def install(self) -> str:
        return self.setup or " && ".join("pip install " + " ".join(args) for args in self.pip)

    def factory(self) -> Any:
        module, _, attr = self.load.partition(":")
        try:
            if self.legacy_keras_base:
                obj: Any = _import_with_legacy_keras_base(module)
            else:
                obj = import_without_package_init(module)
        except ImportError as e:
            raise AdapterError(f"{module}: cannot import it ({' '.join(str(e).split())}); "
                               f"install it: {self.install}") from None
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def _import_with_legacy_keras_base(module: str) -> Any:
    """Import a module written for TF <= 2.10 with ``tf.keras.optimizers.Optimizer`` naming the
    legacy OptimizerV2 base while it defines its classes; the name is restored afterwards."""
    import importlib

    import tensorflow as tf

    keras_optimizers = tf.keras.optimizers
    current = keras_optimizers.Optimizer
    keras_optimizers.Optimizer = keras_optimizers.legacy.Optimizer
    try:
        return importlib.import_module(module)
    finally:
        keras_optimizers.Optimizer = current


# torch first: with torch 2.13.0 (the CPU wheel) installed, the libraries' own requirement on
# torch is satisfied; --no-deps keeps timm from pulling torchvision and a CUDA torch (GBs).
_TORCH = ("torch==2.13.0",)
LIBRARIES: dict[str, Library] = {
    "adabelief-pytorch": Library(
        "torch", "adabelief_pytorch:AdaBelief", "adabelief-pytorch",
        options={"print_change_log": False},
        pip=(_TORCH, ("--no-deps", "adabelief-pytorch==0.2.1"), ("tabulate", "colorama"))),
    "timm": Library(
        "torch", "timm.optim.adabelief:AdaBelief", "adabelief-pytorch",
        switches={"weight_decouple": "decoupled_decay"}, options={"foreach": False},
        pip=(_TORCH, ("--no-deps", "timm==1.0.31"), ("huggingface_hub", "pyyaml", "safetensors"))),
    "timm-foreach": Library(
        "torch", "timm.optim.adabelief:AdaBelief", "adabelief-pytorch",
        switches={"weight_decouple": "decoupled_decay"}, options={"foreach": True},
        pip=(_TORCH, ("--no-deps", "timm==1.0.31"), ("huggingface_hub", "pyyaml", "safetensors")),
        notes="timm's multi-tensor (foreach) path"),
    "pytorch-optimizer": Library(
        "torch", "pytorch_optimizer:AdaBelief", "adabelief-pytorch",
        switches={"amsgrad": "ams_bound"}, options={"foreach": False},
        pip=(_TORCH, ("--no-deps", "pytorch-optimizer==4.1.0")),
        deviations="with ams_bound and rectify on, its rectified step divides by the AMSGrad maximum "
                   "where adabelief-pytorch divides by s (pytorch_optimizer/optimizer/adabelief.py:203; "
                   "the catalogue's 'rectified step on the other second moment')",
        link="https://github.com/kozistr/pytorch_optimizer/blob/v4.1.0/pytorch_optimizer/optimizer/adabelief.py",
    ),
    "pytorch-optimizer-foreach": Library(
        "torch", "pytorch_optimizer:AdaBelief", "adabelief-pytorch",
        switches={"amsgrad": "ams_bound"}, options={"foreach": True},
        pip=(_TORCH, ("--no-deps", "pytorch-optimizer==4.1.0")),
        notes="pytorch-optimizer's multi-tensor (foreach) path, its default without rectify and ams_bound",
        deviations="with ams_bound and rectify on, its rectified step divides by the AMSGrad maximum "
                   "where adabelief-pytorch divides by s (pytorch_optimizer/optimizer/adabelief.py:203; "
                   "the catalogue's 'rectified step on the other second moment')",
        link="https://github.com/kozistr/pytorch_optimizer/blob/v4.1.0/pytorch_optimizer/optimizer/adabelief.py",
    ),
    "torch-optimizer": Library(
        "torch", "torch_optimizer:AdaBelief", "adabelief-pytorch",
        switches={"degenerated_to_sgd": None}, fixed={"degenerated_to_sgd": True},
        pip=(_TORCH, ("--no-deps", "torch-optimizer==0.3.0", "pytorch-ranger==0.1.1")),
        deviations="AMSGrad's epsilon accumulates in the maximum buffer (torch_optimizer/adabelief.py:"
                   "169-181); rectification starts at rho_t > 4 instead of >= 5, and its SGD fallback "
                   "has no bias correction (:199-218); it has no degenerated_to_sgd option",
        link="https://github.com/jettify/pytorch-optimizer/blob/v0.3.0/torch_optimizer/adabelief.py"),
    "optax": Library(
        "optax", "optax:adabelief", "optax",
        pip=(("optax==0.2.8", "jax[cpu]==0.10.2"),),
        deviations="XLA flushes subnormal inputs and results to zero on the CPU (the catalogue's "
                   "'XLA/TensorFlow quirk: subnormals flushed to zero'); with epsilon = 0 a flushed m "
                   "and s give 0/0 = NaN",
        link="https://github.com/google-deepmind/optax/blob/v0.2.8/optax/_src/transform.py"),
    "tensorflow-addons": Library(
        "keras", "tensorflow_addons.optimizers:AdaBelief", "tensorflow",
        pip=(("tensorflow-cpu==2.15.1", "tensorflow-addons==0.23.0"),),
        deviations="Keras keeps lr, beta1, beta2 and the decay in float32 variables even for float64 "
                   "weights (the catalogue's 'TensorFlow quirk: hyperparameters held in float32'); "
                   "epsilon = 0 becomes 1e-7 (keras.backend.epsilon()); TensorFlow flushes subnormals "
                   "on the CPU",
        link="https://github.com/tensorflow/addons/blob/v0.23.0/tensorflow_addons/optimizers/adabelief.py"),
    "adabelief-tf": Library(
        "keras", "adabelief_tf:AdaBeliefOptimizer", "tensorflow", legacy_keras_base=True,
        pip=(("tensorflow-cpu==2.15.1",), ("--no-deps", "adabelief-tf==0.2.1"), ("tabulate", "colorama")),
        notes="written for TF <= 2.10, whose tf.keras.optimizers.Optimizer was the OptimizerV2 base; "
              "imported with that name pointing at tf.keras.optimizers.legacy.Optimizer, which is "
              "that class in TF 2.15 (otherwise it cannot be constructed: no _set_hyper)",
        deviations="Keras keeps lr, beta1, beta2 and the decay in float32 variables even for float64 "
                   "weights (the catalogue's 'TensorFlow quirk: hyperparameters held in float32'); "
                   "epsilon = 0 becomes 1e-7 (keras.backend.epsilon()); TensorFlow flushes subnormals "
                   "on the CPU",
        link="https://github.com/juntang-zhuang/Adabelief-Optimizer/blob/update_0.2.0/pypi_packages/adabelief_tf0.2.1/adabelief_tf/AdaBelief_tf.py"),
}


def install(frameworks: Collection[str], python: str = sys.executable, dry_run: bool = False) -> int:
    """pip-install the pinned libraries of these frameworks into ``python``'s environment."""
    commands: list[tuple[str, ...]] = []
    for lib in LIBRARIES.values():
        if lib.framework in frameworks:
            commands += [c for c in lib.pip if c not in commands]
    for args in commands:
        cmd = [python, "-m", "pip", "install", "-q", *args]
        print(" ".join(cmd), flush=True)
        if not dry_run:
            rc = subprocess.call(cmd)
            if rc:
                return rc
    return 0


def library_target(spec: str) -> Any:
    """The adapter for ``NAME`` or ``NAME@CONFIGURATION`` (a ``library:`` target)."""
    name, _, configuration = spec.partition("@")
    configuration = configuration or "case"
    lib = LIBRARIES.get(name)
    if lib is None:
        raise AdapterError(f"library:{name}: unknown library; known: {', '.join(LIBRARIES)}")
    if configuration not in CONFIGURATIONS:
        raise AdapterError(f"library:{spec}: configuration {configuration!r}: expected one of "
                           f"{', '.join(CONFIGURATIONS)}")
    build: Callable[..., Any]
    module, extra = {"torch": ("torch", "torch"), "optax": ("optax", "optax"),
                     "keras": ("tensorflow", "tensorflow")}[lib.framework]
    import_framework(module, extra)
    if lib.framework == "torch":
        from .torch import TorchOptimizer as build
        return build(lib.factory(), profiles="all", configuration=configuration,
                     switches=lib.switches, fixed=lib.fixed, options=lib.options,
                     name=f"{name}@{configuration}")
    if lib.framework == "optax":
        from .optax import OptaxTransformation as build
        return build(lib.factory(), profiles="all", configuration=configuration,
                     name=f"{name}@{configuration}")
    if lib.framework == "keras":
        from .keras import KerasOptimizer as build
        return build(lib.factory(), profiles="all", configuration=configuration,
                     switches=lib.switches, fixed=lib.fixed, options=lib.options,
                     name=f"{name}@{configuration}")
    raise AdapterError(f"library:{name}: unknown framework {lib.framework}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m adabelief_conformance.adapters.libraries",
                                 description="Install the pinned AdaBelief libraries of some frameworks.")
    ap.add_argument("--install", required=True, metavar="FRAMEWORKS",
                    help="comma-separated: torch, optax, keras (keras needs its own venv: numpy < 2)")
    ap.add_argument("--dry-run", action="store_true", help="print the pip commands only")
    a = ap.parse_args()
    sys.exit(install(set(a.install.split(",")), dry_run=a.dry_run))
