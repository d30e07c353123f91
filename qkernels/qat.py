"""Quantization-aware training and distillation: prepare_qat_ / FakeQuantLinear / convert_qat_,
distillation_loss.

FakeQuantLinear keeps a float weight that trains and computes, in its forward, exactly the numbers
QuantLinear would use: the weight quantized by the production quantizer (int8 per channel, or int4
with the per-group clipping search: torch.ops.qkernels.quantize_int4_weight) and dequantized, and
with act_bits=8 the activations quantized per token as the kernels do (quantize_per_token_int8)
and dequantized. Rounding is bypassed in the backward pass (straight-through estimator: the
gradient of the quantized value is taken as that of the float value). convert_qat_ then builds the
QuantLinear of the trained weight, which computes the same function (the kernels accumulate the
same integers; float outputs agree to fp32 rounding).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import calibration, ops
from .nn import QuantLinear
from .quantize import QuantConfig, _plan, as_linear, set_module


def fake_quantize_weight(w: torch.Tensor, cfg: QuantConfig) -> torch.Tensor:
    """dequantize(quantize(w)) with QuantLinear.from_float's quantizer (no gradient)."""
    return calibration.fake_quantize_weight(w, cfg.weight_bits, cfg.group_size, cfg.symmetric)


def fake_quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """Per-token dynamic int8 as the W8A8 / W4A8 kernels quantize x, dequantized (no gradient)."""
    with torch.no_grad():
        x2 = x.detach().reshape(-1, x.shape[-1]).float()
        q, s = ops.quantize_per_token_int8(x2)
        return (q.float() * s[:, None]).reshape(x.shape).to(x.dtype)


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses the weight (and, with act_bits=8, the input) as QuantLinear
    quantizes them, with straight-through gradients; the float weight trains."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, config: QuantConfig = QuantConfig(),
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if not isinstance(config, QuantConfig):
            raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
        if config.method != "rtn":
            raise ValueError(f"QAT fake-quantizes with round to nearest; got method={config.method!r}")
        config.check_layer(self)
        self.qconfig = config

    @classmethod
    def from_linear(cls, linear: nn.Module, config: QuantConfig) -> "FakeQuantLinear":
        """A FakeQuantLinear that trains `linear`'s own weight and bias (the same Parameters for an
        nn.Linear; a transformers Conv1D's weight is transposed into a new Parameter)."""
        lin = as_linear(linear)
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, config, device="meta")
        if lin is linear:
            m.weight, m.bias = linear.weight, linear.bias
        else:
            m.weight = nn.Parameter(lin.weight.detach().contiguous().clone())
            m.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach().clone())
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = w + (fake_quantize_weight(w, self.qconfig).to(w.dtype) - w).detach()
        if self.qconfig.act_bits == 8:
            x = x + (fake_quantize_activation(x) - x).detach()
        return F.linear(x, w, self.bias)

    def to_quant_linear(self) -> QuantLinear:
        """The QuantLinear computing this layer's function with its current weight."""
        c = self.qconfig
        return QuantLinear.from_float(self, c.weight_bits, c.act_bits, c.group_size, c.symmetric)

    def extra_repr(self) -> str:
        c = self.qconfig
        return (f"{super().extra_repr()}, fake W{c.weight_bits}A{8 if c.act_bits == 8 else 16}, "
                f"group_size={c.group_size}, symmetric={c.symmetric}")


def prepare_qat_(model: nn.Module, config: QuantConfig | dict = QuantConfig(), filter_fn: Callable | None = None
                 ) -> nn.Module:
    """Swap (in place) every selected nn.Linear (as quantize_ selects them: a QuantConfig with
    filter_fn, or a dict {name: QuantConfig or None}) for a FakeQuantLinear training the same
    weight; returns the model. Configs must use method 'rtn'."""
    plan, _ = _plan(model, config, QuantConfig, filter_fn)
    for m, cfg, fqns in plan:  # every check before any swap
        if cfg.method != "rtn":
            raise ValueError(f"{fqns[0]}: QAT fake-quantizes with round to nearest; got method={cfg.method!r}")
        cfg.check_layer(as_linear(m))
    for m, cfg, fqns in plan:
        if not isinstance(m, FakeQuantLinear):
            set_module(model, fqns, FakeQuantLinear.from_linear(m, cfg))
    return model


def convert_qat_(model: nn.Module) -> nn.Module:
    """Swap (in place) every FakeQuantLinear for the QuantLinear computing the same function."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names: dict[int, tuple[FakeQuantLinear, list[str]]] = {}
    for fqn, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, FakeQuantLinear):
            if fqn == "":
                raise TypeError("model is itself a FakeQuantLinear; use model.to_quant_linear()")
            names.setdefault(id(m), (m, []))[1].append(fqn)
    for m, fqns in names.values():
        set_module(model, fqns, m.to_quant_linear())
    return model


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
                      ) -> torch.Tensor:
    """KL(teacher || student) over the last dim of the temperature-softened distributions, summed
    over classes, averaged over rows, times temperature**2 (0 for equal logits)."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have the same shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return kl.mean() * t * t
