"""GPTQ and AWQ checkpoint tensors -> the qkernels int4 format (exact: integers and scales carry over).

GPTQ (AutoGPTQ / GPTQModel "gptq" checkpoint format, 4 bits), for a linear layer y = x @ W.T:
    qweight  int32 [K/8, N]: word [i, n] holds q[k = 8i + j, n] in bits 4j .. 4j+3 (j = 0..7).
    qzeros   int32 [G, N/8]: word [g, i] holds z[g, n = 8i + j] in bits 4j .. 4j+3. The original
             ("v1", legacy) format stores z - 1 (the packer subtracted one, kernels add it back), so
             the stored nibble 15 means 16; "gptq_v2" stores z itself (legacy_zero_offset=False).
    scales   fp16 [G, N].
    g_idx    int32 [K], optional: the group of input feature k. Without act-order g_idx[k] =
             k // group_size; with act-order (desc_act) GPTQ quantized the features in a permuted
             order perm, and g_idx[perm[i]] = i // group_size.
    W[n, k] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n]
AWQ (AutoAWQ "gemm" format, 4 bits):
    qweight  int32 [K, N/8]: word [k, i] holds q[k, n = 8i + AWQ_ORDER[j]] in bits 4j .. 4j+3, with
             AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7) (the interleave its GPU kernel dequantizes in).
    qzeros   int32 [G, N/8], packed the same way (no offset).  scales fp16 [G, N].
    W[n, k] = (q[k, n] - z[k // group_size, n]) * scales[k // group_size, n]
Conversion is exact: the same integers and (fp16 -> fp32) scales, so dequantize() of the imported
QuantLinear equals the checkpoint's W. The qkernels int4 format itself: qkernels.formats.int4.
"""
from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)


def _nibbles(words: torch.Tensor) -> torch.Tensor:
    """int32 [..., W] -> [..., W, 8]: nibble j of each word (bits 4j .. 4j+3)."""
    return (words.to(torch.int32)[..., None] >> _SHIFTS.to(words.device)) & 0xF


def _check_int32(name, t, dim):
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int32 or t.dim() != dim:
        raise TypeError(f"{name} must be an int32 tensor with {dim} dims, got "
                        f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")


def _group_size(K: int, G: int) -> int | None:
    if G < 1 or K % G:
        raise ValueError(f"scales has {G} groups, which does not divide in_features={K}")
    return None if G == 1 else K // G


def gptq_to_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 g_idx: torch.Tensor | None = None, legacy_zero_offset: bool = True):
    """GPTQ tensors -> (q [N, K] int8 in [0, 15], scale fp32 [N, G], zero_point int32 [N, G],
    group_size, input_perm or None) for QuantLinear.from_int4.

    With act-order the input features are permuted so every group is contiguous; input_perm is
    that permutation (None when g_idx is absent or already k // group_size).
    """
    _check_int32("qweight", qweight, 2)
    _check_int32("qzeros", qzeros, 2)
    K, N = qweight.shape[0] * 8, qweight.shape[1]
    if scales.dim() != 2 or scales.shape[1] != N:
        raise ValueError(f"scales must have shape [G, {N}], got {tuple(scales.shape)}")
    G = scales.shape[0]
    gs = _group_size(K, G)
    if tuple(qzeros.shape) != (G, N // 8) or N % 8:
        raise ValueError(f"qzeros must have shape [{G}, {N // 8}] (N={N} a multiple of 8), got {tuple(qzeros.shape)}")
    q = _nibbles(qweight).permute(0, 2, 1).reshape(K, N)           # [K/8, N, 8] -> [K, N]
    z = _nibbles(qzeros).reshape(G, N)
    if legacy_zero_offset:
        z = z + 1
    if int(z.max()) > 15:
        raise ValueError("qzeros holds a zero point of 16 (stored nibble 15 in the legacy GPTQ format); "
                         "int4 with a zero point in [0, 15] cannot represent it")
    perm = None
    step = gs or K
    plain = torch.arange(K, device=q.device) // step
    if g_idx is not None:
        g_idx = torch.as_tensor(g_idx)
        if g_idx.dtype.is_floating_point or g_idx.dtype == torch.bool:
            raise TypeError(f"g_idx must be an integer tensor (group index per input feature), got {g_idx.dtype}")
        g_idx = g_idx.to(q.device, torch.int64)
        if g_idx.shape != (K,) or int(g_idx.min()) < 0 or int(g_idx.max()) >= G:
            raise ValueError(f"g_idx must be [{K}] group indices in [0, {G}), got shape {tuple(g_idx.shape)}")
        if not torch.equal(g_idx, plain):
            perm = torch.argsort(g_idx, stable=True)
            if not torch.equal(g_idx[perm], plain):
                raise ValueError(f"g_idx does not put exactly {step} input features in each group")
            q = q[perm]
    return (q.T.contiguous().to(torch.int8), scales.T.float().contiguous(), z.T.contiguous().to(torch.int32),
            gs, perm)


def awq_to_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor):
    """AWQ (GEMM) tensors -> (q [N, K] int8 in [0, 15], scale fp32 [N, G], zero_point int32 [N, G],
    group_size) for QuantLinear.from_int4."""
    _check_int32("qweight", qweight, 2)
    _check_int32("qzeros", qzeros, 2)
    K, N = qweight.shape[0], qweight.shape[1] * 8
    if scales.dim() != 2 or scales.shape[1] != N:
        raise ValueError(f"scales must have shape [G, {N}], got {tuple(scales.shape)}")
    G = scales.shape[0]
    gs = _group_size(K, G)
    if tuple(qzeros.shape) != (G, N // 8):
        raise ValueError(f"qzeros must have shape [{G}, {N // 8}], got {tuple(qzeros.shape)}")
    # nibble j of word i holds column 8i + AWQ_ORDER[j]: scatter back to natural order
    inv = torch.empty(8, dtype=torch.int64)
    inv[list(AWQ_ORDER)] = torch.arange(8)
    q = _nibbles(qweight)[..., inv].reshape(K, N)
    z = _nibbles(qzeros)[..., inv].reshape(G, N)
    return q.T.contiguous().to(torch.int8), scales.T.float().contiguous(), z.T.contiguous().to(torch.int32), gs
