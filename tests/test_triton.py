"""Triton kernels vs the reference: interpreted on CPU (CI), native on a GPU (same tests, more shapes)."""
import pytest
import torch

from qkernels import reference as R
from tolerances import CLOSE_16BIT, EPS32, GPU_EPILOGUE, OUT_ROUNDING, fp32_dot_bound, w4a16_bound

triton = pytest.importorskip("triton")
from qkernels.triton_kernels.quant import quantize_per_token_int8  # noqa: E402
from qkernels.triton_kernels.w8a8_gemm import w8a8_gemm  # noqa: E402
from qkernels.triton_kernels.w8a16_gemm import w8a16_gemm  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = [(1, 1, 1), (3, 7, 67), (17, 67, 7), (0, 16, 16), (5, 127, 33)]
LARGE = [(1, 4096, 4096), (128, 4096, 11008), (4096, 4096, 4096), (16, 8192, 28672)]
SHAPES = SMALL + (LARGE if DEV == "cuda" else [])
FLOATS = [torch.float32, torch.bfloat16] + ([torch.float16] if DEV == "cuda" else [])


def _nan_eq(a, b):
    return torch.equal(a.nan_to_num(1.5, 2.5, 3.5), b.nan_to_num(1.5, 2.5, 3.5))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("M,K", [(1, 1), (6, 70), (3, 257)])
def test_quant_matches_reference(M, K, dtype):
    x = (torch.randn(M, K) * 4).to(dtype)
    if M > 3:
        x[0] = 0
        x[1, 3] = float("nan")
        x[2, 4] = float("inf")
    q, s = quantize_per_token_int8(x.to(DEV))
    qr, sr = R.quantize_per_token_int8(x)
    assert torch.equal(q.cpu(), qr) and _nan_eq(s.cpu(), sr)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_w8a8_matches_reference(M, K, N, out_dtype):
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    a_s, w_s, b = torch.rand(M) + 0.01, torch.rand(N) + 0.01, torch.randn(N)
    y = w8a8_gemm(a.to(DEV), a_s.to(DEV), w.to(DEV), w_s.to(DEV), b.to(DEV), N, out_dtype).cpu()
    yr = R.w8a8_gemm(a, a_s, w, w_s, b, out_dtype)
    if DEV == "cpu":
        assert torch.equal(y, yr)  # interpreter: same fp32 op sequence, bit-exact
    else:  # integer part is exact; the GPU may fuse the epilogue's mul+add into one FMA
        torch.testing.assert_close(y.float(), yr.float(), **GPU_EPILOGUE[out_dtype])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_w8a16_matches_reference(M, K, N, dtype):
    x = torch.randn(M, K).to(dtype)
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    w_s, b = torch.rand(N) + 0.01, torch.randn(N)
    y = w8a16_gemm(x.to(DEV), w.to(DEV), w_s.to(DEV), b.to(DEV), N).cpu()
    assert y.dtype == dtype
    exact = (x.double() @ w.double().T) * w_s.double() + b.double()
    bound = fp32_dot_bound(x.float(), w, w_s) + exact.abs() * OUT_ROUNDING[dtype]
    assert torch.all((y.double() - exact).abs() <= bound)


def test_cuda_impls_check_the_layout():
    from qkernels.triton_kernels.cuda_impls import IMPLS
    with pytest.raises(ValueError, match="layout: the CUDA kernels of this op read 'int4_blob', got 'int4_panels'"):
        IMPLS["w4a16_linear"](torch.randn(2, 8), torch.zeros(8, dtype=torch.uint8), "int4_panels", None, 2, 8)


def test_cuda_w8a8_linear_composition():
    """The CUDA impl of w8a8_linear is quant then GEMM; checked here through its Python function."""
    from qkernels.triton_kernels.cuda_impls import IMPLS
    x = torch.randn(5, 67)
    w = torch.randint(-127, 128, (33, 67), dtype=torch.int8)
    w_s, b = torch.rand(33) + 0.01, torch.randn(33)
    y = IMPLS["w8a8_linear"](x.to(DEV), w.to(DEV), "int8_rows", w_s.to(DEV), b.to(DEV), 33).cpu()
    yr = R.linear_w8a8(x, w, w_s, b)
    if DEV == "cpu":
        assert torch.equal(y, yr)
    else:
        torch.testing.assert_close(y, yr, **GPU_EPILOGUE[torch.float32])


def test_triton_wrappers_validate():
    with pytest.raises(ValueError, match="w must have shape"):
        w8a8_gemm(torch.zeros(2, 8, dtype=torch.int8, device=DEV), torch.ones(2, device=DEV),
                  torch.zeros(3, 9, dtype=torch.int8, device=DEV), torch.ones(3, device=DEV), None, 3,
                  torch.float32)
    with pytest.raises(TypeError, match="x must be"):
        quantize_per_token_int8(torch.zeros(2, 8, dtype=torch.float64, device=DEV))


@pytest.mark.skipif(DEV != "cuda", reason="needs a GPU")
def test_quant_linear_on_cuda():
    import qkernels
    lin = torch.nn.Linear(512, 300).cuda()
    x = torch.randn(4, 7, 512, device="cuda", dtype=torch.bfloat16)
    for act in (8, None):
        q = qkernels.QuantLinear.from_float(lin, act_bits=act)
        y = q(x)
        with qkernels.use_backend("reference"):
            yr = q(x)
        torch.testing.assert_close(y.float(), yr.float(), **CLOSE_16BIT)


# ---- int4 (W4A16 / W4A8) on the CUDA blob layout ------------------------------------------------
from qkernels.triton_kernels.w4_gemm import pack_w4, unpack_w4, w4a8_gemm, w4a16_gemm  # noqa: E402

SHAPES4 = [(1, 64, 16, 32), (3, 70, 67, 32), (5, 19, 9, None), (0, 32, 16, 32), (2, 100, 33, 64)] + (
    [(1, 4096, 4096, 128), (16, 8192, 28672, 128), (64, 4096, 11008, 64)] if DEV == "cuda" else [])


def _int4(N, K, gs, symmetric):
    G, _ = R.int4_groups(K, gs)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8) if symmetric else torch.randint(0, 16, (N, K), dtype=torch.int8)
    zp = None if symmetric else torch.randint(0, 16, (N, G), dtype=torch.int32)
    return q, torch.rand(N, G) + 0.01, zp


def _blob(q, s, zp, K, gs):
    return pack_w4(R.pack_int4(q).to(DEV), s.to(DEV), None if zp is None else zp.to(DEV), K, gs or K)


@pytest.mark.parametrize("symmetric", [True, False])
def test_w4_blob_roundtrip(symmetric):
    q, s, zp = _int4(9, 19, 8, symmetric)
    qw, s2, zp2 = unpack_w4(_blob(q, s, zp, 19, 8), 9, 19, 8, symmetric)
    assert torch.equal(qw.cpu(), R.pack_int4(q)) and torch.equal(s2.cpu(), s)
    assert symmetric or torch.equal(zp2.cpu(), zp)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N,gs", SHAPES4)
def test_w4a8_matches_reference(M, K, N, gs, out_dtype, symmetric):
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    q, s, zp = _int4(N, K, gs, symmetric)
    a_s, b = torch.rand(M) + 0.01, torch.randn(N)
    y = w4a8_gemm(a.to(DEV), a_s.to(DEV), _blob(q, s, zp, K, gs), b.to(DEV), N, gs or K, out_dtype).cpu()
    yr = R.w4a8_gemm(a, a_s, q, s, zp, gs, b, out_dtype)
    if DEV == "cpu":
        assert torch.equal(y, yr)  # interpreter: the contract's fp32 op sequence, bit-exact
    else:
        torch.testing.assert_close(y.float(), yr.float(), **GPU_EPILOGUE[out_dtype])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("M,K,N,gs", SHAPES4)
def test_w4a16_matches_reference(M, K, N, gs, dtype, symmetric):
    x = torch.randn(M, K).to(dtype)
    q, s, zp = _int4(N, K, gs, symmetric)
    b = torch.randn(N)
    y = w4a16_gemm(x.to(DEV), _blob(q, s, zp, K, gs), b.to(DEV), N, gs or K).cpu()
    assert y.dtype == dtype
    yr = R.w4a16_gemm(x.float(), q, s, zp, gs, b).double()
    G, g = R.int4_groups(K, gs)
    w = q.double() - (0 if zp is None else zp.double().repeat_interleave(g, 1)[:, :K])
    bound = w4a16_bound(x.float(), w, s, g) + yr.abs() * OUT_ROUNDING[dtype]
    assert torch.all((y.double() - yr).abs() <= bound)


def test_cuda_w4a8_linear_composition():
    from qkernels.triton_kernels.cuda_impls import IMPLS
    x = torch.randn(5, 70)
    q, s, zp = _int4(33, 70, 32, False)
    b = torch.randn(33)
    y = IMPLS["w4a8_linear"](x.to(DEV), _blob(q, s, zp, 70, 32), "int4_blob", b.to(DEV), 33, 32).cpu()
    yr = R.linear_w4a8(x, q, s, zp, 32, b)
    if DEV == "cpu":
        assert torch.equal(y, yr)
    else:
        torch.testing.assert_close(y, yr, **GPU_EPILOGUE[torch.float32])


def test_w4_wrapper_validates():
    q, s, zp = _int4(16, 64, 32, True)
    with pytest.raises(ValueError, match="w_packed must be the uint8 int4 blob"):
        w4a16_gemm(torch.randn(2, 64, device=DEV), _blob(q, s, zp, 64, 32), None, 16, 16)


@pytest.mark.skipif(DEV != "cuda", reason="needs a GPU")
def test_int4_quant_linear_on_cuda():
    import qkernels
    lin = torch.nn.Linear(512, 300).cuda()
    x = torch.randn(4, 7, 512, device="cuda", dtype=torch.float16)
    for act in (8, None):
        for sym in (True, False):
            q = qkernels.QuantLinear.from_float(lin, weight_bits=4, act_bits=act, group_size=128, symmetric=sym)
            y = q(x)
            with qkernels.use_backend("reference"):
                yr = q(x)
            torch.testing.assert_close(y.float(), yr.float(), **CLOSE_16BIT)


# ---- 2:4 sparse on the CUDA blob layout ----------------------------------------------------------
from qkernels.triton_kernels.s24_gemm import pack_s24, s24_linear, s24_w8a8_gemm, unpack_s24  # noqa: E402

SHAPES24 = [(1, 64, 16), (3, 70, 67), (5, 19, 9), (0, 32, 16), (2, 100, 33)] + (
    [(1, 4096, 4096), (16, 8192, 28672), (128, 4096, 11008)] if DEV == "cuda" else [])


def test_s24_blob_roundtrip():
    values, meta = R.compress_24(torch.randn(9, 19))
    v, m = unpack_s24(pack_s24(values.to(DEV), meta.to(DEV), 19), 9, 19, torch.float32)
    assert torch.equal(v.cpu(), values) and torch.equal(m.cpu(), meta)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES24)
def test_s24_w8a8_matches_reference(M, K, N, out_dtype):
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    values, meta = R.compress_24(torch.randint(-127, 128, (N, K), dtype=torch.int8))
    a_s, w_s, b = torch.rand(M) + 0.01, torch.rand(N) + 0.01, torch.randn(N)
    blob = pack_s24(values.to(DEV), meta.to(DEV), K)
    y = s24_w8a8_gemm(a.to(DEV), a_s.to(DEV), blob, w_s.to(DEV), b.to(DEV), N, out_dtype).cpu()
    yr = R.sparse24_w8a8(a, a_s, values, meta, w_s, b, out_dtype)
    if DEV == "cpu":
        assert torch.equal(y, yr)
    else:
        torch.testing.assert_close(y.float(), yr.float(), **GPU_EPILOGUE[out_dtype])


@pytest.mark.parametrize("vdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("M,K,N", SHAPES24)
def test_s24_float_matches_dense(M, K, N, dtype, vdtype):
    x = torch.randn(M, K).to(dtype)
    _, w = R.prune_24(torch.randn(N, K).to(vdtype))
    values, meta = R.compress_24(w)
    b = torch.randn(N)
    y = s24_linear(x.to(DEV), pack_s24(values.to(DEV), meta.to(DEV), K), b.to(DEV), N, vdtype).cpu()
    assert y.dtype == dtype
    exact = x.double() @ w.double().T + b.double()
    bound = fp32_dot_bound(x.float(), w.float(), torch.ones(N)) + exact.abs() * (2 * EPS32 + OUT_ROUNDING[dtype])
    assert torch.all((y.double() - exact).abs() <= bound)


def test_cuda_s24_w8a8_linear_composition():
    from qkernels.triton_kernels.cuda_impls import IMPLS
    x = torch.randn(5, 70)
    values, meta = R.compress_24(torch.randint(-127, 128, (33, 70), dtype=torch.int8))
    w_s, b = torch.rand(33) + 0.01, torch.randn(33)
    blob = pack_s24(values.to(DEV), meta.to(DEV), 70)
    y = IMPLS["s24_w8a8_linear"](x.to(DEV), blob, "sparse24_blob", w_s.to(DEV), b.to(DEV), 33).cpu()
    yr = R.linear_sparse24_w8a8(x, values, meta, w_s, b)
    if DEV == "cpu":
        assert torch.equal(y, yr)
    else:
        torch.testing.assert_close(y, yr, **GPU_EPILOGUE[torch.float32])


@pytest.mark.skipif(DEV != "cuda", reason="needs a GPU")
def test_sparse_linear_on_cuda_and_semi_structured():
    import qkernels
    lin = torch.nn.Linear(512, 256).cuda().half()
    x = torch.randn(4, 7, 512, device="cuda", dtype=torch.float16)
    s = qkernels.SparseLinear.from_float(lin.float())
    s16 = s.to_sparse_semi_structured()
    torch.testing.assert_close(s16.to_dense().float(), s.dequantize().half().float())
    for wb in (None, 8):
        m = qkernels.SparseLinear.from_float(lin.float(), weight_bits=wb)
        y = m(x)
        with qkernels.use_backend("reference"):
            yr = m(x)
        torch.testing.assert_close(y.float(), yr.float(), **CLOSE_16BIT)


@pytest.mark.parametrize("static", [False, True])
def test_cuda_impls_prepare_activations_as_the_reference(static):
    """input_scale and a static act_scale through the CUDA impls of w8a8_linear / w4a8_linear."""
    from qkernels.triton_kernels.cuda_impls import IMPLS
    x = torch.randn(5, 70) * 3
    smooth = torch.rand(70) + 0.5
    act = torch.tensor([2.0]) if static else None
    w = torch.randint(-127, 128, (33, 70), dtype=torch.int8)
    w_s, b = torch.rand(33) + 0.01, torch.randn(33)
    dev = lambda t: None if t is None else t.to(DEV)  # noqa: E731
    y = IMPLS["w8a8_linear"](x.to(DEV), w.to(DEV), "int8_rows", w_s.to(DEV), b.to(DEV), 33, dev(smooth), dev(act))
    yr = R.w8a8_gemm(*R.quantize_activations(x, smooth, act), w, w_s, b, torch.float32)
    q, s, zp = _int4(33, 70, 32, False)
    y4 = IMPLS["w4a8_linear"](x.to(DEV), _blob(q, s, zp, 70, 32), "int4_blob", b.to(DEV), 33, 32, dev(smooth), dev(act))
    y4r = R.w4a8_gemm(*R.quantize_activations(x, smooth, act), q, s, zp, 32, b, torch.float32)
    if DEV == "cpu":
        assert torch.equal(y.cpu(), yr) and torch.equal(y4.cpu(), y4r)
    else:
        torch.testing.assert_close(y.cpu(), yr, **GPU_EPILOGUE[torch.float32])
        torch.testing.assert_close(y4.cpu(), y4r, **GPU_EPILOGUE[torch.float32])


def test_cuda_impls_smooth_the_float_activation_kernels():
    """input_scale through the CUDA impls of w8a16_linear / w4a16_linear, within the fp32 bound."""
    from qkernels.triton_kernels.cuda_impls import IMPLS
    x = torch.randn(5, 70) * 3
    smooth = torch.rand(70) + 0.5
    w = torch.randint(-127, 128, (33, 70), dtype=torch.int8)
    w_s, b = torch.rand(33) + 0.01, torch.randn(33)
    y = IMPLS["w8a16_linear"](x.to(DEV), w.to(DEV), "int8_rows", w_s.to(DEV), b.to(DEV), 33, smooth.to(DEV), None)
    yr = R.w8a16_gemm(R.smooth_activations(x, smooth), w, w_s, b)
    q, s, zp = _int4(33, 70, 32, False)
    y4 = IMPLS["w4a16_linear"](x.to(DEV), _blob(q, s, zp, 70, 32), "int4_blob", b.to(DEV), 33, 32, smooth.to(DEV))
    y4r = R.w4a16_gemm(R.smooth_activations(x, smooth), q, s, zp, 32, b)
    xs = x * smooth  # the same fp32 product in the kernel and the reference
    assert torch.all((y.cpu().double() - yr.double()).abs() <= fp32_dot_bound(xs, w.float(), w_s))
    zg = zp.repeat_interleave(32, 1)[:, :70]
    assert torch.all((y4.cpu().double() - y4r.double()).abs() <= w4a16_bound(xs, (q - zg).float(), s, 32))
