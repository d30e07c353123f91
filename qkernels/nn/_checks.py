"""Input checks shared by the drop-in modules (the errors API.md promises)."""
from __future__ import annotations

import torch

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
