"""The real MXNet 2.0.0b1 AdaBelief, answering the conformance protocol (spec/protocol.md).

Run it in the environment made by ``setup.sh`` (mxnet==2.0.0b1 needs numpy<1.24)::

    adabelief-conformance check --profile mxnet \\
        --cmd ".mxnet-venv/bin/python examples/mxnet_adapter/adapter.py --mode fused-multi"

Modes (the three code paths of ``mxnet.optimizer.adabelief.AdaBelief``):

``fused-multi``
    ``use_fused_step=True`` with ``MXNET_OPTIMIZER_AGGREGATION_SIZE=4`` (MXNet's default):
    ``fused_step`` calls the multi-tensor kernel ``multi_adabelief_update`` on up to 4 tensors.
``fused-single``
    ``use_fused_step=True`` with ``MXNET_OPTIMIZER_AGGREGATION_SIZE=1``: one
    ``adabelief_update`` call per tensor.
``step``
    ``use_fused_step=False``: the Python ``step()``, separate NDArray operations.

Every mode drives the optimizer as ``gluon.Trainer`` does: ``create_state_multi_precision`` once
per parameter, then one ``update_multi_precision`` call per step with the indices, weights,
gradients and states of *all* parameters at once (so the multi-tensor kernel aggregates them).
For ``float16-mp`` the weight is float16 and ``multi_precision=True``: MXNet keeps a float32
master copy in ``state[0]`` and the (mean, var) pair in ``state[1]``, updates the master with the
float32 kernel (not the ``mp_*`` kernels: ``update_multi_precision`` casts the gradient itself)
and casts the master back into the float16 weight.

The fused kernels reject float64 weights (their scalar inputs are float32: "Incompatible attr in
node _multi_adabelief_update at 4-th input: expected float64, got float32"), so the fused modes
declare float32 and float16-mp only; ``step`` also declares float64.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from adabelief_conformance import CaseSkipped, ParamResult, RunRequest
from adabelief_conformance._subprocess import serve

MODES = {
    # mode: (use_fused_step, MXNET_OPTIMIZER_AGGREGATION_SIZE, dtypes it supports)
    "fused-multi": (True, "4", ("float32", "float16-mp")),
    "fused-single": (True, "1", ("float32", "float16-mp")),
    "step": (False, "4", ("float32", "float64", "float16-mp")),
}


class MXNetAdaBelief:
    """:class:`adabelief_conformance.Implementation` backed by ``mxnet.optimizer.AdaBelief``."""

    profiles: tuple[str, ...] = ("mxnet",)

    def __init__(self, mode: str, flush_denormals: bool = False, all_profiles: bool = False) -> None:
        fused, aggregation, dtypes = MODES[mode]
        # AdaBelief.__init__ reads the variable (its aggregate_num kwarg is ignored), so it must
        # be set before any optimizer exists; setting it before importing mxnet is simplest.
        os.environ["MXNET_OPTIMIZER_AGGREGATION_SIZE"] = aggregation
        import mxnet as mx

        # Importing mxnet turns on flush-to-zero and denormals-are-zero for its CPU operators
        # (mxnet/base.py calls MXSetFlushDenorms(True)): subnormal gradients, moments and
        # updates become 0, which the spec forbids. mx.util.set_flush_denorms(False) is MXNet's
        # documented switch for full IEEE 754 behaviour; --denormals flush keeps the default.
        mx.util.set_flush_denorms(flush_denormals)

        self._mx = mx
        self._fused = fused
        # --profiles all (the compatibility matrix): MXNet runs every profile's cases it can
        # express; it has none of the other libraries' switches and no eps_root.
        self._switches = None
        if all_profiles:
            from adabelief_reference import profile_names

            from adabelief_conformance.adapters._common import SwitchSet

            self.profiles = tuple(profile_names())
            self._switches = SwitchSet("MXNet", {}, {}, {}, "case")
        self.mode = mode
        self.dtypes = dtypes
        self.name = f"mxnet-adabelief[{mode}{',ftz' if flush_denormals else ''}]"
        self.version = f"mxnet {mx.__version__}, numpy {np.__version__}"

    def run(self, request: RunRequest) -> list[list[ParamResult]]:
        mx = self._mx
        hp = request.hyperparameters
        mp = request.dtype == "float16-mp"
        if self._switches is not None:
            from adabelief_conformance.adapters._common import inexpressible_inputs

            reason = inexpressible_inputs(request, "MXNet", rescale=True, clip=True)
            if reason:
                raise CaseSkipped(reason)
            self._switches.values(request)
        opt = mx.optimizer.AdaBelief(
            learning_rate=hp.learning_rate,
            beta1=hp.beta1,
            beta2=hp.beta2,
            epsilon=hp.epsilon,
            correct_bias=hp.correct_bias,
            use_fused_step=self._fused,
            wd=hp.wd,
            rescale_grad=hp.rescale_grad,
            clip_gradient=hp.clip_gradient,
            multi_precision=mp,
        )
        # set_lr_mult/set_wd_mult replace the whole table: one call with every index.
        opt.set_lr_mult({p.index: p.lr_mult for p in request.params})
        opt.set_wd_mult({p.index: p.wd_mult for p in request.params})

        indices = [p.index for p in request.params]
        weights: list[Any] = []
        states: list[Any] = []
        for p in request.params:
            # The request's arrays are already in the case's formats (w: master dtype).
            w = mx.nd.array(p.w, dtype=np.float16 if mp else p.w.dtype)
            state = opt.create_state_multi_precision(p.index, w)
            # create_state_multi_precision copied the float16 weight into the master, which
            # loses the master's extra bits: overwrite it with the case's float32 master.
            master, (mean, var) = (state[0], state[1]) if mp else (w, state)
            master[:] = mx.nd.array(p.w, dtype=p.w.dtype)
            mean[:] = mx.nd.array(p.m, dtype=p.m.dtype)
            var[:] = mx.nd.array(p.s, dtype=p.s.dtype)
            # The count of updates already applied; _update_count adds 1 before using it.
            opt._index_update_count[p.index] = p.t
            weights.append(w)
            states.append(state)

        results: list[list[ParamResult]] = []
        for step in request.steps:
            # fused_step turns a float rescale_grad into a float32 NDArray (then read by the
            # kernel's skip rule); step() multiplies by it as a Python float.
            opt.rescale_grad = step.rescale_grad
            # Fresh gradients every step: step() scales them in place and fused paths cast them.
            grads = [mx.nd.array(g, dtype=g.dtype) for g in step.grads]
            opt.update_multi_precision(indices, weights, grads, states)
            results.append([_read(w, s, mp) for w, s in zip(weights, states)])
        return results


def _read(weight: Any, state: Any, mp: bool) -> ParamResult:
    """numpy copies of the state after a step; for float16-mp ``w`` is the float32 master and
    ``w16`` the float16 weight the model sees."""
    if mp:
        master, (mean, var) = state
        return ParamResult(master.asnumpy(), mean.asnumpy(), var.asnumpy(), weight.asnumpy())
    mean, var = state
    return ParamResult(weight.asnumpy(), mean.asnumpy(), var.asnumpy())


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="fused-multi")
    ap.add_argument("--denormals", choices=("ieee", "flush"), default="ieee",
                    help="ieee: honour subnormals (mx.util.set_flush_denorms(False)); flush: "
                         "MXNet's default flush-to-zero / denormals-are-zero")
    ap.add_argument("--profiles", choices=("mxnet", "all"), default="mxnet",
                    help="mxnet: declare the mxnet profile only; all: every profile, skipping the "
                         "cases MXNet cannot express (the compatibility matrix)")
    args = ap.parse_args(argv)
    # stdout carries protocol messages only, but MXNet (C++ logging, the optimizer's print())
    # may write to it: keep the real stdout for the protocol and point fd 1 at stderr.
    protocol_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    impl = MXNetAdaBelief(args.mode, args.denormals == "flush", args.profiles == "all")
    serve(impl, stdout=protocol_out, homepage="https://github.com/apache/mxnet")


if __name__ == "__main__":
    main()
