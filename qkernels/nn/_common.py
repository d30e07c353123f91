"""What QuantLinear and SparseLinear share: fp32 side buffers, the one packed weight (re-packed
for a new device), the format-version check, and the input checks API.md promises."""
from __future__ import annotations

import torch
from torch import nn

FORMAT_VERSION = 1

CPU_DTYPES = (torch.float32, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_linear_input(x, in_features: int, weight_device: torch.device) -> None:
    """ValueError / TypeError naming the argument, what was expected and what was given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    allowed = CUDA_DTYPES if x.device.type == "cuda" else CPU_DTYPES
    if x.dtype not in allowed:
        raise TypeError(f"x must have dtype in {[str(d) for d in allowed]} on {x.device.type}, "
                        f"got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x.shape[-1] must equal in_features={in_features}, got shape {tuple(x.shape)}")
    if x.device != weight_device:
        raise ValueError(f"x is on {x.device} but the weights are on {weight_device}; "
                         "move one of them with .to()")


class PackedLinear(nn.Module):
    """Base of the drop-in linears. A subclass keeps its weight in ``self._packed`` (the layout its
    kernel reads) and implements ``_weight_tensors()`` (the plain tensors the weight unpacks to)
    and ``_repack(*tensors)``."""

    def _init_buffers(self, out_features: int, bias: bool, with_scale: bool, device) -> None:
        if with_scale:
            self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device))
        else:
            self.bias = None
        self.register_buffer("format_version", torch.tensor(FORMAT_VERSION, dtype=torch.int32))

    def _weight_tensors(self) -> tuple:
        raise NotImplementedError

    def _repack(self, *tensors) -> None:
        raise NotImplementedError

    def _apply(self, fn, recurse=True):
        # The weight is re-packed for the new device (layouts are per device). Its tensors, the
        # scales and the bias keep their dtypes whatever the module is cast to; only the device follows.
        tensors = self._weight_tensors()
        device = fn(self._packed[:0]).device  # an integer tensor: only its device can change
        keep = {n: self._buffers[n] for n in ("weight_scale", "bias") if self._buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for n, t in keep.items():
            self._buffers[n] = t.to(self._buffers[n].device)
        self._repack(*(None if t is None else t.to(device) for t in tensors))
        return self

    def _check_format_version(self, state_dict, prefix: str) -> None:
        v = state_dict.get(prefix + "format_version")
        if v is not None and int(v) != FORMAT_VERSION:
            raise ValueError(f"{prefix}format_version: this qkernels reads {type(self).__name__} format "
                             f"{FORMAT_VERSION}, the state_dict has {int(v)}")

    def _check_input(self, x) -> None:
        check_linear_input(x, self.in_features, self._packed.device)
