"""Triton int8 activation quantization: per token or with a static scale, after the optional
smoothing multiply (the CUDA impl of qkernels::quantize_per_token_int8 and the A8 linears' preparation)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check

FLT_MIN = 1.1754943508222875e-38
RNE_MAGIC = 12582912.0  # 1.5 * 2**23: (v + M) - M rounds half to even for |v| < 2**22


@triton.jit
def _quant_per_token_kernel(
    x_ptr, q_ptr, s_ptr, sm_ptr, act_ptr,  # pointers (sm: input_scale [K]; act: the static scale [1])
    K,                                     # sizes
    stride_xm, stride_qm,                  # strides
    BLOCK_K: tl.constexpr, HAS_SMOOTH: tl.constexpr, STATIC: tl.constexpr,
):
    row = tl.program_id(0)
    x_row = x_ptr + row.to(tl.int64) * stride_xm
    amax = tl.zeros([BLOCK_K], dtype=tl.float32)
    nan_count = tl.zeros([BLOCK_K], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        if HAS_SMOOTH:  # x * input_scale, one fp32 multiply (the reference's smooth_activations)
            x = x * tl.load(sm_ptr + offs, mask=offs < K, other=0.0)
        nan_count += (x != x).to(tl.int32)
        ax = tl.abs(x)
        amax = tl.where(ax > amax, ax, amax)
    has_nan = tl.sum(nan_count, axis=0) > 0
    if STATIC:  # one scale for every row (quantize_static_int8): NaN rows get a NaN scale, q = 0 there
        s = tl.load(act_ptr)
        tl.store(s_ptr + row, tl.where(has_nan, float("nan"), s))
    else:
        m = tl.max(amax, axis=0)
        m = tl.where(has_nan, float("nan"), m)
        s = m / 127.0
        s = tl.where(s < FLT_MIN, FLT_MIN, s)          # NaN compares false and stays NaN
        tl.store(s_ptr + row, s)
    finite = (s == s) & (s < float("inf"))
    q_row = q_ptr + row.to(tl.int64) * stride_qm
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            x = x * tl.load(sm_ptr + offs, mask=offs < K, other=0.0)
        v = tl.math.div_rn(x, s)
        r = (v + RNE_MAGIC) - RNE_MAGIC
        r = tl.minimum(tl.maximum(r, -127.0), 127.0)
        r = tl.where(x == x, r, 0.0)  # a NaN element (static scale) quantizes to 0
        r = tl.where(finite, r, 0.0)
        tl.store(q_row + offs, r.to(tl.int8), mask=offs < K)


def quantize_per_token_int8(x: torch.Tensor, input_scale: torch.Tensor | None = None,
                            act_scale: torch.Tensor | None = None):
    """x: 2-D float tensor [M, K] -> (q int8 [M, K], scale fp32 [M]); contract in qkernels.reference
    (quantize_activations): x * input_scale when given, then per token or with the static
    act_scale, in one kernel."""
    check(x.dim() == 2, f"x must be 2-D [M, K], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    x = x.contiguous() if x.stride(-1) != 1 else x
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.int8, device=x.device)
    s = torch.empty((M,), dtype=torch.float32, device=x.device)
    if M == 0:
        return q, s
    sm = input_scale.float().contiguous() if input_scale is not None else s
    act = act_scale.float().reshape(1).contiguous() if act_scale is not None else s
    block = min(max(triton.next_power_of_2(K), 16), 4096)
    _quant_per_token_kernel[(M,)](x, q, s, sm, act, K, x.stride(0), q.stride(0), BLOCK_K=block,
                                  HAS_SMOOTH=input_scale is not None, STATIC=act_scale is not None)
    return q, s
