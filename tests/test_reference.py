"""The reference itself: the quantization contract, granularities, int4 packing, exact int GEMM."""
import pytest
import torch

from qkernels import reference as R
from tolerances import HALF_STEP_SLACK


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_token", "per_group"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_roundtrip_error_within_half_step(granularity, bits, symmetric):
    x = torch.randn(7, 67) * 3
    q, s, zp = R.quantize(x, granularity, bits, symmetric, group_size=32)
    qmin, qmax = R.qrange(bits, symmetric)
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    assert (zp is None) == symmetric
    d = R.dequantize(q, s, zp, granularity, group_size=32)
    # Every value lies inside the quantization grid, so rounding error is at most half a step.
    step = R.dequantize(torch.ones_like(q), s, None if zp is None else torch.zeros_like(zp),
                        granularity, group_size=32)
    assert torch.all((d - x).abs() <= step.abs() * 0.5 * (1 + HALF_STEP_SLACK))


def test_scale_shapes():
    x = torch.randn(5, 70)
    assert R.quantize(x, "per_tensor")[1].shape == ()
    assert R.quantize(x, "per_channel")[1].shape == (5,)
    assert R.quantize(x, "per_group", group_size=32)[1].shape == (5, 3)  # last group partial


def test_symmetric_int8_values():
    x = torch.tensor([[1.0, -2.0, 0.5, 2.0]])
    q, s = R.quantize_per_token_int8(x)
    assert s.item() == pytest.approx(2.0 / 127)
    assert q.tolist() == [[64, -127, 32, 127]]  # 63.5 rounds half to even -> 64; 31.75 -> 32


def test_round_half_even():
    s = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]])  # amax 127 -> scale 1
    q, _ = R.quantize_per_token_int8(s)
    assert q.tolist() == [[127, 0, 2, 2, 0, -2]]


def test_zero_row_and_nonfinite_rows():
    x = torch.randn(4, 9)
    x[0] = 0
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3, 1] = float("nan")
    x[3, 2] = float("inf")
    q, s = R.quantize_per_token_int8(x)
    assert s[0].item() == R.FLT_MIN and torch.all(q[0] == 0)
    assert torch.isnan(s[1]) and torch.isinf(s[2]) and torch.isnan(s[3])
    assert torch.all(q[1:] == 0)


def test_asymmetric_zero_point_makes_zero_exact():
    x = torch.rand(3, 64) + 0.5  # all positive: range is [0, max]
    q, s, zp = R.quantize(x, "per_channel", 4, False)
    assert torch.all(zp == 0)
    d = R.dequantize(torch.zeros_like(q) + zp[:, None].to(torch.int8), s, zp, "per_channel")
    assert torch.all(d == 0)


@pytest.mark.parametrize("K", [1, 2, 7, 64])
@pytest.mark.parametrize("signed", [True, False])
def test_int4_pack_roundtrip(K, signed):
    lo, hi = (-8, 8) if signed else (0, 16)
    q = torch.randint(lo, hi, (5, K), dtype=torch.int8)
    p = R.pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (5, (K + 1) // 2)
    assert torch.equal(R.unpack_int4(p, K, signed), q)


def test_int4_byte_order():
    p = R.pack_int4(torch.tensor([[1, -2, 7]], dtype=torch.int8))
    assert p.tolist() == [[0x1 | (0xE << 4), 0x7]]


def test_int8_matmul_exact_at_extremes():
    K = 16384
    a = torch.full((2, K), 127, dtype=torch.int8)
    a[1] = -128
    w = torch.full((3, K), -127, dtype=torch.int8)
    acc = R.int8_matmul(a, w)
    assert acc.dtype == torch.int32
    assert acc[0, 0].item() == -127 * 127 * K and acc[1, 0].item() == 128 * 127 * K


def test_bad_granularity_and_bits():
    with pytest.raises(ValueError, match="granularity"):
        R.quantize(torch.randn(2, 2), "per_row")
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        R.quantize(torch.randn(2, 2), bits=3)
    with pytest.raises(ValueError, match="group_size"):
        R.quantize(torch.randn(2, 2), "per_group", group_size=0)


def test_reference_never_overflows_int32_silently():
    """The integer contracts are exact int32 sums; a sum that does not fit is an error, not a wrap."""
    K = 133_200  # 127 * 127 * K > 2^31
    a = torch.full((1, K), 127, dtype=torch.int8)
    with pytest.raises(ValueError, match="int8_matmul: an int32 accumulator would overflow"):
        R.int8_matmul(a, a)
    assert int(R.int8_matmul(a[:, :1000], a[:, :1000])) == 127 * 127 * 1000
    q = torch.full((1, 1_200_000), 15, dtype=torch.int8)
    with pytest.raises(ValueError, match="int4_group_acc: an int32 accumulator would overflow"):
        R.int4_group_acc(torch.full((1, 1_200_000), 127, dtype=torch.int8), q, torch.zeros(1, 1, dtype=torch.int32), None)
