"""int4 grouped ops: packing the state_dict nibbles into the kernels' layout, W4A8 and W4A16
linears, the dequantized weight; fake impls for tracing; the backend choice."""
from __future__ import annotations

import torch

from .. import formats
from .. import reference as ref
from ._common import is_reference, ops, reference_linear


@torch.library.register_fake("qkernels::pack_int4")
def _(qweight, scale, zero_point, K, group_size, layout):
    lay = formats.get(layout)
    return qweight.new_empty(lay.shape(qweight.shape[0], K, group_size), dtype=lay.dtype)


@torch.library.register_fake("qkernels::unpack_int4")
def _(w_packed, layout, N, K, group_size, symmetric):
    G, _ = formats.int4_groups(K, group_size)
    return (w_packed.new_empty((N, (K + 1) // 2), dtype=torch.uint8),
            w_packed.new_empty((N, G), dtype=torch.float32), w_packed.new_empty((N, G), dtype=torch.int32))


@torch.library.register_fake("qkernels::quantize_int4_weight")
def _(w, group_size, symmetric, clip_ratios):
    N, K = w.shape
    G = -(-K // group_size)
    return (w.new_empty((N, (K + 1) // 2), dtype=torch.uint8), w.new_empty((N, G), dtype=torch.float32),
            w.new_empty((N, G), dtype=torch.int32))


@torch.library.register_fake("qkernels::w4a8_linear")
def _(x, w_packed, layout, bias, N, group_size, input_scale=None, act_scale=None):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::w4a16_linear")
def _(x, w_packed, layout, bias, N, group_size, input_scale=None, act_scale=None):
    return x.new_empty((x.shape[0], N))


def quantize_int4_weight(w: torch.Tensor, group_size: int | None, symmetric: bool):
    """int4 weight quantization with the per-group clipping search qkernels.formats.int4 defines:
    (qweight uint8 [N, ceil(K/2)] nibbles (formats.pack_nibbles of q), scale fp32 [N, G],
    zero_point int32 [N, G] or None). On the CPU a C++ op; the reference backend runs
    qkernels.reference's definition."""
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D, got shape {tuple(w.shape)}")
    if is_reference():
        q, scale, zp = ref.quantize_weight_int4(w, group_size, symmetric)
        return ref.pack_int4(q), scale, zp
    g = w.shape[1] if group_size is None else group_size
    q, scale, zp = ops.quantize_int4_weight(w.float(), max(g, 1), symmetric, list(formats.CLIP_RATIOS))
    return q, scale, (None if symmetric else zp)


def pack_int4_weight(qweight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                     K: int, group_size: int, layout: str) -> torch.Tensor:
    """The one copy of an int4 weight a module keeps (nibbles, scales and zero points) in `layout`.

    qweight uint8 [N, ceil(K/2)] (formats.pack_nibbles of q), scale fp32 [N, G], zero_point int32
    [N, G] or None (symmetric); group_size = K for one group per output channel.
    """
    return ops.pack_int4(qweight, scale, zero_point, K, group_size, layout)


def unpack_int4_weight(w_packed: torch.Tensor, layout: str, N: int, K: int, group_size: int, symmetric: bool):
    """Inverse of pack_int4_weight: (qweight uint8 [N, ceil(K/2)], scale fp32 [N, G], zero_point or None)."""
    qw, scale, zp = ops.unpack_int4(w_packed, layout, N, K, group_size, symmetric)
    return qw, scale, (None if symmetric else zp)


def dequantize_int4(w_packed: torch.Tensor, layout: str, N: int, K: int, group_size: int) -> torch.Tensor:
    """fp32 [N, K] = (q - zero point) * scale per group."""
    return ops.dequantize_int4(w_packed, layout, N, K, group_size)


def int4_linear(x: torch.Tensor, w_packed: torch.Tensor, layout: str, bias: torch.Tensor | None, N: int,
                group_size: int, act_bits: int | None, symmetric: bool, input_scale: torch.Tensor | None = None,
                act_scale: torch.Tensor | None = None) -> torch.Tensor:
    """y = (x * input_scale) @ dequant(w).T + bias for 2-D x [M, K] and an int4 weight from
    pack_int4_weight.

    act_bits=8: int8 activations per token, or with the static per-tensor act_scale (W4A8); None:
    float activations (W4A16). input_scale: the per-input-channel smoothing vector [K] or None.
    """
    if is_reference():
        K = x.shape[1]
        qw, scale, zp = unpack_int4_weight(w_packed, layout, N, K, group_size, symmetric)
        q = ref.unpack_int4(qw, K, signed=symmetric)
        if act_bits == 8:
            fn = lambda x: ref.w4a8_gemm(*ref.quantize_activations(x, input_scale, act_scale), q, scale, zp,  # noqa
                                         group_size, bias, x.dtype)
        else:
            fn = lambda x: ref.w4a16_gemm(ref.smooth_activations(x, input_scale), q, scale, zp, group_size,  # noqa
                                          bias).to(x.dtype)
        return reference_linear(x, fn, lambda: dequantize_int4(w_packed, layout, N, K, group_size), input_scale)
    if act_bits == 8:
        return ops.w4a8_linear(x, w_packed, layout, bias, N, group_size, input_scale, act_scale)
    return ops.w4a16_linear(x, w_packed, layout, bias, N, group_size, input_scale, act_scale)
