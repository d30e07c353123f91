"""Shared fixtures: the CPU ISA paths to run, seeding, and Triton interpreter mode without a GPU."""
import os

import torch

# Triton decides interpreted vs compiled when a kernel is defined, so set this before any import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import qkernels  # noqa: E402

_ORDER = ["scalar", "avx2", "avx_vnni", "avx512_vnni"]


def available_isas():
    best = qkernels.detected_cpu_isa()
    best = "avx512_vnni" if best == "amx" else best
    return _ORDER[: _ORDER.index(best) + 1]


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test once per compiled CPU path this machine can execute."""
    prev = qkernels.cpu_isa()
    assert qkernels.set_cpu_isa(request.param) == request.param
    yield request.param
    qkernels.set_cpu_isa(prev)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
