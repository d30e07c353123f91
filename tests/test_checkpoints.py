"""GPTQ / AWQ import: tensors from the reference packers (published formats) load exactly."""
import pytest
import torch

import qkernels
from qkernels import QuantLinear, formats
from qkernels import reference as R
from qkernels.reference.checkpoints import pack_awq, pack_gptq
from tolerances import CLOSE_FP32_LAYER


def _quantized(N=48, K=256, gs=64):
    w = torch.randn(N, K)
    q, s, zp = R.quantize(w, "per_group", 4, False, gs)
    zp = zp.clamp_min(1)  # the legacy GPTQ format cannot store a zero point of 0 (it writes z - 1)
    return q, s, zp


def _effective(q, s, zp, g_idx):
    """W[n, k] = (q[n, k] - z[n, g_idx[k]]) * s[n, g_idx[k]], the checkpoint's own formula."""
    return (q.float() - zp[:, g_idx].float()) * s.half().float()[:, g_idx]


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("act_bits", [None, 8])
def test_gptq_import(legacy, act_order, act_bits):
    N, K, gs = 48, 256, 64
    q, s, zp = _quantized(N, K, gs)
    g_idx = torch.arange(K) // gs
    if act_order:  # GPTQ's desc_act: features quantized in order perm, g_idx[perm[i]] = i // gs
        perm = torch.randperm(K)
        g_idx = torch.empty(K, dtype=torch.int64)
        g_idx[perm] = torch.arange(K) // gs
    qweight, qzeros, scales, gi = pack_gptq(q, zp, s, g_idx, legacy_zero_offset=legacy)
    assert qweight.dtype == torch.int32 and tuple(qweight.shape) == (K // 8, N)
    assert tuple(qzeros.shape) == (K // gs, N // 8) and scales.dtype == torch.float16
    bias = torch.randn(N)
    layer = QuantLinear.from_gptq(qweight, qzeros, scales, gi, bias=bias, act_bits=act_bits,
                                  legacy_zero_offset=legacy)
    W = _effective(q, s, zp, g_idx)
    assert torch.equal(layer.dequantize(), W)
    assert (layer.input_perm is not None) == act_order
    x = torch.randn(5, K)
    y = layer(x)
    with qkernels.use_backend("reference"):
        yr = layer(x)
    expect = x @ W.T + bias
    if act_bits == 8:
        assert torch.equal(y, yr)
        assert (y - expect).norm() / expect.norm() < 0.02
    else:
        torch.testing.assert_close(y, expect, **CLOSE_FP32_LAYER)
    # the act-order permutation survives a state_dict round trip
    l2 = QuantLinear(K, N, weight_bits=4, act_bits=act_bits, group_size=gs, symmetric=False)
    l2.load_state_dict(layer.state_dict())
    assert torch.equal(l2(x), y)


def test_gptq_symmetric_checkpoint_and_legacy_offset():
    """Symmetric GPTQ stores z = 8 as nibble 7 (legacy): reading without the +1 would shift every weight."""
    N, K, gs = 16, 128, 128
    q = torch.randint(0, 16, (N, K), dtype=torch.int8)
    s, zp = torch.rand(N, 1) + 0.1, torch.full((N, 1), 8, dtype=torch.int32)
    qweight, qzeros, scales, g_idx = pack_gptq(q, zp, s, torch.zeros(K, dtype=torch.int64))
    assert int(qzeros[0, 0]) == 0x77777777
    layer = QuantLinear.from_gptq(qweight, qzeros, scales, g_idx)
    assert torch.equal(layer.dequantize(), (q.float() - 8) * s.half().float())
    wrong = QuantLinear.from_gptq(qweight, qzeros, scales, g_idx, legacy_zero_offset=False)
    assert not torch.equal(wrong.dequantize(), layer.dequantize())


def test_gptq_rejects_unrepresentable_zero_and_bad_g_idx():
    N, K = 8, 64
    q = torch.zeros(N, K, dtype=torch.int8)
    s, zp = torch.ones(N, 1), torch.zeros(N, 1, dtype=torch.int32)  # legacy stores -1 -> nibble 15 -> 16
    qweight, qzeros, scales, g_idx = pack_gptq(q, zp, s, torch.zeros(K, dtype=torch.int64))
    with pytest.raises(ValueError, match="zero point of 16"):
        QuantLinear.from_gptq(qweight, qzeros, scales, g_idx)
    zp = torch.ones(N, 2, dtype=torch.int32)
    qweight, qzeros, scales, _ = pack_gptq(q, zp, torch.ones(N, 2), torch.zeros(K))
    uneven = torch.zeros(K, dtype=torch.int32)
    uneven[-1] = 1
    with pytest.raises(ValueError, match="exactly 32 input features in each group"):
        QuantLinear.from_gptq(qweight, qzeros, scales, uneven)
    with pytest.raises(TypeError, match="qweight must be an int32 tensor"):
        QuantLinear.from_gptq(qweight.float(), qzeros, scales)
    with pytest.raises(TypeError, match="g_idx must be an integer tensor"):  # was truncated silently
        QuantLinear.from_gptq(qweight, qzeros, scales, torch.arange(K) // 32 + 0.7)


def test_from_int4_checks_values_before_any_conversion():
    N, K = 4, 16
    q = torch.randint(0, 16, (N, K), dtype=torch.int64)
    zp = torch.full((N, 1), 3, dtype=torch.int64)
    zp[1, 0] = 2 ** 32 + 3  # an int32 cast would make it 3
    with pytest.raises(ValueError, match=r"zero_point: values must lie in \[0, 15\]"):
        QuantLinear.from_int4(q, torch.ones(N, 1), zp, None)
    q[0, 0] = 2 ** 32 + 1
    with pytest.raises(ValueError, match=r"q: values must lie in \[0, 15\]"):
        QuantLinear.from_int4(q, torch.ones(N, 1), zp.clamp(max=15), None)
    with pytest.raises(ValueError, match="scale: holds NaN or Inf"):
        QuantLinear.from_int4(q.clamp(max=15), torch.full((N, 1), float("nan")), zp.clamp(max=15), None)
    with pytest.raises(ValueError, match="input_perm: must be a permutation of range"):
        QuantLinear.from_int4(q.clamp(max=15), torch.ones(N, 1), zp.clamp(max=15), None, input_perm=torch.zeros(K, dtype=torch.int64))


@pytest.mark.parametrize("act_bits", [None, 8])
def test_awq_import(act_bits):
    N, K, gs = 64, 256, 128
    w = torch.randn(N, K)
    q, s, zp = R.quantize(w, "per_group", 4, False, gs)
    qweight, qzeros, scales = pack_awq(q, zp, s)
    assert tuple(qweight.shape) == (K, N // 8) and tuple(qzeros.shape) == (K // gs, N // 8)
    layer = QuantLinear.from_awq(qweight, qzeros, scales, act_bits=act_bits)
    W = _effective(q, s, zp, torch.arange(K) // gs)
    assert torch.equal(layer.dequantize(), W)
    x = torch.randn(3, K)
    if act_bits is None:
        torch.testing.assert_close(layer(x), x @ W.T, **CLOSE_FP32_LAYER)


def test_awq_interleaved_nibble_order():
    """Nibble j of an AWQ word holds column AWQ_ORDER[j], not column j."""
    q = torch.randint(0, 16, (8, 128))
    zp = torch.zeros(8, 1, dtype=torch.int32)
    qweight, qzeros, scales = pack_awq(q.to(torch.int8), zp, torch.ones(8, 1))
    # nibble j of word 0 in row k holds column AWQ_ORDER[j]
    word = int(qweight[3, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * j)) & 0xF for j in range(8)] == [int(q[c, 3]) for c in formats.AWQ_ORDER]
    qa, _, _, _ = formats.awq_to_int4(qweight, qzeros, scales.float())
    assert torch.equal(qa, q.to(torch.int8))


def test_gptq_and_awq_layers_of_other_bits_are_named():
    """An 8-bit GPTQ layer (qweight [K/4, N]) is recognised by its g_idx, not reported as a shape error."""
    K, N = 64, 16
    qweight8 = torch.zeros(K // 4, N, dtype=torch.int32)
    qzeros = torch.zeros(2, N // 4, dtype=torch.int32)
    scales = torch.ones(2, N, dtype=torch.float16)
    with pytest.raises(NotImplementedError, match="bits=8"):
        QuantLinear.from_gptq(qweight8, qzeros, scales, torch.arange(K) // 32)
    with pytest.raises(NotImplementedError, match="bits=3"):
        QuantLinear.from_gptq(torch.zeros(K // 8, N, dtype=torch.int32), qzeros, scales, bits=3)
    with pytest.raises(NotImplementedError, match="bits=8"):
        QuantLinear.from_awq(torch.zeros(K, N // 8, dtype=torch.int32), qzeros, scales, bits=8)
