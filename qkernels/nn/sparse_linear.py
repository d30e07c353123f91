"""SparseLinear (2:4 structured sparsity): the public name exists; the kernels are not built yet."""
from __future__ import annotations

from torch import nn

_MSG = ("SparseLinear / 2:4 sparsity is not implemented yet in this version of qkernels "
        "(planned: 2:4 sparse kernels)")


class SparseLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits=None):
        raise NotImplementedError(_MSG)

    @classmethod
    def from_float(cls, linear, weight_bits=None):
        raise NotImplementedError(_MSG)
