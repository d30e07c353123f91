"""Triton W8A16 GEMM: float activations x int8 weights (exact in bf16/fp16), fp32 accumulate."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, check, gemm_configs, m_bucket, store_out


@triton.autotune(configs=gemm_configs(), key=["M_BUCKET", "N", "K"])
@triton.jit
def _w8a16_gemm_kernel(
    x_ptr, w_ptr, w_scale_ptr, bias_ptr, out_ptr, sm_ptr,        # pointers (sm: input_scale [K])
    M, N, K, M_BUCKET,                                           # sizes
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om,       # strides
    HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, HAS_SMOOTH: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    x_ptrs = x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :] * stride_xk
    w_ptrs = w_ptr + rn[None, :].to(tl.int64) * stride_wn + rk[:, None] * stride_wk
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kmask = (k0 + rk) < K
        x = tl.load(x_ptrs, mask=(rm[:, None] < M) & kmask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=kmask[:, None] & (rn[None, :] < N), other=0)
        if HAS_SMOOTH:  # fp32 x * input_scale on the load, then the exact-fp32 dot
            xs = x.to(tl.float32) * tl.load(sm_ptr + k0 + rk, mask=kmask, other=0.0)[None, :]
            acc = tl.dot(xs, w.to(tl.float32), acc, input_precision="ieee")
        elif DOT_F32:
            acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            # int8 values are exact in fp16/bf16, so w takes x's dtype: tensor-core dot.
            acc = tl.dot(x, w.to(tl.float32).to(x.dtype), acc)
        x_ptrs += BK * stride_xk
        w_ptrs += BK * stride_wk
    w_s = tl.load(w_scale_ptr + rn, mask=rn < N, other=0.0)
    y = acc * w_s[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
    o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
    store_out(o_ptrs, y, (rm[:, None] < M) & (rn[None, :] < N))


def w8a16_gemm(x, w, w_scale, bias, N, input_scale=None):
    """x float [M, K] (fp32/bf16/fp16), w int8 [N, K], w_scale fp32 [N] -> [M, N] in x.dtype;
    input_scale (fp32 [K]): x * input_scale in fp32 on the load (then an fp32 dot)."""
    check(x.dim() == 2 and w.dim() == 2, "x and w must be 2-D")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    check(w.dtype == torch.int8, f"w must be int8, got {w.dtype}")
    M, K = x.shape
    check(tuple(w.shape) == (N, K), f"w must have shape [{N}, {K}], got {tuple(w.shape)}")
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]))
    _w8a16_gemm_kernel[grid](
        x, w, w_scale.float().contiguous(),
        bias.float().contiguous() if bias is not None else w_scale, out,
        input_scale.float().contiguous() if input_scale is not None else w_scale,
        M, N, K, m_bucket(M),
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), out.stride(0),
        HAS_BIAS=bias is not None, HAS_SMOOTH=input_scale is not None,
        # fp32 inputs use an exact-fp32 dot; the interpreter cannot emulate bf16/fp16 dots.
        DOT_F32=x.dtype == torch.float32 or INTERPRET)
    return out
