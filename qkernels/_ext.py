"""Loads the native extension (registers torch.ops.qkernels.*) and applies QKERNELS_CPU_ISA."""
from __future__ import annotations

import os

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from . import _C
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "qkernels native extension is not built: run `pip install --no-build-isolation -e .` "
        f"in the qkernels checkout ({e})") from e

_env_isa = os.environ.get("QKERNELS_CPU_ISA")
if _env_isa:
    _C.set_cpu_isa(_env_isa)  # ValueError on an unknown name; caps at what the CPU has


def cpu_isa() -> str:
    """The CPU path that runs now: 'amx' | 'avx512_vnni' | 'avx_vnni' | 'avx2' | 'scalar'."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> str:
    """Cap the CPU path at ``name`` (tests use it to run every path); returns the active path."""
    return _C.set_cpu_isa(name)


def detected_cpu_isa() -> str:
    return _C.detected_isa()
