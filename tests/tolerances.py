"""Every accuracy floor and error bound the tests use, in one place, each with its reason."""
import torch

# Module SQNR floors vs FP32 nn.Linear, Gaussian weights and inputs, K = 1024.
SQNR_DB = {
    "w8a16": 40.0,
    "w8a8": 35.0,
    # int4, group 128; W4A8 may be at most 1 dB below W4A16.
    "w4a16_sym": 19.0,
    "w4a16_asym": 20.0,
    # a small W8A8 model (3 layers, Gaussian weights): the layer errors compound to ~30 dB.
    "model_w8a8": 25.0,
}

EPS32 = torch.finfo(torch.float32).eps

# Relative error of rounding an fp32 result once to the output dtype (one ulp covers
# round-half-even): what a bf16 / fp16 output adds to any fp32 bound.
OUT_ROUNDING = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}

# Two fp32 computations of the same small product (K <= ~600, |y| = O(10)) in different summation
# orders, or with and without one fused multiply-add: they agree to a few fp32 ulps.
CLOSE_FP32 = dict(rtol=1e-5, atol=1e-5)
# The same with larger layers (K up to 4096, |y| up to ~100).
CLOSE_FP32_LAYER = dict(rtol=1e-4, atol=1e-3)
# One side rounded to bf16 (or fp16): a 16-bit ulp is 2^-8 relative, and outputs near zero need
# the absolute part.
CLOSE_16BIT = dict(rtol=2e-2, atol=2e-2)
CLOSE = {torch.float32: CLOSE_FP32, torch.bfloat16: CLOSE_16BIT, torch.float16: CLOSE_16BIT}

# GPU only: the integer sums are exact, but the compiler may fuse the fp32 epilogue's multiply and
# add into one FMA (one fp32 rounding fewer), and a bf16 output then rounds to the other side.
GPU_EPILOGUE = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.bfloat16: dict(rtol=2.0 ** -7, atol=1e-4),
                torch.float16: dict(rtol=2.0 ** -10, atol=1e-4)}

# Slack on "within half a quantization step": the step itself is an fp32 quotient.
HALF_STEP_SLACK = 1e-5


def fp32_dot_bound(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Worst-case |error| of any fp32 summation order of (x @ w.T) * w_scale, per output.

    Standard bound: |fl(sum) - sum| <= K * eps * sum |x_k w_k| (+1 rounding for the scale);
    both the kernel and the reference are within it of the exact value, hence the factor 2.
    """
    K = x.shape[-1]
    mag = (x.double().abs() @ w.double().abs().T) * w_scale.double().abs()
    return 2 * (K + 2) * EPS32 * mag + 1e-30


def w4a16_bound(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    """|error| bound of the W4A16 contract: per group an fp32 sum of x * (q - zero point) (exact
    products with a small integer), times the group's scale, groups added in fp32:
    2 (K + G + 2) eps sum_k |x_k| |w_k| with w = (q - zero point) * scale; no term of the size of
    |x| * zero point (nothing cancels)."""
    K = x.shape[-1]
    G = -(-K // group_size)
    mag = x.double().abs() @ (w.double().abs() * scale.double().abs().repeat_interleave(group_size, 1)[:, :K]).T
    return 2 * (K + G + 2) * EPS32 * mag + 1e-30


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    ref, approx = ref.detach().double(), approx.detach().double()
    return float(20 * torch.log10(ref.norm() / (ref - approx).norm()))
