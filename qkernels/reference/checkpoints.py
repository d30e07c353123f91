"""Reference packers for GPTQ and AWQ checkpoint tensors, written from the published formats
(see qkernels.formats for the layouts): slow, loop-per-nibble, and used to test the importers."""
from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 values held in int64 -> the int32 bit pattern checkpoints store."""
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


def pack_gptq(q: torch.Tensor, zero_point: torch.Tensor, scale: torch.Tensor, g_idx: torch.Tensor,
              legacy_zero_offset: bool = True):
    """q [N, K] in [0, 15] (input features in their original order), zero_point / scale [N, G],
    g_idx [K] -> (qweight int32 [K/8, N], qzeros int32 [G, N/8], scales fp16 [G, N], g_idx int32).

    qweight[i, n] holds q[n, 8i + j] in bits 4j..4j+3; qzeros[g, i] holds z[8i + j, g] (minus one
    in the legacy format, as AutoGPTQ's packer wrote it) in bits 4j..4j+3.
    """
    N, K = q.shape
    G = scale.shape[1]
    qweight = torch.zeros(K // 8, N, dtype=torch.int64)
    for i in range(K // 8):
        for j in range(8):
            qweight[i] |= q[:, 8 * i + j].long() << (4 * j)
    z = zero_point.long() - (1 if legacy_zero_offset else 0)
    qzeros = torch.zeros(G, N // 8, dtype=torch.int64)
    for i in range(N // 8):
        for j in range(8):
            qzeros[:, i] |= (z[8 * i + j, :] & 0xF) << (4 * j)
    return _to_int32(qweight), _to_int32(qzeros), scale.T.half().contiguous(), g_idx.to(torch.int32)


def pack_awq(q: torch.Tensor, zero_point: torch.Tensor, scale: torch.Tensor):
    """q [N, K] in [0, 15], zero_point / scale [N, G] -> (qweight int32 [K, N/8],
    qzeros int32 [G, N/8], scales fp16 [G, N]); word i of a row holds column 8i + AWQ_ORDER[j]
    in bits 4j..4j+3 (AutoAWQ's WQLinear_GEMM.from_linear)."""
    N, K = q.shape
    G = scale.shape[1]
    qt, zt = q.T.long(), zero_point.T.long()  # [K, N], [G, N]
    qweight = torch.zeros(K, N // 8, dtype=torch.int64)
    qzeros = torch.zeros(G, N // 8, dtype=torch.int64)
    for i in range(N // 8):
        for j in range(8):
            qweight[:, i] |= qt[:, 8 * i + AWQ_ORDER[j]] << (4 * j)
            qzeros[:, i] |= zt[:, 8 * i + AWQ_ORDER[j]] << (4 * j)
    return _to_int32(qweight), _to_int32(qzeros), scale.T.half().contiguous()
