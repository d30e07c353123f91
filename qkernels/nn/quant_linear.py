"""QuantLinear: drop-in nn.Linear with int8 or int4 weights, dynamic int8 or float activations."""
from __future__ import annotations

import torch
from torch import nn

from .. import formats, ops
from ._common import (FORMAT_VERSION, PackedLinear, call_buffers, check_size, expect_finite,  # noqa: F401
                      expect_permutation, expect_range, expect_tensor)


def check_config(weight_bits, act_bits, group_size, symmetric) -> None:
    """The one check of a QuantLinear configuration (QuantConfig uses it too)."""
    if weight_bits not in (8, 4) or isinstance(weight_bits, bool):
        raise ValueError(f"weight_bits must be 8 or 4, got {weight_bits!r}")
    if act_bits not in (8, None) or isinstance(act_bits, bool):
        raise ValueError(f"act_bits must be 8 or None (weight-only), got {act_bits!r}")
    if group_size is not None and (not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1):
        raise ValueError(f"group_size must be None or a positive int, got {group_size!r}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    if weight_bits == 4:
        return
    if group_size is not None:
        raise NotImplementedError("int8 weights support per-channel scales only (group_size=None); "
                                  f"got group_size={group_size}")
    if not symmetric:
        raise NotImplementedError("int8 weights are symmetric only (symmetric=True) in this version")


def check_shape(in_features, out_features, weight_bits, act_bits, group_size) -> None:
    """What a layer of this shape needs from the kernels, checked when it is built."""
    check_size("in_features", in_features)
    check_size("out_features", out_features)
    if weight_bits == 4 and group_size is not None and -(-in_features // group_size) > 1 and group_size % 8:
        raise ValueError(f"group_size must be a multiple of 8 for int4 weights (or >= in_features="
                         f"{in_features}), got {group_size}")
    if weight_bits == 8 and act_bits == 8:
        limit, what, hint = ops.MAX_IN_FEATURES["w8a8"], "W8A8", " (act_bits=None has no such limit)"
    elif weight_bits == 4:
        limit, what, hint = ops.MAX_IN_FEATURES["w4a8"], "int4", ""
    else:
        return
    if in_features > limit:
        raise ValueError(f"in_features={in_features} is above {limit}, the largest K the {what} kernels "
                         f"accumulate exactly in int32{hint}")


class QuantLinear(PackedLinear):
    """y = x @ W.T + b with W stored as int8 or int4.

    act_bits=8: activations are quantized per token to int8 at run time (W8A8 / W4A8, int32
    accumulate). act_bits=None: activations stay float (W8A16 / W4A16, fp32 accumulate).

    state_dict (format_version 2):

    * int8: ``qweight`` int8 [N, K], ``weight_scale`` fp32 [N].
    * int4: ``qweight`` uint8 [N, ceil(K/2)], two values per byte along K, element 2j in the low
      nibble of byte j (``qkernels.formats.pack_nibbles``): symmetric q in [-8, 7] (two's complement
      nibbles, w = q * scale) or, with symmetric=False, q in [0, 15] and ``weight_zero_point``
      int32 [N, G] (w = (q - zero_point) * scale); ``weight_scale`` fp32 [N, G] with
      G = ceil(K / group_size) (G = 1 when group_size is None); the last group may be partial.
      ``input_perm`` int64 [K] only for act-order GPTQ imports: the layer computes
      x[..., input_perm] @ Wq.T (see qkernels.formats.int4).
    * ``bias`` fp32 [N] (if any), ``format_version`` and ``qconfig`` int32 [4]: (weight_bits,
      act_bits or 0, group_size or 0, symmetric). Loading checks the configuration against the
      module's (ValueError naming the field) and validates every tensor (dtype, shape, value range,
      finiteness, permutation; ValueError naming the key).

    In memory the module keeps a single copy of the quantized weight, in the layout its kernel
    reads (``ops.pack_int8_weight`` / ``ops.pack_int4_weight``; int4 scales and zero points live in
    it too); ``qweight`` (and for int4 ``weight_scale`` / ``weight_zero_point``) unpack on demand.
    """

    CONFIG_FIELDS = ("weight_bits", "act_bits", "group_size", "symmetric")
    OPTIONAL_WEIGHT_KEYS = ("input_perm",)

    _OFF = {"smooth": False, "act_scale": "dynamic"}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 8,
                 act_bits: int | None = 8, group_size: int | None = None, symmetric: bool = True,
                 device=None, smooth: bool = False, act_scale: str = "dynamic"):
        super().__init__()
        check_config(weight_bits, act_bits, group_size, symmetric)
        check_shape(in_features, out_features, weight_bits, act_bits, group_size)
        self.in_features, self.out_features = in_features, out_features
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.group_size, self.symmetric = group_size, symmetric
        self._init_buffers(out_features, bias, weight_bits == 8, device)
        self._init_calibration(smooth, act_scale, act_bits == 8, device)
        self.register_buffer("input_perm", None)  # int64 [K], set only by act-order imports
        if weight_bits == 8:
            self._set_weight(torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        else:
            G = self._groups
            zp = None if symmetric else torch.zeros(out_features, G, dtype=torch.int32, device=device)
            self._set_int4(torch.zeros(out_features, (in_features + 1) // 2, dtype=torch.uint8, device=device),
                           torch.ones(out_features, G, dtype=torch.float32, device=device), zp)

    def _config_values(self):
        return (self.weight_bits, self.act_bits or 0, self.group_size or 0, int(self.symmetric))

    def _config_text(self, values):
        wb, ab, gs, sym = values
        return {"weight_bits": wb, "act_bits": ab or None, "group_size": gs or None, "symmetric": bool(sym)}

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_float(cls, linear: nn.Linear, weight_bits: int = 8, act_bits: int | None = 8,
                   group_size: int | None = None, symmetric: bool = True, input_scale: torch.Tensor | None = None,
                   act_scale: float | torch.Tensor | None = None) -> "QuantLinear":
        """Quantize an nn.Linear (subclasses included). On the meta device the result is a meta
        QuantLinear of the same configuration (no values), e.g. to load a checkpoint into.

        input_scale (fp32 [in_features], > 0): the layer computes (x * input_scale) @ Wq.T with Wq
        the quantization of W / input_scale (SmoothQuant / AWQ smoothing; the same function as W,
        with the activation outliers moved into the weight). act_scale (a positive number): a static
        per-tensor int8 activation scale (act_bits=8) instead of the per-token one."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        check_config(weight_bits, act_bits, group_size, symmetric)
        w = linear.weight.detach()
        if w.device.type != "meta" and not torch.isfinite(w).all():
            raise ValueError("linear.weight holds NaN or Inf; cannot quantize it")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_bits,
                act_bits, group_size, symmetric, device=w.device, smooth=input_scale is not None,
                act_scale="dynamic" if act_scale is None else "static")
        q._set_calibration(input_scale, act_scale)
        if input_scale is not None:
            w = w.float() / q.input_scale[None, :]
        if linear.bias is not None:
            with torch.no_grad():
                q.bias.copy_(linear.bias.detach().float())
        if weight_bits == 4:
            qw, scale, zp = ops.quantize_int4_weight(w, group_size, symmetric)
            q._set_int4(qw, scale, zp)
            return q
        qw, scale = ops.quantize_per_token_int8(w.float())
        with torch.no_grad():
            q.weight_scale.copy_(scale)
        q._set_weight(qw)
        return q

    def _set_calibration(self, input_scale, act_scale) -> None:
        """Checks and stores input_scale ([in_features], finite, > 0) and act_scale (> 0)."""
        with torch.no_grad():
            if input_scale is not None:
                t = torch.as_tensor(input_scale)
                if not t.dtype.is_floating_point or tuple(t.shape) != (self.in_features,):
                    raise ValueError(f"input_scale must be a float tensor of shape ({self.in_features},), got "
                                     f"{t.dtype} {tuple(t.shape)}")
                expect_finite("input_scale", t)
                if t.device.type != "meta" and not bool((t > 0).all()):
                    raise ValueError("input_scale must be > 0")
                self.input_scale.copy_(t.float())
            if act_scale is not None:
                v = torch.as_tensor(act_scale, dtype=torch.float32).reshape(-1)
                if v.numel() != 1 or (v.device.type != "meta" and not (bool(torch.isfinite(v).all()) and
                                                                       float(v) > 0)):
                    raise ValueError(f"act_scale must be one finite number > 0, got {act_scale!r}")
                self.activation_scale.copy_(v)

    @classmethod
    def from_int4(cls, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                  group_size: int | None, bias: torch.Tensor | None = None, act_bits: int | None = None,
                  input_perm: torch.Tensor | None = None, input_scale: torch.Tensor | None = None,
                  act_scale: float | torch.Tensor | None = None) -> "QuantLinear":
        """An int4 QuantLinear from quantized values (e.g. a GPTQ/AWQ checkpoint, qkernels.formats).

        q: integer [N, K] values, in [-8, 7] when zero_point is None, else in [0, 15]; scale: float
        [N, G]; zero_point: integer [N, G] in [0, 15] or None; input_perm: optional integer [K] (the
        layer computes x[..., input_perm] @ ((q - zero_point) * scale).T + bias). Every value is
        checked in its own dtype before any conversion.
        """
        if not isinstance(q, torch.Tensor) or q.dim() != 2 or q.dtype.is_floating_point or q.dtype == torch.bool:
            raise TypeError(f"q must be a 2-D integer tensor [out_features, in_features], got "
                            f"{getattr(q, 'dtype', type(q).__name__)} {tuple(getattr(q, 'shape', ()))}")
        N, K = q.shape
        symmetric = zero_point is None
        lo, hi = formats.int4.qrange(symmetric)
        expect_range("q", q, lo, hi)
        m = cls(K, N, bias is not None, 4, act_bits, group_size, symmetric, device=q.device,
                smooth=input_scale is not None, act_scale="dynamic" if act_scale is None else "static")
        m._set_calibration(input_scale, act_scale)
        G = m._groups
        if not isinstance(scale, torch.Tensor) or tuple(scale.shape) != (N, G) or not scale.dtype.is_floating_point:
            raise ValueError(f"scale must be a float tensor of shape ({N}, {G}), got "
                             f"{getattr(scale, 'dtype', type(scale).__name__)} {tuple(getattr(scale, 'shape', ()))}")
        expect_finite("scale", scale)
        if zero_point is not None:
            if (not isinstance(zero_point, torch.Tensor) or tuple(zero_point.shape) != (N, G)
                    or zero_point.dtype.is_floating_point or zero_point.dtype == torch.bool):
                raise ValueError(f"zero_point must be an integer tensor of shape ({N}, {G}), got "
                                 f"{getattr(zero_point, 'dtype', type(zero_point).__name__)} "
                                 f"{tuple(getattr(zero_point, 'shape', ()))}")
            zero_point = expect_range("zero_point", zero_point, 0, 15).to(torch.int32)
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (N,):
                raise ValueError(f"bias must have shape ({N},), got {tuple(getattr(bias, 'shape', ()))}")
            with torch.no_grad():
                m.bias.copy_(expect_finite("bias", bias.detach()).float())
        if input_perm is not None:
            perm = expect_permutation("input_perm", torch.as_tensor(input_perm), K)
            m.register_buffer("input_perm", perm.to(device=q.device, dtype=torch.int64))
        m._set_int4(formats.pack_nibbles(q), scale.float(), zero_point)
        return m

    @classmethod
    def from_int8(cls, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                  act_bits: int | None = 8, input_scale: torch.Tensor | None = None,
                  act_scale: float | torch.Tensor | None = None) -> "QuantLinear":
        """An int8 QuantLinear from quantized values (e.g. GPTQ): q integer [N, K] in [-127, 127],
        scale float [N] (w = q * scale), optional bias [N]. Values are checked before conversion."""
        if not isinstance(q, torch.Tensor) or q.dim() != 2 or q.dtype.is_floating_point or q.dtype == torch.bool:
            raise TypeError(f"q must be a 2-D integer tensor [out_features, in_features], got "
                            f"{getattr(q, 'dtype', type(q).__name__)} {tuple(getattr(q, 'shape', ()))}")
        N, K = q.shape
        expect_range("q", q, -127, 127)
        if not isinstance(scale, torch.Tensor) or tuple(scale.shape) != (N,) or not scale.dtype.is_floating_point:
            raise ValueError(f"scale must be a float tensor of shape ({N},), got "
                             f"{getattr(scale, 'dtype', type(scale).__name__)} {tuple(getattr(scale, 'shape', ()))}")
        expect_finite("scale", scale)
        m = cls(K, N, bias is not None, 8, act_bits, None, True, device=q.device,
                smooth=input_scale is not None, act_scale="dynamic" if act_scale is None else "static")
        m._set_calibration(input_scale, act_scale)
        with torch.no_grad():
            m.weight_scale.copy_(scale.float())
            if bias is not None:
                if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (N,):
                    raise ValueError(f"bias must have shape ({N},), got {tuple(getattr(bias, 'shape', ()))}")
                m.bias.copy_(expect_finite("bias", bias.detach()).float())
        m._set_weight(q.to(torch.int8))
        return m

    @classmethod
    def from_gptq(cls, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                  g_idx: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  act_bits: int | None = None, legacy_zero_offset: bool = True, bits: int = 4) -> "QuantLinear":
        """A 4-bit GPTQ layer (qweight int32 [K/8, N], qzeros int32 [G, N/8], scales [G, N], optional
        g_idx [K], act-order included); legacy_zero_offset=False for the "gptq_v2" format.
        Layouts and the exact conversion: qkernels.formats.checkpoints. bits other than 4 (given,
        or seen in g_idx's length: K = 32 / bits * qweight.shape[0]) are a NotImplementedError."""
        rows = qweight.shape[0] if isinstance(qweight, torch.Tensor) and qweight.dim() == 2 else None
        if bits == 4 and g_idx is not None and rows and hasattr(g_idx, "__len__") and len(g_idx) != 8 * rows:
            seen = {32 * rows // b: b for b in (2, 3, 8) if 32 * rows % b == 0}.get(len(g_idx))
            bits = seen or bits
        if bits != 4:
            raise NotImplementedError(f"GPTQ layer with bits={bits}: qkernels imports 4-bit GPTQ only")
        q, scale, zp, gs, perm = formats.gptq_to_int4(qweight, qzeros, scales, g_idx, legacy_zero_offset)
        return cls.from_int4(q, scale, zp, gs, bias, act_bits, input_perm=perm)

    @classmethod
    def from_awq(cls, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 bias: torch.Tensor | None = None, act_bits: int | None = None, bits: int = 4) -> "QuantLinear":
        """A 4-bit AWQ (GEMM format) layer: qweight int32 [K, N/8], qzeros int32 [G, N/8], scales [G, N];
        bits other than 4: NotImplementedError."""
        if bits != 4:
            raise NotImplementedError(f"AWQ layer with bits={bits}: qkernels imports 4-bit AWQ only")
        q, scale, zp, gs = formats.awq_to_int4(qweight, qzeros, scales)
        return cls.from_int4(q, scale, zp, gs, bias, act_bits)

    # ---- the weight: one packed copy in memory, plain tensors in the state_dict -----------------
    @property
    def _group(self) -> int:
        """The group length the int4 ops take (in_features for one group per row)."""
        return self.group_size if self.group_size is not None else self.in_features

    @property
    def _groups(self) -> int:
        return formats.int4_groups(self.in_features, self._group)[0]

    def _set_weight(self, qweight: torch.Tensor):
        self._layout = formats.layout_for("int8", qweight.device, self.act_bits).tag
        self._packed = ops.pack_int8_weight(qweight, self._layout)

    def _set_int4(self, qweight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None):
        self._layout = formats.layout_for("int4", qweight.device).tag
        self._packed = ops.pack_int4_weight(qweight, scale, zero_point, self.in_features, self._group, self._layout)

    def _int4_tensors(self):
        return ops.unpack_int4_weight(self._packed, self._layout, self.out_features, self.in_features,
                                      self._group, self.symmetric)

    @property
    def qweight(self) -> torch.Tensor:
        """int8: the int8 weight [N, K]; int4: uint8 [N, ceil(K/2)] nibbles (unpacked from the kernel layout)."""
        if self.weight_bits == 4:
            return self._int4_tensors()[0]
        return ops.unpack_int8_weight(self._packed, self._layout, self.out_features, self.in_features)

    def __getattr__(self, name):
        if name in ("weight_scale", "weight_zero_point") and self.__dict__.get("weight_bits") == 4:
            _, scale, zp = self._int4_tensors()
            return scale if name == "weight_scale" else zp
        return super().__getattr__(name)

    def _weight_tensors(self):
        return self._int4_tensors() if self.weight_bits == 4 else (self.qweight,)

    def _repack(self, *tensors):
        if self.weight_bits == 4:
            self._set_int4(*tensors)
        else:
            self._set_weight(*tensors)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.weight_bits == 4:
            qw, scale, zp = self._int4_tensors()
            destination[prefix + "qweight"] = qw
            destination[prefix + "weight_scale"] = scale
            if zp is not None:
                destination[prefix + "weight_zero_point"] = zp
        else:
            destination[prefix + "qweight"] = self.qweight
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _weight_keys(self):
        if self.weight_bits == 8:
            return ("qweight",)
        return ("qweight", "weight_scale") + (() if self.symmetric else ("weight_zero_point",))

    def _load_weight(self, state_dict, prefix):
        N, K = self.out_features, self.in_features
        qweight = prefix + "qweight"
        if self.weight_bits == 8:
            w = expect_range(qweight, expect_tensor(state_dict, qweight, torch.int8, (N, K)), -127, 127)
            self._set_weight(w.to(self._load_device(w)))
            return
        G = self._groups
        qw = expect_tensor(state_dict, qweight, torch.uint8, (N, (K + 1) // 2))
        dev = self._load_device(qw)
        scale = expect_finite(prefix + "weight_scale",
                              expect_tensor(state_dict, prefix + "weight_scale", torch.float32, (N, G)))
        zp = None
        if not self.symmetric:
            key = prefix + "weight_zero_point"
            zp = expect_range(key, expect_tensor(state_dict, key, torch.int32, (N, G)), 0, 15).to(dev)
        perm = state_dict.get(prefix + "input_perm")
        if perm is not None:  # absent means no permutation: a stale one must not survive the load
            perm = expect_permutation(prefix + "input_perm", perm, K).to(device=dev, dtype=torch.int64)
        self.register_buffer("input_perm", perm)
        self._set_int4(qw.to(dev), scale.to(dev), zp)

    # ---- use ---------------------------------------------------------------------------------
    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out_features, in_features] this module effectively multiplies by."""
        N, K = self.out_features, self.in_features
        if self.weight_bits == 8:
            w = ops.dequantize_int8(self._packed, self._layout, self.weight_scale, N, K)
            return w if self.input_scale is None else w * self.input_scale[None, :]
        w = ops.dequantize_int4(self._packed, self._layout, N, K, self._group)
        if self.input_scale is not None:  # the layer computes (x * input_scale) @ Wq.T
            w = w * self.input_scale[None, :]
        if self.input_perm is not None:  # column j of the stored weight multiplies x[..., perm[j]]
            w = torch.empty_like(w).index_copy_(1, self.input_perm, w)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x2 = x.reshape(-1, self.in_features)
        b = self._buffers  # one dict, not a __getattr__ round trip per buffer (see call_buffers)
        packed, bias, input_scale, act_scale = call_buffers(self)
        if self.weight_bits == 4:
            if b["input_perm"] is not None:
                x2 = x2.index_select(1, b["input_perm"])
            y = ops.int4_linear(x2, packed, self._layout, bias, self.out_features, self._group,
                                self.act_bits, self.symmetric, input_scale, act_scale)
        else:
            y = ops.int8_linear(x2, packed, self._layout, b["weight_scale"], bias, self.act_bits,
                                input_scale, act_scale)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        a = "A8" if self.act_bits == 8 else "A16"
        perm = ", act_order" if self.input_perm is not None else ""
        perm += ", smooth" if self.smooth else ""
        perm += ", static act scale" if self.act_scale == "static" else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"W{self.weight_bits}{a}, group_size={self.group_size}, symmetric={self.symmetric}{perm}, "
                f"path={self._runs_on()}")
