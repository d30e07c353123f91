"""2:4 sparse ops: packing values + metadata into the kernels' layout, float and int8 2:4 linears,
the dequantized (pruned dense) weight; fake impls for tracing; the backend choice."""
from __future__ import annotations

import torch

from .. import formats
from .. import reference as ref
from ._common import is_reference, ops, reference_linear


@torch.library.register_fake("qkernels::pack_sparse24")
def _(values, meta, K, layout):
    lay = formats.get(layout)
    return meta.new_empty(lay.shape(values.shape[0], K, esize=formats.ESIZE[values.dtype]), dtype=lay.dtype)


@torch.library.register_fake("qkernels::unpack_sparse24")
def _(w_packed, layout, N, K, dtype):
    G = -(-K // 4)
    return w_packed.new_empty((N, 2 * G), dtype=dtype), w_packed.new_empty((N, (G + 1) // 2), dtype=torch.uint8)


@torch.library.register_fake("qkernels::s24_linear")
def _(x, w_packed, layout, bias, N, value_dtype):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::s24_w8a8_linear")
def _(x, w_packed, layout, w_scale, bias, N, input_scale=None, act_scale=None):
    return x.new_empty((x.shape[0], N))


def pack_sparse24_weight(values: torch.Tensor, meta: torch.Tensor, K: int, layout: str) -> torch.Tensor:
    """The one copy of a 2:4 weight a module keeps, in `layout`. values [N, Kp/2] fp32/bf16/int8 and
    meta uint8 as in formats.sparse24."""
    return ops.pack_sparse24(values, meta, K, layout)


def unpack_sparse24_weight(w_packed: torch.Tensor, layout: str, N: int, K: int, dtype: torch.dtype):
    """Inverse of pack_sparse24_weight: (values [N, Kp/2], meta uint8)."""
    return ops.unpack_sparse24(w_packed, layout, N, K, dtype)


def dequantize_sparse24(w_packed: torch.Tensor, layout: str, value_dtype: torch.dtype,
                        w_scale: torch.Tensor | None, N: int, K: int) -> torch.Tensor:
    """fp32 [N, K] pruned dense weight (int8 values times their per-channel scale)."""
    return ops.dequantize_sparse24(w_packed, layout, w_scale, N, K, value_dtype)


def sparse24_linear(x: torch.Tensor, w_packed: torch.Tensor, layout: str, value_dtype: torch.dtype,
                    w_scale: torch.Tensor | None, bias: torch.Tensor | None, N: int,
                    act_scale: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T + bias for 2-D x and a 2:4 weight from pack_sparse24_weight.

    value_dtype int8 (with per-channel w_scale): int8 activations per token, or with the static
    per-tensor act_scale; exact int32 accumulation. float32 / bfloat16 values: fp32 accumulation.
    """
    if is_reference():
        K = x.shape[1]
        values, meta = unpack_sparse24_weight(w_packed, layout, N, K, value_dtype)
        if value_dtype == torch.int8:
            fn = lambda x: ref.sparse24_w8a8(*ref.quantize_activations(x, None, act_scale), values, meta,  # noqa
                                             w_scale, bias, x.dtype)
        else:
            fn = lambda x: ref.sparse24_linear(x, values, meta, bias)  # noqa: E731
        return reference_linear(x, fn, lambda: dequantize_sparse24(w_packed, layout, value_dtype, w_scale, N, K))
    if value_dtype == torch.int8:
        return ops.s24_w8a8_linear(x, w_packed, layout, w_scale, bias, N, None, act_scale)
    if act_scale is not None:
        raise ValueError("act_scale (static int8 activations) applies to int8 2:4 values only")
    return ops.s24_linear(x, w_packed, layout, bias, N, value_dtype)
