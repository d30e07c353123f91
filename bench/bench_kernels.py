"""Kernel microbenchmarks: qkernels vs peers on the machine at hand, one table, JSON and PNG.

    python bench/bench_kernels.py                      # CPU: K=N=4096 and K=4096/N=11008
    python bench/bench_kernels.py --shapes 4096x4096 --ms 1,8

Per (shape, M): median latency (min-median-max), GOP/s, weight GB/s and "%pk": for the M=1 DRAM
rows the % of the DRAM read bandwidth, for hot qkernels rows the % of the measured peak of their
inner instruction (int8 dot for W8A8, fp32 FMA for W8A16) x threads, both measured in the same run. "DRAM" rows rotate over enough distinct
weight copies (> 1 GiB) that every call streams its weights from memory; "hot" rows reuse one.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

import qkernels  # noqa: E402

COLD_BYTES = 1 << 30


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def time_calls(fns, iters, dev, min_time=0.2):
    """Median/min/max seconds per call, cycling through fns (one per weight copy)."""
    for f in fns[: min(len(fns), 3)]:
        f()
    _sync(dev)
    times = []
    i = 0
    t_end = time.perf_counter() + min_time
    while len(times) < iters or time.perf_counter() < t_end:
        f = fns[i % len(fns)]
        i += 1
        t0 = time.perf_counter()
        f()
        _sync(dev)
        times.append(time.perf_counter() - t0)
        if len(times) >= 20 * iters:
            break
    return statistics.median(times), min(times), max(times)


def dram_read_bandwidth():
    """GB/s of the best of 7 plain parallel reads of 1 GiB (float32 sum): the M=1 roofline."""
    t = torch.ones(COLD_BYTES // 4)
    t.sum()
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        t.sum()
        ts.append(time.perf_counter() - t0)
    del t
    return COLD_BYTES / min(ts) / 1e9


def bench_one(name, factory, x, w, cold, dev):
    fn, wbytes = factory(x, w, many=cold)
    fns = [fn]
    if cold:
        copies = max(2, -(-COLD_BYTES // max(wbytes, 1)))
        for _ in range(copies - 1):
            fns.append(factory(x, w + 0.0, many=True)[0])
    med, lo, hi = time_calls(fns, iters=30 if cold else 50, dev=dev)
    del fns
    gc.collect()
    M, K = x.shape
    N = w.shape[0]
    return {"kernel": name, "M": M, "K": K, "N": N, "mode": "DRAM" if cold else "hot",
            "median_ms": med * 1e3, "min_ms": lo * 1e3, "max_ms": hi * 1e3,
            "gops": 2 * M * N * K / med / 1e9, "weight_gbs": wbytes / med / 1e9}


def run(shapes, ms, cold_m1=True, dev="cpu", rows=None):
    torch.manual_seed(0)
    if rows is None:
        rows = {**peers.CPU_W8A8, **peers.CPU_W8A16, **peers.CPU_PEERS} if dev == "cpu" else peers.GPU_ROWS
    results = []
    for K, N in shapes:
        w = torch.randn(N, K, device=dev) * 0.02
        for M in ms:
            x = torch.randn(M, K, device=dev)
            for cold in ([True, False] if (M == 1 and cold_m1 and dev == "cpu") else [False]):
                for name, factory in rows.items():
                    if dev == "cuda" and "_int_mm" in name and M <= 16:
                        continue  # cuBLAS int8 via torch._int_mm requires M > 16
                    try:
                        results.append(bench_one(name, factory, x, w, cold, dev))
                    except Exception as e:  # a peer missing on this build: say so, keep going
                        print(f"  skipped {name} M={M} {K}x{N}: {type(e).__name__}: {e}", file=sys.stderr)
    return results


def compute_peaks():
    """Measured ceilings of the active CPU path x threads: int8 (dot instruction) and fp32 (FMA)."""
    from qkernels import _C
    i8, f32 = _C.peak_ops_per_thread()
    n = torch.get_num_threads()
    return {"int8_gops": i8 * n / 1e9, "fp32_gflops": f32 * n / 1e9}


def add_ratios(results, bw, peaks=None):
    for r in results:
        if peaks and r["mode"] == "hot" and r["kernel"].startswith("qkernels"):
            ceiling = peaks["int8_gops"] if "W8A8" in r["kernel"] else peaks["fp32_gflops"]
            if ceiling:
                r["pct_peak"] = 100 * r["gops"] / ceiling
        group = [o for o in results if (o["M"], o["K"], o["N"], o["mode"]) == (r["M"], r["K"], r["N"], r["mode"])]
        r["vs"] = {o["kernel"]: o["median_ms"] / r["median_ms"] for o in group if o is not r}
        if r["mode"] == "DRAM" and bw:
            r["pct_dram_bw"] = 100 * r["weight_gbs"] / bw


def format_table(results):
    lines = [f"{'shape (KxN)':>11} {'M':>4} {'mode':>4}  {'kernel':<34} {'median ms':>9} {'(min-max)':>15} "
             f"{'GOP/s':>7} {'GB/s':>6} {'%pk':>4}  speedup of qkernels vs this"]
    for r in results:
        ratio = ""
        if not r["kernel"].startswith("qkernels"):
            ours = [o for o in results if o["kernel"].startswith("qkernels")
                    and (o["M"], o["K"], o["N"], o["mode"]) == (r["M"], r["K"], r["N"], r["mode"])]
            ratio = "  ".join(f"{o['kernel'].split()[1]} {r['median_ms'] / o['median_ms']:.2f}x" for o in ours)
        pct = f"{r['pct_dram_bw']:.0f}" if "pct_dram_bw" in r else (f"{r['pct_peak']:.0f}" if "pct_peak" in r else "")
        lines.append(f"{r['K']:>5}x{r['N']:<5} {r['M']:>4} {r['mode']:>4}  {r['kernel']:<34} {r['median_ms']:>9.3f} "
                     f"({r['min_ms']:.3f}-{r['max_ms']:.3f}) {r['gops']:>7.1f} {r['weight_gbs']:>6.1f} {pct:>4}  {ratio}")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = sorted({(r["K"], r["N"], r["M"], r["mode"]) for r in results}, key=lambda k: (k[0], k[1], k[3] != "DRAM", k[2]))
    kernels = list(dict.fromkeys(r["kernel"] for r in results))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(keys)), 5))
    width = 0.8 / len(kernels)
    for i, kname in enumerate(kernels):
        ys = []
        for k in keys:
            m = [r for r in results if (r["K"], r["N"], r["M"], r["mode"]) == k and r["kernel"] == kname]
            base = [r for r in results if (r["K"], r["N"], r["M"], r["mode"]) == k and r["kernel"] == "torch fp32 F.linear"]
            ys.append(base[0]["median_ms"] / m[0]["median_ms"] if m and base else 0)
        ax.bar([j + i * width for j in range(len(keys))], ys, width, label=kname)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{k[0]}x{k[1]}\nM={k[2]} {k[3]}" for k in keys], fontsize=7)
    ax.set_ylabel("speedup vs torch fp32 F.linear")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=None, help="comma list of KxN (default: 4096x4096,4096x11008)")
    p.add_argument("--ms", default=None, help="comma list of M (CPU default 1,8,32,128; GPU 1,16,128,4096)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-cold", action="store_true", help="skip the M=1 DRAM rows")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    a = p.parse_args(argv)
    dev = a.device
    default_shapes = "4096x4096,4096x11008" if dev == "cpu" else "4096x4096,8192x28672"
    shapes = [tuple(int(v) for v in s.split("x")) for s in (a.shapes or default_shapes).split(",")]
    ms = [int(m) for m in (a.ms or ("1,8,32,128" if dev == "cpu" else "1,16,128,4096")).split(",")]
    bw = dram_read_bandwidth() if dev == "cpu" else None
    peaks = compute_peaks() if dev == "cpu" else None
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
               f"cpu path {qkernels.cpu_isa()}" if dev == "cpu" else torch.cuda.get_device_name())
    print(f"# qkernels bench {datetime.date.today()} on {machine}; torch {torch.__version__}"
          + (f"; DRAM read {bw:.1f} GB/s, int8 peak {peaks['int8_gops']:.0f} GOP/s, fp32 peak "
             f"{peaks['fp32_gflops']:.0f} GFLOP/s (measured)" if bw else ""))
    print("# %pk: DRAM rows = % of DRAM read bandwidth; hot qkernels rows = % of the measured peak of "
          "their instruction (W8A8: int8 dot, W8A16: fp32 FMA)")
    results = run(shapes, ms, cold_m1=not a.no_cold, dev=dev)
    add_ratios(results, bw, peaks)
    print(format_table(results))
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, f"bench_{dev}_{datetime.date.today()}")
    with open(stem + ".json", "w") as f:
        json.dump({"date": str(datetime.date.today()), "machine": machine, "dram_gbs": bw, "peaks": peaks,
                   "torch": torch.__version__, "results": results}, f, indent=1)
    try:
        plot(results, stem + ".png")
        print(f"saved {stem}.json and {stem}.png")
    except ImportError:
        print(f"saved {stem}.json (matplotlib not installed: no plot)")
    return results


if __name__ == "__main__":
    main()
