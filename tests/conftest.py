"""Shared fixtures: the CPU ISA paths to run, seeding, and Triton interpreter mode without a GPU."""
import os

import torch

# Triton decides interpreted vs compiled when a kernel is defined, so set this before any import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import qkernels  # noqa: E402

def available_isas():
    """The CPU paths this machine can run (the feature model decides; never an assumed order)."""
    return qkernels.supported_cpu_paths()


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test once per CPU path this machine can execute."""
    prev = qkernels.cpu_isa()
    assert qkernels.set_cpu_isa(request.param) == request.param
    yield request.param
    qkernels.set_cpu_isa(prev)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
