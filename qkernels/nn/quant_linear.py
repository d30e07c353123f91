"""QuantLinear: drop-in nn.Linear with int8 weights (W8A8 dynamic or W8A16 weight-only)."""
from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..backend import current_backend

FORMAT_VERSION = 1
_CPU_DTYPES = (torch.float32, torch.bfloat16)
_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_config(weight_bits, act_bits, group_size, symmetric):
    if weight_bits not in (8, 4):
        raise ValueError(f"weight_bits must be 8 or 4, got {weight_bits!r}")
    if act_bits not in (8, None):
        raise ValueError(f"act_bits must be 8 or None (weight-only), got {act_bits!r}")
    if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be None or a positive int, got {group_size!r}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    if weight_bits == 4:
        raise NotImplementedError("weight_bits=4 (grouped int4) is not implemented yet in this "
                                  "version of qkernels; use weight_bits=8")
    if group_size is not None:
        raise NotImplementedError("int8 weights support per-channel scales only (group_size=None); "
                                  f"got group_size={group_size}")
    if not symmetric:
        raise NotImplementedError("int8 weights are symmetric only (symmetric=True) in this version")


class QuantLinear(nn.Module):
    """y = x @ W.T + b with W stored as int8 [out, in] and one fp32 scale per output channel.

    act_bits=8: activations are quantized per token to int8 at run time (W8A8, int32 accumulate).
    act_bits=None: activations stay float (W8A16). state_dict holds ``qweight`` (int8 [N, K]),
    ``weight_scale`` (fp32 [N]), ``bias`` (fp32 [N], if any) and ``format_version``.
    In memory the module keeps a single copy of the int8 weight, in the layout its kernel reads
    (``ops.pack_int8_weight``); ``qweight`` unpacks it on demand (state_dict, dequantize, reference).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 8,
                 act_bits: int | None = 8, group_size: int | None = None, symmetric: bool = True,
                 device=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        _check_config(weight_bits, act_bits, group_size, symmetric)
        self.in_features, self.out_features = in_features, out_features
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.group_size, self.symmetric = group_size, symmetric
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device))
        else:
            self.bias = None
        self.register_buffer("format_version", torch.tensor(FORMAT_VERSION, dtype=torch.int32))
        self._set_weight(torch.zeros(out_features, in_features, dtype=torch.int8, device=device))

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_float(cls, linear: nn.Linear, weight_bits: int = 8, act_bits: int | None = 8,
                   group_size: int | None = None, symmetric: bool = True) -> "QuantLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        _check_config(weight_bits, act_bits, group_size, symmetric)
        w = linear.weight.detach()
        if not torch.isfinite(w).all():
            raise ValueError("linear.weight holds NaN or Inf; cannot quantize it")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_bits,
                act_bits, group_size, symmetric, device=w.device)
        qw, scale = ops.quantize_per_token_int8(w.float())
        with torch.no_grad():
            q.weight_scale.copy_(scale)
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach().float())
        q._set_weight(qw)
        return q

    # ---- the int8 weight: one packed copy in memory, plain int8 [N, K] in the state_dict ---------
    def _set_weight(self, qweight: torch.Tensor):
        self._packed = ops.pack_int8_weight(qweight, self.act_bits)

    @property
    def qweight(self) -> torch.Tensor:
        """The int8 weight [out_features, in_features] (unpacked from the kernel layout)."""
        return ops.unpack_int8_weight(self._packed, self.act_bits, self.out_features, self.in_features)

    def _apply(self, fn, recurse=True):
        # The weight is re-packed for the new device (the layout is per device). Scales and bias
        # stay fp32 whatever dtype the module is cast to; only their device follows.
        qweight = fn(self.qweight)
        keep = {n: self._buffers[n] for n in ("weight_scale", "bias") if self._buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for n, t in keep.items():
            self._buffers[n] = t.to(self._buffers[n].device)
        self._set_weight(qweight)
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "qweight"] = self.qweight
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        v = state_dict.get(prefix + "format_version")
        if v is not None and int(v) != FORMAT_VERSION:
            raise ValueError(f"{prefix}format_version: this qkernels reads QuantLinear format "
                             f"{FORMAT_VERSION}, the state_dict has {int(v)}")
        key = prefix + "qweight"
        if key in state_dict:
            w = state_dict[key]
            shape = (self.out_features, self.in_features)
            if not isinstance(w, torch.Tensor) or w.dtype != torch.int8 or tuple(w.shape) != shape:
                got = f"{w.dtype} {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
                error_msgs.append(f"{key}: expected int8 tensor of shape {shape}, got {got}")
            else:
                self._set_weight(w.to(self.weight_scale.device))
        elif strict:
            missing_keys.append(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if key in unexpected_keys:  # not a buffer: handled above
            unexpected_keys.remove(key)

    # ---- use ---------------------------------------------------------------------------------
    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out_features, in_features] this module effectively multiplies by."""
        return self.qweight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        allowed = _CUDA_DTYPES if x.device.type == "cuda" else _CPU_DTYPES
        if x.dtype not in allowed:
            raise TypeError(f"x must have dtype in {[str(d) for d in allowed]} on {x.device.type}, "
                            f"got {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x.shape[-1] must equal in_features={self.in_features}, got shape "
                             f"{tuple(x.shape)}")
        if x.device != self._packed.device:
            raise ValueError(f"x is on {x.device} but the weights are on {self._packed.device}; "
                             "move one of them with .to()")
        x2 = x.reshape(-1, self.in_features)
        y = ops.int8_linear(x2, self._packed, self.weight_scale, self.bias, self.act_bits)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        a = "A8" if self.act_bits == 8 else "A16"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, W{self.weight_bits}{a}, backend={current_backend()}")
