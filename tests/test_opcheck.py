"""torch.library.opcheck on every qkernels op (schema, fake impl, autograd registration, dispatch)."""
import pytest
import torch

Q = torch.ops.qkernels


def _cases():
    x = torch.randn(5, 67)
    w = torch.randint(-127, 128, (70, 67), dtype=torch.int8)
    a, a_s = Q.quantize_per_token_int8(x)
    yield Q.quantize_per_token_int8.default, (x,)
    yield Q.quantize_per_token_int8.default, (x.bfloat16(),)
    yield Q.quantize_per_token_int8.default, (torch.randn(8, 67)[::2],)
    yield Q.pack_w8a8.default, (w,)
    yield Q.pack_w8a16.default, (w,)
    yield Q.unpack_w8a8.default, (Q.pack_w8a8(w), 70, 67)
    yield Q.unpack_w8a16.default, (Q.pack_w8a16(w), 70, 67)
    yield Q.w8a8_gemm.default, (a, a_s, Q.pack_w8a8(w), torch.rand(70), torch.randn(70), 70, torch.float32)
    yield Q.w8a8_gemm.default, (a, a_s, Q.pack_w8a8(w), torch.rand(70), None, 70, torch.bfloat16)
    yield Q.w8a8_linear.default, (x, Q.pack_w8a8(w), torch.rand(70), torch.randn(70), 70)
    yield Q.w8a8_linear.default, (x.bfloat16(), Q.pack_w8a8(w), torch.rand(70), None, 70)
    yield Q.w8a16_gemm.default, (x, Q.pack_w8a16(w), torch.rand(70), torch.randn(70), 70)
    yield Q.w8a16_gemm.default, (x.bfloat16(), Q.pack_w8a16(w), torch.rand(70), None, 70)
    qw = torch.randint(0, 256, (70, 34), dtype=torch.uint8)
    s4, zp = torch.rand(70, 3) + 0.1, torch.randint(0, 16, (70, 3), dtype=torch.int32)
    p4 = Q.pack_w4(qw, s4, zp, 67, 32)
    yield Q.pack_w4.default, (qw, s4, zp, 67, 32)
    yield Q.pack_w4.default, (qw, s4[:, :1].contiguous(), None, 67, 67)
    yield Q.unpack_w4.default, (p4, 70, 67, 32, False)
    yield Q.w4a8_linear.default, (x, p4, torch.randn(70), 70, 32)
    yield Q.w4a8_linear.default, (x.bfloat16(), p4, None, 70, 32)
    yield Q.w4a16_gemm.default, (x, p4, torch.randn(70), 70, 32)
    yield Q.w4a16_gemm.default, (x.bfloat16(), p4, None, 70, 32)
    from qkernels.reference import compress_24
    vf, mf = compress_24(torch.randn(70, 67))
    v8, m8 = compress_24(w)
    pf, p8 = Q.pack_s24(vf, mf, 67), Q.pack_s24(v8, m8, 67)
    yield Q.pack_s24.default, (vf, mf, 67)
    yield Q.pack_s24.default, (vf.bfloat16(), mf, 67)
    yield Q.unpack_s24.default, (p8, 70, 67, torch.int8)
    yield Q.s24_linear.default, (x, pf, torch.randn(70), 70, torch.float32)
    yield Q.s24_linear.default, (x.bfloat16(), Q.pack_s24(vf.bfloat16(), mf, 67), None, 70, torch.bfloat16)
    yield Q.s24_w8a8_linear.default, (x, p8, torch.rand(70), torch.randn(70), 70)
    # autograd formulas (gradient to x through the dequantized weight) and float16 input
    xg = x.clone().requires_grad_()
    yield Q.w8a8_linear.default, (xg, Q.pack_w8a8(w), torch.rand(70), torch.randn(70), 70)
    yield Q.w8a16_gemm.default, (xg, Q.pack_w8a16(w), torch.rand(70), None, 70)
    yield Q.w4a8_linear.default, (xg, p4, None, 70, 32)
    yield Q.w4a16_gemm.default, (xg, p4, torch.randn(70), 70, 32)
    yield Q.s24_linear.default, (xg, pf, None, 70, torch.float32)
    yield Q.s24_w8a8_linear.default, (xg, p8, torch.rand(70), None, 70)
    yield Q.w8a16_gemm.default, (x.half(), Q.pack_w8a16(w), torch.rand(70), None, 70)
    yield Q.w4a8_linear.default, (x.half(), p4, None, 70, 32)


@pytest.mark.parametrize("op,args", list(_cases()), ids=lambda v: str(v) if not isinstance(v, tuple) else "")
def test_opcheck(op, args):
    torch.library.opcheck(op, args)
