"""Backend selection: native kernels (C++ on CPU, Triton on CUDA) or the pure-PyTorch reference."""
from __future__ import annotations

import contextlib
import os

BACKENDS = ("native", "reference")
_override: list[str] = []


def _env_backend() -> str:
    b = os.environ.get("QKERNELS_BACKEND", "native") or "native"
    if b not in BACKENDS:
        raise ValueError(f"QKERNELS_BACKEND must be one of {BACKENDS}, got {b!r}")
    return b


def current_backend() -> str:
    return _override[-1] if _override else _env_backend()


@contextlib.contextmanager
def use_backend(name: str):
    """Run everything inside on backend ``name`` ('reference' or 'native')."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _override.append(name)
    try:
        yield
    finally:
        _override.pop()
