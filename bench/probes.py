"""Bench-only machine probes (DRAM read bandwidth, instruction ceilings per CPU path).

They live in their own small extension, csrc/bench/probes.cpp, which this module configures and
builds with CMake on first use (into build/bench, never installed with the package), so the
production extension qkernels._C carries no bench code and nothing public takes a raw pointer.
"""
from __future__ import annotations

import glob
import importlib
import os
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "bench")


def _module():
    if BUILD not in sys.path:
        sys.path.insert(0, BUILD)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if not glob.glob(os.path.join(BUILD, "_qkprobes" + suffix)) or os.environ.get("QK_REBUILD_PROBES"):
        import pybind11
        subprocess.run(["cmake", "-S", ROOT, "-B", BUILD, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DQK_BENCH_PROBES=ON", f"-DQK_PYTHON_INCLUDE={sysconfig.get_paths()['include']}",
                        f"-DQK_PYBIND11_INCLUDE={pybind11.get_include()}", f"-DQK_EXT_SUFFIX={suffix}"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", BUILD, "--target", "_qkprobes"], check=True, stdout=subprocess.DEVNULL)
    importlib.invalidate_caches()
    return importlib.import_module("_qkprobes")


def dram_read_gbs(threads: int, streams: int = 1, nbytes: int = 1 << 30, reps: int = 7) -> float:
    """Best GB/s of a streaming read of `nbytes` split over `threads` threads, each walking
    `streams` sequential streams in lockstep (as the lockstep decode kernels do)."""
    return _module().read_gbs(nbytes, threads, streams, reps)


def instruction_peaks(path: str) -> tuple[float, float]:
    """Single-thread (int8 ops/s, fp32 flops/s) ceilings of `path`'s dot and FMA instructions."""
    return _module().peaks(path)
