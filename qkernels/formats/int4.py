"""The int4 grouped weight format (QuantLinear(weight_bits=4) state_dict) and its production
quantizer; qkernels.reference holds the independent oracle the tests compare them with.

    qweight            uint8 [N, ceil(K/2)]: byte j of row n holds element 2j in its low nibble and
                       2j+1 in its high nibble (odd K pads with 0). Symmetric: two's complement
                       q in [-8, 7]; asymmetric: q in [0, 15].
    weight_scale       fp32 [N, G], G = ceil(K / group_size) (1 for group_size=None); group g covers
                       input features [g*group_size, (g+1)*group_size), the last one may be partial.
    weight_zero_point  int32 [N, G] in [0, 15], asymmetric only.   w = (q - zero_point) * scale
    input_perm         int64 [K], optional (act-order imports): the layer computes
                       x[..., input_perm] @ w.T + bias.

The kernels repack this into their own layouts (qkernels.formats.layouts); state_dict() always
gives back the tensors above.
"""
from __future__ import annotations

import torch

FLT_MIN = torch.finfo(torch.float32).tiny
# Clipping ratios tried per group (1.0 first: ties keep the full min/max range).
CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(12))


def qrange(symmetric: bool) -> tuple[int, int]:
    """The int4 value range: [-8, 7] symmetric, [0, 15] with a zero point."""
    return (-8, 7) if symmetric else (0, 15)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """int4 values (an integer tensor [N, K] in [-8, 7] or [0, 15]) -> uint8 [N, ceil(K/2)]: each
    value's low 4 bits (two's complement for negatives), element 2j in the low nibble of byte j."""
    u = (q.to(torch.int16) & 0xF).to(torch.uint8)
    if u.shape[1] % 2:
        u = torch.cat([u, u.new_zeros(u.shape[0], 1)], dim=1)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, K: int, signed: bool) -> torch.Tensor:
    """Inverse of pack_nibbles: int8 [N, K] (signed: nibbles >= 8 are negative)."""
    v = torch.empty(packed.shape[0], 2 * packed.shape[1], dtype=torch.int8, device=packed.device)
    v[:, 0::2] = (packed & 0xF).to(torch.int8)
    v[:, 1::2] = (packed >> 4).to(torch.int8)
    v = v[:, :K]
    return v - 16 * (v >= 8).to(torch.int8) if signed else v


def quantize_weight_int4(w: torch.Tensor, group_size: int | None = None, symmetric: bool = True,
                         rows_per_chunk: int = 256, clip_ratios: tuple = CLIP_RATIOS):
    """Weight int4 quantization with a per-group clipping search (what QuantLinear.from_float uses).

    Per group (group_size consecutive input features of a row; None = the whole row; a last partial
    group is allowed) the min/max range is shrunk by each ratio in CLIP_RATIOS (symmetric:
    amax * r / 7; asymmetric: [min(x,0), max(x,0)] * r / 15) and the candidate with the least
    squared reconstruction error (each term's float32 difference squared and summed in float64) is
    kept (the first on ties). Rows are processed in chunks so the candidates never hold more than a
    chunk. This is the definition in torch (any device); on the CPU the op
    torch.ops.qkernels.quantize_int4_weight computes the same numbers in C++ (qkernels.ops). Returns (q int8 [N, K], scale fp32 [N, G], zero_point
    int32 [N, G] or None); the numbers of qkernels.reference.quantize_weight_int4.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D, got shape {tuple(w.shape)}")
    N, K = w.shape
    g = K if group_size is None else group_size
    G = -(-K // g)
    qmin, qmax = qrange(symmetric)
    q_out = torch.empty(N, G * g, dtype=torch.int8, device=w.device)
    s_out = torch.empty(N, G, dtype=torch.float32, device=w.device)
    z_out = None if symmetric else torch.empty(N, G, dtype=torch.int32, device=w.device)
    for r0 in range(0, N, rows_per_chunk):
        xg = torch.nn.functional.pad(w[r0:r0 + rows_per_chunk].float(), (0, G * g - K)).reshape(-1, G, g)
        if symmetric:
            amax = xg.abs().amax(dim=-1)
        else:
            lo, hi = xg.amin(dim=-1).clamp_max(0.0), xg.amax(dim=-1).clamp_min(0.0)
        best_err = best_q = best_s = best_z = None
        for r in clip_ratios:
            if symmetric:
                s = (amax * r / 7.0).clamp_min(FLT_MIN)
                z = torch.zeros_like(s)
            else:
                s = ((hi * r - lo * r) / float(qmax - qmin)).clamp_min(FLT_MIN)
                z = (qmin - torch.round(lo * r / s)).clamp(qmin, qmax)
            q = (torch.round(xg / s[..., None]) + z[..., None]).clamp(qmin, qmax)
            err = ((q - z[..., None]) * s[..., None] - xg).double().square().sum(dim=-1)
            if best_err is None:
                best_err, best_q, best_s, best_z = err, q, s, z
                continue
            take = err < best_err
            best_err = torch.where(take, err, best_err)
            best_q = torch.where(take[..., None], q, best_q)
            best_s, best_z = torch.where(take, s, best_s), torch.where(take, z, best_z)
        rows = slice(r0, r0 + xg.shape[0])
        q_out[rows] = best_q.reshape(xg.shape[0], G * g).to(torch.int8)
        s_out[rows] = best_s
        if z_out is not None:
            z_out[rows] = best_z.to(torch.int32)
    return q_out[:, :K], s_out, z_out
