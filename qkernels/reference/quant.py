"""Reference quantize / dequantize / int4 packing in plain PyTorch: the numerics contract.

Conventions (every native kernel matches these bit for bit):

* ``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``, ``x = (q - zero_point) * scale``.
* Scales are fp32 and never below ``FLT_MIN`` (the smallest normal), so an all-zero row or
  group quantizes to zeros without dividing by zero.
* Symmetric: int8 uses [-127, 127] with ``scale = amax / 127``; int4 uses [-8, 7] with
  ``scale = amax / 7`` (so -8 is never produced by quantization). No zero point.
* Asymmetric: int8 uses [-128, 127], int4 uses [0, 15]; the range always includes 0:
  ``scale = (max(x, 0) - min(x, 0)) / (qmax - qmin)``,
  ``zero_point = clamp(qmin - round(min(x, 0) / scale), qmin, qmax)`` (int32).
* A row/group holding NaN gets scale NaN (Inf: scale Inf) and q = 0, so outputs that use it
  become NaN instead of silent garbage.
* Granularities: ``per_tensor``; ``per_channel`` / ``per_token`` (one scale per row of a 2-D
  tensor: weight rows are output channels, activation rows are tokens); ``per_group`` (one
  scale per ``group_size`` consecutive elements of a row; a last partial group is allowed).
"""
from __future__ import annotations

import torch

FLT_MIN = torch.finfo(torch.float32).tiny
GRANULARITIES = ("per_tensor", "per_channel", "per_token", "per_group")


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax): int8 [-127, 127] symmetric or [-128, 127]; int4 [-8, 7] or [0, 15]."""
    if bits == 8:
        return (-127, 127) if symmetric else (-128, 127)
    if bits == 4:
        return (-8, 7) if symmetric else (0, 15)
    raise ValueError(f"bits must be 8 or 4, got {bits}")


def _nan_aware_amax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.abs().amax(dim=dim)  # torch.amax propagates NaN


def _grouped(x: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """View x as [rows, groups, elems] for the granularity (pads a last partial group with 0)."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D, got shape {tuple(x.shape)}")
    if granularity == "per_tensor":
        return x.reshape(1, 1, -1)
    if granularity in ("per_channel", "per_token"):
        return x.unsqueeze(1)
    if granularity == "per_group":
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive int for per_group, got {group_size!r}")
        K = x.shape[1]
        Kp = -(-K // group_size) * group_size
        if Kp != K:
            x = torch.nn.functional.pad(x, (0, Kp - K))
        return x.reshape(x.shape[0], Kp // group_size, group_size)
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def _ungroup(g: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
    if granularity == "per_tensor":
        return g.reshape(shape)
    return g.reshape(shape[0], g.shape[1] * g.shape[2])[:, : shape[1]]


def _scale_shape(s: torch.Tensor, granularity: str) -> torch.Tensor:
    if granularity == "per_tensor":
        return s.reshape(())
    if granularity in ("per_channel", "per_token"):
        return s.reshape(-1)
    return s  # [rows, groups]


def quantize(x: torch.Tensor, granularity: str = "per_channel", bits: int = 8,
             symmetric: bool = True, group_size: int | None = None):
    """Quantize a 2-D float tensor. Returns (q int8, scale fp32, zero_point int32 or None).

    q holds int4 values unpacked in an int8 tensor; see pack_int4 for the byte format.
    """
    qmin, qmax = qrange(bits, symmetric)
    xf = x.float()
    g = _grouped(xf, granularity, group_size)
    if symmetric:
        amax = _nan_aware_amax(g, dim=-1)
        scale = (amax / (127.0 if bits == 8 else 7.0)).clamp_min(FLT_MIN)
        zp = None
        qf = torch.round(g / scale.unsqueeze(-1))
    else:
        lo = g.amin(dim=-1).clamp_max(0.0)
        hi = g.amax(dim=-1).clamp_min(0.0)
        bad = torch.isnan(g).any(dim=-1)
        scale = ((hi - lo) / float(qmax - qmin)).clamp_min(FLT_MIN)
        scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
        zpf = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
        zpf = torch.where(torch.isfinite(zpf), zpf, torch.zeros_like(zpf))
        zp = zpf.to(torch.int32)
        qf = torch.round(g / scale.unsqueeze(-1)) + zpf.unsqueeze(-1)
    finite = torch.isfinite(scale).unsqueeze(-1)
    qf = torch.where(finite, qf.clamp(qmin, qmax), torch.zeros_like(qf))
    q = _ungroup(qf.to(torch.int8), x.shape, granularity)
    scale = _scale_shape(scale, granularity)
    if zp is not None:
        zp = _scale_shape(zp, granularity)
    return q, scale, zp


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None,
               granularity: str = "per_channel", group_size: int | None = None) -> torch.Tensor:
    """Inverse of quantize: float32 ``(q - zero_point) * scale`` with the same granularity."""
    g = _grouped(q.to(torch.float32), granularity, group_size)
    s = scale.reshape(g.shape[0], g.shape[1], 1)
    if zero_point is not None:
        g = g - zero_point.reshape(g.shape[0], g.shape[1], 1).float()
    return _ungroup(g * s, q.shape, granularity)


def quantize_per_token_int8(x: torch.Tensor):
    """Dynamic symmetric per-row int8 quantization of a 2-D tensor: (q int8 [M, K], scale fp32 [M])."""
    q, s, _ = quantize(x, "per_token", 8, True)
    return q, s


def smooth_activations(x: torch.Tensor, input_scale: torch.Tensor | None) -> torch.Tensor:
    """x (2-D) in fp32, times input_scale [K] per input channel when given (one fp32 multiply)."""
    xf = x.float()
    return xf if input_scale is None else xf * input_scale.float()[None, :]


def quantize_static_int8(x: torch.Tensor, scale: torch.Tensor):
    """Static per-tensor int8: q = clamp(round(x / scale), -127, 127) in fp32 (ties to even; +-Inf
    saturate); a row holding NaN gets q = 0 and scale NaN (its outputs are NaN). -> (q int8 [M, K],
    scale fp32 [M])."""
    xf = x.float()
    s = scale.float().reshape(())
    nan = torch.isnan(xf)
    q = torch.where(nan, torch.zeros_like(xf), torch.round(xf / s).clamp(-127, 127)).to(torch.int8)
    row_scale = torch.where(nan.any(dim=1), torch.full((xf.shape[0],), float("nan"), device=xf.device), s.expand(xf.shape[0]))
    return q, row_scale.float().contiguous()


def quantize_activations(x: torch.Tensor, input_scale: torch.Tensor | None = None,
                         act_scale: torch.Tensor | None = None):
    """The int8 activation contract of W8A8 / W4A8 / 2:4 int8: x * input_scale (fp32), then per-token
    dynamic (act_scale None) or static per-tensor int8 -> (q int8 [M, K], scale fp32 [M])."""
    xs = smooth_activations(x, input_scale)
    if act_scale is None:
        return quantize_per_token_int8(xs)
    return quantize_static_int8(xs, act_scale)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int4 values (int8 tensor [N, K], values in [-8, 7] or [0, 15]) two per byte along K.

    Byte j of a row holds element 2j in its low nibble and element 2j+1 in its high nibble,
    each as the value's low 4 bits (two's complement for signed). An odd K pads with 0.
    Returns uint8 [N, ceil(K / 2)].
    """
    if q.dim() != 2:
        raise ValueError(f"q must be 2-D, got shape {tuple(q.shape)}")
    if q.shape[1] % 2:
        q = torch.nn.functional.pad(q, (0, 1))
    u = q.to(torch.int32) & 0xF
    return (u[:, 0::2] | (u[:, 1::2] << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, K: int, signed: bool = True) -> torch.Tensor:
    """Inverse of pack_int4: int8 [N, K]; signed=True sign-extends nibbles to [-8, 7]."""
    p = packed.to(torch.int32)
    u = torch.stack([p & 0xF, (p >> 4) & 0xF], dim=-1).reshape(packed.shape[0], -1)[:, :K]
    if signed:
        u = torch.where(u >= 8, u - 16, u)
    return u.to(torch.int8)


# Clipping ratios tried per group by quantize_weight_int4 (1.0 first: ties keep the full range).
INT4_CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(12))


def quantize_weight_int4(w: torch.Tensor, group_size: int | None = None, symmetric: bool = True):
    """Weight int4 quantization with a per-group clipping search (what QuantLinear.from_float uses).

    For each group (``group_size`` consecutive input features of a row; None = the whole row; a
    last partial group is allowed) the range of ``quantize(..., bits=4)`` is shrunk by each ratio
    in INT4_CLIP_RATIOS (symmetric: amax * r / 7; asymmetric: [min(x,0), max(x,0)] * r / 15) and
    the candidate with the least squared reconstruction error (float32 differences, squared and
    summed in float64) is kept (the first one on ties, so
    r = 1 -- plain min/max -- unless clipping helps). Int4 has so few levels that giving up the
    largest values of a Gaussian group lowers the error of all the others: +1 dB SQNR at group 128.

    Returns (q int8 [N, K] in [-8, 7] or [0, 15], scale fp32 [N, G], zero_point int32 [N, G] or None).
    """
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D, got shape {tuple(w.shape)}")
    K = w.shape[1]
    g = K if group_size is None else group_size
    xg = _grouped(w.float(), "per_group", g)
    qmin, qmax = qrange(4, symmetric)
    if symmetric:
        amax = _nan_aware_amax(xg, dim=-1)
    else:
        lo, hi = xg.amin(dim=-1).clamp_max(0.0), xg.amax(dim=-1).clamp_min(0.0)
    best = None
    for r in INT4_CLIP_RATIOS:
        if symmetric:
            scale = (amax * r / 7.0).clamp_min(FLT_MIN)
            zpf = torch.zeros_like(scale)
        else:
            scale = ((hi * r - lo * r) / float(qmax - qmin)).clamp_min(FLT_MIN)
            zpf = (qmin - torch.round(lo * r / scale)).clamp(qmin, qmax)
        q = (torch.round(xg / scale.unsqueeze(-1)) + zpf.unsqueeze(-1)).clamp(qmin, qmax)
        err = ((q - zpf.unsqueeze(-1)) * scale.unsqueeze(-1) - xg).double().square().sum(dim=-1)
        if best is None:
            best = [q, scale, zpf, err]
        else:
            take = err < best[3]
            best = [torch.where(take.unsqueeze(-1), q, best[0]), torch.where(take, scale, best[1]),
                    torch.where(take, zpf, best[2]), torch.where(take, err, best[3])]
    q = _ungroup(best[0].to(torch.int8), w.shape, "per_group")
    return q, best[1], (None if symmetric else best[2].to(torch.int32))
