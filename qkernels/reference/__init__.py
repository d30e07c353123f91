"""qkernels.reference: pure-PyTorch, slow, obviously correct. Every kernel is tested against it."""
from .gemm import (int4_group_acc, int4_groups, int8_matmul, linear_w4a8, linear_w8a8, w4a8_gemm,
                   w4a16_gemm, w8a8_epilogue, w8a8_gemm, w8a16_gemm)
from .sparse import (compress_24, decompress_24, is_24, linear_sparse24_w8a8, meta_indices, prune_24,
                     sparse24_linear, sparse24_w8a8)
from .quant import (FLT_MIN, GRANULARITIES, dequantize, pack_int4, qrange, quantize,
                    quantize_activations, quantize_per_token_int8, quantize_static_int8, quantize_weight_int4,
                    smooth_activations, unpack_int4, INT4_CLIP_RATIOS)

__all__ = ["compress_24", "decompress_24", "is_24", "linear_sparse24_w8a8", "meta_indices", "prune_24",
           "sparse24_linear", "sparse24_w8a8", "FLT_MIN", "GRANULARITIES", "dequantize", "int4_group_acc", "int4_groups", "int8_matmul",
           "linear_w4a8", "linear_w8a8", "pack_int4", "qrange", "quantize", "quantize_activations",
           "quantize_per_token_int8", "quantize_static_int8", "smooth_activations",
           "quantize_weight_int4", "INT4_CLIP_RATIOS",
           "unpack_int4", "w4a8_gemm", "w4a16_gemm", "w8a8_epilogue", "w8a8_gemm", "w8a16_gemm"]
