"""Reference 2:4 structured sparsity: prune, compress / decompress, and the sparse GEMMs' contract.

Format (SparseLinear state_dict, ``2:4 sparse`` v1), for a weight [N, K], Kp = round_up(K, 4)
(zero-padded), one group per 4 consecutive input features:

* ``values`` [N, Kp/2] (fp32, bf16 or int8): for group g the two kept weights, in increasing
  k order: values[n, 2g] = w[n, 4g + i0], values[n, 2g+1] = w[n, 4g + i1], i0 < i1.
* ``meta`` uint8 [N, ceil(Kp/8)]: 4 bits per group, two groups per byte: group g sits in byte
  g // 2, bits 4*(g % 2) .. +3, as i0 | i1 << 2 (2-bit indices within the group).
  A group with fewer than two nonzeros still names two positions (the extra value is 0).

Pruning keeps, in each group, the two largest |w| (ties: the lower index), so a weight that is
already 2:4 comes back unchanged.
"""
from __future__ import annotations

import torch

from .quant import quantize_per_token_int8


def _groups(w: torch.Tensor) -> torch.Tensor:
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(w.shape)}")
    K = w.shape[1]
    Kp = -(-K // 4) * 4
    if Kp != K:
        w = torch.nn.functional.pad(w, (0, Kp - K))
    return w.reshape(w.shape[0], Kp // 4, 4)


def _kept_indices(wg: torch.Tensor) -> torch.Tensor:
    """[N, G, 2] ascending positions of the two largest |w| per group (stable: lower index on ties)."""
    order = torch.sort(wg.abs().float(), dim=-1, descending=True, stable=True).indices
    return order[..., :2].sort(dim=-1).values


def prune_24(weight: torch.Tensor):
    """2:4 magnitude pruning along in_features: returns (mask bool [N, K], pruned weight [N, K]).

    The mask marks the kept weights (exactly 2 per group of 4; in a last partial group, the kept
    positions may fall on padding). Fine-tune with the mask applied, then compress.
    """
    wg = _groups(weight)
    idx = _kept_indices(wg)
    mask = torch.zeros_like(wg, dtype=torch.bool).scatter_(-1, idx, True)
    mask = mask.reshape(weight.shape[0], -1)[:, : weight.shape[1]]
    return mask, torch.where(mask, weight, torch.zeros_like(weight))


def is_24(weight: torch.Tensor) -> bool:
    """True if every group of 4 along in_features holds at most two nonzeros."""
    return bool(((_groups(weight) != 0).sum(-1) <= 2).all())


def compress_24(weight: torch.Tensor):
    """Prune (keeping the two largest |w| per group) and compress: (values [N, Kp/2], meta uint8).

    values keep weight's dtype; meta packs i0 | i1 << 2 per group, two groups per byte.
    """
    wg = _groups(weight)
    idx = _kept_indices(wg)
    values = wg.gather(-1, idx).reshape(weight.shape[0], -1)
    nib = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.int32)  # [N, G]
    if nib.shape[1] % 2:
        nib = torch.nn.functional.pad(nib, (0, 1))
    meta = (nib[:, 0::2] | (nib[:, 1::2] << 4)).to(torch.uint8)
    return values.contiguous(), meta


def meta_indices(meta: torch.Tensor, groups: int) -> torch.Tensor:
    """uint8 meta -> int64 [N, groups, 2] kept positions."""
    m = meta.to(torch.int64)
    nib = torch.stack([m & 0xF, m >> 4], dim=-1).reshape(meta.shape[0], -1)[:, :groups]
    return torch.stack([nib & 3, nib >> 2], dim=-1)


def decompress_24(values: torch.Tensor, meta: torch.Tensor, K: int) -> torch.Tensor:
    """Inverse of compress_24: the dense [N, K] weight (values' dtype)."""
    N, G = values.shape[0], values.shape[1] // 2
    idx = meta_indices(meta, G)
    dense = torch.zeros(N, G, 4, dtype=values.dtype, device=values.device)
    dense.scatter_(-1, idx.to(values.device), values.reshape(N, G, 2))
    return dense.reshape(N, 4 * G)[:, :K]


def sparse24_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """Float 2:4: the exact (float64) x @ W.T of the decompressed weight, rounded once to fp32,
    plus bias in fp32, cast to x.dtype. Kernels accumulate in fp32 and agree within its bound."""
    w = decompress_24(values, meta, x.shape[1]).double()
    y = (x.double() @ w.T).float()
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(x.dtype)


def sparse24_w8a8(a: torch.Tensor, a_scale: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                  w_scale: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """int8 2:4: exact int32 sum over the kept weights, then the W8A8 epilogue
    ``((float)acc * a_scale[m]) * w_scale[n] + bias[n]``."""
    from .gemm import exact_int32, w8a8_epilogue
    w = decompress_24(values, meta, a.shape[1])
    acc = exact_int32(a.double() @ w.double().T, "sparse24_w8a8")
    return w8a8_epilogue(acc, a_scale, w_scale, bias, out_dtype)


def linear_sparse24_w8a8(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, w_scale: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    """Dynamic per-token int8 activations x int8 2:4 weights (per-channel scales); x is 2-D."""
    a, a_scale = quantize_per_token_int8(x)
    return sparse24_w8a8(a, a_scale, values, meta, w_scale, bias, x.dtype)
