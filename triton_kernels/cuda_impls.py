"""The Triton impls of the torch.ops.qkernels schemas on CUDA, by op name; qkernels.ops registers
them as the CUDA kernels when qkernels is imported (and imports this module on the first CUDA call).

Each takes the schema's arguments, checks that the packed weight is in the CUDA layout
(qkernels.formats.layouts) and calls the kernel wrappers.
"""
import torch

from ..formats import pack_nibbles, quantize_weight_int4
from .quant import quantize_per_token_int8
from .s24_gemm import pack_s24, s24_linear, s24_w8a8_gemm, unpack_s24
from .w4_gemm import pack_w4, unpack_w4, w4a8_gemm, w4a16_gemm
from .w8a8_gemm import w8a8_gemm
from .w8a16_gemm import w8a16_gemm


def _layout(layout: str, expect: str) -> None:
    if layout != expect:
        raise ValueError(f"layout: the CUDA kernels of this op read {expect!r}, got {layout!r}")


# int8: the CUDA kernels read the plain int8 [N, K] weight ("int8_rows").
def _pack_int8(w, layout):
    _layout(layout, "int8_rows")
    return w.contiguous().clone()


def _unpack_int8(w, layout, N, K):
    _layout(layout, "int8_rows")
    return w.clone()


def _w8a8_gemm(a, a_scale, w, layout, w_scale, bias, N, out_dtype):
    _layout(layout, "int8_rows")
    return w8a8_gemm(a, a_scale, w, w_scale, bias, N, out_dtype)


def _no_static(act_scale):
    if act_scale is not None:
        raise ValueError("act_scale (a static int8 activation scale) applies to int8 activations only")


def _w8a8_linear(x, w, layout, w_scale, bias, N, input_scale=None, act_scale=None):
    _layout(layout, "int8_rows")
    a, a_scale = quantize_per_token_int8(x, input_scale, act_scale)  # smoothing + static: fused
    return w8a8_gemm(a, a_scale, w, w_scale, bias, N, x.dtype)


def _w8a16_linear(x, w, layout, w_scale, bias, N, input_scale=None, act_scale=None):
    _layout(layout, "int8_rows")
    _no_static(act_scale)
    return w8a16_gemm(x, w, w_scale, bias, N, input_scale)


# int4: one uint8 blob ("int4_blob").
def _pack_int4(qweight, scale, zero_point, K, group_size, layout):
    _layout(layout, "int4_blob")
    return pack_w4(qweight, scale, zero_point, K, group_size)


def _unpack_int4(blob, layout, N, K, group_size, symmetric):
    _layout(layout, "int4_blob")
    return unpack_w4(blob, N, K, group_size, symmetric)


def _w4a8_linear(x, blob, layout, bias, N, group_size, input_scale=None, act_scale=None):
    _layout(layout, "int4_blob")
    a, a_scale = quantize_per_token_int8(x, input_scale, act_scale)
    return w4a8_gemm(a, a_scale, blob, bias, N, group_size, x.dtype)


def _w4a16_linear(x, blob, layout, bias, N, group_size, input_scale=None, act_scale=None):
    _layout(layout, "int4_blob")
    _no_static(act_scale)
    return w4a16_gemm(x, blob, bias, N, group_size, input_scale)


# 2:4: one uint8 blob, values then meta ("sparse24_blob").
def _pack_sparse24(values, meta, K, layout):
    _layout(layout, "sparse24_blob")
    return pack_s24(values, meta, K)


def _unpack_sparse24(blob, layout, N, K, dtype):
    _layout(layout, "sparse24_blob")
    return unpack_s24(blob, N, K, dtype)


def _s24_linear(x, blob, layout, bias, N, value_dtype):
    _layout(layout, "sparse24_blob")
    return s24_linear(x, blob, bias, N, value_dtype)


def _s24_w8a8_linear(x, blob, layout, w_scale, bias, N, input_scale=None, act_scale=None):
    _layout(layout, "sparse24_blob")
    a, a_scale = quantize_per_token_int8(x, input_scale, act_scale)
    return s24_w8a8_gemm(a, a_scale, blob, w_scale, bias, N, x.dtype)


def _quantize_int4_weight(w, group_size, symmetric, clip_ratios):
    # Once per layer, not a hot path: the torch definition on the GPU (qkernels.formats.int4).
    q, scale, zp = quantize_weight_int4(w, group_size, symmetric, clip_ratios=tuple(clip_ratios))
    return pack_nibbles(q), scale, (zp if zp is not None else scale.new_zeros(scale.shape, dtype=torch.int32))


IMPLS = {
    "quantize_per_token_int8": quantize_per_token_int8,
    "pack_int8": _pack_int8, "unpack_int8": _unpack_int8, "w8a8_gemm": _w8a8_gemm,
    "w8a8_linear": _w8a8_linear, "w8a16_linear": _w8a16_linear,
    "pack_int4": _pack_int4, "unpack_int4": _unpack_int4, "w4a8_linear": _w4a8_linear,
    "w4a16_linear": _w4a16_linear, "quantize_int4_weight": _quantize_int4_weight,
    "pack_sparse24": _pack_sparse24, "unpack_sparse24": _unpack_sparse24, "s24_linear": _s24_linear,
    "s24_w8a8_linear": _s24_w8a8_linear,
}
