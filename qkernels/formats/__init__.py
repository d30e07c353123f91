"""qkernels.formats: one definition of every weight format qkernels reads and writes.

* ``layouts``: the packed layouts the kernels read (tag + geometry; CPU geometry from the C++
  library, CUDA blobs defined here and read by the Triton kernels).
* ``int4``: the int4 grouped state_dict format, nibble packing and the production quantizer.
* ``sparse24``: the 2:4 state_dict format, pruning and compression.
* ``checkpoints``: GPTQ / AWQ checkpoint tensors -> the int4 format.

This layer sits below the ops and the Triton kernels and imports nothing from them.
"""
from .checkpoints import AWQ_ORDER, awq_to_int4, gptq_to_int4
from .int4 import CLIP_RATIOS, pack_nibbles, quantize_weight_int4, unpack_nibbles
from .layouts import ESIZE, LAYOUTS, Layout, get, int4_blob_parts, int4_groups, layout_for, sparse24_blob_parts
from .sparse24 import compress_24, is_24, prune_24

__all__ = ["AWQ_ORDER", "CLIP_RATIOS", "ESIZE", "LAYOUTS", "Layout", "awq_to_int4", "compress_24", "get",
           "gptq_to_int4", "int4_blob_parts", "int4_groups", "is_24", "layout_for", "pack_nibbles", "prune_24",
           "quantize_weight_int4", "sparse24_blob_parts", "unpack_nibbles"]
