"""Shared Triton helpers: interpreter detection and autotune config lists that bucket M."""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def m_bucket(M: int) -> int:
    """Autotune key for M: powers of two up to 128, then one bucket (decode vs prefill shapes)."""
    return min(triton.next_power_of_2(max(M, 1)), 256)


def gemm_configs():
    # Under the interpreter every config would run; one small tile keeps CI fast.
    if INTERPRET:
        return [triton.Config({"BM": 16, "BN": 32, "BK": 32}, num_warps=4, num_stages=1)]
    cfgs = []
    for bm, bn, bk, w, s in [(16, 64, 128, 4, 4), (16, 128, 128, 4, 4), (32, 64, 128, 4, 4),
                             (64, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
                             (256, 128, 64, 8, 3)]:
        cfgs.append(triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s))
    return cfgs


def check(cond: bool, msg: str):
    if not cond:
        raise ValueError(msg)


@triton.jit
def rne_bf16(y):
    """fp32 -> bf16, round half to even, NaN -> quiet NaN (torch's rule).

    Spelled out in integer ops because the Triton interpreter's own cast truncates; on a GPU this
    is the same rounding cvt.rn.bf16.f32 does, for a few integer ops in the epilogue.
    """
    bits = y.to(tl.uint32, bitcast=True)
    bits = bits + (((bits >> 16) & 1) + 0x7FFF)
    hi = tl.where(y != y, 0x7FC0, bits >> 16)
    return hi.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def store_out(out_ptr, y, mask):
    if out_ptr.dtype.element_ty == tl.bfloat16:
        tl.store(out_ptr, rne_bf16(y), mask=mask)
    else:
        tl.store(out_ptr, y.to(out_ptr.dtype.element_ty), mask=mask)
