"""What QuantLinear and SparseLinear share: fp32 side buffers, the one packed weight (re-packed
for a new device), the state_dict header (format version + module configuration) and its checks,
the validation of loaded tensors, and the input checks of every forward."""
from __future__ import annotations

import torch
from torch import nn

from .._ext import cpu_isa
from ..backend import current_backend

# 2: the module configuration is part of the state_dict (``qconfig``) and checked on load.
FORMAT_VERSION = 2

CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # float16 runs in fp32 on the CPU
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


def call_buffers(m: nn.Module) -> tuple:
    """(packed weight, bias, input_scale, activation_scale) of a PackedLinear for its forward, read
    from m._buffers in one go: each `m.<buffer>` goes through nn.Module.__getattr__ (and QuantLinear's
    own), about 1 us apiece, a sixth of a small layer's whole call. A bias of None is a plain
    attribute, not a buffer."""
    b = m._buffers
    return b["_packed"], b["bias"] if "bias" in b else m.bias, b["input_scale"], b["activation_scale"]


def check_size(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


# ---- validation of loaded tensors: ValueError naming the key -----------------------------------------
def expect_tensor(state_dict, key: str, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    t = state_dict[key]
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{key}: expected a {_dt(dtype)} tensor of shape {shape}, got {type(t).__name__}")
    if t.dtype != dtype or tuple(t.shape) != tuple(shape):
        raise ValueError(f"{key}: expected a {_dt(dtype)} tensor of shape {tuple(shape)}, got "
                         f"{_dt(t.dtype)} {tuple(t.shape)}")
    return t


def _dt(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _checkable(t: torch.Tensor) -> bool:
    return t.device.type != "meta" and t.numel() > 0


def expect_finite(key: str, t: torch.Tensor) -> torch.Tensor:
    if _checkable(t) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{key}: holds NaN or Inf")
    return t


def expect_range(key: str, t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    if _checkable(t) and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"{key}: values must lie in [{lo}, {hi}], got [{int(t.min())}, {int(t.max())}]")
    return t


def expect_permutation(key: str, t: torch.Tensor, n: int) -> torch.Tensor:
    if t.dtype.is_floating_point or t.dtype == torch.bool or tuple(t.shape) != (n,):
        raise ValueError(f"{key}: expected an integer tensor of shape ({n},), got {_dt(t.dtype)} {tuple(t.shape)}")
    if _checkable(t) and not torch.equal(t.sort().values.long(), torch.arange(n, device=t.device)):
        raise ValueError(f"{key}: must be a permutation of range({n})")
    return t


class PackedLinear(nn.Module):
    """Base of the drop-in linears. A subclass keeps its weight in ``self._packed`` (the layout its
    kernel reads), names its configuration in ``CONFIG_FIELDS`` / ``_config_values()`` (ints, the
    ``qconfig`` state_dict entry), and implements ``_weight_tensors()`` (the plain tensors the
    weight unpacks to), ``_repack(*tensors)``, ``_weight_keys()`` (the state_dict keys of the
    weight, which are not buffers) and ``_load_weight(state_dict, prefix)`` (validates and repacks)."""

    CONFIG_FIELDS: tuple = ()
    OPTIONAL_WEIGHT_KEYS: tuple = ()  # weight keys a state_dict may lack (their absence is a value too)

    def _init_buffers(self, out_features: int, bias: bool, with_scale: bool, device) -> None:
        # The packed weight is a non-persistent buffer: counted by named_buffers() (memory
        # footprints), moved by .to(), never in the state_dict (which holds the plain tensors).
        self.register_buffer("_packed", None, persistent=False)
        if with_scale:
            self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device))
        else:
            self.bias = None
        self.register_buffer("format_version", torch.tensor(FORMAT_VERSION, dtype=torch.int32))
        self.register_buffer("qconfig", torch.tensor(self._config_values(), dtype=torch.int32))

    def _config_values(self) -> tuple:
        raise NotImplementedError

    def _config_text(self, values) -> dict:
        """{field: readable value} for an encoded qconfig (subclasses decode None / dtypes)."""
        return dict(zip(self.CONFIG_FIELDS, values))

    def _weight_tensors(self) -> tuple:
        raise NotImplementedError

    def _repack(self, *tensors) -> None:
        raise NotImplementedError

    def _weight_keys(self) -> tuple:
        raise NotImplementedError

    def _load_weight(self, state_dict, prefix: str) -> None:
        raise NotImplementedError

    def _apply(self, fn, recurse=True):
        # The weight is re-packed for the new device (layouts are per device). Its tensors, the
        # scales, the bias and the calibration tensors keep their dtypes whatever the module is cast
        # to; only the device follows.
        tensors = self._weight_tensors()
        device = fn(self._packed[:0]).device  # an integer tensor: only its device can change
        keep = {n: self._buffers[n] for n in ("weight_scale", "bias", "input_scale", "activation_scale")
                if self._buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for n, t in keep.items():
            self._buffers[n] = t.to(self._buffers[n].device)
        self._repack(*(None if t is None else t.to(device) for t in tensors))
        return self

    # ---- loading: header first (version, configuration), then every tensor validated ----------------
    def _check_header(self, state_dict, prefix: str) -> None:
        name = type(self).__name__
        vk, ck = prefix + "format_version", prefix + "qconfig"
        if vk in state_dict:
            v = state_dict[vk]
            if (not isinstance(v, torch.Tensor) or v.numel() != 1 or v.dtype.is_floating_point
                    or v.dtype == torch.bool):
                raise ValueError(f"{vk}: expected an integer tensor with one element, got "
                                 f"{getattr(v, 'dtype', type(v).__name__)} {tuple(getattr(v, 'shape', ()))}")
            if int(v) != FORMAT_VERSION:
                extra = (" (format 1 did not record the module configuration, so it cannot be checked)"
                         if int(v) == 1 else "")
                raise ValueError(f"{vk}: this qkernels reads {name} format {FORMAT_VERSION}, the state_dict "
                                 f"has {int(v)}{extra}")
        if ck in state_dict:
            c = expect_tensor(state_dict, ck, torch.int32, (len(self.CONFIG_FIELDS),))
            theirs, ours = self._config_text(c.tolist()), self._config_text(self._config_values())
            diff = [f for f in self.CONFIG_FIELDS if theirs[f] != ours[f]]
            if diff:
                raise ValueError(f"{ck}: the state_dict was saved by a {name} with "
                                 + ", ".join(f"{f}={theirs[f]!r}" for f in diff) + "; this module has "
                                 + ", ".join(f"{f}={ours[f]!r}" for f in diff))
        if any(prefix + k in state_dict for k in self._weight_keys()) and not (vk in state_dict and ck in state_dict):
            raise ValueError(f"{prefix or 'state_dict'}: has {name} weights but no format_version / qconfig, so "
                             "their configuration cannot be checked")

    # The calibrated activation preparation (configuration: smooth, act_scale): its tensors are in
    # the state_dict exactly when the module has them; each one names the field that implies it.
    CALIBRATION_BUFFERS = (("input_scale", "smooth", True), ("activation_scale", "act_scale", "static"))

    def _init_calibration(self, smooth: bool, act_scale: str, int8_acts: bool, device) -> None:
        if not isinstance(smooth, bool):
            raise TypeError(f"smooth must be a bool, got {type(smooth).__name__}")
        if act_scale not in ("dynamic", "static"):
            raise ValueError(f"act_scale must be 'dynamic' or 'static', got {act_scale!r}")
        if act_scale == "static" and not int8_acts:
            raise ValueError("act_scale='static' (a static int8 activation scale) needs int8 activations")
        self.smooth, self.act_scale = smooth, act_scale
        self.register_buffer("input_scale", torch.ones(self.in_features, dtype=torch.float32, device=device)
                             if smooth else None)
        self.register_buffer("activation_scale", torch.ones(1, dtype=torch.float32, device=device)
                             if act_scale == "static" else None)

    def _check_buffers(self, state_dict, prefix: str) -> None:
        N = self.out_features
        for name in ("weight_scale", "bias"):
            key = prefix + name
            if self._buffers.get(name) is not None and key in state_dict:
                expect_finite(key, expect_tensor(state_dict, key, torch.float32, (N,)))
        if not any(prefix + k in state_dict for k in self._weight_keys()):
            return  # a partial state_dict (no weight): nothing to compare the configuration with
        for name, field, on in self.CALIBRATION_BUFFERS:
            key, has = prefix + name, self._buffers.get(name) is not None
            if (key in state_dict) != has:
                theirs = on if key in state_dict else getattr(type(self), "_OFF", {}).get(field, not on)
                raise ValueError(f"{key}: the state_dict was saved by a {type(self).__name__} with "
                                 f"{field}={theirs!r}; this module has {field}={getattr(self, field)!r}")
            if has:
                shape = (self.in_features,) if name == "input_scale" else (1,)
                t = expect_finite(key, expect_tensor(state_dict, key, torch.float32, shape))
                if t.device.type != "meta" and t.numel() and not bool((t > 0).all()):
                    raise ValueError(f"{key}: must be > 0")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        self._check_header(state_dict, prefix)
        self._check_buffers(state_dict, prefix)
        keys = self._weight_keys()
        if all(prefix + k in state_dict for k in keys):
            self._load_weight(state_dict, prefix)
        elif strict:
            missing_keys.extend(prefix + k for k in keys if prefix + k not in state_dict)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for k in keys + self.OPTIONAL_WEIGHT_KEYS:  # not buffers (or None buffers): handled above
            if prefix + k in unexpected_keys:
                unexpected_keys.remove(prefix + k)

    def _load_device(self, t: torch.Tensor) -> torch.device:
        """Where a loaded weight goes: the module's device, or the tensor's when the module was
        built on the meta device (load_state_dict(..., assign=True) into a meta skeleton)."""
        dev = self._packed.device
        return t.device if dev.type == "meta" else dev

    def _runs_on(self) -> str:
        """What runs this module's forward: the CPU path, 'triton' (CUDA) or 'reference'."""
        if current_backend() == "reference":
            return "reference"
        dev = self._packed.device.type
        return cpu_isa() if dev == "cpu" else ("triton" if dev == "cuda" else dev)

    def _check_input(self, x) -> None:
        check_linear_input(x, self.in_features, self._buffers["_packed"].device)
