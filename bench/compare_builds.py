"""Before/after speed of two qkernels builds in one run: every layer kind through its public module.

    python bench/compare_builds.py --base /path/to/other/checkout [--shapes 4096x4096] [--ms 1,8,32,128]

Each build runs in its own worker process (PYTHONPATH = its checkout, with its extension built in
place: `python setup.py build_ext --inplace` there). The parent asks the two workers in strict
alternation for short timing chunks of the same (kind, shape, M, mode), so both see the same
machine drift, and reports medians and the after/before speed ratio (> 1: this checkout is faster).
M=1 "DRAM" rows rotate over 2 GiB of weight copies so the weights stream from memory; hot rows
rotate over 4 copies (cache-resident) so one process's memory placement does not decide a row.
Each chunk starts after a pause (SETTLE_S), so the other worker's spinning threads are asleep.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLD_BYTES = 2 << 30
sys.path.insert(0, HERE)
from bench_kernels import SETTLE_S  # noqa: E402

KINDS = {  # name: (constructor source evaluated in the worker, input dtype)
    "W8A8": ("QuantLinear.from_float(lin, weight_bits=8, act_bits=8)", "float32"),
    "W8A16": ("QuantLinear.from_float(lin, weight_bits=8, act_bits=None)", "float32"),
    "W4A8 g128": ("QuantLinear.from_float(lin, weight_bits=4, act_bits=8, group_size=128)", "float32"),
    "W4A16 g128": ("QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=128)", "float32"),
    "W8A16 bf16 act": ("QuantLinear.from_float(lin, weight_bits=8, act_bits=None)", "bfloat16"),
    "W4A16 g128 bf16 act": ("QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=128)", "bfloat16"),
    "W4A16 g128 asym": ("QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=128, symmetric=False)",
                        "float32"),
    "2:4 fp32": ("SparseLinear.from_float(lin)", "float32"),
    "2:4 bf16": ("SparseLinear.from_float(lin.bfloat16())", "bfloat16"),
    "2:4 int8": ("SparseLinear.from_float(lin, weight_bits=8)", "float32"),
}

WORKER = r'''
import copy, json, sys, time, torch
from torch import nn
import qkernels
from qkernels import QuantLinear, SparseLinear
torch.manual_seed(0)
mods, xs = {}, {}
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "info":
        print(json.dumps({"file": qkernels.__file__, "path": qkernels.cpu_isa()}), flush=True)
        continue
    key = (req["kind"], req["K"], req["N"], req["cold"])
    if key not in mods:
        mods.clear(); xs.clear()
        lin = nn.Linear(req["K"], req["N"])
        with torch.no_grad():
            lin.weight.normal_(0, 0.02)
        one = eval(req["make"])
        per = sum(t.numel() * t.element_size() for t in [one._packed])
        # DRAM rows rotate over > 2 GiB of copies; hot rows over 4, so one unlucky allocation
        # (alignment, page placement) of one process does not decide the comparison
        n = max(2, -(-req["cold_bytes"] // per)) if req["cold"] else 4
        mods[key] = [one] + [copy.deepcopy(one) for _ in range(n - 1)]
    x = xs.setdefault(req["M"], torch.randn(req["M"], req["K"]).to(getattr(torch, req["dtype"])))
    ms = mods[key]
    with torch.inference_mode():
        for i in range(2):
            ms[i % len(ms)](x)
        ts = []
        for i in range(req["calls"]):
            m = ms[(req["start"] + i) % len(ms)]
            t0 = time.perf_counter()
            m(x)
            ts.append(time.perf_counter() - t0)
    print(json.dumps(ts), flush=True)
'''


class Worker:
    def __init__(self, checkout: str, threads: int):
        env = dict(os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS=str(threads))
        self.p = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env, cwd=checkout)

    def ask(self, req: dict):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died on {req}")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def compare(base: Worker, new: Worker, kind: str, K: int, N: int, M: int, cold: bool, rounds: int):
    make, dtype = KINDS[kind]
    req = {"op": "time", "kind": kind, "make": make, "dtype": dtype, "K": K, "N": N, "M": M, "cold": cold,
           "cold_bytes": COLD_BYTES, "calls": 8 if cold else 20, "start": 0}
    t = {"before": [], "after": []}
    for r in range(rounds):
        req["start"] = r * req["calls"]
        for name, w in (("before", base), ("after", new)) if r % 2 == 0 else (("after", new), ("before", base)):
            time.sleep(SETTLE_S)  # the other worker's OpenMP team spins after its chunk (bench_kernels.py)
            t[name] += w.ask(req)
    b, a = statistics.median(t["before"]) * 1e3, statistics.median(t["after"]) * 1e3
    return {"kind": kind, "K": K, "N": N, "M": M, "mode": "DRAM" if cold else "hot",
            "before_ms": b, "after_ms": a, "speedup": b / a}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="checkout of the 'before' build (extension built in place)")
    p.add_argument("--shapes", default="4096x4096,4096x11008")
    p.add_argument("--ms", default="1,8,32,128")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    base, new = Worker(os.path.abspath(a.base), a.threads), Worker(ROOT, a.threads)
    infos = base.ask({"op": "info"}), new.ask({"op": "info"})
    print(f"# before: {infos[0]['file']} ({infos[0]['path']}); after: {infos[1]['file']} ({infos[1]['path']}); "
          f"{a.threads} threads; {time.strftime('%Y-%m-%d')}")
    print(f"{'kind':<16} {'KxN':>11} {'M':>4} {'mode':>4} {'before ms':>10} {'after ms':>9} {'after/before speed':>19}")
    rows = []
    for kind in a.kinds.split(","):
        for shape in a.shapes.split(","):
            K, N = (int(v) for v in shape.split("x"))
            for M in (int(m) for m in a.ms.split(",")):
                for cold in ([True, False] if M == 1 else [False]):
                    r = compare(base, new, kind, K, N, M, cold, a.rounds)
                    rows.append(r)
                    print(f"{kind:<16} {K:>5}x{N:<5} {M:>4} {r['mode']:>4} {r['before_ms']:>10.3f} "
                          f"{r['after_ms']:>9.3f} {r['speedup']:>18.2f}x", flush=True)
    base.close()
    new.close()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"before": infos[0], "after": infos[1], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
