"""qkernels.triton_kernels: Triton GPU kernels (installed under the qkernels namespace).

Each public wrapper validates its inputs and launches a private ``_name_kernel``; ``cuda_impls``
maps every torch.ops.qkernels schema to them, and qkernels.ops registers that map as the CUDA
kernels. The package imports nothing of qkernels but qkernels.formats (the blob layouts). Under
TRITON_INTERPRET=1 the kernels also run on CPU tensors, which is how CI checks them without a GPU.
"""
