"""Reference int8 / int4 GEMMs: exact integer accumulation and the float epilogues kernels match."""
from __future__ import annotations

import torch

from .quant import quantize_per_token_int8


INT32_MAX = 2 ** 31 - 1


def exact_int32(acc: torch.Tensor, what: str) -> torch.Tensor:
    """An exact integer sum held in float64 -> int32; ValueError if it does not fit (never wraps)."""
    if acc.numel() and float(acc.abs().max()) > INT32_MAX:
        raise ValueError(f"{what}: an int32 accumulator would overflow (|sum| = {float(acc.abs().max()):.0f} "
                         f"> 2^31 - 1); the integer contract does not hold for this K and these values")
    return acc.to(torch.int32)


def int8_matmul(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``a @ w.T`` for int8 a [M, K] and w [N, K].

    float64 holds every partial sum exactly (|sum| < 2^31 << 2^53), so BLAS gives the exact result;
    a sum that does not fit int32 is a ValueError.
    """
    return exact_int32(a.double() @ w.double().T, "int8_matmul")


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
    """int8 a [M, K] x int8 w [N, K]: the exact int32 sums, then w8a8_epilogue."""
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


# ---- int4 grouped weights ----------------------------------------------------------------------
def int4_groups(K: int, group_size: int | None) -> tuple[int, int]:
    """(G, g): number of groups along K and their size; group_size None = one group per row."""
    g = K if group_size is None else int(group_size)
    if g < 1:
        raise ValueError(f"group_size must be None or >= 1, got {group_size!r}")
    return -(-K // g), g


def _grouped_k(t: torch.Tensor, G: int, g: int) -> torch.Tensor:
    """[R, K] -> [R, G, g] float64, zero padding a last partial group."""
    t = t.double()
    if G * g != t.shape[1]:
        t = torch.nn.functional.pad(t, (0, G * g - t.shape[1]))
    return t.reshape(t.shape[0], G, g)


def _int4_centered(q, zero_point, G, g):
    w = _grouped_k(q, G, g)
    if zero_point is not None:
        w = w - zero_point.double().reshape(q.shape[0], G, 1)
    return w  # q - zero_point, [N, G, g]


def int4_group_acc(a: torch.Tensor, q: torch.Tensor, zero_point: torch.Tensor | None,
                   group_size: int | None) -> torch.Tensor:
    """Exact int32 [M, N, G]: sum over group g of a[m, k] * (q[n, k] - zero_point[n, g]).

    float64 holds every partial sum exactly (|sum| < 2^31 << 2^53).
    """
    G, g = int4_groups(a.shape[1], group_size)
    acc = torch.einsum("mgk,ngk->mng", _grouped_k(a, G, g), _int4_centered(q, zero_point, G, g))
    return exact_int32(acc, "int4_group_acc")


def w4a8_gemm(a: torch.Tensor, a_scale: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
              zero_point: torch.Tensor | None, group_size: int | None, bias: torch.Tensor | None,
              out_dtype: torch.dtype) -> torch.Tensor:
    """int8 activations a [M, K] x int4 weights q [N, K] (values, not packed), scale fp32 [N, G].

    The contract, each step rounded to fp32 (no FMA)::

        y = 0;  for g in 0..G-1:  y = y + float(acc[m, n, g]) * scale[n, g]
        out = y * a_scale[m] + bias[n]
    """
    acc = int4_group_acc(a, q, zero_point, group_size)
    s = scale.float()
    y = torch.zeros(acc.shape[:2], dtype=torch.float32, device=a.device)
    for g in range(acc.shape[2]):
        y = y + acc[:, :, g].float() * s[None, :, g]
    y = y * a_scale.float()[:, None]
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(out_dtype)


def linear_w4a8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                group_size: int | None, bias: torch.Tensor | None) -> torch.Tensor:
    """Dynamic per-token int8 activations x int4 grouped weights; x is 2-D."""
    a, a_scale = quantize_per_token_int8(x)
    return w4a8_gemm(a, a_scale, q, scale, zero_point, group_size, bias, x.dtype)


def w4a16_gemm(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               group_size: int | None, bias: torch.Tensor | None) -> torch.Tensor:
    """Float activations x int4 weights: the exact ``x @ ((q - zero_point) * scale).T`` (float64)
    rounded once to fp32, plus bias in fp32, cast to x.dtype. Kernels accumulate in fp32 and agree
    within fp32 summation error."""
    G, g = int4_groups(x.shape[1], group_size)
    w = _int4_centered(q, zero_point, G, g) * scale.double().reshape(q.shape[0], G, 1)
    y = (_grouped_k(x.float(), G, g).reshape(x.shape[0], G * g) @ w.reshape(q.shape[0], G * g).T).float()
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(x.dtype)
