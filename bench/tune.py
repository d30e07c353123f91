"""Sweep of one run-time tuning choice on the host at hand: each qkernels kernel at each value,
speed relative to the host's current value.

    python bench/tune.py                                          # prefetch_distance, M=1 from DRAM
    python bench/tune.py --choice sparse_prefetch_distance --values 2048,4096,8192,16384 --kernels "2:4 f32,2:4 int8"
    python bench/tune.py --choice decode_panels --values 0,1,2,4 --shapes 4096x4096
    python bench/tune.py --choice tile_rows --values 0,2,3,4,5 --m 128   # prefill, hot weights

The values are set between calls with qkernels._C.set_tuning (cpu_info()["tuning"] names the
choices; QKERNELS_TUNE_<NAME> sets one for a whole process). M=1 streams weights from DRAM as in
bench/decode_blocks.py: each kernel cycles through its own weight copies (2 GiB) in blocks of one
rotation after a 0.1 s pause; M > 1 reuses one hot copy, blocks of 10 calls. In each round every
value gets one block, in turn, so slow drifts of a shared VM hit every value alike; medians per
call over the rounds. The defaults in csrc/kernels/dispatch.cpp (tuning_state) quote such sweeps.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch

import bench_kernels as B
import peers

import qkernels
from qkernels import _C

KERNELS = {"W8A8": peers.qk_w8a8, "W8A16": peers.qk_w8a16, "W4A8": peers.qk_w4a8, "W4A16": peers.qk_w4a16,
           "W8A16 (bf16 act)": peers.qk_w8a16_bf16, "W4A16 (bf16 act)": peers.qk_w4a16_bf16,
           "2:4 f32": peers.CPU_S24["qkernels 2:4 f32"], "2:4 bf16": peers.CPU_S24["qkernels 2:4 bf16"],
           "2:4 int8": peers.CPU_S24["qkernels 2:4 int8"]}


def sweep(choice: str, values: list[int], kernels: list[str], shapes: list[tuple[int, int]], rounds: int,
          M: int = 1) -> list[dict]:
    """Rows {kernel, shape, value: median seconds per call}; the tuning is restored afterwards."""
    before = dict(_C.tuning())
    rows = []
    try:
        for K, N in shapes:
            torch.manual_seed(0)
            w, x = torch.randn(N, K) * 0.02, torch.randn(M, K)
            for name in kernels:
                fns, wbytes = B._copies(KERNELS[name], x, w, M == 1)
                fns = fns if M == 1 else fns * 10
                ts = {v: [] for v in values}
                for _ in range(rounds):
                    for v in values:
                        _C.set_tuning(choice, v)
                        time.sleep(B.SETTLE_S)
                        for f in fns[:3]:
                            f()
                        for f in fns:
                            t0 = time.perf_counter()
                            f()
                            ts[v].append(time.perf_counter() - t0)
                med = {v: statistics.median(t) for v, t in ts.items()}
                rows.append({"kernel": name, "shape": f"{K}x{N}", "M": M, "bytes": wbytes, "median_s": med})
                base = med.get(before[choice])
                rate = (lambda t: f"{wbytes / t / 1e9:5.1f} GB/s") if M == 1 else (lambda t: f"{2 * M * N * K / t / 1e9:6.0f} GOP/s")
                print(f"{K}x{N} M={M} {name:<17} " + "  ".join(
                    f"{v}: {rate(med[v])}" + (f" ({base / med[v]:.2f}x)" if base else "") for v in values), flush=True)
                del fns
                gc.collect()
    finally:
        for k, v in before.items():
            _C.set_tuning(k, v)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--choice", default="prefetch_distance")
    ap.add_argument("--values", default="0,1024,2048,4096,8192,16384")
    ap.add_argument("--kernels", default=",".join(k for k in KERNELS if not k.startswith("2:4")))
    ap.add_argument("--shapes", default="4096x4096,4096x11008")
    ap.add_argument("--m", type=int, default=1, help="rows of x: 1 streams weights from DRAM, more reuse one hot copy")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    tuning = dict(_C.tuning())
    if a.choice not in tuning:
        ap.error(f"--choice must be one of {sorted(tuning)}")
    kernels = a.kernels.split(",")
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown:
        ap.error(f"unknown kernels {unknown}; choose from {list(KERNELS)}")
    shapes = [tuple(int(d) for d in s.split("x")) for s in a.shapes.split(",")]
    print(f"# {B.host_name()}, {torch.get_num_threads()} threads, path {qkernels.cpu_isa()}, tuning {tuning}")
    print(f"# {a.choice} at M={a.m}: {'GB/s of weights' if a.m == 1 else 'GOP/s'} per value, (x) = speed "
          f"relative to the current value {tuning[a.choice]}")
    sweep(a.choice, [int(v) for v in a.values.split(",")], kernels, shapes, a.rounds, a.m)
    if a.m == 1:
        print(f"# one-stream read probe: {B.dram_read_bandwidth(streams=1):.1f} GB/s")


if __name__ == "__main__":
    sys.exit(main())
