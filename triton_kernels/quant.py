"""Triton dynamic per-token int8 quantization (the CUDA impl of qkernels::quantize_per_token_int8)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check

FLT_MIN = 1.1754943508222875e-38
RNE_MAGIC = 12582912.0  # 1.5 * 2**23: (v + M) - M rounds half to even for |v| < 2**22


@triton.jit
def _quant_per_token_kernel(
    x_ptr, q_ptr, s_ptr,          # pointers
    K,                            # sizes
    stride_xm, stride_qm,         # strides
    BLOCK_K: tl.constexpr,        # constexpr
):
    row = tl.program_id(0)
    x_row = x_ptr + row.to(tl.int64) * stride_xm
    amax = tl.zeros([BLOCK_K], dtype=tl.float32)
    nan_count = tl.zeros([BLOCK_K], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        nan_count += (x != x).to(tl.int32)
        ax = tl.abs(x)
        amax = tl.where(ax > amax, ax, amax)
    m = tl.max(amax, axis=0)
    m = tl.where(tl.sum(nan_count, axis=0) > 0, float("nan"), m)
    s = m / 127.0
    s = tl.where(s < FLT_MIN, FLT_MIN, s)          # NaN compares false and stays NaN
    tl.store(s_ptr + row, s)
    finite = (s == s) & (s < float("inf"))
    q_row = q_ptr + row.to(tl.int64) * stride_qm
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        v = tl.math.div_rn(x, s)
        r = (v + RNE_MAGIC) - RNE_MAGIC
        r = tl.minimum(tl.maximum(r, -127.0), 127.0)
        r = tl.where(finite, r, 0.0)
        tl.store(q_row + offs, r.to(tl.int8), mask=offs < K)


def quantize_per_token_int8(x: torch.Tensor):
    """x: 2-D float tensor [M, K] -> (q int8 [M, K], scale fp32 [M]); contract in qkernels.reference."""
    check(x.dim() == 2, f"x must be 2-D [M, K], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    x = x.contiguous() if x.stride(-1) != 1 else x
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.int8, device=x.device)
    s = torch.empty((M,), dtype=torch.float32, device=x.device)
    if M == 0:
        return q, s
    block = min(max(triton.next_power_of_2(K), 16), 4096)
    _quant_per_token_kernel[(M,)](x, q, s, K, x.stride(0), q.stride(0), BLOCK_K=block)
    return q, s
