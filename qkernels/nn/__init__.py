"""Drop-in nn.Module replacements for nn.Linear."""
from .quant_linear import QuantLinear
from .sparse_linear import SparseLinear

__all__ = ["QuantLinear", "SparseLinear"]
