"""Packed weight layouts: the tag a packed tensor is made with, and its one geometry.

A module keeps one packed copy of its weight in the layout its kernels read; every op that takes
or makes a packed tensor takes the layout tag too, so nothing infers a layout from a device.

    tag                 device  dtype  shape                             byte layout
    int8_w8a8_panels    cpu     int8   [ceil(N/64), round_up(K,4)*64+256] csrc/kernels/kernels.h
    int8_w8a16_panels   cpu     int8   [ceil(N/64), K*64]                 csrc/kernels/kernels.h
    int4_panels         cpu     uint8  [ceil(N/64), G*(32*gk+320)]        csrc/kernels/kernels.h
    sparse24_panels     cpu     uint8  [ceil(N/64), ceil(K/32)*(256+1024*esize) (+256 int8)]  csrc/kernels/kernels.h
    int8_rows           cuda    int8   [N, K]                             the plain int8 weight
    int4_blob           cuda    uint8  [int4_blob_parts(...).total]       int4_blob_parts below
    sparse24_blob       cuda    uint8  [sparse24_blob_parts(...).total]   sparse24_blob_parts below

The CPU geometry is computed by the C++ library alone (qkernels._C.packed_shape); the CUDA blobs
are defined here and read by the Triton kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .._ext import _C

FAMILIES = ("int8", "int4", "sparse24")
ESIZE = {torch.float32: 4, torch.bfloat16: 2, torch.int8: 1}  # bytes per 2:4 value


def int4_groups(K: int, group_size: int) -> tuple[int, int]:
    """(G, gk): G groups of gk values along K as the int4 kernels store them (one group per row
    is K rounded up to 8). From the C++ library, which the packers and kernels use."""
    return tuple(_C.int4_groups(K, group_size))


class Int4BlobParts(NamedTuple):
    """Byte offsets in the CUDA int4 blob: fp32 scale [N, G], u8 zz [N, G] (padded to 4 bytes),
    u8 nibbles [N, ceil(K/2)] (u = q + 8 with zz = 8 when symmetric, else u = q and zz = zero point)."""
    scale: int
    zz: int
    nibbles: int
    total: int


def int4_blob_parts(N: int, K: int, G: int) -> Int4BlobParts:
    """The parts of the int4 blob of N outputs, K inputs and G groups (see Int4BlobParts)."""
    zz = 4 * N * G
    nib = zz + -(-N * G // 4) * 4
    return Int4BlobParts(0, zz, nib, nib + N * ((K + 1) // 2))


class Sparse24BlobParts(NamedTuple):
    """Byte offsets in the CUDA 2:4 blob: values [N, 2G] (esize bytes each), then meta uint8
    [N, ceil(G/2)] (the SparseLinear state_dict format; G = ceil(K/4))."""
    values: int
    meta: int
    total: int


def sparse24_blob_parts(N: int, K: int, esize: int) -> Sparse24BlobParts:
    """The parts of the 2:4 blob of N outputs, K inputs and esize-byte values (see Sparse24BlobParts)."""
    G = -(-K // 4)
    meta = N * 2 * G * esize
    return Sparse24BlobParts(0, meta, meta + N * ((G + 1) // 2))


@dataclass(frozen=True)
class Layout:
    """A packed weight layout: its tag, weight family, device kind and element dtype."""
    tag: str
    family: str
    device: str
    dtype: torch.dtype

    def shape(self, N: int, K: int, group_size: int = 0, esize: int = 0) -> tuple[int, ...]:
        """The packed tensor's shape for N outputs and K inputs (group_size: int4; esize: 2:4)."""
        if self.device == "cpu":
            return tuple(_C.packed_shape(self.tag, N, K, group_size, esize))
        if self.tag == "int8_rows":
            return (N, K)
        if self.tag == "int4_blob":
            return (int4_blob_parts(N, K, int4_groups(K, group_size)[0]).total,)
        return (sparse24_blob_parts(N, K, esize).total,)


_CPU = {"int8_w8a8_panels": "int8", "int8_w8a16_panels": "int8", "int4_panels": "int4", "sparse24_panels": "sparse24"}
assert set(_CPU) == set(_C.cpu_layouts()), "the C++ library and qkernels.formats disagree on the CPU layouts"
LAYOUTS = {tag: Layout(tag, fam, "cpu", torch.int8 if fam == "int8" else torch.uint8) for tag, fam in _CPU.items()}
LAYOUTS.update({"int8_rows": Layout("int8_rows", "int8", "cuda", torch.int8),
                "int4_blob": Layout("int4_blob", "int4", "cuda", torch.uint8),
                "sparse24_blob": Layout("sparse24_blob", "sparse24", "cuda", torch.uint8)})


def get(tag: str) -> Layout:
    """The layout named `tag` (ValueError for an unknown one)."""
    try:
        return LAYOUTS[tag]
    except KeyError:
        raise ValueError(f"unknown packed layout {tag!r}; the layouts are {sorted(LAYOUTS)}") from None


def layout_for(family: str, device: torch.device | str, act_bits: int | None = None) -> Layout:
    """The layout the kernels of `device` read for a `family` weight (int8: W8A8 and W8A16 CPU
    kernels read different panels, chosen by act_bits). Meta tensors (modules built without
    memory) take the CPU layouts."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda", "meta"):
        raise ValueError(f"qkernels runs on cpu and cuda devices, got {device}")
    kind = "cpu" if kind == "meta" else kind
    if family == "int8":
        tag = ("int8_w8a8_panels" if act_bits == 8 else "int8_w8a16_panels") if kind == "cpu" else "int8_rows"
    elif family == "int4":
        tag = "int4_panels" if kind == "cpu" else "int4_blob"
    elif family == "sparse24":
        tag = "sparse24_panels" if kind == "cpu" else "sparse24_blob"
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return LAYOUTS[tag]
