"""The 2:4 sparse weight format (SparseLinear state_dict) and production pruning / compression;
qkernels.reference holds the independent oracle the tests compare them with.

For a weight [N, K], Kp = round_up(K, 4) (zero-padded), one group per 4 consecutive inputs:

* ``values`` [N, Kp/2] (fp32, bf16 or int8): for group g the two kept weights, in increasing k
  order: values[n, 2g] = w[n, 4g + i0], values[n, 2g+1] = w[n, 4g + i1], i0 < i1.
* ``meta`` uint8 [N, ceil(Kp/8)]: 4 bits per group, two groups per byte: group g sits in byte
  g // 2, bits 4*(g % 2) .. +3, as i0 | i1 << 2 (2-bit positions within the group). A group with
  fewer than two nonzeros still names two positions (the extra value is 0).

Pruning keeps the two largest |w| of each group (ties: the lower index), so a weight that is
already 2:4 comes back unchanged.
"""
from __future__ import annotations

import torch


def _groups(w: torch.Tensor) -> torch.Tensor:
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(w.shape)}")
    pad = -w.shape[1] % 4
    return torch.nn.functional.pad(w, (0, pad)).reshape(w.shape[0], -1, 4)


def _kept(wg: torch.Tensor) -> torch.Tensor:
    """bool [N, G, 4]: the two largest |w| of each group, the lower index first on ties. Element i
    ranks below j when |w_j| > |w_i|, or they are equal and j < i; the two of rank 0 and 1 stay."""
    a = wg.abs().float()
    i = torch.arange(4, device=wg.device)
    beats = (a[..., None, :] > a[..., :, None]) | ((a[..., None, :] == a[..., :, None]) & (i[None, :] < i[:, None]))
    return beats.sum(-1) < 2  # [.., i, j]: does j beat i


def prune_24(weight: torch.Tensor):
    """2:4 magnitude pruning along in_features: returns (mask bool [N, K], pruned weight [N, K]).

    The mask marks the kept weights (exactly 2 per group of 4; in a last partial group, the kept
    positions may fall on padding). Fine-tune with the mask applied, then compress."""
    mask = _kept(_groups(weight)).reshape(weight.shape[0], -1)[:, : weight.shape[1]]
    return mask, torch.where(mask, weight, torch.zeros_like(weight))


def is_24(weight: torch.Tensor) -> bool:
    """True if every group of 4 along in_features holds at most two nonzeros."""
    return bool(((_groups(weight) != 0).sum(-1) <= 2).all())


def compress_24(weight: torch.Tensor):
    """Prune (keeping the two largest |w| per group) and compress: (values [N, Kp/2] in weight's
    dtype, meta uint8 [N, ceil(Kp/8)])."""
    wg = _groups(weight)
    # the kept positions, ascending: a stable sort puts the kept (key 0) first in index order
    idx = torch.sort((~_kept(wg)).to(torch.uint8), dim=-1, stable=True).indices[..., :2]
    values = wg.gather(-1, idx).reshape(weight.shape[0], -1)
    nib = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.uint8)
    if nib.shape[1] % 2:
        nib = torch.cat([nib, nib.new_zeros(nib.shape[0], 1)], dim=1)
    return values.contiguous(), nib[:, 0::2] | (nib[:, 1::2] << 4)
