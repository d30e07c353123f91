"""qkernels.ops: the op surface the modules call, by family (int8, int4, 2:4).

Schemas are defined once in csrc/library.cpp (torch.ops.qkernels.*). CPU impls are C++ (csrc/ops),
CUDA impls are Triton (qkernels.triton_kernels, registered at import), the reference is
qkernels.reference (chosen by use_backend / QKERNELS_BACKEND), and every linear op has the input
gradient dL/dx = dL/dy @ W through its dequantized weight (csrc/ops/autograd.cpp; the weights are
frozen), so adapters (LoRA) upstream of a quantized layer train. Every packed weight is made and
read with its layout tag (qkernels.formats.layouts).
"""
from .. import _ext
from ._common import CUDA_OPS
from .int4 import dequantize_int4, int4_linear, pack_int4_weight, quantize_int4_weight, unpack_int4_weight
from .int8 import (dequantize_int8, int8_linear, pack_int8_weight, quantize_per_token_int8,
                   unpack_int8_weight)
from .sparse24 import dequantize_sparse24, pack_sparse24_weight, sparse24_linear, unpack_sparse24_weight

# Largest in_features each integer kernel accumulates exactly (csrc/kernels/kernels.h).
MAX_IN_FEATURES = dict(_ext._C.max_in_features())

__all__ = ["CUDA_OPS", "MAX_IN_FEATURES", "dequantize_int4", "dequantize_int8", "dequantize_sparse24",
           "int4_linear", "int8_linear", "pack_int4_weight", "pack_int8_weight", "pack_sparse24_weight",
           "quantize_int4_weight", "quantize_per_token_int8", "sparse24_linear", "unpack_int4_weight", "unpack_int8_weight",
           "unpack_sparse24_weight"]
