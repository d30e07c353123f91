"""Triton 2:4 sparse GEMMs (float values, and int8 values with per-token int8 activations): each
K tile of the weight is rebuilt in registers from the kept values and their 2-bit positions, then
fed to tl.dot; fused epilogues as in qkernels.reference.sparse.

CUDA weight layout "sparse24_blob" (one uint8 tensor): values then meta in the state_dict format,
parts defined once in qkernels.formats.layouts.sparse24_blob_parts.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import ESIZE as _ESIZE, sparse24_blob_parts
from ._common import INTERPRET, check, gemm_configs, m_bucket, store_out


def _views(blob, N, K, dtype):
    G = -(-K // 4)
    p = sparse24_blob_parts(N, K, _ESIZE[dtype])
    return blob[p.values:p.meta].view(dtype).view(N, 2 * G), blob[p.meta:p.total].view(N, (G + 1) // 2)


def pack_s24(values, meta, K):
    N = values.shape[0]
    G = -(-K // 4)
    check(values.dtype in _ESIZE, f"values must be float32, bfloat16 or int8, got {values.dtype}")
    check(tuple(values.shape) == (N, 2 * G), f"values must have shape [{N}, {2 * G}], got {tuple(values.shape)}")
    check(meta.dtype == torch.uint8 and tuple(meta.shape) == (N, (G + 1) // 2),
          f"meta must be uint8 [{N}, {(G + 1) // 2}], got {meta.dtype} {tuple(meta.shape)}")
    nib = torch.stack([meta & 0xF, meta >> 4], -1).reshape(N, -1)[:, :G]
    check(bool(((nib & 3) < (nib >> 2)).all()), "meta must name two positions i0 < i1 in every group")
    blob = torch.empty(sparse24_blob_parts(N, K, _ESIZE[values.dtype]).total, dtype=torch.uint8, device=values.device)
    v, m = _views(blob, N, K, values.dtype)
    v.copy_(values)
    m.copy_(meta)
    return blob


def unpack_s24(blob, N, K, dtype):
    v, m = _views(blob, N, K, dtype)
    return v.clone(), m.clone()


@triton.autotune(configs=gemm_configs(), key=["M_BUCKET", "N", "K"])
@triton.jit
def _s24_gemm_kernel(
    x_ptr, a_scale_ptr, v_ptr, meta_ptr, w_scale_ptr, bias_ptr, out_ptr,  # pointers
    M, N, K, M_BUCKET,                                                     # sizes
    stride_xm, stride_xk, stride_vn, stride_mn, stride_om,                 # strides
    A8: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    mmask, nmask = rm < M, rn < N
    if A8:
        acc = tl.zeros((BM, BN), dtype=tl.int32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k = k0 + rk
        kmask = k < K
        x = tl.load(x_ptr + rm[:, None].to(tl.int64) * stride_xm + k[None, :] * stride_xk,
                    mask=mmask[:, None] & kmask[None, :], other=0)
        g = k // 4
        wmask = kmask[:, None] & nmask[None, :]
        byte = tl.load(meta_ptr + rn[None, :].to(tl.int64) * stride_mn + (g[:, None] // 2), mask=wmask, other=0)
        nib = (byte.to(tl.int32) >> ((g[:, None] % 2) * 4)) & 0xF
        pos = (k % 4)[:, None]
        vrow = v_ptr + rn[None, :].to(tl.int64) * stride_vn + 2 * g[:, None]
        v0 = tl.load(vrow, mask=wmask, other=0)
        v1 = tl.load(vrow + 1, mask=wmask, other=0)
        w = tl.where(pos == (nib & 3), v0, tl.where(pos == (nib >> 2), v1, tl.zeros_like(v0)))  # [BK, BN]
        if A8:
            acc = tl.dot(x, w, acc, out_dtype=tl.int32)
        elif DOT_F32:
            acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:  # bf16 values with bf16 activations: tensor-core dot, exact products
            acc = tl.dot(x, w, acc)
    if A8:
        y = acc.to(tl.float32) * tl.load(a_scale_ptr + rm, mask=mmask, other=0.0)[:, None]
        y = y * tl.load(w_scale_ptr + rn, mask=nmask, other=0.0)[None, :]
    else:
        y = acc
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=nmask, other=0.0)[None, :]
    o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
    store_out(o_ptrs, y, mmask[:, None] & nmask[None, :])


def _s24_gemm(x, a_scale, blob, value_dtype, w_scale, bias, N, out_dtype):
    M, K = x.shape
    need = sparse24_blob_parts(N, K, _ESIZE[value_dtype]).total
    check(blob.dtype == torch.uint8 and blob.dim() == 1 and blob.numel() == need,
          f"w_packed must be the uint8 2:4 blob of {need} bytes for N={N}, K={K}, values {value_dtype}")
    v, meta = _views(blob, N, K, value_dtype)
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0:
        return out
    grid = lambda m: (triton.cdiv(M, m["BM"]), triton.cdiv(N, m["BN"]))
    a8 = a_scale is not None
    _s24_gemm_kernel[grid](
        x, a_scale if a8 else v, v, meta, w_scale.float().contiguous() if a8 else v,
        bias.float().contiguous() if bias is not None else v, out,
        M, N, K, m_bucket(M),
        x.stride(0), x.stride(1), v.stride(0), meta.stride(0), out.stride(0),
        A8=a8, HAS_BIAS=bias is not None,
        DOT_F32=not (x.dtype == torch.bfloat16 and value_dtype == torch.bfloat16) or INTERPRET)
    return out


def s24_linear(x, blob, bias, N, value_dtype):
    """x float [M, K] x 2:4 float values -> [M, N] in x.dtype (fp32 accumulation)."""
    check(x.dim() == 2, "x must be 2-D [M, K]")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    if value_dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"value_dtype must be float32 or bfloat16, got {value_dtype}")
    return _s24_gemm(x, None, blob, value_dtype, None, bias, N, x.dtype)


def s24_w8a8_gemm(a, a_scale, blob, w_scale, bias, N, out_dtype):
    """int8 a [M, K] (a_scale [M]) x 2:4 int8 values (w_scale [N]) -> [M, N]."""
    check(a.dim() == 2 and a.dtype == torch.int8, f"a must be 2-D int8, got {a.dtype}")
    return _s24_gemm(a, a_scale.float().contiguous(), blob, torch.int8, w_scale, bias, N, out_dtype)
