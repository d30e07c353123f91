"""int8 ops: per-token activation quantization, int8 weight packing, W8A8 and W8A16 linears, the
dequantized weight; fake impls for tracing; the backend choice (native kernels or reference)."""
from __future__ import annotations

import torch

from .. import formats
from .. import reference as ref
from ._common import is_reference, ops, reference_linear


# ---- fake impls (shapes only) so torch.compile and opcheck can trace the ops ------------------
@torch.library.register_fake("qkernels::quantize_per_token_int8")
def _(x):
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:1], dtype=torch.float32)


@torch.library.register_fake("qkernels::pack_int8")
def _(w, layout):
    lay = formats.get(layout)
    return w.new_empty(lay.shape(w.shape[0], w.shape[1]), dtype=lay.dtype)


@torch.library.register_fake("qkernels::unpack_int8")
def _(w_packed, layout, N, K):
    return w_packed.new_empty((N, K), dtype=torch.int8)


@torch.library.register_fake("qkernels::w8a8_gemm")
def _(a, a_scale, w_packed, layout, w_scale, bias, N, out_dtype):
    return a.new_empty((a.shape[0], N), dtype=out_dtype)


@torch.library.register_fake("qkernels::w8a8_linear")
def _(x, w_packed, layout, w_scale, bias, N, input_scale=None, act_scale=None):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::w8a16_linear")
def _(x, w_packed, layout, w_scale, bias, N, input_scale=None, act_scale=None):
    return x.new_empty((x.shape[0], N))


# ---- the surface modules use ------------------------------------------------------------------
def quantize_per_token_int8(x: torch.Tensor):
    """Symmetric per-row int8 quantization of a 2-D float tensor -> (q int8, scale fp32 [M])."""
    if is_reference():
        return ref.quantize_per_token_int8(x)
    return ops.quantize_per_token_int8(x)


def pack_int8_weight(w: torch.Tensor, layout: str) -> torch.Tensor:
    """The one copy of an int8 weight [N, K] a module keeps, in `layout`
    (formats.layout_for("int8", device, act_bits))."""
    return ops.pack_int8(w, layout)


def unpack_int8_weight(w_packed: torch.Tensor, layout: str, N: int, K: int) -> torch.Tensor:
    """Inverse of pack_int8_weight: the plain int8 [N, K] weight."""
    return ops.unpack_int8(w_packed, layout, N, K)


def dequantize_int8(w_packed: torch.Tensor, layout: str, w_scale: torch.Tensor, N: int, K: int) -> torch.Tensor:
    """fp32 [N, K] = int8 weight * per-channel scale."""
    return ops.dequantize_int8(w_packed, layout, w_scale, N, K)


def int8_linear(x: torch.Tensor, w_packed: torch.Tensor, layout: str, w_scale: torch.Tensor,
                bias: torch.Tensor | None, act_bits: int | None, input_scale: torch.Tensor | None = None,
                act_scale: torch.Tensor | None = None) -> torch.Tensor:
    """y = (x * input_scale) @ dequant(w).T + bias for 2-D x [M, K]; N = len(w_scale).

    act_bits=8: int8 activations (W8A8), per token, or with the static per-tensor act_scale;
    None: float activations (W8A16). input_scale: the per-input-channel smoothing vector [K] or None.
    """
    N, K = w_scale.shape[0], x.shape[1]
    if is_reference():
        w = unpack_int8_weight(w_packed, layout, N, K)
        if act_bits == 8:
            fn = lambda x: ref.w8a8_gemm(*ref.quantize_activations(x, input_scale, act_scale), w, w_scale,  # noqa
                                         bias, x.dtype)
        else:
            fn = lambda x: ref.w8a16_gemm(ref.smooth_activations(x, input_scale), w, w_scale, bias).to(x.dtype)  # noqa
        return reference_linear(x, fn, lambda: dequantize_int8(w_packed, layout, w_scale, N, K), input_scale)
    if act_bits == 8:  # fused activation preparation + w8a8 GEMM
        return ops.w8a8_linear(x, w_packed, layout, w_scale, bias, N, input_scale, act_scale)
    return ops.w8a16_linear(x, w_packed, layout, w_scale, bias, N, input_scale, act_scale)
