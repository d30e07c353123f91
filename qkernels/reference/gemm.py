"""Reference int8 GEMMs: exact int32 accumulation and the float epilogue every kernel matches."""
from __future__ import annotations

import torch

from .quant import quantize_per_token_int8


def int8_matmul(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``a @ w.T`` for int8 a [M, K] and w [N, K].

    float64 holds every partial sum exactly (|sum| < 2^31 << 2^53), so BLAS gives the exact result.
    """
    return (a.double() @ w.double().T).to(torch.int32)


def w8a8_epilogue(acc: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor,
                  bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """``((float)acc * a_scale[m]) * w_scale[n] + bias[n]``, each step rounded to fp32, then cast."""
    y = acc.float() * a_scale.float()[:, None]
    y = y * w_scale.float()[None, :]
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(out_dtype)


def w8a8_gemm(a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
              bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    return w8a8_epilogue(int8_matmul(a, w), a_scale, w_scale, bias, out_dtype)


def w8a16_gemm(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    """Float activations x int8 weights: ``(x @ w.T) * w_scale[n] + bias[n]`` in fp32, cast to x.dtype."""
    y = (x.float() @ w.float().T) * w_scale.float()[None, :]
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(x.dtype)


def linear_w8a8(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """Dynamic per-token int8 activations x per-channel int8 weights; x is 2-D."""
    a, a_scale = quantize_per_token_int8(x)
    return w8a8_gemm(a, a_scale, w, w_scale, bias, x.dtype)
