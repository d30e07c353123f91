"""Kernel microbenchmarks: qkernels vs peers on the machine at hand, one table, JSON and PNG.

    python bench/bench_kernels.py                      # CPU: K=N=4096 and K=4096/N=11008
    python bench/bench_kernels.py --shapes 4096x4096 --ms 1,8 --suite int4

Each peer is timed in strict alternation with the qkernels kernels (same window, same drift), and
its speedup column compares medians from that window; a peer with its own thread pool
(onnxruntime) is timed in a block between two blocks of ours instead, since alternating two
runtimes' spinning workers would slow both. A peer far slower than the rest (torch._int_mm on a CPU
without VNNI takes seconds per call) is timed on fewer calls, or on one beside a short window of
ours when a call takes over ONE_CALL_S; its row says on how many. Per (shape, M): median latency (min-max), GOP/s, weight GB/s and "%pk": for the M=1 DRAM
rows the % of the DRAM read bandwidth, for hot qkernels rows the % of the measured peak of their
inner instruction (int8 dot for W8A8/W4A8, fp32 FMA for W8A16/W4A16) x threads, both measured in the same run. "DRAM" rows rotate over enough distinct
weight copies (2 GiB in all) that every call streams its weights from memory; "hot" rows reuse one.
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
import probes  # noqa: E402

import qkernels  # noqa: E402

COLD_BYTES = 2 << 30  # > 1 GiB: with ~1 GiB this VM still serves part of the rotation warm


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def dram_read_bandwidth(threads=None, streams=1):
    """GB/s of a plain streaming read of 1 GiB split over the threads (best of 7): the M=1 roofline
    (bench-only probe module, bench/probes.py)."""
    return probes.dram_read_gbs(threads or torch.get_num_threads(), streams)


# Sequential weight streams per thread of each qkernels kernel at M = 1: the panels its decode kernel
# walks in lockstep (csrc/kernels), at most the run-time tuning choice decode_panels when that is set.
# Only the avx512_vnni path has lockstep decode kernels; the others read one panel at a time.
# A DRAM row's %pk compares with a probe of as many streams.
KERNEL_PANELS = {"W8A8": 1, "W8A16": 1, "W4A8": 8, "W4A16": 6, "2:4 f32": 4, "2:4 bf16": 4, "2:4 int8": 6}
LOCKSTEP_PATHS = ("avx512_vnni",)


def decode_streams(tuning: dict | None = None, path: str | None = None) -> dict:
    cap = (qkernels.cpu_info()["tuning"] if tuning is None else tuning).get("decode_panels", 0)
    if (qkernels.cpu_isa() if path is None else path) not in LOCKSTEP_PATHS:
        cap = 1
    return {k: min(v, cap) if cap else v for k, v in KERNEL_PANELS.items()}


def kernel_streams(name: str, tuning: dict | None = None, path: str | None = None) -> int | None:
    """Streams per thread of a qkernels kernel's M = 1 path, or None for a peer."""
    if not name.startswith("qkernels "):
        return None
    kind = name[len("qkernels "):].split(" (")[0]
    return decode_streams(tuning, path).get(kind)


def compute_peaks():
    """Measured ceilings of the active CPU path x threads: int8 (dot instruction) and fp32 (FMA)."""
    i8, f32 = probes.instruction_peaks(qkernels.cpu_isa())
    n = torch.get_num_threads()
    return {"int8_gops": i8 * n / 1e9, "fp32_gflops": f32 * n / 1e9}


def _copies(factory, x, w, cold):
    """One callable per weight copy: a single copy (hot) or enough to exceed COLD_BYTES (DRAM)."""
    fn, wbytes = factory(x, w, many=cold)
    fns = [fn]
    if cold:
        for _ in range(max(2, -(-COLD_BYTES // max(wbytes, 1))) - 1):
            fns.append(factory(x, w + 0.0, many=True)[0])
    return fns, wbytes


def time_interleaved(sets, dev, min_calls, min_time=0.3):
    """Seconds per call for each name in sets, calling them in strict alternation (each cycling
    through its own weight copies), so slow drifts of a shared VM hit every kernel alike."""
    names = list(sets)
    for n in names:
        for f in sets[n][:2]:
            f()
    _sync(dev)
    times = {n: [] for n in names}
    i = 0
    t_end = time.perf_counter() + min_time
    while i < min_calls or (time.perf_counter() < t_end and i < 20 * min_calls):
        for n in names:
            f = sets[n][i % len(sets[n])]
            t0 = time.perf_counter()
            f()
            _sync(dev)
            times[n].append(time.perf_counter() - t0)
        i += 1
    return times


# Worker threads of one runtime spin for a while after their last task (onnxruntime's pool and
# torch's OpenMP team alike) and take the cores from the other: measured on Zen 5, W8A8 M=128
# 4096x4096 right after 5 onnxruntime calls ran at 6.96 ms against 3.14 ms after a 50 ms pause, and
# onnxruntime right after ours at 7.19 ms against 3.46 ms. So a block of one runtime starts only
# after the other's workers have gone to sleep.
SETTLE_S = 0.1


# A peer far slower than the rest (torch._int_mm on a CPU without VNNI: seconds per call) is timed
# on fewer calls, so that its window stays within WINDOW_S; one slower than ONE_CALL_S per call is
# timed on a single call, next to a short window of ours. Such rows carry "calls".
WINDOW_S, ONE_CALL_S = 3.0, 2.0


def _one_call(fn, dev):
    """Seconds of one warm call: the second, or the first when that alone exceeds ONE_CALL_S (a
    warm-up is small beside seconds of work)."""
    t = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        t = time.perf_counter() - t0
        if t > ONE_CALL_S:
            break
    return t


def settled(fn, *args):
    time.sleep(SETTLE_S)
    return fn(*args)


def _row(name, M, K, N, cold, wbytes, ts):
    med = statistics.median(ts)
    return {"kernel": name, "M": M, "K": K, "N": N, "mode": "DRAM" if cold else "hot",
            "median_ms": med * 1e3, "min_ms": min(ts) * 1e3, "max_ms": max(ts) * 1e3,
            "gops": 2 * M * N * K / med / 1e9, "weight_gbs": wbytes / med / 1e9}


def bench_group(ours, others, x, w, cold, dev):
    """Rows for one (shape, M, mode): each peer is timed in alternation with our kernels, and its
    'vs' ratios come from that same window. Our rows pool the samples of all windows."""
    M, K = x.shape
    N = w.shape[0]
    calls = 30 if cold else 50
    our_sets = {n: _copies(f, x, w, cold) for n, f in ours.items()}
    pooled = {n: [] for n in ours}
    rows = []
    for name, factory in others.items():
        try:
            fns, wbytes = _copies(factory, x, w, cold)
        except Exception as e:  # a peer missing on this build: say so, keep going
            print(f"  skipped {name} M={M} {K}x{N}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        mine = {n: s[0] for n, s in our_sets.items()}
        t1 = settled(_one_call, fns[0], dev)
        n_calls = calls if t1 * calls <= WINDOW_S else max(3, int(WINDOW_S / t1))
        if t1 > ONE_CALL_S:
            times = {**settled(time_interleaved, mine, dev, 10), name: [t1]}
        elif getattr(factory, "own_thread_pool", False):  # blocks: ours, peer, ours, each after a pause
            before = settled(time_interleaved, mine, dev, n_calls)
            times = {**settled(time_interleaved, {name: fns}, dev, n_calls),
                     **{n: before[n] + ts for n, ts in settled(time_interleaved, mine, dev, n_calls).items()}}
        else:
            times = time_interleaved({**mine, name: fns}, dev, n_calls)
        row = _row(name, M, K, N, cold, wbytes, times[name])
        if len(times[name]) < calls:
            row["calls"] = len(times[name])
        row["vs"] = {n: statistics.median(times[n]) * 1e3 for n in ours}  # our ms in this window
        rows.append(row)
        for n in ours:
            pooled[n] += times[n]
        del fns
        gc.collect()
    if not rows:  # no peer ran: time ours on their own
        times = time_interleaved({n: s[0] for n, s in our_sets.items()}, dev, calls)
        pooled = times
    ours_rows = [_row(n, M, K, N, cold, our_sets[n][1], pooled[n]) for n in ours]
    del our_sets
    gc.collect()
    return ours_rows + rows


def suites(dev, names):
    """(our kernels, their peers, the least M each listed peer runs at) per suite: int8 (W8A8, W8A16),
    int4 (W4A8, W4A16; from PREFILL_M rows on also against the int8-weight peers), sparse (2:4) and
    bf16 (the weight-only kernels with bf16 activations against torch's bf16 paths; CPU only)."""
    int_mm_17 = {n: 17 for n in peers.GPU_PEERS if "_int_mm" in n}  # cuBLAS int8 needs M > 16
    table = {"int8": ({**peers.CPU_W8A8, **peers.CPU_W8A16}, peers.CPU_PEERS, {}) if dev == "cpu"
             else (peers.GPU_OURS, peers.GPU_PEERS, int_mm_17),
             "int4": (peers.CPU_W4, {**peers.CPU_PEERS_W4, **peers.CPU_PEERS_W4_PREFILL},
                      dict.fromkeys(peers.CPU_PEERS_W4_PREFILL, peers.PREFILL_M)) if dev == "cpu"
             else (peers.GPU_W4, {n: f for n, f in peers.GPU_PEERS.items() if "bf16" in n or "fp16" in n}, {}),
             "sparse": (peers.CPU_S24, peers.CPU_PEERS_S24, {}) if dev == "cpu"
             else (peers.GPU_S24, peers.GPU_PEERS_S24, {}),
             "bf16": (peers.CPU_BF16, peers.CPU_PEERS_BF16, {})}
    if dev != "cpu" and "bf16" in names:
        raise ValueError("the bf16 suite is CPU-only (the GPU suites already time bf16 / fp16 activations)")
    return [table[n] for n in names]


def run(shapes, ms, cold_m1=True, dev="cpu", suite_names=("int8", "int4", "sparse", "bf16")):
    torch.manual_seed(0)
    results = []
    for ours, others, least_m in suites(dev, suite_names):
        for K, N in shapes:
            w = torch.randn(N, K, device=dev) * 0.02
            for M in ms:
                x = torch.randn(M, K, device=dev)
                for cold in ([True, False] if (M == 1 and cold_m1 and dev == "cpu") else [False]):
                    group = {n: f for n, f in others.items() if M >= least_m.get(n, 1)}
                    results += bench_group(ours, group, x, w, cold, dev)
    return results


def add_ratios(results, bw, peaks=None, tuning=None, path=None):
    """bw: {streams per thread: GB/s} of the in-run read probe (or one number). A DRAM row's %pk is
    against the probe with the kernel's stream count (peers: the best probe)."""
    bws = {int(k): v for k, v in bw.items()} if isinstance(bw, dict) else ({1: bw} if bw else {})  # JSON keys are str
    for r in results:
        if peaks and r["mode"] == "hot" and r["kernel"].startswith("qkernels"):
            ceiling = peaks["int8_gops"] if ("A8" in r["kernel"] or "int8" in r["kernel"]) else peaks["fp32_gflops"]
            if ceiling:
                r["pct_peak"] = 100 * r["gops"] / ceiling
        if r["mode"] == "DRAM" and bws:
            st = kernel_streams(r["kernel"], tuning, path)
            probe = bws.get(st) if st in bws else max(bws.values())
            r["pct_dram_bw"] = 100 * r["weight_gbs"] / probe
        if "vs" in r:  # speedup of each of our kernels over this peer, same window
            r["speedup"] = {n: r["median_ms"] / ms for n, ms in r["vs"].items()}


def format_table(results):
    lines = [f"{'shape (KxN)':>11} {'M':>4} {'mode':>4}  {'kernel':<34} {'median ms':>9} {'(min-max)':>15} "
             f"{'GOP/s':>7} {'GB/s':>6} {'%pk':>4}  speedup of qkernels vs this"]
    for r in results:
        ratio = "  ".join(f"{' '.join(n.split()[1:])} {v:.2f}x" for n, v in r.get("speedup", {}).items())
        if "calls" in r:
            ratio += f"  (slow peer: {r['calls']} call{'s' if r['calls'] > 1 else ''})"
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


def host_name() -> str:
    """The CPU this runs on, for reports: vendor model name plus the family/model numbers a VM's
    generic name ("AMD EPYC") hides (family 25 = Zen 3/4, 26 = Zen 5; Intel family 6 model 143 = SPR)."""
    info = qkernels.cpu_info()
    fam = mod = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == "cpu family" and fam is None:
                    fam = v.strip()
                elif k.strip() == "model" and mod is None:
                    mod = v.strip()
    except OSError:
        pass
    ids = f" (family {fam}, model {mod})" if fam else ""
    return f"{info['model'] or info['vendor'] or platform.machine()}{ids}"


def host_tag(name: str) -> str:
    """A file-name tag for a host: 'amd-epyc-f26' or 'intel-xeon-...-f6m143' style."""
    base, _, ids = name.partition(" (family ")
    slug = "".join(c if c.isalnum() else "-" for c in base.lower().replace("(r)", "").replace("(tm)", ""))
    slug = "-".join(t for t in slug.split("-") if t and t not in ("cpu", "processor"))[:40]
    if ids:
        fam, _, mod = ids.rstrip(")").partition(", model ")
        slug += f"-f{fam}m{mod}"
    return slug


def write_report(data: dict, stem: str) -> None:
    """stem.json (every row), stem.md (header + table) and stem.png (speedups vs torch fp32)."""
    with open(stem + ".json", "w") as f:
        json.dump(data, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(f"# qkernels {data.get('device', 'cpu').upper()} benchmark, {data['date']}, {data['machine']}\n\n")
        f.write(header_lines(data) + "\n\nWritten by `python bench/bench_kernels.py` (see its docstring for the "
                "method); the rows as JSON: [" + os.path.basename(stem) + ".json](" + os.path.basename(stem)
                + ".json), speedups vs torch fp32 as a chart: [" + os.path.basename(stem) + ".png]("
                + os.path.basename(stem) + ".png).\n\n```\n" + format_table(data["results"]) + "\n```\n")
    try:
        plot(data["results"], stem + ".png")
        print(f"saved {stem}.json, .md and .png")
    except ImportError:
        print(f"saved {stem}.json and .md (matplotlib not installed: no plot)")


def header_lines(data: dict) -> str:
    peaks, bw = data.get("peaks"), data.get("dram_gbs")
    text = (f"# qkernels bench {data['date']} on {data['machine']}; {data.get('threads', '?')} threads, "
            f"cpu path {data.get('path', '?')}; torch {data['torch']}")
    if data.get("extensions") is not None:
        text += (f"; extensions {', '.join(data['extensions']) or 'none'}; tuning "
                 + ", ".join(f"{k}={v}" for k, v in data.get("tuning", {}).items()))
    bws = {int(k): v for k, v in bw.items()} if isinstance(bw, dict) else ({1: bw} if bw else {})
    if bws:
        text += ("\n# DRAM read probe (streams per thread: GB/s) "
                 + ", ".join(f"{st}: {g:.1f}" for st, g in sorted(bws.items()))
                 + f"; int8 peak {peaks['int8_gops']:.0f} GOP/s, fp32 peak {peaks['fp32_gflops']:.0f} GFLOP/s (measured)")
    return text + ("\n# %pk: DRAM rows = % of the read probe with as many streams per thread as the kernel's "
                   "M=1 path (" + ", ".join(f"{k} {v}" for k, v in decode_streams(data.get("tuning") or {}, data.get("path", "")).items())
                   + "; peers: the best probe); hot qkernels rows = % of the measured peak of their instruction "
                   "(W8A8/W4A8: int8 dot, W8A16/W4A16: fp32 FMA)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=None, help="comma list of KxN (default: 4096x4096,4096x11008)")
    p.add_argument("--ms", default=None, help="comma list of M (CPU default 1,8,32,128; GPU 1,16,128,4096)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-cold", action="store_true", help="skip the M=1 DRAM rows")
    p.add_argument("--suite", default="int8,int4,sparse,bf16",
                   help="comma list of int8, int4, sparse, bf16 (default all)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--report", default=None, help="rewrite the .md/.png of a saved JSON and exit")
    a = p.parse_args(argv)
    if a.report:
        with open(a.report) as f:
            data = json.load(f)
        add_ratios(data["results"], data.get("dram_gbs"), data.get("peaks"), data.get("tuning"), data.get("path", ""))
        write_report(data, a.report[:-len(".json")] if a.report.endswith(".json") else a.report)
        return data["results"]
    dev = a.device
    default_shapes = "4096x4096,4096x11008" if dev == "cpu" else "4096x4096,8192x28672"
    shapes = [tuple(int(v) for v in s.split("x")) for s in (a.shapes or default_shapes).split(",")]
    ms = [int(m) for m in (a.ms or ("1,8,32,128" if dev == "cpu" else "1,16,128,4096")).split(",")]
    bw = {st: dram_read_bandwidth(streams=st) for st in sorted(set(decode_streams().values()))} if dev == "cpu" else None
    peaks = compute_peaks() if dev == "cpu" else None
    machine = host_name() if dev == "cpu" else torch.cuda.get_device_name()
    data = {"date": str(datetime.date.today()), "device": dev, "machine": machine, "threads": torch.get_num_threads(),
            "path": qkernels.cpu_isa() if dev == "cpu" else "triton", "dram_gbs": bw, "peaks": peaks,
            "extensions": qkernels.cpu_info()["extensions"] if dev == "cpu" else None,
            "tuning": qkernels.cpu_info()["tuning"] if dev == "cpu" else None,
            "torch": torch.__version__, "results": []}
    print(header_lines(data))
    results = run(shapes, ms, cold_m1=not a.no_cold, dev=dev, suite_names=a.suite.split(","))
    add_ratios(results, bw, peaks, data.get("tuning"), data["path"])
    print(format_table(results))
    data["results"] = results
    os.makedirs(a.out, exist_ok=True)
    write_report(data, os.path.join(a.out, f"{data['date']}-{dev}-{host_tag(machine)}"))
    return results


if __name__ == "__main__":
    main()
