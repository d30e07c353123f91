"""Mixed precision: plan_mixed_precision picks a configuration per layer from measured sensitivity
under an average-bits budget; quantize_(model, plan, calibration_data=...) applies the plan.

Sensitivity of a layer to a candidate: the relative squared error of the model's output on the
calibration batches when only that layer is converted (round to nearest for every candidate: a
GPTQ candidate is measured by its RTN form, which bounds it from above). The plan starts every
layer at its most accurate candidate and then, while the parameter-weighted average of weight bits
over the candidate layers is above the budget (float counts as 16), takes the downgrade that adds
the least error per bit saved. The model itself is left unchanged.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .calibration import check_batches, run_batch
from .quantize import QuantConfig, _plan, as_linear, set_module


def _output(out) -> torch.Tensor:
    """The tensor a model returns (logits / last_hidden_state of a transformers output, the first
    element of a tuple, the first value of a dict)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("logits", "last_hidden_state"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out:
        return _output(out[0])
    raise ValueError(f"cannot find the output tensor in a {type(out).__name__}")


def _bits(cfg) -> int:
    return 16 if cfg is None else cfg.weight_bits


def plan_mixed_precision(model: nn.Module, calibration_data, candidates, max_avg_bits: float) -> dict:
    """{fully qualified name: QuantConfig or None} for every convertible linear layer, chosen by
    measured sensitivity so that the parameter-weighted average weight bits of those layers is at
    most max_avg_bits (float = 16); the model is left unchanged. ValueError when no assignment of
    the candidates fits the budget."""
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError(f"candidates must be a non-empty list of QuantConfig (or None for float), got {candidates!r}")
    for i, c in enumerate(candidates):
        if c is not None and not isinstance(c, QuantConfig):
            raise TypeError(f"candidates[{i}] must be a QuantConfig or None, got {type(c).__name__}")
    if isinstance(max_avg_bits, bool) or not isinstance(max_avg_bits, (int, float)) or max_avg_bits <= 0:
        raise ValueError(f"max_avg_bits must be a positive number, got {max_avg_bits!r}")
    batches = check_batches(model, calibration_data)
    layers, _ = _plan(model, QuantConfig(), QuantConfig, None)  # the convertible layers, tied ones excluded
    for m, _, fqns in layers:
        for c in candidates:
            if c is not None:
                c.check_layer(as_linear(m))
    with torch.no_grad():
        refs = [_output(run_batch(model, b)).float() for b in batches]
        norm = sum(float(r.square().sum()) for r in refs) or 1.0
        err: dict[tuple[int, int], float] = {}
        for li, (m, _, fqns) in enumerate(layers):
            for ci, c in enumerate(candidates):
                if c is None:
                    err[li, ci] = 0.0
                    continue
                rtn = dataclasses.replace(c, method="rtn", act_order=False)
                set_module(model, fqns, rtn.convert(as_linear(m)))
                try:
                    err[li, ci] = sum(float((_output(run_batch(model, b)).float() - r).square().sum())
                                      for b, r in zip(batches, refs)) / norm
                finally:
                    set_module(model, fqns, m)
    sizes = [as_linear(m).weight.numel() for m, _, _ in layers]
    total = sum(sizes)
    choice = [min(range(len(candidates)), key=lambda ci: (err[li, ci], -_bits(candidates[ci])))
              for li in range(len(layers))]

    def avg_bits():
        return sum(_bits(candidates[choice[li]]) * sizes[li] for li in range(len(layers))) / total

    while avg_bits() > max_avg_bits + 1e-9:
        best = None
        for li in range(len(layers)):
            here = _bits(candidates[choice[li]])
            for ci, c in enumerate(candidates):
                saved = (here - _bits(c)) * sizes[li]
                if saved <= 0:
                    continue
                cost = (err[li, ci] - err[li, choice[li]]) / saved
                if best is None or cost < best[0]:
                    best = (cost, li, ci)
        if best is None:
            lowest = min(_bits(c) for c in candidates)
            raise ValueError(f"max_avg_bits={max_avg_bits} cannot be met by these candidates (the fewest bits "
                             f"they give is {lowest})")
        choice[best[1]] = best[2]
    return {fqn: candidates[choice[li]] for li, (_, _, fqns) in enumerate(layers) for fqn in fqns}
