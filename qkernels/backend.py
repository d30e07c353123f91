"""Backend selection: native kernels (C++ on CPU, Triton on CUDA) or the pure-PyTorch reference.

``use_backend`` holds for the current thread (and asyncio task) only: it is a context variable, so
other threads keep their own choice. ``QKERNELS_BACKEND=reference`` forces the reference
process-wide. torch.compile reads the backend once, when it traces: a compiled module keeps the
backend that was active then.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

import torch

BACKENDS = ("native", "reference")
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("qkernels_backend", default=None)


def _env_backend() -> str:
    b = os.environ.get("QKERNELS_BACKEND", "native") or "native"
    if b not in BACKENDS:
        raise ValueError(f"QKERNELS_BACKEND must be one of {BACKENDS}, got {b!r}")
    return b


@torch.compiler.assume_constant_result
def current_backend() -> str:
    """'native' or 'reference': this thread's use_backend choice, else QKERNELS_BACKEND, else native."""
    return _override.get() or _env_backend()


@contextlib.contextmanager
def use_backend(name: str):
    """Run everything inside on backend ``name`` ('reference' or 'native'), in this thread only."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)
