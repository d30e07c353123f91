"""Calibration: GPTQ, AWQ, SmoothQuant and static activation scales (quantize_(..., QuantConfig(...),
calibration_data=...)).

Every calibrated layer is converted in model order, on the inputs it receives with the layers
before it already quantized; a forward stops at the layer being calibrated (hooks), and only that
layer's statistics are held: per-channel max and mean of |x| over all rows, the first MAX_ROWS
input rows (for the AWQ search and the static observers), or GPTQ's Hessian.

* SmoothQuant (smooth_alpha, act_bits=8): s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha); the layer
  computes (x / s) @ Q(W * s).T, the division being the kernels' input_scale = 1 / s.
* AWQ (method "awq"): s = mean|x|^a (normalized by sqrt(max * min)) for a on a grid of 20, plus
  s = 1; the a whose Q(W * s) gives the least squared output error on the captured rows wins.
* Static activation scales (act_scale "static", act_bits=8): one per-tensor scale for the layer's
  (smoothed) inputs from an observer: "minmax" (max |x| over all rows), "percentile" (the 99.999th
  percentile of |x|), "mse" (the clipping threshold with the least quantization error) or "kl"
  (TensorRT's entropy calibration: the threshold whose 128-level quantized histogram of |x| has the
  least KL divergence from the 2048-bin reference).

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
MAX_ROWS = 8192  # input rows kept per layer for the AWQ search and the observers
AWQ_GRID = 20
PERCENTILE = 99.999  # onnxruntime's default; 99.99 clips the outlier channels of transformer activations
KL_BINS, KL_LEVELS = 2048, 128


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
        raise ValueError("calibration_data: this configuration calibrates (method 'gptq' / 'awq', act_scale "
                         "'static' or smooth_alpha), so quantize_ needs calibration_data (an iterable of model "
                         "inputs); got None")
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


def feed_layer(model: nn.Module, layer: nn.Module, batches: list, in_features: int, consume) -> int:
    """Run the batches through the model up to `layer` (each forward stops there) and give each
    batch's layer input, as rows [n, in_features], to consume(x); returns the number of rows."""
    count = [0]

    def hook(mod, args):
        x = args[0].detach().reshape(-1, in_features)
        consume(x)
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
    return count[0]


def layer_hessian(model: nn.Module, layer: nn.Module, batches: list, in_features: int,
                  transform=None) -> tuple[torch.Tensor, int]:
    """2/n * sum over rows x of x^T x (float64, K x K) for the inputs `layer` receives when the
    model runs the batches (transform: applied to each row first); n the number of rows."""
    acc = {}

    def add(x):
        x = x.double()
        if transform is not None:
            x = transform(x)
        if "H" not in acc:  # on the layer's device
            acc["H"] = torch.zeros(in_features, in_features, dtype=torch.float64, device=x.device)
        acc["H"].addmm_(x.T, x)

    n = feed_layer(model, layer, batches, in_features, add)
    return acc["H"] * (2.0 / n), n


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
    H += damp * torch.mean(torch.diag(H)) * torch.eye(K, dtype=H.dtype, device=H.device)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()
    qmin, qmax = _qrange(bits, symmetric)
    g = K if group_size is None else group_size
    G = math.ceil(K / g)
    scales = torch.empty(N, G, device=W.device)
    zeros = torch.empty(N, G, device=W.device)
    Q = torch.empty(N, K, device=W.device)
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


# ---- statistics of a layer's inputs ------------------------------------------------------------
class LayerStats:
    """A layer's calibration inputs: per-channel max and mean of |x| over every row, and the first
    MAX_ROWS rows (float32)."""

    def __init__(self, in_features: int):
        self.amax = torch.zeros(in_features)  # moved to the inputs' device by the first add
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.n = 0
        self.rows: list[torch.Tensor] = []
        self.kept = 0

    def add(self, x: torch.Tensor) -> None:
        if self.amax.device != x.device:  # statistics live on the layer's device
            self.amax, self.abs_sum = self.amax.to(x.device), self.abs_sum.to(x.device)
        a = x.abs()
        self.amax = torch.maximum(self.amax, a.amax(dim=0))
        self.abs_sum += a.double().sum(dim=0)
        self.n += x.shape[0]
        if self.kept < MAX_ROWS:
            self.rows.append(x[: MAX_ROWS - self.kept].clone())
            self.kept += self.rows[-1].shape[0]

    @property
    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(self.n, 1)).float()

    @property
    def sample(self) -> torch.Tensor:
        return torch.cat(self.rows)


def layer_stats(model: nn.Module, layer: nn.Module, batches: list, in_features: int) -> LayerStats:
    """The statistics of the inputs `layer` receives when the model runs the batches."""
    stats = LayerStats(in_features)
    feed_layer(model, layer, batches, in_features, lambda x: stats.add(x.float()))
    return stats


# ---- quantized weights as floats ---------------------------------------------------------------
def fake_quantize_weight(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """dequantize(quantize(w)) with QuantLinear.from_float's quantizer (int8 per channel; int4 with
    the per-group clipping search)."""
    from .formats import unpack_nibbles
    with torch.no_grad():
        w = w.detach().float()
        if bits == 8:
            q, s = ops.quantize_per_token_int8(w)
            return q.float() * s[:, None]
        N, K = w.shape
        g = K if group_size is None else group_size
        qw, scale, zp = ops.quantize_int4_weight(w, group_size, symmetric)
        q = unpack_nibbles(qw, K, signed=symmetric).float()
        idx = torch.arange(K, device=w.device) // g
        z = 0.0 if zp is None else zp.float()[:, idx]
        return (q - z) * scale[:, idx]


# ---- SmoothQuant and AWQ scales ----------------------------------------------------------------
def smoothquant_scales(weight: torch.Tensor, act_amax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha) (each clamped to >= 1e-5)."""
    w_amax = weight.detach().float().abs().amax(dim=0).clamp_min(1e-5)
    return (act_amax.clamp_min(1e-5).pow(alpha) / w_amax.pow(1 - alpha)).clamp_min(1e-5)


def awq_scales(weight: torch.Tensor, stats: LayerStats, bits: int, group_size: int | None,
               symmetric: bool) -> torch.Tensor:
    """The activation-aware per-channel scale s (the layer then computes (x / s) @ Q(W * s).T)."""
    W = weight.detach().float()
    x = stats.sample
    y = x @ W.T
    best_loss, best = None, torch.ones(W.shape[1], device=W.device)
    candidates = [torch.ones(W.shape[1], device=W.device)]
    mean = stats.mean_abs.clamp_min(1e-8)
    for i in range(AWQ_GRID):
        s = mean.pow(i / AWQ_GRID).clamp_min(1e-4)
        candidates.append(s / (s.max() * s.min()).sqrt())
    for s in candidates:
        wq = fake_quantize_weight(W * s[None, :], bits, group_size, symmetric)
        loss = float((y - (x / s[None, :]) @ wq.T).square().mean())
        if best_loss is None or loss < best_loss:
            best_loss, best = loss, s
    return best


# ---- static activation scales -------------------------------------------------------------------
def _kl_threshold(a: torch.Tensor, amax: float) -> float:
    """TensorRT entropy calibration on |x| (a: flattened |x| samples): over thresholds of i bins of a
    KL_BINS histogram (i >= KL_LEVELS), the reference P is the first i bins with the clipped mass on
    the last, Q merges the i bins into KL_LEVELS levels spread evenly over each level's nonzero bins;
    the threshold of least KL(P || Q) wins."""
    hist = torch.histc(a, bins=KL_BINS, min=0.0, max=amax).double().cpu()  # small: searched on the CPU
    tail = hist.flip(0).cumsum(0).flip(0)  # tail[i] = sum of hist[i:]
    best_kl, best_i = None, KL_BINS
    for i in range(KL_LEVELS, KL_BINS + 1):
        ref = hist[:i]
        p = ref.clone()
        if i < KL_BINS:
            p[-1] += tail[i]
        level = torch.div(torch.arange(i) * KL_LEVELS, i, rounding_mode="floor")
        nz = (ref > 0).double()
        mass = torch.zeros(KL_LEVELS, dtype=torch.float64).index_add_(0, level, ref)
        count = torch.zeros(KL_LEVELS, dtype=torch.float64).index_add_(0, level, nz)
        q = nz * (mass / count.clamp_min(1))[level]
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        mask = p > 0
        pn, qn = p[mask] / ps, (q[mask] / qs).clamp_min(1e-12)
        kl = float((pn * (pn / qn).log()).sum())
        if best_kl is None or kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * (amax / KL_BINS)


def observe(stats: LayerStats, input_scale: torch.Tensor | None, observer: str) -> float:
    """The static per-tensor int8 scale of the layer's (smoothed) inputs under `observer`."""
    t = torch.ones_like(stats.amax) if input_scale is None else input_scale.float()
    amax = float((stats.amax * t).max())
    if amax == 0.0:
        return 1.0
    if observer == "minmax":
        return amax / 127.0
    x = stats.sample * t[None, :]
    a = x.abs().flatten()
    if a.numel() > 4_000_000:  # a deterministic, evenly spaced sample
        a = a[:: -(-a.numel() // 4_000_000)]
    if observer == "percentile":
        return float(torch.quantile(a, PERCENTILE / 100.0)) / 127.0 or amax / 127.0
    if observer == "mse":
        best_err, best_s = None, amax / 127.0
        for r in torch.linspace(0.2, 1.0, 81).tolist():
            s = amax * r / 127.0
            err = float((torch.round(x / s).clamp(-127, 127) * s - x).square().sum())
            if best_err is None or err < best_err:
                best_err, best_s = err, s
        return best_s
    if observer == "kl":
        return _kl_threshold(a, amax) / 127.0
    raise ValueError(f"observer must be one of minmax, percentile, mse, kl; got {observer!r}")


# ---- one calibrated layer -----------------------------------------------------------------------
def calibrated_layer(model: nn.Module, layer: nn.Module, cfg, batches: list) -> QuantLinear:
    """The QuantLinear `cfg` makes of `layer` (an nn.Linear) from the model's calibration inputs:
    smoothing (AWQ or SmoothQuant), then GPTQ or round to nearest on W * s, and a static activation
    scale from the observer."""
    K = layer.in_features
    W = layer.weight.detach().float()
    bias = None if layer.bias is None else layer.bias.detach()
    stats = None
    if cfg.method == "awq" or cfg.smooth_alpha is not None or cfg.act_scale == "static":
        stats = layer_stats(model, layer, batches, K)
    s = None
    if cfg.method == "awq":
        s = awq_scales(W, stats, cfg.weight_bits, cfg.group_size, cfg.symmetric)
    elif cfg.smooth_alpha is not None:
        s = smoothquant_scales(W, stats.amax, cfg.smooth_alpha)
    t = None if s is None else 1.0 / s  # the kernels' input_scale
    act = observe(stats, t, cfg.observer) if cfg.act_scale == "static" else None
    if cfg.method != "gptq":
        return QuantLinear.from_float(layer, cfg.weight_bits, cfg.act_bits, cfg.group_size, cfg.symmetric,
                                      input_scale=t, act_scale=act)
    H, _ = layer_hessian(model, layer, batches, K, transform=None if t is None else (lambda x: x * t.double()))
    w = W if s is None else W * s[None, :]
    q, scale, zp, perm = gptq_quantize(w, H, cfg.weight_bits, cfg.group_size, cfg.symmetric, cfg.act_order)
    if t is not None and perm is not None:
        t = t[perm]  # input_scale is in the stored (permuted) column order
    if cfg.weight_bits == 8:
        return QuantLinear.from_int8(q, scale[:, 0], bias, act_bits=cfg.act_bits, input_scale=t, act_scale=act)
    return QuantLinear.from_int4(q, scale, zp, cfg.group_size, bias, act_bits=cfg.act_bits, input_perm=perm,
                                 input_scale=t, act_scale=act)
