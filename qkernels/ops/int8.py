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
def _(x, w_packed, layout, w_scale, bias, N):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::w8a16_linear")
def _(x, w_packed, layout, w_scale, bias, N):
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
                bias: torch.Tensor | None, act_bits: int | None) -> torch.Tensor:
    """y = x @ dequant(w).T + bias for 2-D x [M, K]; N = len(w_scale).

    act_bits=8: dynamic per-token int8 activations (W8A8); None: float activations (W8A16).
    """
    N, K = w_scale.shape[0], x.shape[1]
    if is_reference():
        w = unpack_int8_weight(w_packed, layout, N, K)
        fn = ref.linear_w8a8 if act_bits == 8 else ref.w8a16_gemm
        return reference_linear(x, lambda x: fn(x, w, w_scale, bias),
                                lambda: dequantize_int8(w_packed, layout, w_scale, N, K))
    if act_bits == 8:  # fused quantize_per_token_int8 + w8a8_gemm
        return ops.w8a8_linear(x, w_packed, layout, w_scale, bias, N)
    return ops.w8a16_linear(x, w_packed, layout, w_scale, bias, N)
