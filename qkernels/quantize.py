"""Model-level API: quantize_ / sparsify_ swap a model's nn.Linear layers in place, all or nothing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from .nn import QuantLinear, SparseLinear
from .nn.quant_linear import check_config, check_shape
from .nn.sparse_linear import _check_bits


@dataclass(frozen=True)
class QuantConfig:
    """How quantize_ converts a layer (QuantLinear.from_float's arguments); checked when built."""
    weight_bits: int = 8
    act_bits: Optional[int] = 8
    group_size: Optional[int] = None
    symmetric: bool = True

    def __post_init__(self):
        check_config(self.weight_bits, self.act_bits, self.group_size, self.symmetric)

    def check_layer(self, linear: nn.Linear) -> None:
        """ValueError if a QuantLinear of this configuration cannot be built for `linear`'s shape."""
        check_shape(linear.in_features, linear.out_features, self.weight_bits, self.act_bits, self.group_size)

    def convert(self, linear: nn.Linear) -> QuantLinear:
        """QuantLinear.from_float(linear) with this configuration."""
        return QuantLinear.from_float(linear, self.weight_bits, self.act_bits, self.group_size, self.symmetric)


@dataclass(frozen=True)
class SparseConfig:
    """How sparsify_ converts a layer (SparseLinear.from_float's arguments); checked when built."""
    weight_bits: Optional[int] = None

    def __post_init__(self):
        _check_bits(self.weight_bits)

    def check_layer(self, linear: nn.Linear) -> None:
        """ValueError if a SparseLinear of this configuration cannot be built for `linear`'s shape
        (the construction checks, run on the meta device: no memory, no values)."""
        SparseLinear(linear.in_features, linear.out_features, linear.bias is not None, self.weight_bits,
                     device="meta")

    def convert(self, linear: nn.Linear) -> SparseLinear:
        """SparseLinear.from_float(linear) with this configuration."""
        return SparseLinear.from_float(linear, self.weight_bits)


def _convertible(m: nn.Module) -> bool:
    # nn.MultiheadAttention reads its out_proj (a NonDynamicallyQuantizableLinear) through
    # .weight / .bias, never by calling it, so that one Linear subclass cannot be swapped.
    return isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)


def _plan(model: nn.Module, config, config_type, filter_fn):
    """[(linear, its config, every fully qualified name it has)] for the layers to convert."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names: dict[int, tuple[nn.Module, list[str]]] = {}
    for fqn, m in model.named_modules(remove_duplicate=False):
        if _convertible(m):
            names.setdefault(id(m), (m, []))[1].append(fqn)
    if isinstance(config, dict):
        if filter_fn is not None:
            raise ValueError("pass either a per-layer config dict or filter_fn, not both")
        known = {fqn for _, fqns in names.values() for fqn in fqns}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"config names layers that are not convertible nn.Linear modules of the model: {unknown}")
        for fqn, c in config.items():
            if c is not None and not isinstance(c, config_type):
                raise TypeError(f"config[{fqn!r}] must be a {config_type.__name__} or None, got {type(c).__name__}")
        pick = lambda m, fqn: config.get(fqn)  # noqa: E731
    elif isinstance(config, config_type):
        pick = lambda m, fqn: config if filter_fn is None or filter_fn(m, fqn) else None  # noqa: E731
    else:
        raise TypeError(f"config must be a {config_type.__name__} or a dict {{name: {config_type.__name__} "
                        f"or None}}, got {type(config).__name__}")
    plan = []
    for m, fqns in names.values():
        chosen = [pick(m, fqn) for fqn in fqns]
        if any(c != chosen[0] for c in chosen):
            raise ValueError(f"the module at {fqns} is shared but would get different configurations "
                             f"{chosen}; it is one module, so it gets one")
        if chosen[0] is not None:
            if "" in fqns:
                raise TypeError("model is itself an nn.Linear; use QuantLinear.from_float(model) or "
                                "SparseLinear.from_float(model) instead")
            plan.append((m, chosen[0], fqns))
    return plan


def _check(plan) -> None:
    """Every check a conversion makes, for every layer, before anything is replaced."""
    for m, cfg, fqns in plan:
        try:
            cfg.check_layer(m)
            w = m.weight
            if w.device.type != "meta" and not bool(torch.isfinite(w.detach()).all()):
                raise ValueError("weight holds NaN or Inf")
        except (ValueError, TypeError, NotImplementedError) as e:
            raise type(e)(f"{fqns[0]}: {e} (nothing was replaced)") from e


def _convert(model: nn.Module, config, config_type, filter_fn) -> nn.Module:
    plan = _plan(model, config, config_type, filter_fn)
    _check(plan)
    while plan:
        m, cfg, fqns = plan.pop(0)
        new = cfg.convert(m)
        for fqn in fqns:  # a module used at several places is replaced everywhere by one new module
            parent, _, child = fqn.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
        del m, new  # the float layer is freed now unless something else still holds it
    return model


def quantize_(model: nn.Module, config: QuantConfig | dict = QuantConfig(), filter_fn: Callable | None = None
              ) -> nn.Module:
    """Replace (in place) every nn.Linear (subclasses included) for which filter_fn(module, fqn) is
    True by a QuantLinear; returns the model.

    config: a QuantConfig for every selected layer, or a dict {fully qualified name: QuantConfig or
    None} (None or absent = keep float). Every layer is checked before any is replaced (all or
    nothing); a module used at several places becomes one QuantLinear used at all of them.
    nn.MultiheadAttention's out_proj is left alone (its parent reads .weight, never calls it).
    """
    return _convert(model, config, QuantConfig, filter_fn)


def sparsify_(model: nn.Module, config: SparseConfig | dict = SparseConfig(), filter_fn: Callable | None = None
              ) -> nn.Module:
    """Replace (in place) every selected nn.Linear by a 2:4 SparseLinear; as quantize_ (a SparseConfig
    or a dict {name: SparseConfig or None}, all or nothing, shared modules stay shared)."""
    return _convert(model, config, SparseConfig, filter_fn)
