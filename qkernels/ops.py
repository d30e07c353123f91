"""The op surface: fake (meta) impls and autograd formulas for torch.ops.qkernels.*, CUDA
registration, backend choice, and the dequantized weight of each packed format.

Schemas are defined once in csrc/ops.cpp. CPU impls are C++ (csrc/), CUDA impls are Triton
(qkernels.triton_kernels), and the reference is qkernels.reference. Modules call only this file.
Every linear op has the gradient dL/dx = dL/dy @ W with W the dequantized weight (the weights are
frozen; C++ autograd kernels in csrc/autograd.cpp), on either backend, so adapters (LoRA) upstream
of a quantized layer train.
"""
from __future__ import annotations

import torch

from . import _ext  # noqa: F401  (registers the schemas and CPU kernels)
from . import reference as ref
from .backend import current_backend

# Largest in_features each integer kernel accumulates exactly (csrc/kernels/kernels.h).
MAX_IN_FEATURES = dict(_ext._C.max_in_features())

PANEL_N = 64
_ops = torch.ops.qkernels


def _panels(n):
    return (n + PANEL_N - 1) // PANEL_N


def w8a8_panel_bytes(k):
    return (k + 3) // 4 * 4 * PANEL_N + 4 * PANEL_N


def w8a16_panel_bytes(k):
    return k * PANEL_N


# ---- fake impls (shapes only) so torch.compile and opcheck can trace the ops ------------------
@torch.library.register_fake("qkernels::quantize_per_token_int8")
def _(x):
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:1], dtype=torch.float32)


@torch.library.register_fake("qkernels::pack_w8a8")
def _(w):
    if w.device.type == "cuda":
        return torch.empty_like(w, memory_format=torch.contiguous_format)
    return w.new_empty((_panels(w.shape[0]), w8a8_panel_bytes(w.shape[1])))


@torch.library.register_fake("qkernels::pack_w8a16")
def _(w):
    if w.device.type == "cuda":
        return torch.empty_like(w, memory_format=torch.contiguous_format)
    return w.new_empty((_panels(w.shape[0]), w8a16_panel_bytes(w.shape[1])))


@torch.library.register_fake("qkernels::unpack_w8a8")
def _(w_packed, N, K):
    return w_packed.new_empty((N, K))


@torch.library.register_fake("qkernels::unpack_w8a16")
def _(w_packed, N, K):
    return w_packed.new_empty((N, K))


@torch.library.register_fake("qkernels::w8a8_gemm")
def _(a, a_scale, w_packed, w_scale, bias, N, out_dtype):
    return a.new_empty((a.shape[0], N), dtype=out_dtype)


@torch.library.register_fake("qkernels::w8a8_linear")
def _(x, w_packed, w_scale, bias, N):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::w8a16_gemm")
def _(x, w_packed, w_scale, bias, N):
    return x.new_empty((x.shape[0], N))


def int4_geometry(K: int, group_size: int):
    """(G, gk) of the int4 kernels: G groups of gk values along K (mirrors w4_geometry in ops.cpp)."""
    G = -(-K // group_size)
    return (1, -(-K // 8) * 8) if G == 1 else (G, group_size)


def w4_cuda_blob_bytes(N: int, K: int, G: int) -> int:
    """Bytes of the CUDA int4 blob (triton_kernels/w4_gemm.py): fp32 scale, u8 zz (padded to 4), nibbles."""
    return 4 * N * G + -(-N * G // 4) * 4 + N * ((K + 1) // 2)


@torch.library.register_fake("qkernels::pack_w4")
def _(qweight, scale, zero_point, K, group_size):
    N = qweight.shape[0]
    G, gk = int4_geometry(K, group_size)
    if qweight.device.type == "cuda":
        return qweight.new_empty((w4_cuda_blob_bytes(N, K, G),))
    return qweight.new_empty((_panels(N), G * (32 * gk + 5 * PANEL_N)))


@torch.library.register_fake("qkernels::unpack_w4")
def _(w_packed, N, K, group_size, symmetric):
    G, _ = int4_geometry(K, group_size)
    return (w_packed.new_empty((N, (K + 1) // 2)), w_packed.new_empty((N, G), dtype=torch.float32),
            w_packed.new_empty((N, G), dtype=torch.int32))


@torch.library.register_fake("qkernels::w4a8_linear")
def _(x, w_packed, bias, N, group_size):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::w4a16_gemm")
def _(x, w_packed, bias, N, group_size):
    return x.new_empty((x.shape[0], N))


ESIZE = {torch.float32: 4, torch.bfloat16: 2, torch.int8: 1}


def s24_panel_bytes(K: int, esize: int) -> int:
    return -(-K // 32) * (4 * PANEL_N + 8 * 4 * 32 * esize)


def s24_cuda_blob_bytes(N: int, K: int, esize: int) -> int:
    """Bytes of the CUDA 2:4 blob (triton_kernels/s24_gemm.py): values then meta."""
    G = -(-K // 4)
    return N * 2 * G * esize + N * ((G + 1) // 2)


@torch.library.register_fake("qkernels::pack_s24")
def _(values, meta, K):
    N, esize = values.shape[0], ESIZE[values.dtype]
    if values.device.type == "cuda":
        return meta.new_empty((s24_cuda_blob_bytes(N, K, esize),))
    return meta.new_empty((_panels(N), s24_panel_bytes(K, esize)))


@torch.library.register_fake("qkernels::unpack_s24")
def _(w_packed, N, K, dtype):
    G = -(-K // 4)
    return w_packed.new_empty((N, 2 * G), dtype=dtype), w_packed.new_empty((N, (G + 1) // 2))


@torch.library.register_fake("qkernels::s24_linear")
def _(x, w_packed, bias, N, value_dtype):
    return x.new_empty((x.shape[0], N))


@torch.library.register_fake("qkernels::s24_w8a8_linear")
def _(x, w_packed, w_scale, bias, N):
    return x.new_empty((x.shape[0], N))


# ---- dequantized weights (the W every op multiplies by) and the input gradient ---------------------
# The ops' autograd kernels are C++ (csrc/autograd.cpp): dL/dx = dL/dy @ W with W from these ops.
def dequantize_int8(w_packed: torch.Tensor, act_bits: int | None, w_scale: torch.Tensor, N: int,
                    K: int) -> torch.Tensor:
    """fp32 [N, K] = int8 weight * per-channel scale, from pack_int8_weight's layout."""
    _ensure_cuda(w_packed.device)
    return _ops.dequantize_w8(w_packed, w_scale, N, K, act_bits == 8)


def dequantize_int4(w_packed: torch.Tensor, N: int, K: int, group_size: int) -> torch.Tensor:
    """fp32 [N, K] = (q - zero point) * scale per group, from pack_int4_weight's layout."""
    _ensure_cuda(w_packed.device)
    return _ops.dequantize_w4(w_packed, N, K, group_size)


def dequantize_sparse24(w_packed: torch.Tensor, value_dtype: torch.dtype, w_scale: torch.Tensor | None,
                        N: int, K: int) -> torch.Tensor:
    """fp32 [N, K] pruned dense weight (int8 values times their per-channel scale)."""
    _ensure_cuda(w_packed.device)
    return _ops.dequantize_s24(w_packed, w_scale, N, K, value_dtype)


class _ReferenceLinear(torch.autograd.Function):
    """The reference backend's forward (run as is) with the ops' input gradient, dL/dy @ W."""

    @staticmethod
    def forward(ctx, x, w, fn):
        ctx.save_for_backward(w)
        ctx.x_dtype = x.dtype
        return fn(x)

    @staticmethod
    def backward(ctx, grad_y):
        (w,) = ctx.saved_tensors
        return (grad_y.float() @ w).to(ctx.x_dtype), None, None


def _reference(x: torch.Tensor, fn, weight) -> torch.Tensor:
    """fn(x) on the reference backend; with the ops' gradient when x needs one (weight() -> W)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ReferenceLinear.apply(x, weight(), fn)
    return fn(x)


_cuda_registered = False


def _ensure_cuda(device: torch.device):
    """Register the Triton kernels as the CUDA impls on first CUDA use (clear error without Triton)."""
    global _cuda_registered
    if device.type != "cuda" or _cuda_registered:
        return
    try:
        from .triton_kernels import register  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"qkernels on CUDA needs Triton (pip install triton): {e}") from e
    _cuda_registered = True


# ---- the surface modules use ------------------------------------------------------------------
def quantize_per_token_int8(x: torch.Tensor):
    """Symmetric per-row int8 quantization of a 2-D float tensor -> (q int8, scale fp32 [M])."""
    if current_backend() == "reference":
        return ref.quantize_per_token_int8(x)
    _ensure_cuda(x.device)
    return _ops.quantize_per_token_int8(x)


def pack_int8_weight(w: torch.Tensor, act_bits: int | None) -> torch.Tensor:
    """The one copy of an int8 weight [N, K] a module keeps: the layout its GEMM reads.

    CPU: the W8A8 or W8A16 panel layout (csrc/kernels/kernels.h). CUDA: the Triton kernels read
    the plain [N, K] weight, so it is kept as is.
    """
    if w.device.type != "cpu":
        return w.contiguous()
    return _ops.pack_w8a8(w) if act_bits == 8 else _ops.pack_w8a16(w)


def unpack_int8_weight(w_packed: torch.Tensor, act_bits: int | None, N: int, K: int) -> torch.Tensor:
    """Inverse of pack_int8_weight: the plain int8 [N, K] weight."""
    if w_packed.device.type != "cpu":
        return w_packed
    return _ops.unpack_w8a8(w_packed, N, K) if act_bits == 8 else _ops.unpack_w8a16(w_packed, N, K)


def int8_linear(x: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor,
                bias: torch.Tensor | None, act_bits: int | None) -> torch.Tensor:
    """y = x @ dequant(w).T + bias for 2-D x [M, K]; w_packed from pack_int8_weight, N = len(w_scale).

    act_bits=8: dynamic per-token int8 activations (W8A8); None: float activations (W8A16).
    """
    N, K = w_scale.shape[0], x.shape[1]
    if current_backend() == "reference":
        w = unpack_int8_weight(w_packed, act_bits, N, K)
        fn = ref.linear_w8a8 if act_bits == 8 else ref.w8a16_gemm
        return _reference(x, lambda x: fn(x, w, w_scale, bias),
                          lambda: dequantize_int8(w_packed, act_bits, w_scale, N, K))
    _ensure_cuda(x.device)
    if act_bits == 8:  # fused quantize_per_token_int8 + w8a8_gemm
        return _ops.w8a8_linear(x, w_packed, w_scale, bias, N)
    return _ops.w8a16_gemm(x, w_packed, w_scale, bias, N)


# ---- int4 grouped weights ----------------------------------------------------------------------
def pack_int4_weight(qweight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                     K: int, group_size: int) -> torch.Tensor:
    """The one copy of an int4 weight a module keeps: nibbles, scales and zero points in the layout
    the kernels read (CPU: panels, csrc/kernels/kernels.h; CUDA: triton_kernels/w4_gemm.py).

    qweight uint8 [N, ceil(K/2)] (qkernels.reference.pack_int4 of q), scale fp32 [N, G], zero_point
    int32 [N, G] or None (symmetric); group_size = K for one group per output channel.
    """
    _ensure_cuda(qweight.device)
    return _ops.pack_w4(qweight, scale, zero_point, K, group_size)


def unpack_int4_weight(w_packed: torch.Tensor, N: int, K: int, group_size: int, symmetric: bool):
    """Inverse of pack_int4_weight: (qweight uint8 [N, ceil(K/2)], scale fp32 [N, G], zero_point or None)."""
    _ensure_cuda(w_packed.device)
    qw, scale, zp = _ops.unpack_w4(w_packed, N, K, group_size, symmetric)
    return qw, scale, (None if symmetric else zp)


def int4_linear(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None, N: int,
                group_size: int, act_bits: int | None, symmetric: bool) -> torch.Tensor:
    """y = x @ dequant(w).T + bias for 2-D x [M, K] and an int4 weight from pack_int4_weight.

    act_bits=8: dynamic per-token int8 activations (W4A8); None: float activations (W4A16).
    """
    if current_backend() == "reference":
        K = x.shape[1]
        qw, scale, zp = unpack_int4_weight(w_packed, N, K, group_size, symmetric)
        q = ref.unpack_int4(qw, K, signed=symmetric)
        fn = ref.linear_w4a8 if act_bits == 8 else ref.w4a16_gemm
        return _reference(x, lambda x: fn(x, q, scale, zp, group_size, bias),
                          lambda: dequantize_int4(w_packed, N, K, group_size))
    _ensure_cuda(x.device)
    if act_bits == 8:
        return _ops.w4a8_linear(x, w_packed, bias, N, group_size)
    return _ops.w4a16_gemm(x, w_packed, bias, N, group_size)


# ---- 2:4 sparse ----------------------------------------------------------------------------------
def pack_sparse24_weight(values: torch.Tensor, meta: torch.Tensor, K: int) -> torch.Tensor:
    """The one copy of a 2:4 weight a module keeps (CPU: panels, csrc/kernels/kernels.h; CUDA:
    triton_kernels/s24_gemm.py). values [N, Kp/2] fp32/bf16/int8 and meta uint8 as in
    qkernels.reference.sparse."""
    _ensure_cuda(values.device)
    return _ops.pack_s24(values, meta, K)


def unpack_sparse24_weight(w_packed: torch.Tensor, N: int, K: int, dtype: torch.dtype):
    """Inverse of pack_sparse24_weight: (values [N, Kp/2], meta uint8)."""
    _ensure_cuda(w_packed.device)
    return _ops.unpack_s24(w_packed, N, K, dtype)


def sparse24_linear(x: torch.Tensor, w_packed: torch.Tensor, value_dtype: torch.dtype,
                    w_scale: torch.Tensor | None, bias: torch.Tensor | None, N: int) -> torch.Tensor:
    """y = x @ W.T + bias for 2-D x and a 2:4 weight from pack_sparse24_weight.

    value_dtype int8 (with per-channel w_scale): dynamic per-token int8 activations, exact int32
    accumulation; float32 / bfloat16 values: fp32 accumulation.
    """
    if current_backend() == "reference":
        K = x.shape[1]
        values, meta = unpack_sparse24_weight(w_packed, N, K, value_dtype)
        if value_dtype == torch.int8:
            fn = lambda x: ref.linear_sparse24_w8a8(x, values, meta, w_scale, bias)  # noqa: E731
        else:
            fn = lambda x: ref.sparse24_linear(x, values, meta, bias)  # noqa: E731
        return _reference(x, fn, lambda: dequantize_sparse24(w_packed, value_dtype, w_scale, N, K))
    _ensure_cuda(x.device)
    if value_dtype == torch.int8:
        return _ops.s24_w8a8_linear(x, w_packed, w_scale, bias, N)
    return _ops.s24_linear(x, w_packed, bias, N, value_dtype)
