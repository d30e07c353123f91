"""Triton kernels vs the reference: interpreted on CPU (CI), native on a GPU (same tests, more shapes)."""
import pytest
import torch

from qkernels import reference as R
from tolerances import fp32_dot_bound

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
        torch.testing.assert_close(y.float(), yr.float(), rtol=2 ** -7 if out_dtype == torch.bfloat16 else 1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_w8a16_matches_reference(M, K, N, dtype):
    x = torch.randn(M, K).to(dtype)
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    w_s, b = torch.rand(N) + 0.01, torch.randn(N)
    y = w8a16_gemm(x.to(DEV), w.to(DEV), w_s.to(DEV), b.to(DEV), N).cpu()
    assert y.dtype == dtype
    exact = (x.double() @ w.double().T) * w_s.double() + b.double()
    bound = fp32_dot_bound(x.float(), w, w_s)
    if dtype != torch.float32:  # one rounding of the output to 16 bits
        bound = bound + exact.abs() * 2.0 ** (-8 if dtype == torch.bfloat16 else -11)
    assert torch.all((y.double() - exact).abs() <= bound)


def test_cuda_w8a8_linear_composition():
    """The CUDA impl of w8a8_linear is quant then GEMM; checked here through its Python function."""
    from qkernels.triton_kernels.register import _w8a8_linear
    x = torch.randn(5, 67)
    w = torch.randint(-127, 128, (33, 67), dtype=torch.int8)
    w_s, b = torch.rand(33) + 0.01, torch.randn(33)
    y = _w8a8_linear(x.to(DEV), w.to(DEV), w_s.to(DEV), b.to(DEV), 33).cpu()
    yr = R.linear_w8a8(x, w, w_s, b)
    if DEV == "cpu":
        assert torch.equal(y, yr)
    else:
        torch.testing.assert_close(y, yr, rtol=1e-6, atol=1e-6)


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
        torch.testing.assert_close(y.float(), yr.float(), rtol=2e-2, atol=2e-2)
