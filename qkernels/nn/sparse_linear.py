"""SparseLinear: drop-in nn.Linear with a 2:4 structured-sparse weight (float or int8 values)."""
from __future__ import annotations

import torch
from torch import nn

from .. import formats, ops
from ._common import PackedLinear, call_buffers, check_size, expect_finite, expect_range, expect_tensor

_FLOAT_VALUES = (torch.float32, torch.bfloat16)
_VALUE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}  # in the qconfig
VALUE_DTYPES = tuple(_VALUE_CODES)


def _check_bits(weight_bits):
    if weight_bits not in (None, 8):
        raise ValueError(f"weight_bits must be None (float values) or 8 (int8 values), got {weight_bits!r}")


class SparseLinear(PackedLinear):
    """y = x @ W.T + b with W pruned to 2:4 along in_features and stored compressed.

    weight_bits=None: float values (fp32, or bf16 when built from a bf16 nn.Linear), fp32
    accumulation. weight_bits=8: int8 values with one fp32 scale per output channel, run with
    dynamic per-token int8 activations (exact int32 accumulation, the W8A8 epilogue).

    state_dict (format_version 2; layout in qkernels.formats.sparse24): ``values`` [N, Kp/2]
    (fp32 / bf16 / int8), ``meta`` uint8 [N, ceil(Kp/8)] (Kp = in_features rounded up to 4),
    ``weight_scale`` fp32 [N] (int8 only), ``bias`` fp32 [N] (if any), ``format_version`` and
    ``qconfig`` int32 [2]: (weight_bits or 0, value dtype: 0 float32, 1 bfloat16, 2 int8); loading
    checks both and validates every tensor (ValueError naming the field or key).
    In memory the module keeps one copy of the compressed weight, in its kernel's layout.
    """

    CONFIG_FIELDS = ("weight_bits", "value_dtype")

    _OFF = {"smooth": False, "act_scale": "dynamic"}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits=None,
                 device=None, value_dtype: torch.dtype = torch.float32, act_scale: str = "dynamic"):
        super().__init__()
        check_size("in_features", in_features)
        check_size("out_features", out_features)
        _check_bits(weight_bits)
        if weight_bits is None and value_dtype not in _FLOAT_VALUES:
            raise TypeError(f"value_dtype must be float32 or bfloat16, got {value_dtype}")
        limit = ops.MAX_IN_FEATURES["s24_w8a8"]
        if weight_bits == 8 and in_features > limit:
            raise ValueError(f"in_features={in_features} is above {limit}, the largest K the 2:4 int8 kernels "
                             "accumulate exactly in int32 (weight_bits=None has no such limit)")
        self.in_features, self.out_features, self.weight_bits = in_features, out_features, weight_bits
        self.value_dtype = torch.int8 if weight_bits == 8 else value_dtype
        self._init_buffers(out_features, bias, weight_bits == 8, device)
        self._init_calibration(False, act_scale, weight_bits == 8, device)
        values, meta = formats.compress_24(torch.zeros(out_features, in_features, dtype=self.value_dtype, device=device))
        self._set_weight(values, meta)

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_bits=None, act_scale: float | None = None) -> "SparseLinear":
        """Prune linear.weight to 2:4 by magnitude (qkernels.prune_24; a 2:4 weight is kept exactly)
        and compress it; weight_bits=8 then quantizes the kept values per output channel.
        act_scale (weight_bits=8): a static per-tensor int8 activation scale instead of per token."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        _check_bits(weight_bits)
        w = linear.weight.detach()
        if w.device.type != "meta" and not torch.isfinite(w).all():
            raise ValueError("linear.weight holds NaN or Inf; cannot sparsify it")
        vdt = w.dtype if w.dtype in _FLOAT_VALUES else torch.float32
        s = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_bits,
                device=w.device, value_dtype=vdt, act_scale="dynamic" if act_scale is None else "static")
        if act_scale is not None:
            v = torch.as_tensor(act_scale, dtype=torch.float32).reshape(-1)
            if v.numel() != 1 or not (bool(torch.isfinite(v).all()) and float(v) > 0):
                raise ValueError(f"act_scale must be one finite number > 0, got {act_scale!r}")
            with torch.no_grad():
                s.activation_scale.copy_(v)
        _, pruned = formats.prune_24(w)
        if weight_bits == 8:
            q, scale = ops.quantize_per_token_int8(pruned.float())
            with torch.no_grad():
                s.weight_scale.copy_(scale)
            s._set_weight(*formats.compress_24(q))
        else:
            s._set_weight(*formats.compress_24(pruned.to(vdt)))
        if linear.bias is not None:
            with torch.no_grad():
                s.bias.copy_(linear.bias.detach().float())
        return s

    @classmethod
    def from_sparse_semi_structured(cls, weight, bias: torch.Tensor | None = None) -> "SparseLinear":
        """A float SparseLinear from PyTorch's semi-structured sparse weight (or any dense 2:4 weight
        [out, in]): the kept values and positions carry over exactly (fp16 values become fp32)."""
        dense = weight.to_dense() if hasattr(weight, "to_dense") else weight
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2 or not dense.dtype.is_floating_point:
            raise TypeError("weight must be a 2-D float tensor or a torch semi-structured sparse tensor")
        if not formats.is_24(dense):
            raise ValueError("weight is not 2:4 sparse (a group of 4 along in_features has more than 2 nonzeros)")
        vdt = dense.dtype if dense.dtype in _FLOAT_VALUES else torch.float32
        N, K = dense.shape
        s = cls(K, N, bias is not None, None, device=dense.device, value_dtype=vdt)
        s._set_weight(*formats.compress_24(dense.to(vdt)))
        if bias is not None:
            with torch.no_grad():
                s.bias.copy_(bias.detach().float())
        return s

    def _config_values(self):
        return (self.weight_bits or 0, _VALUE_CODES[self.value_dtype])

    def _config_text(self, values):
        names = {v: str(k).replace("torch.", "") for k, v in _VALUE_CODES.items()}
        return {"weight_bits": values[0] or None, "value_dtype": names.get(values[1], values[1])}

    # ---- the weight: one packed copy in memory ----------------------------------------------------
    def _set_weight(self, values: torch.Tensor, meta: torch.Tensor):
        self._layout = formats.layout_for("sparse24", values.device).tag
        self._packed = ops.pack_sparse24_weight(values, meta, self.in_features, self._layout)

    def compressed(self):
        """(values [N, Kp/2], meta uint8 [N, ceil(Kp/8)]) in the state_dict format."""
        return ops.unpack_sparse24_weight(self._packed, self._layout, self.out_features, self.in_features,
                                          self.value_dtype)

    def to_sparse_semi_structured(self):
        """The weight as PyTorch's semi-structured sparse tensor (CUDA only: cuSPARSELt / CUTLASS),
        e.g. to compare with torch's own 2:4 matmul. Built from the dense pruned weight."""
        w = self.dequantize()
        if not w.is_cuda:
            raise ValueError("to_sparse_semi_structured needs the module on a CUDA device")
        return torch.sparse.to_sparse_semi_structured(w.to(torch.float16 if self.value_dtype != torch.bfloat16
                                                           else torch.bfloat16))

    def _weight_tensors(self):
        return self.compressed()

    def _repack(self, values, meta):
        self._set_weight(values, meta)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        values, meta = self.compressed()
        destination[prefix + "values"] = values
        destination[prefix + "meta"] = meta
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _weight_keys(self):
        return ("values", "meta")

    def _load_weight(self, state_dict, prefix):
        N, G = self.out_features, -(-self.in_features // 4)
        vk, mk = prefix + "values", prefix + "meta"
        values = expect_tensor(state_dict, vk, self.value_dtype, (N, 2 * G))
        if self.value_dtype == torch.int8:
            expect_range(vk, values, -127, 127)
        else:
            expect_finite(vk, values)
        meta = expect_tensor(state_dict, mk, torch.uint8, (N, (G + 1) // 2))
        if meta.device.type != "meta":
            nib = torch.stack([meta & 0xF, meta >> 4], dim=-1).reshape(N, -1)[:, :G]
            bad = (nib & 3) >= (nib >> 2)
            if bool(bad.any()):
                n, g = (int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{mk}: group {g} of row {n} must name two positions i0 < i1, got "
                                 f"i0={int(nib[n, g] & 3)} i1={int(nib[n, g] >> 2)}")
        dev = self._load_device(values)
        self._set_weight(values.to(dev), meta.to(dev))

    # ---- use ---------------------------------------------------------------------------------------
    def dequantize(self) -> torch.Tensor:
        """The pruned dense float32 weight [out_features, in_features] the module multiplies by."""
        return ops.dequantize_sparse24(self._packed, self._layout, self.value_dtype,
                                       self.weight_scale if self.weight_bits == 8 else None,
                                       self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x2 = x.reshape(-1, self.in_features)
        packed, bias, _, act_scale = call_buffers(self)
        y = ops.sparse24_linear(x2, packed, self._layout, self.value_dtype,
                                self._buffers["weight_scale"] if self.weight_bits == 8 else None, bias,
                                self.out_features, act_scale)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        vals = "int8 (A8)" if self.weight_bits == 8 else str(self.value_dtype).replace("torch.", "")
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, 2:4 {vals}{', static act scale' if self.act_scale == 'static' else ''}, "
                f"path={self._runs_on()}")
