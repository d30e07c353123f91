"""torch.library.opcheck on every qkernels op (schema, fake impl, autograd registration, dispatch),
with float16 inputs and inputs that require grad; and the CUDA registration of every op."""
import pytest
import torch

import qkernels
from conftest import L_INT4, L_S24, L_W8A8, L_W8A16
from qkernels import formats

Q = torch.ops.qkernels


def _data():
    """Inputs for the cases, built when a test runs (never at collection)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 67, generator=g)
    w = torch.randint(-127, 128, (70, 67), dtype=torch.int8, generator=g)
    qw = torch.randint(0, 256, (70, 34), dtype=torch.uint8, generator=g)
    s4, zp = torch.rand(70, 3, generator=g) + 0.1, torch.randint(0, 16, (70, 3), dtype=torch.int32, generator=g)
    vf, mf = formats.compress_24(torch.randn(70, 67, generator=g))
    v8, m8 = formats.compress_24(w)
    return dict(x=x, w=w, qw=qw, s4=s4, zp=zp, vf=vf, mf=mf, v8=v8, m8=m8, ws=torch.rand(70, generator=g) + 0.1,
                b=torch.randn(70, generator=g), sm=torch.rand(67, generator=g) + 0.5)


def _grad(x):
    return x.clone().requires_grad_()


CASES = {
    "quantize fp32": lambda d: (Q.quantize_per_token_int8, (d["x"],)),
    "quantize bf16": lambda d: (Q.quantize_per_token_int8, (d["x"].bfloat16(),)),
    "quantize strided": lambda d: (Q.quantize_per_token_int8, (torch.cat([d["x"], d["x"]])[::2],)),
    "pack_int8 w8a8": lambda d: (Q.pack_int8, (d["w"], L_W8A8)),
    "pack_int8 w8a16": lambda d: (Q.pack_int8, (d["w"], L_W8A16)),
    "unpack_int8": lambda d: (Q.unpack_int8, (Q.pack_int8(d["w"], L_W8A8), L_W8A8, 70, 67)),
    "w8a8_gemm": lambda d: (Q.w8a8_gemm, (*Q.quantize_per_token_int8(d["x"]), Q.pack_int8(d["w"], L_W8A8), L_W8A8,
                                          d["ws"], d["b"], 70, torch.float32)),
    "w8a8_gemm bf16 out": lambda d: (Q.w8a8_gemm, (*Q.quantize_per_token_int8(d["x"]), Q.pack_int8(d["w"], L_W8A8),
                                                   L_W8A8, d["ws"], None, 70, torch.bfloat16)),
    "w8a8_linear": lambda d: (Q.w8a8_linear, (d["x"], Q.pack_int8(d["w"], L_W8A8), L_W8A8, d["ws"], d["b"], 70)),
    "w8a8_linear bf16 grad": lambda d: (Q.w8a8_linear, (_grad(d["x"].bfloat16()), Q.pack_int8(d["w"], L_W8A8), L_W8A8,
                                                        d["ws"], None, 70)),
    "w8a8_linear smooth static grad": lambda d: (Q.w8a8_linear, (_grad(d["x"]), Q.pack_int8(d["w"], L_W8A8), L_W8A8,
                                                                 d["ws"], d["b"], 70, d["sm"], torch.tensor([0.5]))),
    "w8a16_linear smooth grad": lambda d: (Q.w8a16_linear, (_grad(d["x"]), Q.pack_int8(d["w"], L_W8A16), L_W8A16,
                                                            d["ws"], None, 70, d["sm"])),
    "w4a8_linear smooth static": lambda d: (Q.w4a8_linear, (d["x"], Q.pack_int4(d["qw"], d["s4"], d["zp"], 67, 32,
                                                                                L_INT4), L_INT4, None, 70, 32,
                                                            d["sm"], torch.tensor([0.5]))),
    "w4a16_linear smooth grad": lambda d: (Q.w4a16_linear, (_grad(d["x"]), Q.pack_int4(d["qw"], d["s4"], None, 67,
                                                                                       32, L_INT4), L_INT4, None, 70,
                                                            32, d["sm"])),
    "s24_w8a8_linear static": lambda d: (Q.s24_w8a8_linear, (d["x"], Q.pack_sparse24(d["v8"], d["m8"], 67, L_S24),
                                                             L_S24, d["ws"], None, 70, None, torch.tensor([0.5]))),
    "w8a16_linear grad": lambda d: (Q.w8a16_linear, (_grad(d["x"]), Q.pack_int8(d["w"], L_W8A16), L_W8A16, d["ws"],
                                                     d["b"], 70)),
    "w8a16_linear fp16": lambda d: (Q.w8a16_linear, (d["x"].half(), Q.pack_int8(d["w"], L_W8A16), L_W8A16, d["ws"],
                                                     None, 70)),
    "quantize_int4_weight sym": lambda d: (Q.quantize_int4_weight, (d["x"], 32, True, list(formats.CLIP_RATIOS))),
    "quantize_int4_weight asym": lambda d: (Q.quantize_int4_weight, (d["x"], 67, False, [1.0, 0.9])),
    "pack_int4 asym": lambda d: (Q.pack_int4, (d["qw"], d["s4"], d["zp"], 67, 32, L_INT4)),
    "pack_int4 per-channel": lambda d: (Q.pack_int4, (d["qw"], d["s4"][:, :1].contiguous(), None, 67, 67, L_INT4)),
    "unpack_int4": lambda d: (Q.unpack_int4, (Q.pack_int4(d["qw"], d["s4"], d["zp"], 67, 32, L_INT4), L_INT4, 70, 67,
                                              32, False)),
    "w4a8_linear grad": lambda d: (Q.w4a8_linear, (_grad(d["x"]), Q.pack_int4(d["qw"], d["s4"], d["zp"], 67, 32, L_INT4),
                                                   L_INT4, d["b"], 70, 32)),
    "w4a8_linear fp16": lambda d: (Q.w4a8_linear, (d["x"].half(), Q.pack_int4(d["qw"], d["s4"], d["zp"], 67, 32,
                                                                              L_INT4), L_INT4, None, 70, 32)),
    "w4a16_linear grad": lambda d: (Q.w4a16_linear, (_grad(d["x"]), Q.pack_int4(d["qw"], d["s4"], d["zp"], 67, 32,
                                                                                L_INT4), L_INT4, d["b"], 70, 32)),
    "w4a16_linear bf16": lambda d: (Q.w4a16_linear, (d["x"].bfloat16(), Q.pack_int4(d["qw"], d["s4"], None, 67, 32,
                                                                                    L_INT4), L_INT4, None, 70, 32)),
    "pack_sparse24 fp32": lambda d: (Q.pack_sparse24, (d["vf"], d["mf"], 67, L_S24)),
    "pack_sparse24 bf16": lambda d: (Q.pack_sparse24, (d["vf"].bfloat16(), d["mf"], 67, L_S24)),
    "unpack_sparse24": lambda d: (Q.unpack_sparse24, (Q.pack_sparse24(d["v8"], d["m8"], 67, L_S24), L_S24, 70, 67,
                                                      torch.int8)),
    "s24_linear grad": lambda d: (Q.s24_linear, (_grad(d["x"]), Q.pack_sparse24(d["vf"], d["mf"], 67, L_S24), L_S24,
                                                 d["b"], 70, torch.float32)),
    "s24_linear bf16": lambda d: (Q.s24_linear, (d["x"].bfloat16(), Q.pack_sparse24(d["vf"].bfloat16(), d["mf"], 67,
                                                                                    L_S24), L_S24, None, 70,
                                                 torch.bfloat16)),
    "s24_w8a8_linear grad": lambda d: (Q.s24_w8a8_linear, (_grad(d["x"]), Q.pack_sparse24(d["v8"], d["m8"], 67, L_S24),
                                                           L_S24, d["ws"], None, 70)),
    "dequantize_int8": lambda d: (Q.dequantize_int8, (Q.pack_int8(d["w"], L_W8A16), L_W8A16, d["ws"], 70, 67)),
    "dequantize_int4": lambda d: (Q.dequantize_int4, (Q.pack_int4(d["qw"], d["s4"], d["zp"], 67, 32, L_INT4), L_INT4,
                                                      70, 67, 32)),
    "dequantize_sparse24": lambda d: (Q.dequantize_sparse24, (Q.pack_sparse24(d["v8"], d["m8"], 67, L_S24), L_S24,
                                                              d["ws"], 70, 67, torch.int8)),
}


@pytest.mark.parametrize("case", CASES)
def test_opcheck(case):
    op, args = CASES[case](_data())
    torch.library.opcheck(op.default, args)


def test_every_op_is_covered():
    ops = {name for name in dir(Q) if not name.startswith("_") and isinstance(getattr(Q, name), torch._ops.OpOverloadPacket)}
    covered = {CASES[c](_data())[0]._qualified_op_name.split("::")[1] for c in CASES}
    assert ops == covered, ops ^ covered


def test_every_op_has_a_cuda_kernel_even_without_a_gpu():
    """CUDA kernels are registered when qkernels is imported (Triton loads on the first CUDA call)."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for name in qkernels.ops.CUDA_OPS:
        assert has(f"qkernels::{name}", "CUDA"), name
    for name in ("dequantize_int8", "dequantize_int4", "dequantize_sparse24"):  # composite: any device
        assert has(f"qkernels::{name}", "CompositeImplicitAutograd"), name
    ops = {n for n in dir(Q) if not n.startswith("_") and isinstance(getattr(Q, n), torch._ops.OpOverloadPacket)}
    assert ops == set(qkernels.ops.CUDA_OPS) | {"dequantize_int8", "dequantize_int4", "dequantize_sparse24"}
