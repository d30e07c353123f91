"""Calibration-based weight quantization: GPTQ (quantize_(..., QuantConfig(method="gptq"),
calibration_data=...)).

GPTQ (Frantar et al. 2022) quantizes a layer's weight one input column at a time and spreads each
column's rounding error over the columns not yet quantized, weighted by the inverse Hessian
H = 2 X^T X of the layer's calibration inputs X, so the layer's *outputs* on data like X move as
little as possible. Here:

* H is accumulated in float64 from the layer's inputs over every calibration batch, with the
  layers before it already quantized (sequential calibration: the layer sees the inputs it will
  see at inference). Only one layer's H (K x K) and no activations are held at a time.
* dampening: H += damp * mean(diag(H)) * I (damp = 0.01); inputs that are always zero get
  diag 1 and a zero weight column.
* lazy batches of 128 columns (the updates outside a block are applied once per block).
* group-wise scales: when a group starts, its scale / zero point are those of qkernels' own int4
  quantizer (the clipping search, formats.int4) on the group's error-updated weights; per channel
  (group_size None) they are computed once from the whole weight. int8: symmetric per channel.
* act-order: columns are processed in decreasing diag(H); groups are contiguous in that order and
  the QuantLinear keeps the permutation as its input_perm (the GPTQ desc_act layout).

The result is an ordinary QuantLinear (the same formats and kernels as round-to-nearest).
Deterministic: the same model and data give the same integers.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from . import ops
from .nn import QuantLinear

DAMP = 0.01
BLOCK = 128


class _Stop(Exception):
    """Raised by the input hook to end a calibration forward once the layer has its input."""


def run_batch(model: nn.Module, batch):
    """One calibration batch through the model: a tensor, a tuple of positional args or a dict of kwargs."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def check_batches(model: nn.Module, batches) -> list:
    """The calibration batches as a list, each checked to run through the (float) model: ValueError
    naming calibration_data otherwise, before anything changes."""
    if batches is None:
        raise ValueError("calibration_data: this configuration calibrates (method 'gptq'), so quantize_ needs "
                         "calibration_data (an iterable of model inputs); got None")
    if isinstance(batches, (torch.Tensor, dict)):
        raise ValueError("calibration_data must be an iterable of batches (e.g. a list of tensors), got a single "
                         f"{type(batches).__name__}; wrap it in a list")
    try:
        batches = list(batches)
    except TypeError:
        raise ValueError(f"calibration_data must be an iterable of model inputs, got {type(batches).__name__}") from None
    if not batches:
        raise ValueError("calibration_data is empty")
    with torch.no_grad():
        for i, b in enumerate(batches):
            if not isinstance(b, (torch.Tensor, tuple, list, dict)):
                raise ValueError(f"calibration_data[{i}] must be a tensor, a tuple of positional args or a dict of "
                                 f"kwargs, got {type(b).__name__}")
            if i == 0:
                try:
                    run_batch(model, b)
                except Exception as e:  # noqa: BLE001 - any failure means the batch does not fit the model
                    raise ValueError(f"calibration_data[0]: the model cannot take this batch "
                                     f"({type(e).__name__}: {e})") from e
    return batches


def layer_hessian(model: nn.Module, layer: nn.Module, batches: list, in_features: int,
                  transform=None) -> tuple[torch.Tensor, int]:
    """2/n * sum over rows x of x^T x (float64, K x K) for the inputs `layer` receives when the
    model runs the batches (the forward stops at the layer); n the number of rows."""
    H = torch.zeros(in_features, in_features, dtype=torch.float64)
    count = [0]

    def hook(mod, args):
        x = args[0].detach().reshape(-1, in_features).double()
        if transform is not None:
            x = transform(x)
        H.addmm_(x.T, x)
        count[0] += x.shape[0]
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for b in batches:
                try:
                    run_batch(model, b)
                except _Stop:
                    pass
    finally:
        handle.remove()
    if count[0] == 0:
        raise ValueError("calibration_data never reaches this layer (no forward pass called it)")
    return H * (2.0 / count[0]), count[0]


def _group_params(w: torch.Tensor, bits: int, symmetric: bool):
    """(scale [N], zero [N]) for the columns w [N, g]: qkernels' quantizer on them (int4: the
    clipping search; int8: amax / 127)."""
    if bits == 8:
        amax = w.abs().amax(dim=1)
        return (amax / 127.0).clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(amax)
    _, scale, zp = ops.quantize_int4_weight(w.contiguous(), w.shape[1], symmetric)
    return scale[:, 0], (zp[:, 0].float() if zp is not None else torch.zeros_like(scale[:, 0]))


def _qrange(bits: int, symmetric: bool):
    if bits == 8:
        return -127.0, 127.0
    return (-8.0, 7.0) if symmetric else (0.0, 15.0)


def gptq_quantize(weight: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None, symmetric: bool,
                  act_order: bool = False, damp: float = DAMP, block: int = BLOCK):
    """GPTQ on one weight [N, K] with Hessian H [K, K] -> (q int8 [N, K] in the processing order,
    scale fp32 [N, G], zero_point int32 [N, G] or None, perm int64 [K] or None)."""
    W = weight.detach().float().clone()
    N, K = W.shape
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(K, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()
    qmin, qmax = _qrange(bits, symmetric)
    g = K if group_size is None else group_size
    G = math.ceil(K / g)
    scales = torch.empty(N, G)
    zeros = torch.empty(N, G)
    Q = torch.empty(N, K)
    if group_size is None:
        scales[:, 0], zeros[:, 0] = _group_params(W, bits, symmetric)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if group_size is not None and col % g == 0:
                # the group's params from its current (error-updated) weights: this block's part
                # from W1, the rest (a group may run past the block) from W
                grp = torch.cat([W1[:, i:], W[:, i2:col + g]], dim=1)[:, :min(g, K - col)]
                scales[:, col // g], zeros[:, col // g] = _group_params(grp, bits, symmetric)
            s, z = scales[:, col // g], zeros[:, col // g]
            w = W1[:, i]
            q = torch.clamp(torch.round(w / s) + z, qmin, qmax)
            Q[:, col] = q
            err = (w - (q - z) * s) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    zp = None if (bits == 8 or symmetric) else zeros.round().to(torch.int32)
    return Q.to(torch.int8), scales, zp, perm


def gptq_layer(model: nn.Module, layer: nn.Module, cfg, batches: list) -> QuantLinear:
    """The QuantLinear GPTQ makes of `layer` (an nn.Linear) from the model's calibration inputs."""
    H, _ = layer_hessian(model, layer, batches, layer.in_features)
    act_order = cfg.act_order
    q, scale, zp, perm = gptq_quantize(layer.weight, H, cfg.weight_bits, cfg.group_size, cfg.symmetric, act_order)
    bias = None if layer.bias is None else layer.bias.detach()
    if cfg.weight_bits == 8:
        return QuantLinear.from_int8(q, scale[:, 0], bias, act_bits=cfg.act_bits)
    return QuantLinear.from_int4(q, scale, zp, cfg.group_size, bias, act_bits=cfg.act_bits, input_perm=perm)
