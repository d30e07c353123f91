"""C++ CPU kernels vs qkernels.reference on every ISA path: bit-exact integer results and epilogue."""
import pytest
import torch

from qkernels import ops
from qkernels import reference as R
from conftest import L_W8A8, L_W8A16, int8_layout, nan_eq
from tolerances import OUT_ROUNDING, fp32_dot_bound

Q = torch.ops.qkernels

# (M, K, N): every awkward size appears (M in 0,1,3,17,128; K, N in 1,7,67,127,4095+).
SHAPES = [(0, 67, 7), (1, 1, 1), (1, 4097, 67), (3, 7, 4097), (17, 67, 127), (128, 127, 67),
          (17, 4095, 129), (3, 1, 64), (1, 257, 1)]



def _w8a8(a, a_s, w, w_s, b, out_dtype):
    return Q.w8a8_gemm(a, a_s, Q.pack_int8(w, L_W8A8), L_W8A8, w_s, b, w.shape[0], out_dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K", [(0, 5), (1, 1), (3, 7), (17, 67), (128, 127), (2, 4097)])
def test_quantize_per_token_matches_reference(isa, dtype, M, K):
    x = (torch.randn(M, K) * 5).to(dtype)
    if M > 2:
        x[0] = 0
        x[1, K // 2] = float("nan")
        x[2, 0] = float("-inf")
    q, s = Q.quantize_per_token_int8(x)
    qr, sr = R.quantize_per_token_int8(x)
    assert torch.equal(q, qr) and nan_eq(s, sr)


def test_quantize_noncontiguous(isa):
    x = torch.randn(40, 66)[::2, 1:]
    q, s = Q.quantize_per_token_int8(x)
    qr, sr = R.quantize_per_token_int8(x)
    assert torch.equal(q, qr) and torch.equal(s, sr)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_w8a8_gemm_bit_exact(isa, M, K, N, out_dtype):
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    a_s, w_s, b = torch.rand(M) + 0.01, torch.rand(N) + 0.01, torch.randn(N)
    for bias in (b, None):
        y = _w8a8(a, a_s, w, w_s, bias, out_dtype)
        assert y.dtype == out_dtype and y.shape == (M, N)
        assert torch.equal(y, R.w8a8_gemm(a, a_s, w, w_s, bias, out_dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_fused_w8a8_linear_equals_quant_then_gemm(isa, M, K, N, dtype):
    x = (torch.randn(M, K) * 3).to(dtype)
    if M > 2:
        x[1] = 0
        x[2, 0] = float("nan")
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    w_s, b = torch.rand(N) + 0.01, torch.randn(N)
    packed = Q.pack_int8(w, L_W8A8)
    a, a_s = Q.quantize_per_token_int8(x)
    expect = Q.w8a8_gemm(a, a_s, packed, L_W8A8, w_s, b, N, dtype)
    assert nan_eq(Q.w8a8_linear(x, packed, L_W8A8, w_s, b, N), expect)
    assert nan_eq(expect, R.linear_w8a8(x, w, w_s, b))


@pytest.mark.parametrize("pattern", ["same_sign", "opposite_sign", "alternating"])
def test_w8a8_int16_saturation_corner(isa, pattern):
    """All |values| = 127 with K large: every vpmaddubsw pair sum is at its 32258 maximum."""
    K, M, N = 8192, 3, 70
    a = torch.full((M, K), 127, dtype=torch.int8)
    w = torch.full((N, K), 127, dtype=torch.int8)
    if pattern == "opposite_sign":
        w = -w
    elif pattern == "alternating":
        a[:, 1::2] = -127
        w[:, 1::2] = -127
    a[1] = -a[1]
    ones_m, ones_n = torch.ones(M), torch.ones(N)
    y = _w8a8(a, ones_m, w, ones_n, None, torch.float32)
    exact = R.int8_matmul(a, w).float()
    assert torch.equal(y, exact)
    assert abs(exact).max().item() == 127 * 127 * K


def test_w8a8_accepts_minus_128_activations(isa):
    # Activations from other producers may hold -128; the u8 shift and the sign trick both cover it.
    K = 4096
    a = torch.full((2, K), -128, dtype=torch.int8)
    w = torch.randint(-127, 128, (65, K), dtype=torch.int8)
    y = _w8a8(a, torch.ones(2), w, torch.ones(65), None, torch.float32)
    assert torch.equal(y, R.int8_matmul(a, w).float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_w8a16_gemm_within_fp32_rounding(isa, M, K, N, dtype):
    x = torch.randn(M, K).to(dtype)
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    w_s, b = torch.rand(N) + 0.01, torch.randn(N)
    y = Q.w8a16_linear(x, Q.pack_int8(w, L_W8A16), L_W8A16, w_s, b, N)
    assert y.dtype == dtype and y.shape == (M, N)
    exact = (x.double() @ w.double().T) * w_s.double() + b.double()
    bound = fp32_dot_bound(x.float(), w, w_s) + exact.abs() * OUT_ROUNDING[dtype]
    assert torch.all((y.double() - exact).abs() <= bound)


def test_nan_input_poisons_only_its_row(isa):
    lin_w = torch.randint(-127, 128, (67, 33), dtype=torch.int8)
    x = torch.randn(4, 33)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    y8 = ops.int8_linear(x, ops.pack_int8_weight(lin_w, L_W8A8), L_W8A8, torch.ones(67), None, 8)
    y16 = ops.int8_linear(x, ops.pack_int8_weight(lin_w, L_W8A16), L_W8A16, torch.ones(67), None, None)
    for y in (y8, y16):
        assert torch.isfinite(y[[0, 3]]).all()
        assert torch.isnan(y[1]).all()
        assert (~torch.isfinite(y[2])).all()


@pytest.mark.parametrize("act_bits", [8, None])
def test_results_do_not_depend_on_thread_count(isa, act_bits):
    x = torch.randn(100, 515)
    w = torch.randint(-127, 128, (300, 515), dtype=torch.int8)
    w_s = torch.rand(300)
    packed = ops.pack_int8_weight(w, int8_layout(act_bits))
    prev = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(ops.int8_linear(x, packed, int8_layout(act_bits), w_s, None, act_bits))
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("act_bits", [8, None])
@pytest.mark.parametrize("N,K", [(1, 1), (67, 7), (130, 4097)])
def test_pack_unpack_roundtrip(act_bits, N, K):
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    L = int8_layout(act_bits)
    assert torch.equal(ops.unpack_int8_weight(ops.pack_int8_weight(w, L), L, N, K), w)


@pytest.mark.parametrize("act_bits", [8, None])
def test_batch_invariance(isa, act_bits):
    """A row's output does not depend on the batch it is computed in (M=1 vs M=150)."""
    x = torch.randn(150, 300)
    w = torch.randint(-127, 128, (130, 300), dtype=torch.int8)
    L = int8_layout(act_bits)
    packed, w_s, b = ops.pack_int8_weight(w, L), torch.rand(130), torch.randn(130)
    y = ops.int8_linear(x, packed, L, w_s, b, act_bits)
    for i in (0, 5, 6, 95, 96, 149):
        assert torch.equal(ops.int8_linear(x[i:i + 1], packed, L, w_s, b, act_bits), y[i:i + 1])


def test_pack_rejects_minus_128():
    w = torch.zeros(3, 8, dtype=torch.int8)
    w[1, 2] = -128
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        Q.pack_int8(w, L_W8A8)


def test_w8a8_rejects_k_beyond_exact_int32():
    K = 66001
    w = torch.zeros(1, K, dtype=torch.int8)
    with pytest.raises(ValueError, match="K .* must be <= 66000"):
        Q.w8a8_gemm(torch.zeros(1, K, dtype=torch.int8), torch.ones(1), Q.pack_int8(w, L_W8A8), L_W8A8, torch.ones(1),
                    None, 1, torch.float32)


def test_gemm_rejects_mismatched_pack():
    w = torch.zeros(70, 16, dtype=torch.int8)
    with pytest.raises(ValueError, match="w_packed"):
        Q.w8a8_gemm(torch.zeros(2, 20, dtype=torch.int8), torch.ones(2), Q.pack_int8(w, L_W8A8), L_W8A8,
                    torch.ones(70), None, 70, torch.float32)
    with pytest.raises(TypeError, match="a must be int8"):
        Q.w8a8_gemm(torch.zeros(2, 16), torch.ones(2), Q.pack_int8(w, L_W8A8), L_W8A8, torch.ones(70), None, 70,
                    torch.float32)


_BF16_DOT_CHECK = """
import sys, torch
sys.path.insert(0, {tests!r})
from qkernels import reference as R
from tolerances import EPS32, OUT_ROUNDING, fp32_dot_bound, w4a16_bound
import qkernels
t = qkernels.cpu_info()["tuning"]
assert (t["bf16_dot_min_batch"], t["bf16_dot_min_rows"], t["bf16_dot_chunk_k"]) == (1, {rows}, 64)
Q = torch.ops.qkernels
torch.manual_seed(0)
worst, outs = 0.0, []
for M, K, N, gs, sym in [(1, 1, 1, None, True), (2, 7, 67, 8, False), (7, 300, 129, 32, True), (13, 301, 64, 128, False),
                         (19, 1000, 70, 64, True), (6, 129, 3, None, False), (1, 300, 600, 64, False), (1, 257, 1000, None, True)]:
    x = torch.randn(M, K).bfloat16()
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    w_s, b = torch.rand(N) + 0.01, torch.randn(N)
    y = Q.w8a16_linear(x, Q.pack_int8(w, "int8_w8a16_panels"), "int8_w8a16_panels", w_s, b, N).double()
    outs.append(y.flatten())
    exact = (x.double() @ w.double().T) * w_s.double() + b.double()
    bound = fp32_dot_bound(x.float(), w, w_s) + exact.abs() * OUT_ROUNDING[torch.bfloat16]
    worst = max(worst, float(((y - exact).abs() / bound).max()))
    G, g = R.int4_groups(K, gs)
    q = torch.randint(-8, 8, (N, K)) if sym else torch.randint(0, 16, (N, K))
    zp = None if sym else torch.randint(0, 16, (N, G), dtype=torch.int32)
    s = torch.rand(N, G) + 0.01
    packed = qkernels.ops.pack_int4_weight(R.pack_int4(q), s, zp, K, gs or K, "int4_panels")
    y = Q.w4a16_linear(x, packed, "int4_panels", b, N, gs or K).double()
    outs.append(y.flatten())
    exact = R.w4a16_gemm(x.float(), q, s, zp, gs, None).double() + b.double()
    wq = q.double() - (0 if zp is None else zp.double().repeat_interleave(g, 1)[:, :K])
    bound = w4a16_bound(x.float(), wq, s, g) + exact.abs() * (2 * EPS32 + OUT_ROUNDING[torch.bfloat16])
    worst = max(worst, float(((y - exact).abs() / bound).max()))
    # small integers: every sum is an exact integer, exact in bf16 up to 256 -> equal, so any wrong
    # index, pair order or zero point shows
    xi = torch.randint(-2, 3, (M, K)).bfloat16()
    yi = Q.w8a16_linear(xi, Q.pack_int8(w.clamp(-2, 2), "int8_w8a16_panels"), "int8_w8a16_panels", torch.ones(N), None, N)
    ei = xi.double() @ w.clamp(-2, 2).double().T
    ok = ei.abs() <= 256
    assert torch.equal(yi.double()[ok], ei[ok])
    packed1 = qkernels.ops.pack_int4_weight(R.pack_int4(q), torch.ones(N, G), zp, K, gs or K, "int4_panels")
    yi = Q.w4a16_linear(xi, packed1, "int4_panels", None, N, gs or K)
    ei = xi.double() @ wq.T
    ok = ei.abs() <= 256
    assert torch.equal(yi.double()[ok], ei[ok])
print(worst)
print(torch.cat(outs).float().view(torch.int32).sum().item(), torch.cat(outs).float().view(torch.int32).double().square().sum().item())
"""


def test_bf16_dot_kernels_at_every_m_and_chunk_boundary():
    """The avx512_bf16 extension's W8A16 / W4A16 kernels at every M (QKERNELS_TUNE_BF16_DOT_MIN_BATCH
    = 1) with 64-K chunks (K runs over several chunks, groups of 8-128 split or share them, odd K
    pads a pair, M = 1 walks 4 panels in lockstep plus a remainder): both ways of getting the bf16
    weights (a converted scratch, and in registers) are within the bounds, and agree bit for bit,
    as their sums are the same sequence of operations."""
    import os, subprocess, sys
    import qkernels
    if "avx512_bf16" not in qkernels.cpu_info()["extensions"]:
        pytest.skip("no avx512_bf16 extension on this host's path")
    tests = os.path.dirname(os.path.abspath(__file__))
    sums = []
    for rows in (1, 100000):  # every task converted / every task direct
        env = {**os.environ, "QKERNELS_TUNE_BF16_DOT_MIN_BATCH": "1", "QKERNELS_TUNE_BF16_DOT_MIN_ROWS": str(rows),
               "QKERNELS_TUNE_BF16_DOT_CHUNK_K": "64"}
        r = subprocess.run([sys.executable, "-c", _BF16_DOT_CHECK.format(tests=tests, rows=rows)], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        worst, check = r.stdout.strip().splitlines()[-2:]
        assert float(worst) <= 1.0
        sums.append(check)
    assert sums[0] == sums[1]


def _bit_identical_under(fixed, settings, run):
    """run() (a list of outputs) under each of settings (dicts of tuning choices), after the fixed
    ones; asserts every setting's outputs equal the first's bit for bit. The process's tuning is
    restored afterwards."""
    from qkernels import _C
    before = dict(_C.tuning())
    outs = []
    try:
        for k, v in fixed.items():
            _C.set_tuning(k, v)
        for setting in settings:
            for k, v in setting.items():
                _C.set_tuning(k, v)
            with torch.no_grad():
                outs.append(run())
    finally:
        for k, v in before.items():
            _C.set_tuning(k, v)
    for setting, ys in zip(settings, outs):
        assert all(torch.equal(a, b) for a, b in zip(ys, outs[0])), setting


def test_decode_panels_changes_no_result(isa):
    """tuning().decode_panels (how many panels an M = 1 kernel walks in lockstep) only reorders
    which panel is read when: every M = 1 output is bit-identical at every width, on every path,
    for the kernels that walk panels in lockstep (W4A8, W4A16 with fp32 and bf16 x, 2:4); the same
    for the software prefetch distances, which W8A16's M = 1 tiles also read."""
    import qkernels
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64 * 11 + 5)  # 12 panels: full lockstep runs and a remainder
    mods = [qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=8, group_size=64),
            qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=64),
            qkernels.QuantLinear.from_float(lin, weight_bits=8, act_bits=None),
            qkernels.SparseLinear.from_float(lin, weight_bits=8), qkernels.SparseLinear.from_float(lin)]
    xs = [torch.randn(1, 256), torch.randn(1, 256).bfloat16()]
    # an odd number of groups (5), symmetric (zero point 8 throughout) and asymmetric blocks
    lin5 = torch.nn.Linear(320, 64 * 11 + 5)
    mods5 = [qkernels.QuantLinear.from_float(lin5, weight_bits=4, act_bits=a, group_size=64, symmetric=sym)
             for a in (None, 8) for sym in (True, False)]
    x5 = torch.randn(1, 320)
    # bf16 x at M = 1 through the bf16 dot where there is one; prefetches only touch memory ahead
    # of the stream
    _bit_identical_under({"bf16_dot_min_batch": 1},
                         [{"decode_panels": width, "prefetch_distance": pf, "sparse_prefetch_distance": pf,
                           "ymm_prefetch_distance": pf}
                          for width, pf in ((0, 4096), (1, 0), (2, 64), (3, 4096), (5, 8192), (8, 65536))],
                         lambda: [m(x) for m in mods for x in xs] + [m(x5) for m in mods5])


def test_tile_rows_changes_no_result(isa):
    """tuning().tile_rows (rows per prefill register tile) only regroups rows, which never share a
    sum: every layer kind's output is bit-identical at every height, on every path, with row counts
    that leave a short last tile."""
    import qkernels
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64 * 3 + 5)
    mods = [qkernels.QuantLinear.from_float(lin, weight_bits=8, act_bits=8),
            qkernels.QuantLinear.from_float(lin, weight_bits=8, act_bits=None),
            qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=8, group_size=64),
            qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=64),
            qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=64, symmetric=False),
            qkernels.SparseLinear.from_float(lin, weight_bits=8), qkernels.SparseLinear.from_float(lin)]
    xs = [torch.randn(23, 256), torch.randn(23, 256).bfloat16()]
    # bf16 x: the register-converting tiles below 16 rows
    _bit_identical_under({"bf16_dot_min_rows": 16}, [{"tile_rows": rows} for rows in (0, 1, 2, 3, 4, 5)],
                         lambda: [m(x[:n]) for m in mods for x in xs for n in (13, 23)])


def test_stream_chunks_change_no_result(isa):
    """tuning().stream_chunk_k / stream_max_rows (drive_streamed: the row tiles of a small task walk
    K chunk by chunk and prefetch the next chunk) only change the order in which a task's tiles
    visit K; each sum still runs over k (W4: groups) in order: every W8A8, W4A8, 2:4 (fp32, bf16
    and int8 values) and fp32 W8A16 / W4A16 (direct tiles) output is bit-identical with streaming
    off, with chunks that do and do not divide K, chunks of one 2:4 block, a chunk of one or
    two k4 steps, chunks of one W4 group (also when the chunk is shorter) and of several, tasks
    of several panels (the next panel's first chunk is prefetched), short last tiles, and row
    counts on both sides of stream_max_rows; and the integer kinds exact against the reference."""
    import qkernels
    torch.manual_seed(0)
    mods = []
    for K in (36, 301, 600):
        lin = torch.nn.Linear(K, 64 * 5 + 7)
        mods += [qkernels.QuantLinear.from_float(lin, weight_bits=8, act_bits=8),
                 qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=8, group_size=None)]
        if K % 8 == 0:  # groups of 8 and 32: chunks of one group and of several
            mods += [qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=8, group_size=gs, symmetric=sym)
                     for gs, sym in ((8, False), (32, True))]
        mods += [qkernels.SparseLinear.from_float(lin), qkernels.SparseLinear.from_float(lin, weight_bits=8),
                 qkernels.SparseLinear.from_float(lin.bfloat16()),
                 qkernels.QuantLinear.from_float(lin, weight_bits=8, act_bits=None),
                 qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=None, symmetric=False)]
        if K % 8 == 0:
            mods += [qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=8)]
    xs = [(m, torch.randn(23, m.in_features)) for m in mods]
    run = lambda: [m(x[:n]) for m, x in xs for n in (1, 2, 5, 13, 16, 17, 23)]  # noqa: E731
    # fp32 W8A16 / W4A16 through their direct tiles (streamed) at every row count
    _bit_identical_under({"f32_convert_min_rows": 1 << 30}, [{"stream_chunk_k": 0, "stream_max_rows": 32}] +
                         [{"stream_chunk_k": ck, "stream_max_rows": rows}
                          for ck, rows in ((4, 32), (8, 32), (12, 16), (256, 32), (2048, 32), (64, 2), (64, 5))], run)
    exact = [m for m in mods  # W8A8, W4A8, 2:4 int8
             if getattr(m, "act_bits", None) == 8 or isinstance(m, qkernels.SparseLinear) and m.weight_bits == 8]
    run_exact = lambda: [m(x[:n]) for m, x in xs if m in exact for n in (2, 13, 23)]  # noqa: E731
    with qkernels.use_backend("reference"):  # the integer contracts: the reference's numbers exactly
        want = run_exact()
    assert all(torch.equal(a, b) for a, b in zip(run_exact(), want))


def test_f32_convert_min_rows_changes_no_result(isa):
    """tuning().f32_convert_min_rows picks, per task, between the fp32 weight-only kernels that
    convert weights in registers and those that convert a panel chunk once into an fp32 scratch
    (the 256-bit paths; a no-op elsewhere). Both run the same FMA chains per output, storing and
    reloading a chain at chunk boundaries (256 k), so every W8A16 / W4A16 output is bit-identical
    either way: K within one chunk, across chunks, odd K, groups smaller than a chunk and one group
    (per channel) longer than a chunk; fp32 and bf16 x; row counts with short last tiles."""
    import qkernels
    torch.manual_seed(0)
    mods = []
    for K in (40, 301, 600):
        lin = torch.nn.Linear(K, 64 * 2 + 5)
        mods += [qkernels.QuantLinear.from_float(lin, weight_bits=8, act_bits=None),
                 qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=None),
                 qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=None, symmetric=False)]
        if K % 8 == 0:
            mods += [qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=8, symmetric=False)]
        if K == 600:
            mods += [qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=128)]
    xs = [(m, x) for m in mods for x in (torch.randn(23, m.in_features), torch.randn(23, m.in_features).bfloat16())]
    # bf16 x through the fp32 kernels on every path
    _bit_identical_under({"bf16_dot_min_batch": 1 << 30},
                         [{"f32_convert_min_rows": rows} for rows in (1 << 30, 1, 7)],
                         lambda: [m(x[:n]) for m, x in xs for n in (1, 9, 23)])
