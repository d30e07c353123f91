"""Triton W8A8 GEMM: int8 x int8 -> int32 (tl.dot) with the fused epilogue of qkernels.reference."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check, gemm_configs, m_bucket, store_out


@triton.autotune(configs=gemm_configs(), key=["M_BUCKET", "N", "K"])
@triton.jit
def _w8a8_gemm_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, out_ptr,   # pointers
    M, N, K, M_BUCKET,                                           # sizes
    stride_am, stride_ak, stride_wn, stride_wk, stride_om,       # strides
    HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a_ptrs = a_ptr + rm[:, None].to(tl.int64) * stride_am + rk[None, :] * stride_ak
    w_ptrs = w_ptr + rn[None, :].to(tl.int64) * stride_wn + rk[:, None] * stride_wk
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in range(0, K, BK):
        kmask = (k0 + rk) < K
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & kmask[None, :], other=0)
        w = tl.load(w_ptrs, mask=kmask[:, None] & (rn[None, :] < N), other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        a_ptrs += BK * stride_ak
        w_ptrs += BK * stride_wk
    a_s = tl.load(a_scale_ptr + rm, mask=rm < M, other=0.0)
    w_s = tl.load(w_scale_ptr + rn, mask=rn < N, other=0.0)
    y = acc.to(tl.float32) * a_s[:, None]
    y = y * w_s[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
    o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
    store_out(o_ptrs, y, (rm[:, None] < M) & (rn[None, :] < N))


def w8a8_gemm(a, a_scale, w, w_scale, bias, N, out_dtype):
    """a int8 [M, K], a_scale fp32 [M], w int8 [N, K], w_scale fp32 [N], bias fp32 [N] or None."""
    check(a.dim() == 2 and w.dim() == 2, "a and w must be 2-D")
    check(a.dtype == torch.int8 and w.dtype == torch.int8, f"a and w must be int8, got {a.dtype}, {w.dtype}")
    M, K = a.shape
    check(tuple(w.shape) == (N, K), f"w must have shape [{N}, {K}], got {tuple(w.shape)}")
    check(a_scale.shape == (M,) and w_scale.shape == (N,), "a_scale must be [M] and w_scale [N]")
    out = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0:
        return out
    grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]))
    _w8a8_gemm_kernel[grid](
        a, a_scale.float().contiguous(), w, w_scale.float().contiguous(),
        bias.float().contiguous() if bias is not None else w_scale, out,
        M, N, K, m_bucket(M),
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), out.stride(0),
        HAS_BIAS=bias is not None)
    return out
