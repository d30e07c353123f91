"""Hypothesis property tests: quantize and GEMM with saturation-prone values, zero rows, NaN."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import L_W8A8, nan_eq
from qkernels import reference as R

Q = torch.ops.qkernels
SPECIAL = [0.0, 127.0, -127.0, -128.0, 255.0, 0.5, -0.5, 1e-30, 3e38, float("nan")]
COMMON = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def float_rows(draw):
    M = draw(st.integers(1, 6))
    K = draw(st.integers(1, 80))
    vals = draw(st.lists(st.one_of(st.sampled_from(SPECIAL), st.floats(-300, 300, width=32)),
                         min_size=M * K, max_size=M * K))
    x = torch.tensor(vals, dtype=torch.float32).reshape(M, K)
    if draw(st.booleans()):
        x[0] = 0.0
    return x



@COMMON
@given(x=float_rows(), bf16=st.booleans())
def test_quantize_matches_reference(x, bf16):
    if bf16:
        x = x.bfloat16()
    q, s = Q.quantize_per_token_int8(x)
    qr, sr = R.quantize_per_token_int8(x)
    assert torch.equal(q, qr) and nan_eq(s, sr)
    assert int(q.min()) >= -127 and int(q.max()) <= 127


@st.composite
def int8_problem(draw):
    """Shapes up to K=300; entries mix saturation-prone values (+-127, -128 in a) with random ones."""
    M, K, N = draw(st.integers(1, 5)), draw(st.integers(1, 300)), draw(st.integers(1, 70))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    frac = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))

    def make(rows, lo, specials):
        rnd = torch.randint(lo, 128, (rows, K), generator=g)
        pick = torch.tensor(specials)[torch.randint(0, len(specials), (rows, K), generator=g)]
        return torch.where(torch.rand(rows, K, generator=g) < frac, pick, rnd).to(torch.int8)

    return make(M, -128, [127, -127, -128, 0]), make(N, -127, [127, -127, 0])


def test_gemm_matches_reference_every_path(isa):
    _gemm_property()


@COMMON
@given(prob=int8_problem())
def _gemm_property(prob):
    a, w = prob
    M, N = a.shape[0], w.shape[0]
    y = Q.w8a8_gemm(a, torch.ones(M), Q.pack_int8(w, L_W8A8), L_W8A8, torch.ones(N), None, N, torch.float32)
    exact = R.int8_matmul(a, w)
    assert torch.equal(y, exact.float())
