"""Shared fixtures and helpers: the CPU paths to run, seeding, the CPU packed layouts, NaN-aware
equality, and Triton interpreter mode without a GPU."""
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


# The CPU packed layouts (qkernels.formats.layouts), as the CPU op tests pass them to the ops.
L_W8A8, L_W8A16, L_INT4, L_S24 = "int8_w8a8_panels", "int8_w8a16_panels", "int4_panels", "sparse24_panels"


def int8_layout(act_bits):
    return L_W8A8 if act_bits == 8 else L_W8A16


def nan_eq(a, b):
    """Equal, with NaN == NaN and +-Inf matched by sign."""
    return torch.equal(a.nan_to_num(1.5, 2.5, 3.5), b.nan_to_num(1.5, 2.5, 3.5))
