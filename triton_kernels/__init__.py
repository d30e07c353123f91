"""qkernels.triton_kernels: Triton GPU kernels (installed under the qkernels namespace).

Each public wrapper validates its inputs and launches a private ``_name_kernel``. ``register``
binds them as the CUDA impls of torch.ops.qkernels.*; under TRITON_INTERPRET=1 they also run on
CPU tensors, which is how CI checks them without a GPU.
"""
