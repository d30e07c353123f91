"""2:4 sparsity: pruning, the compressed format, C++ kernels on every ISA path vs the reference,
SparseLinear and sparsify_."""
import copy
import pickle

import pytest
import safetensors.torch as st
import torch
from torch import nn

import qkernels
from qkernels import SparseConfig, SparseLinear, ops
from qkernels import reference as R
from conftest import L_S24, L_W8A8, nan_eq
from tolerances import CLOSE_16BIT, CLOSE_FP32, EPS32, OUT_ROUNDING, fp32_dot_bound

Q = torch.ops.qkernels
SHAPES = [(0, 67, 7), (1, 1, 1), (1, 4097, 67), (3, 7, 4097), (17, 67, 127), (128, 127, 67),
          (17, 4095, 129), (3, 33, 64), (1, 257, 1),
          (1, 300, 1000)]  # the last: M=1 decode path, 16 panels (4 / 6 in lockstep + remainder)



# ---- reference: pruning and format ------------------------------------------------------------------
def test_prune_keeps_two_largest_per_group_and_is_idempotent():
    w = torch.tensor([[1.0, -5.0, 3.0, 0.5, 2.0, 2.0, -2.0, 1.0, 7.0]])
    mask, p = qkernels.prune_24(w)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False, True]]
    assert p.tolist() == [[0.0, -5.0, 3.0, 0.0, 2.0, 2.0, 0.0, 0.0, 7.0]]  # ties: lower index
    w = torch.randn(40, 70)
    mask, p = qkernels.prune_24(w)
    assert R.is_24(p) and mask.dtype == torch.bool
    assert torch.equal(qkernels.prune_24(p)[1], p)  # a 2:4 weight is kept exactly
    full = torch.nn.functional.pad(mask, (0, 2)).reshape(40, -1, 4).sum(-1)
    assert (full[:, :-1] == 2).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("K", [1, 4, 7, 32, 67, 4097])
def test_compress_decompress_roundtrip(dtype, K):
    w = (torch.randn(9, K) * 50).to(dtype)
    _, p = R.prune_24(w)
    values, meta = R.compress_24(p)
    G = -(-K // 4)
    assert values.shape == (9, 2 * G) and values.dtype == dtype
    assert meta.shape == (9, (G + 1) // 2) and meta.dtype == torch.uint8
    idx = R.meta_indices(meta, G)
    assert (idx[..., 0] < idx[..., 1]).all()
    assert torch.equal(R.decompress_24(values, meta, K), p)


def test_meta_byte_layout():
    w = torch.zeros(1, 8)
    w[0, 1], w[0, 3] = 1.0, 2.0   # group 0 keeps 1, 3 -> nibble 1 | 3 << 2 = 0xD
    w[0, 4], w[0, 6] = 3.0, 4.0   # group 1 keeps 0, 2 -> nibble 0 | 2 << 2 = 0x8
    values, meta = R.compress_24(w)
    assert meta.tolist() == [[0x8D]] and values.tolist() == [[1.0, 2.0, 3.0, 4.0]]


# ---- C++ kernels vs reference --------------------------------------------------------------------
@pytest.mark.parametrize("vdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_float_sparse_within_fp32_rounding_of_dense(isa, M, K, N, dtype, vdtype):
    x = torch.randn(M, K).to(dtype)
    _, w = R.prune_24(torch.randn(N, K).to(vdtype))
    values, meta = R.compress_24(w)
    b = torch.randn(N)
    y = Q.s24_linear(x, Q.pack_sparse24(values, meta, K, L_S24), L_S24, b, N, vdtype)
    assert y.dtype == dtype and y.shape == (M, N)
    exact = x.double() @ w.double().T + b.double()  # the dense matmul with the pruned weight
    bound = fp32_dot_bound(x.float(), w.float(), torch.ones(N)) + exact.abs() * (2 * EPS32 + OUT_ROUNDING[dtype])
    assert torch.all((y.double() - exact).abs() <= bound)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_int8_sparse_bit_exact(isa, M, K, N, dtype):
    x = (torch.randn(M, K) * 3).to(dtype)
    if M > 2:
        x[1] = 0
        x[2, 0] = float("nan")
    _, w = R.prune_24(torch.randint(-127, 128, (N, K), dtype=torch.int8))
    values, meta = R.compress_24(w)
    w_s, b = torch.rand(N) + 0.01, torch.randn(N)
    packed = Q.pack_sparse24(values, meta, K, L_S24)
    for bias in (b, None):
        y = Q.s24_w8a8_linear(x, packed, L_S24, w_s, bias, N)
        assert nan_eq(y, R.linear_sparse24_w8a8(x, values, meta, w_s, bias))
    if M > 0:  # the same as the dense W8A8 path on the pruned weight
        dense = ops.int8_linear(x, ops.pack_int8_weight(w, L_W8A8), L_W8A8, w_s, b, 8)
        assert nan_eq(Q.s24_w8a8_linear(x, packed, L_S24, w_s, b, N), dense)


def test_int8_sparse_extreme_values(isa):
    K, N = 8192, 70
    x = torch.ones(3, K)
    x[1] = -1
    w = torch.full((N, K), 127, dtype=torch.int8)
    w[1::2] = -127
    _, w = R.prune_24(w)
    values, meta = R.compress_24(w)
    y = Q.s24_w8a8_linear(x, Q.pack_sparse24(values, meta, K, L_S24), L_S24, torch.ones(N), None, N)
    assert torch.equal(y, R.linear_sparse24_w8a8(x, values, meta, torch.ones(N), None))


@pytest.mark.parametrize("M", [1, 3])
def test_int8_sparse_exact_where_the_u8_form_passes_int32(isa, M):
    # Kernels that read u8 activations (a + 128, Kernels::s24_a_u8: avx2) sum (a + 128) * v, here
    # 255 * 127 * 70000 > 2^31, and subtract 128 * sum(v): exact mod 2^32, and the true sum
    # (+-127 * 127 * 70000) fits in int32.
    K, N = 140000, 3
    x = torch.ones(M, K)
    x[1:] = -1
    w = torch.full((N, K), 127, dtype=torch.int8)
    w[1] = -127
    _, w = R.prune_24(w)
    values, meta = R.compress_24(w)
    y = Q.s24_w8a8_linear(x, Q.pack_sparse24(values, meta, K, L_S24), L_S24, torch.ones(N), None, N)
    ref = R.linear_sparse24_w8a8(x, values, meta, torch.ones(N), None)
    # out = sum * a_scale (1 / 127) * w_scale (1): +-127 * K / 2
    assert torch.equal(y, ref) and abs(float(ref[0, 0])) == pytest.approx(127 * K / 2, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("N,K", [(1, 1), (67, 7), (130, 4097)])
def test_pack_unpack_roundtrip(dtype, N, K):
    values, meta = R.compress_24((torch.randn(N, K) * 50).to(dtype))
    v2, m2 = ops.unpack_sparse24_weight(ops.pack_sparse24_weight(values, meta, K, L_S24), L_S24, N, K, dtype)
    assert torch.equal(v2, values) and torch.equal(m2, meta)


@pytest.mark.parametrize("vdtype", [torch.float32, torch.int8])
def test_sparse_thread_count_and_batch_invariance(isa, vdtype):
    K, N = 515, 300
    x = torch.randn(100, K)
    w = torch.randn(N, K) if vdtype == torch.float32 else torch.randint(-127, 128, (N, K), dtype=torch.int8)
    values, meta = R.compress_24(w)
    packed, w_s = ops.pack_sparse24_weight(values, meta, K, L_S24), torch.rand(N)
    prev = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(ops.sparse24_linear(x, packed, L_S24, vdtype, w_s, None, N))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(outs[0], outs[1])
    for i in (0, 5, 6, 95, 99):
        assert torch.equal(ops.sparse24_linear(x[i:i + 1], packed, L_S24, vdtype, w_s, None, N), outs[0][i:i + 1])


# ---- SparseLinear ------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_bits", [None, 8])
def test_sparse_linear_matches_pruned_dense(isa, weight_bits):
    lin = nn.Linear(300, 70)
    s = SparseLinear.from_float(lin, weight_bits=weight_bits)
    x = torch.randn(2, 3, 300)
    y = s(x)
    with qkernels.use_backend("reference"):
        yr = s(x)
    assert y.shape == (2, 3, 70)
    _, pruned = qkernels.prune_24(lin.weight.detach())
    if weight_bits == 8:
        assert torch.equal(y, yr)
        wq = s.dequantize()  # int8 values only where the pruned weight is kept
        assert R.is_24(wq) and not ((wq != 0) & (pruned == 0)).any()
    else:
        assert torch.equal(s.dequantize(), pruned)
        torch.testing.assert_close(y, yr, **CLOSE_FP32)
        torch.testing.assert_close(y, x @ pruned.T + lin.bias.detach(), **CLOSE_FP32)


def test_sparse_linear_keeps_a_24_weight_exactly():
    lin = nn.Linear(64, 16)
    with torch.no_grad():
        lin.weight.copy_(qkernels.prune_24(lin.weight)[1])
    s = SparseLinear.from_float(lin)
    assert torch.equal(s.dequantize(), lin.weight.detach())


@pytest.mark.parametrize("weight_bits", [None, 8])
def test_sparse_state_dict_copy_pickle_compile(weight_bits):
    lin = nn.Linear(100, 70)
    s = SparseLinear.from_float(lin, weight_bits=weight_bits)
    x = torch.randn(5, 100)
    y = s(x)
    sd = s.state_dict()
    assert sd["meta"].dtype == torch.uint8 and tuple(sd["values"].shape) == (70, 50)
    s2 = SparseLinear(100, 70, bias=True, weight_bits=weight_bits)
    s2.load_state_dict(st.load(st.save(sd)))
    assert torch.equal(s2(x), y)
    assert torch.equal(copy.deepcopy(s)(x), y)
    assert torch.equal(pickle.loads(pickle.dumps(s))(x), y)
    assert torch.equal(s.to(torch.bfloat16)(x), y)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(s, fullgraph=True)(x), y)


def test_bf16_values_from_a_bf16_linear():
    lin = nn.Linear(64, 32).bfloat16()
    s = SparseLinear.from_float(lin)
    assert s.value_dtype == torch.bfloat16 and s.state_dict()["values"].dtype == torch.bfloat16
    x = torch.randn(3, 64).bfloat16()
    torch.testing.assert_close(s(x).float(), (x.float() @ s.dequantize().T + lin.bias.float()),
                               **CLOSE_16BIT)


def test_sparsify_model():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16))
    qkernels.sparsify_(model, SparseConfig(weight_bits=8), filter_fn=lambda m, name: name == "0")
    assert isinstance(model[0], SparseLinear) and type(model[2]) is nn.Linear
    assert model(torch.randn(2, 64)).shape == (2, 16)


def test_from_dense_24_weight_roundtrip():
    _, w = qkernels.prune_24(torch.randn(32, 64))
    s = SparseLinear.from_sparse_semi_structured(w.half(), bias=torch.ones(32))
    assert torch.equal(s.dequantize(), w.half().float())
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        SparseLinear.from_sparse_semi_structured(torch.randn(8, 8))
