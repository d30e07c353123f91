"""int4 grouped weights: reference contract, C++ W4A8 (bit-exact) / W4A16 kernels on every ISA path,
pack/unpack, and QuantLinear(weight_bits=4)."""
import copy
import io
import pickle

import pytest
import safetensors.torch as st
import torch
from torch import nn

import qkernels
from qkernels import QuantConfig, QuantLinear, ops
from qkernels import reference as R
from conftest import L_INT4, nan_eq
from tolerances import CLOSE, CLOSE_FP32_LAYER, EPS32, OUT_ROUNDING, SQNR_DB, sqnr_db, w4a16_bound

Q = torch.ops.qkernels

# (M, K, N, group_size): awkward M/K/N, partial last groups, one group per row (None).
SHAPES = [(0, 67, 7, 32), (1, 1, 1, None), (1, 4097, 67, 128), (3, 7, 4097, None), (17, 67, 127, 32),
          (128, 127, 67, 64), (17, 4095, 129, 256), (3, 300, 64, 8), (1, 257, 1, 128), (5, 100, 70, 128),
          (1, 300, 1000, 64),  # M=1 decode path, 16 panels (8 in lockstep + remainder)
          (2, 100, 70, 16), (3, 300, 70, 24), (2, 200, 65, 56)]  # groups of 2, 3, 7 k8 steps (AVX2 2-row chains of 4)


def _rand_int4(N, K, group_size, symmetric):
    G, _ = R.int4_groups(K, group_size)
    if symmetric:
        return torch.randint(-8, 8, (N, K), dtype=torch.int8), torch.rand(N, G) + 0.01, None
    return (torch.randint(0, 16, (N, K), dtype=torch.int8), torch.rand(N, G) + 0.01,
            torch.randint(0, 16, (N, G), dtype=torch.int32))


def _pack(q, scale, zp, K, group_size):
    return ops.pack_int4_weight(R.pack_int4(q), scale, zp, K, group_size or K, L_INT4)



# ---- reference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [True, False])
def test_reference_w4a8_is_the_grouped_integer_sum(symmetric):
    M, K, N, gs = 3, 70, 5, 32
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    q, s, zp = _rand_int4(N, K, gs, symmetric)
    acc = R.int4_group_acc(a, q, zp, gs)
    for g in range(3):
        k = slice(g * gs, min(K, (g + 1) * gs))
        w = q[:, k].long() - (zp[:, g:g + 1].long() if zp is not None else 0)
        assert torch.equal(acc[:, :, g].long(), a[:, k].long() @ w.T)
    y = R.w4a8_gemm(a, torch.ones(M), q, s, zp, gs, None, torch.float32)
    terms = acc.double() * s.double()[None]
    assert torch.all((y.double() - terms.sum(-1)).abs() <= 4 * EPS32 * terms.abs().sum(-1))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 128, None])
def test_quantize_weight_int4_never_worse_than_minmax(symmetric, group_size):
    w = torch.randn(64, 300)
    q, s, zp = R.quantize_weight_int4(w, group_size, symmetric)
    q0, s0, zp0 = R.quantize(w, "per_group", 4, symmetric, group_size or 300)
    lo, hi = R.qrange(4, symmetric)
    assert q.dtype == torch.int8 and q.min() >= lo and q.max() <= hi
    err = (R.dequantize(q, s, zp, "per_group", group_size or 300) - w).square().sum()
    err0 = (R.dequantize(q0, s0, zp0, "per_group", group_size or 300) - w).square().sum()
    assert err <= err0 and (s > 0).all()


# ---- C++ kernels vs reference --------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N,gs", SHAPES)
def test_w4a8_bit_exact(isa, M, K, N, gs, dtype, symmetric):
    x = (torch.randn(M, K) * 3).to(dtype)
    if M > 2:
        x[1] = 0
        x[2, 0] = float("nan")
    q, s, zp = _rand_int4(N, K, gs, symmetric)
    packed, b = _pack(q, s, zp, K, gs), torch.randn(N)
    for bias in (b, None):
        y = Q.w4a8_linear(x, packed, L_INT4, bias, N, gs or K)
        assert y.dtype == dtype and y.shape == (M, N)
        assert nan_eq(y, R.linear_w4a8(x, q, s, zp, gs, bias))


@pytest.mark.parametrize("symmetric", [True, False])
def test_w4a8_extreme_values(isa, symmetric):
    """Largest |a * (u - zz)| everywhere, K large: int32 sums and the u8 x s8 dot stay exact."""
    K, N, gs = 8192, 70, 256
    x = torch.ones(3, K)
    x[1] = -1
    x[2, 1::2] = -1
    G = K // gs
    if symmetric:
        q, zp = torch.full((N, K), -8, dtype=torch.int8), None
        q[1::2] = 7
    else:
        q = torch.full((N, K), 15, dtype=torch.int8)
        zp = torch.zeros(N, G, dtype=torch.int32)
        q[1::2], zp[1::2] = 0, 15
    s = torch.ones(N, G)
    y = Q.w4a8_linear(x, _pack(q, s, zp, K, gs), L_INT4, None, N, gs)
    assert torch.equal(y, R.linear_w4a8(x, q, s, zp, gs, None))
    a, _ = R.quantize_per_token_int8(x)
    assert R.int4_group_acc(a, q, zp, gs).abs().max().item() == 127 * (8 if symmetric else 15) * gs


def _w4a16_bound(x, q, s, zp, gs):
    """The W4A16 contract's bound: fp32 sums of x * (q - zero point), no |x| * zero point term."""
    K = x.shape[1]
    G, g = R.int4_groups(K, gs)
    w = q.double() - (0 if zp is None else zp.double().repeat_interleave(g, 1)[:, :K])
    return w4a16_bound(x.float(), w, s, g)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N,gs", SHAPES)
def test_w4a16_within_fp32_rounding(isa, M, K, N, gs, dtype, symmetric):
    x = torch.randn(M, K).to(dtype)
    q, s, zp = _rand_int4(N, K, gs, symmetric)
    b = torch.randn(N)
    y = Q.w4a16_linear(x, _pack(q, s, zp, K, gs), L_INT4, b, N, gs or K)
    assert y.dtype == dtype and y.shape == (M, N)
    exact = R.w4a16_gemm(x.double().float(), q, s, zp, gs, None).double() + b.double()
    bound = _w4a16_bound(x.float(), q, s, zp, gs) + exact.abs() * (2 * EPS32 + OUT_ROUNDING[dtype])
    assert torch.all((y.double() - exact).abs() <= bound)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("N,K,gs", [(1, 1, None), (67, 7, 8), (130, 4097, 128), (64, 300, 32)])
def test_pack_unpack_roundtrip(N, K, gs, symmetric):
    q, s, zp = _rand_int4(N, K, gs, symmetric)
    qw = R.pack_int4(q)
    qw2, s2, zp2 = ops.unpack_int4_weight(_pack(q, s, zp, K, gs), L_INT4, N, K, gs or K, symmetric)
    assert torch.equal(qw2, qw) and torch.equal(s2, s)
    assert (zp2 is None) if symmetric else torch.equal(zp2, zp)
    assert torch.equal(R.unpack_int4(qw2, K, signed=symmetric), q)


@pytest.mark.parametrize("act_bits", [8, None])
def test_int4_thread_count_and_batch_invariance(isa, act_bits):
    K, N, gs = 515, 300, 128
    x = torch.randn(100, K)
    q, s, zp = _rand_int4(N, K, gs, False)
    packed = _pack(q, s, zp, K, gs)
    prev = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(ops.int4_linear(x, packed, L_INT4, None, N, gs, act_bits, False))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(outs[0], outs[1])
    for i in (0, 5, 6, 95, 99):
        assert torch.equal(ops.int4_linear(x[i:i + 1], packed, L_INT4, None, N, gs, act_bits, False), outs[0][i:i + 1])


def test_int4_ops_reject_mismatched_pack():
    q, s, zp = _rand_int4(70, 64, 32, True)
    packed = _pack(q, s, zp, 64, 32)
    with pytest.raises(ValueError, match="w_packed"):
        Q.w4a8_linear(torch.randn(2, 64), packed, L_INT4, None, 70, 16)
    with pytest.raises(ValueError, match="w_packed"):
        Q.w4a16_linear(torch.randn(2, 72), packed, L_INT4, None, 70, 32)
    with pytest.raises(TypeError, match="x must be float32, bfloat16 or float16"):
        Q.w4a16_linear(torch.randn(2, 64).double(), packed, L_INT4, None, 70, 32)


# ---- QuantLinear(weight_bits=4) -------------------------------------------------------------------
MODES4 = {"w4a16": None, "w4a8": 8}


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("mode", MODES4)
def test_sqnr_floor_vs_fp32_linear(isa, mode, symmetric):
    lin = nn.Linear(1024, 512)
    nn.init.normal_(lin.weight)
    x = torch.randn(64, 1024)
    q = QuantLinear.from_float(lin, weight_bits=4, act_bits=MODES4[mode], group_size=128, symmetric=symmetric)
    q16 = QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=128, symmetric=symmetric)
    with torch.no_grad():
        y = lin(x)
        got = sqnr_db(y, q(x))
        floor = SQNR_DB["w4a16_sym" if symmetric else "w4a16_asym"]
        if mode == "w4a8":  # at most 1 dB below W4A16
            floor = max(floor - 1.0, sqnr_db(y, q16(x)) - 1.0)
        assert got >= floor


@pytest.mark.parametrize("group_size", [32, 64, 128, 256, None])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("mode", MODES4)
def test_group_sizes_match_reference_backend(mode, symmetric, group_size):
    lin = nn.Linear(300, 70)
    q = QuantLinear.from_float(lin, weight_bits=4, act_bits=MODES4[mode], group_size=group_size,
                               symmetric=symmetric)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 3, 300).to(dtype)
        y = q(x)
        with qkernels.use_backend("reference"):
            yr = q(x)
        assert y.shape == (2, 3, 70) and y.dtype == dtype
        if mode == "w4a8":
            assert torch.equal(y, yr)
        else:
            torch.testing.assert_close(y.float(), yr.float(), **CLOSE[dtype])
    # dequantize() is the weight the module multiplies by
    x = torch.randn(4, 300)
    yd = x @ q.dequantize().T + lin.bias.detach()
    with qkernels.use_backend("reference"):
        ref_y = q(x)
    if mode == "w4a16":
        torch.testing.assert_close(ref_y, yd, **CLOSE_FP32_LAYER)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("mode", MODES4)
def test_state_dict_safetensors_copy_pickle_compile(mode, symmetric):
    lin = nn.Linear(100, 70)
    q = QuantLinear.from_float(lin, weight_bits=4, act_bits=MODES4[mode], group_size=32, symmetric=symmetric)
    x = torch.randn(5, 100)
    y = q(x)
    sd = q.state_dict()
    assert sd["qweight"].dtype == torch.uint8 and tuple(sd["qweight"].shape) == (70, 50)
    assert tuple(sd["weight_scale"].shape) == (70, 4) and sd["weight_scale"].dtype == torch.float32
    assert ("weight_zero_point" in sd) == (not symmetric)
    q2 = QuantLinear(100, 70, bias=True, weight_bits=4, act_bits=MODES4[mode], group_size=32,
                     symmetric=symmetric)
    q2.load_state_dict(st.load(st.save(sd)))
    assert torch.equal(q2(x), y)
    assert torch.equal(copy.deepcopy(q)(x), y)
    assert torch.equal(pickle.loads(pickle.dumps(q))(x), y)
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), y)
    assert torch.equal(q.to(torch.bfloat16)(x), y)  # module dtype casts keep fp32 scales
    torch._dynamo.reset()
    assert torch.equal(torch.compile(q, fullgraph=True)(x), y)


def test_one_copy_of_the_int4_weight_in_memory():
    N, K = 300, 1024
    q = QuantLinear.from_float(nn.Linear(K, N), weight_bits=4, act_bits=8, group_size=128)
    held = {id(t): t for t in [*q.buffers(), *vars(q).values()] if isinstance(t, torch.Tensor)}
    nbytes = sum(t.numel() * t.element_size() for t in held.values() if t.dtype == torch.uint8)
    assert N * K / 2 <= nbytes <= 1.2 * N * K / 2  # nibbles + ~6% scales and zero points
    assert q.weight_scale.shape == (N, 8) and q.weight_zero_point is None


def test_quantize_model_int4():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16))
    x = torch.randn(3, 64)
    y = model(x)
    qkernels.quantize_(model, QuantConfig(weight_bits=4, act_bits=None, group_size=32))
    assert all(isinstance(model[i], QuantLinear) and model[i].weight_bits == 4 for i in (0, 2))
    assert sqnr_db(y, model(x)) > 12


# ---- W4A16 accumulates x * (u - zz): no cancellation, Inf stays Inf ------------------------------
@pytest.mark.parametrize("symmetric", [True, False])
def test_w4a16_no_cancellation_between_large_terms(isa, symmetric):
    """x = (1e8, 1, 0, ...) against a weight whose first value is exactly zero (u == zz): the output
    is the small term alone. sum(x * u) - zz * sum(x) lost it completely."""
    K, N, gs = 64, 70, 32
    q, s, zp = _rand_int4(N, K, gs, symmetric)
    q[:, 0] = 0 if symmetric else zp[:, 0]  # w[:, 0] == 0
    q[:, 1] = 3 if symmetric else (zp[:, 0] + 3).clamp(max=15)
    x = torch.zeros(2, K)
    x[:, 0], x[:, 1] = 1e8, 1.0
    y = ops.int4_linear(x, _pack(q, s, zp, K, gs), L_INT4, None, N, gs, None, symmetric)
    w1 = (q[:, 1].float() - (0 if symmetric else zp[:, 0].float())) * s[:, 0]
    assert torch.equal(y, w1.expand(2, N))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
def test_w4a16_nonfinite_activation_matches_the_reference(isa, symmetric, bad):
    """One +-Inf activation gives +-Inf where its weight is nonzero and NaN where it is zero, as the
    exact sum does (it used to make every output NaN); NaN poisons its row only."""
    K, N, gs = 64, 70, 32
    q, s, zp = _rand_int4(N, K, gs, symmetric)
    q[:5, 7] = 0 if symmetric else zp[:5, 0]
    x = torch.randn(3, K)
    x[1, 7] = bad
    y = ops.int4_linear(x, _pack(q, s, zp, K, gs), L_INT4, None, N, gs, None, symmetric)
    yr = R.w4a16_gemm(x, q, s, zp, gs, None)
    assert torch.equal(torch.isnan(y), torch.isnan(yr)) and torch.equal(torch.isinf(y), torch.isinf(yr))
    assert torch.equal(y[1][torch.isinf(y[1])], yr[1][torch.isinf(yr[1])])
    assert torch.isfinite(y[[0, 2]]).all()
