"""Triton W4A16 / W4A8 GEMM on int4 grouped weights: nibbles unpacked in registers, per-group scales
in the contract's order (qkernels.reference.w4a8_gemm / w4a16_gemm), fused bias.

CUDA weight layout "int4_blob" (one uint8 tensor): its parts are defined once in
qkernels.formats.layouts.int4_blob_parts; w = (u - zz) * scale.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import int4_blob_parts, int4_groups
from ._common import INTERPRET, check, gemm_configs, m_bucket, store_out


def _views(blob, N, K, G):
    p = int4_blob_parts(N, K, G)
    scale = blob[p.scale:p.zz].view(torch.float32)[:N * G].view(N, G)
    return scale, blob[p.zz:p.zz + N * G].view(N, G), blob[p.nibbles:p.total].view(N, (K + 1) // 2)


def pack_w4(qweight, scale, zero_point, K, group_size):
    N = qweight.shape[0]
    G, _ = int4_groups(K, group_size)
    check(qweight.dtype == torch.uint8 and tuple(qweight.shape) == (N, (K + 1) // 2),
          f"qweight must be uint8 [{N}, {(K + 1) // 2}], got {qweight.dtype} {tuple(qweight.shape)}")
    check(tuple(scale.shape) == (N, G), f"scale must have shape [{N}, {G}], got {tuple(scale.shape)}")
    blob = torch.zeros(int4_blob_parts(N, K, G).total, dtype=torch.uint8, device=qweight.device)
    s, zz, u = _views(blob, N, K, G)
    s.copy_(scale.float())
    if zero_point is None:
        zz.fill_(8)
        u.copy_(qweight ^ 0x88)
    else:
        check(tuple(zero_point.shape) == (N, G), f"zero_point must have shape [{N}, {G}]")
        check(bool(((zero_point >= 0) & (zero_point <= 15)).all()), "zero_point must hold values in [0, 15]")
        zz.copy_(zero_point.to(torch.uint8))
        u.copy_(qweight)
    return blob


def unpack_w4(blob, N, K, group_size, symmetric):
    G, _ = int4_groups(K, group_size)
    s, zz, u = _views(blob, N, K, G)
    if symmetric:
        qw = u ^ 0x88
        if K % 2:  # the padding nibble reads back as 0
            qw[:, -1] &= 0x0F
        return qw, s.clone(), torch.zeros(N, G, dtype=torch.int32, device=blob.device)
    return u.clone(), s.clone(), zz.to(torch.int32)


@triton.autotune(configs=gemm_configs(), key=["M_BUCKET", "N", "K", "GK"])
@triton.jit
def _w4_gemm_kernel(
    x_ptr, a_scale_ptr, u_ptr, s_ptr, zz_ptr, bias_ptr, out_ptr, sm_ptr,  # pointers (sm: input_scale)
    M, N, K, G, GK, M_BUCKET,                                      # sizes
    stride_xm, stride_xk, stride_un, stride_om,                    # strides
    A8: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, HAS_SMOOTH: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    mmask, nmask = rm < M, rn < N
    y = tl.zeros((BM, BN), dtype=tl.float32)
    for g in range(0, G):
        zz = tl.load(zz_ptr + rn * G + g, mask=nmask, other=0).to(tl.int32)
        if A8:
            part = tl.zeros((BM, BN), dtype=tl.int32)
        else:
            part = tl.zeros((BM, BN), dtype=tl.float32)
        for kk in range(0, GK, BK):
            k = g * GK + kk + rk
            kmask = ((kk + rk) < GK) & (k < K)
            x = tl.load(x_ptr + rm[:, None].to(tl.int64) * stride_xm + k[None, :] * stride_xk,
                        mask=mmask[:, None] & kmask[None, :], other=0)
            byte = tl.load(u_ptr + rn[None, :].to(tl.int64) * stride_un + (k[:, None] // 2),
                           mask=kmask[:, None] & nmask[None, :], other=0).to(tl.int32)
            u = (byte >> ((k[:, None] % 2) * 4)) & 0xF
            w = tl.where(kmask[:, None], u - zz[None, :], 0)  # [BK, BN], (q - zero point)
            if A8:
                part = tl.dot(x, w.to(tl.int8), part, out_dtype=tl.int32)
            elif HAS_SMOOTH:  # fp32 x * input_scale on the load, then the exact-fp32 dot
                xs = x.to(tl.float32) * tl.load(sm_ptr + k, mask=kmask, other=0.0)[None, :]
                part = tl.dot(xs, w.to(tl.float32), part, input_precision="ieee")
            elif DOT_F32:
                part = tl.dot(x.to(tl.float32), w.to(tl.float32), part, input_precision="ieee")
            else:  # |q - z| <= 15 is exact in fp16/bf16: tensor-core dot with exact products
                part = tl.dot(x, w.to(tl.float32).to(x.dtype), part)
        s = tl.load(s_ptr + rn * G + g, mask=nmask, other=0.0)
        y = y + part.to(tl.float32) * s[None, :]
    if A8:
        y = y * tl.load(a_scale_ptr + rm, mask=mmask, other=0.0)[:, None]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=nmask, other=0.0)[None, :]
    o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
    store_out(o_ptrs, y, mmask[:, None] & nmask[None, :])


def _w4_gemm(x, a_scale, blob, bias, N, group_size, out_dtype, input_scale=None):
    M, K = x.shape
    G, GK = int4_groups(K, group_size)
    s, zz, u = _views(blob, N, K, G)
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0:
        return out
    grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]))
    _w4_gemm_kernel[grid](
        x, a_scale if a_scale is not None else s, u, s, zz,
        bias.float().contiguous() if bias is not None else s, out,
        input_scale.float().contiguous() if input_scale is not None else s,
        M, N, K, G, GK, m_bucket(M),
        x.stride(0), x.stride(1), u.stride(0), out.stride(0),
        A8=a_scale is not None, HAS_BIAS=bias is not None, HAS_SMOOTH=input_scale is not None,
        DOT_F32=x.dtype == torch.float32 or INTERPRET)
    return out


def _check_blob(x, blob, N, group_size):
    check(x.dim() == 2, "x must be 2-D [M, K]")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    K = x.shape[1]
    G, _ = int4_groups(K, group_size)
    need = int4_blob_parts(N, K, G).total
    check(blob.dtype == torch.uint8 and blob.dim() == 1 and blob.numel() == need,
          f"w_packed must be the uint8 int4 blob of {need} bytes for N={N}, K={K}, group_size={group_size}")


def w4a16_gemm(x, blob, bias, N, group_size, input_scale=None):
    """x float [M, K] x int4 blob (pack_w4) -> [M, N] in x.dtype; input_scale (fp32 [K]): x *
    input_scale in fp32 on the load (then an fp32 dot)."""
    _check_blob(x, blob, N, group_size)
    return _w4_gemm(x, None, blob, bias, N, group_size, x.dtype, input_scale)


def w4a8_gemm(a, a_scale, blob, bias, N, group_size, out_dtype):
    """int8 activations a [M, K] with fp32 a_scale [M] x int4 blob -> [M, N] in out_dtype."""
    check(a.dim() == 2 and a.dtype == torch.int8, f"a must be 2-D int8, got {a.dtype}")
    _check_blob(a.float()[:0], blob, N, group_size)
    return _w4_gemm(a, a_scale.float().contiguous(), blob, bias, N, group_size, out_dtype)
