"""Registers the Triton kernels as the CUDA implementations of the torch.ops.qkernels schemas."""
import torch

from .quant import quantize_per_token_int8
from .w8a8_gemm import w8a8_gemm
from .w8a16_gemm import w8a16_gemm
from .w4_gemm import pack_w4, unpack_w4, w4a8_gemm, w4a16_gemm
from .s24_gemm import pack_s24, s24_linear, s24_w8a8_gemm, unpack_s24

_lib = torch.library.Library("qkernels", "IMPL")
_lib.impl("quantize_per_token_int8", quantize_per_token_int8, "CUDA")
# CUDA kernels read the plain [N, K] int8 weight; packing is a contiguous copy.
_lib.impl("pack_w8a8", lambda w: w.contiguous().clone(), "CUDA")
_lib.impl("pack_w8a16", lambda w: w.contiguous().clone(), "CUDA")
_lib.impl("unpack_w8a8", lambda w, N, K: w.clone(), "CUDA")
_lib.impl("unpack_w8a16", lambda w, N, K: w.clone(), "CUDA")
_lib.impl("w8a8_gemm", w8a8_gemm, "CUDA")
_lib.impl("w8a16_gemm", w8a16_gemm, "CUDA")


def _w8a8_linear(x, w, w_scale, bias, N):
    a, a_scale = quantize_per_token_int8(x)
    return w8a8_gemm(a, a_scale, w, w_scale, bias, N, x.dtype)


_lib.impl("w8a8_linear", _w8a8_linear, "CUDA")


def _w4a8_linear(x, blob, bias, N, group_size):
    a, a_scale = quantize_per_token_int8(x)
    return w4a8_gemm(a, a_scale, blob, bias, N, group_size, x.dtype)


# int4: the CUDA layout is one uint8 blob (scales, zero points, nibbles; see w4_gemm.py).
_lib.impl("pack_w4", pack_w4, "CUDA")
_lib.impl("unpack_w4", unpack_w4, "CUDA")
_lib.impl("w4a8_linear", _w4a8_linear, "CUDA")
_lib.impl("w4a16_gemm", w4a16_gemm, "CUDA")


def _s24_w8a8_linear(x, blob, w_scale, bias, N):
    a, a_scale = quantize_per_token_int8(x)
    return s24_w8a8_gemm(a, a_scale, blob, w_scale, bias, N, x.dtype)


# 2:4: the CUDA layout is one uint8 blob (values, then meta; see s24_gemm.py).
_lib.impl("pack_s24", pack_s24, "CUDA")
_lib.impl("unpack_s24", unpack_s24, "CUDA")
_lib.impl("s24_linear", s24_linear, "CUDA")
_lib.impl("s24_w8a8_linear", _s24_w8a8_linear, "CUDA")
