"""Model-level API: quantize_ / sparsify_ swap a model's nn.Linear layers in place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from .nn import QuantLinear, SparseLinear


@dataclass(frozen=True)
class QuantConfig:
    weight_bits: int = 8
    act_bits: Optional[int] = 8
    group_size: Optional[int] = None
    symmetric: bool = True


@dataclass(frozen=True)
class SparseConfig:
    weight_bits: Optional[int] = None


def _swap_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module], filter_fn) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) is nn.Linear and (filter_fn is None or filter_fn(m, name))]
    for name, m in targets:
        new = make(m)
        if name == "":
            raise TypeError("model is itself an nn.Linear; use QuantLinear.from_float(model) instead")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def quantize_(model: nn.Module, config: QuantConfig = QuantConfig(), filter_fn=None) -> nn.Module:
    """Replace (in place) every nn.Linear for which filter_fn(module, fqn) is True by a QuantLinear."""
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    return _swap_linears(model, lambda m: QuantLinear.from_float(
        m, config.weight_bits, config.act_bits, config.group_size, config.symmetric), filter_fn)


def sparsify_(model: nn.Module, config: SparseConfig = SparseConfig(), filter_fn=None) -> nn.Module:
    """Replace (in place) every selected nn.Linear by a 2:4 SparseLinear."""
    if not isinstance(config, SparseConfig):
        raise TypeError(f"config must be a SparseConfig, got {type(config).__name__}")
    return _swap_linears(model, lambda m: SparseLinear.from_float(m, config.weight_bits), filter_fn)
