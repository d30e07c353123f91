"""qkernels: INT8/INT4 quantized and 2:4 sparse GEMM kernels for PyTorch.

Public API (see shared API.md): QuantLinear, SparseLinear, QuantConfig, SparseConfig, quantize_,
sparsify_, prune_24, cpu_isa, use_backend, and qkernels.reference.
"""
from . import ops, reference
from ._ext import cpu_isa, detected_cpu_isa, set_cpu_isa
from .backend import current_backend, use_backend
from .nn import QuantLinear, SparseLinear
from .quantize import QuantConfig, SparseConfig, quantize_, sparsify_
from .reference.sparse import prune_24

__version__ = "0.1.0"
__all__ = ["QuantConfig", "QuantLinear", "SparseConfig", "SparseLinear", "cpu_isa", "current_backend",
           "detected_cpu_isa", "ops", "prune_24", "quantize_", "reference", "set_cpu_isa", "sparsify_", "use_backend"]
