"""What the op families share: the op namespace, CUDA registration at import, and the reference
backend's path with the ops' input gradient."""
from __future__ import annotations

import torch

from .. import _ext  # noqa: F401  (loads the extension: the schemas and the CPU kernels)
from ..backend import current_backend

ops = torch.ops.qkernels

# Every op with a CUDA kernel: the Triton impls in qkernels.triton_kernels (cuda_impls.IMPLS). They
# are registered when qkernels is imported, and Triton itself is imported on the first CUDA call,
# so importing qkernels stays cheap and a machine without Triton gets a clear error on CUDA.
CUDA_OPS = ("quantize_per_token_int8", "pack_int8", "unpack_int8", "w8a8_gemm", "w8a8_linear", "w8a16_linear",
            "pack_int4", "unpack_int4", "quantize_int4_weight", "w4a8_linear", "w4a16_linear",
            "pack_sparse24", "unpack_sparse24", "s24_linear", "s24_w8a8_linear")
_cuda_lib = torch.library.Library("qkernels", "IMPL")


def _cuda_impl(name: str):
    def impl(*args):
        try:
            from ..triton_kernels.cuda_impls import IMPLS
        except ImportError as e:
            raise RuntimeError(f"qkernels::{name} on CUDA needs Triton (pip install triton): {e}") from e
        return IMPLS[name](*args)
    impl.__name__ = f"{name}_cuda"
    return impl


for _name in CUDA_OPS:
    _cuda_lib.impl(_name, _cuda_impl(_name), "CUDA")


def is_reference() -> bool:
    return current_backend() == "reference"


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


def reference_linear(x: torch.Tensor, fn, weight, input_scale: torch.Tensor | None = None) -> torch.Tensor:
    """fn(x) on the reference backend; with the ops' gradient when x needs one (weight() -> W; the
    op multiplies x by input_scale first, so the gradient goes through W * input_scale)."""
    if torch.is_grad_enabled() and x.requires_grad:
        w = weight()
        if input_scale is not None:
            w = w * input_scale.float()[None, :]
        return _ReferenceLinear.apply(x, w, fn)
    return fn(x)
