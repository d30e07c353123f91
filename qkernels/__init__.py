"""qkernels: INT8/INT4 quantized and 2:4 sparse GEMM kernels for PyTorch.

Public API (documented in README.md and docs/): QuantLinear, SparseLinear, QuantConfig,
SparseConfig, quantize_, sparsify_, prune_24; save_quantized / load_quantized (quantized models as
files, GPTQ / AWQ import); the CPU paths (cpu_isa, supported_cpu_paths, set_cpu_isa, cpu_info);
use_backend / current_backend; QAT (prepare_qat_, FakeQuantLinear, convert_qat_,
distillation_loss); and qkernels.reference.
"""
from . import ops, reference
from ._ext import cpu_info, cpu_isa, detected_cpu_isa, set_cpu_isa, supported_cpu_paths
from .backend import current_backend, use_backend
from .nn import QuantLinear, SparseLinear
from .quantize import QuantConfig, SparseConfig, quantize_, sparsify_
from .qat import FakeQuantLinear, convert_qat_, distillation_loss, prepare_qat_
from .mixed import plan_mixed_precision
from .files import load_quantized, save_quantized
from . import hf  # noqa: E402  (registers the "qkernels" quantization method with transformers)
from .formats import prune_24

__version__ = "0.1.0"
__all__ = ["FakeQuantLinear", "QuantConfig", "QuantLinear", "SparseConfig", "SparseLinear", "convert_qat_",
           "cpu_info", "cpu_isa", "current_backend", "detected_cpu_isa", "distillation_loss", "hf",
           "load_quantized", "ops", "plan_mixed_precision", "prepare_qat_", "prune_24", "quantize_", "reference", "save_quantized",
           "set_cpu_isa", "sparsify_", "supported_cpu_paths", "use_backend"]
