"""M=1 decode from DRAM in blocks: qkernels W4A8 vs torch int4pack and onnxruntime MatMulNBits, and
qkernels 2:4 int8 vs qkernels W8A8, on 4096x4096 and 4096x11008.

    python bench/decode_blocks.py                       # with this host's tuning
    QKERNELS_TUNE_DECODE_PANELS=0 python bench/decode_blocks.py   # with each kernel's own width

Each kernel cycles through its own weight copies (2 GiB in all, as bench_kernels.py's DRAM rows) in
blocks of one whole rotation, each block after a 0.1 s pause (so no runtime's spinning workers
slow the next block), 5 rounds; medians per call. bench_kernels.py alternates call by call instead;
both are printed in bench/results because the VM's numbers differ between the two methods. Holds
all copies of a group at once: about 21 GB resident at the peak.
"""
import gc
import statistics
import sys
import time

import torch

import bench_kernels as B
import peers

GROUPS = {"qkernels W4A8": {"qkernels W4A8": peers.qk_w4a8, "torch int4pack": peers.torch_int4pack,
                            "onnxruntime MatMulNBits": peers.ort_matmul_nbits},
          "qkernels 2:4 int8": {"qkernels 2:4 int8": peers.CPU_S24["qkernels 2:4 int8"], "qkernels W8A8": peers.qk_w8a8}}


def block(fns):
    ts = []
    for f in fns:
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return ts


def main(K=4096, rounds=5):
    import qkernels
    print(f"# {B.host_name()}, {torch.get_num_threads()} threads, tuning {qkernels.cpu_info()['tuning']}")
    torch.manual_seed(0)
    for ours, group in GROUPS.items():
        if "onnxruntime MatMulNBits" in group and not peers.ort_available():
            del group["onnxruntime MatMulNBits"]
        for N in (4096, 11008):
            w, x = torch.randn(N, K) * 0.02, torch.randn(1, K)
            sets = {n: B._copies(f, x, w, True) for n, f in group.items()}
            ts = {n: [] for n in group}
            for _ in range(rounds):
                for n in group:
                    time.sleep(B.SETTLE_S)
                    block(sets[n][0][:3])
                    ts[n] += block(sets[n][0])
            med = {n: statistics.median(v) for n, v in ts.items()}
            print(f"{K}x{N}: " + "  ".join(f"{n} {med[n] * 1e3:.3f} ms {sets[n][1] / med[n] / 1e9:.1f} GB/s" for n in group)
                  + " | " + "  ".join(f"vs {n} {med[n] / med[ours]:.2f}x" for n in group if n != ours), flush=True)
            del sets
            gc.collect()
    print(f"# one-stream read probe: {B.dram_read_bandwidth(streams=1):.1f} GB/s")


if __name__ == "__main__":
    sys.exit(main())
