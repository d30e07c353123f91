"""QAT: FakeQuantLinear rounds exactly as QuantLinear quantizes, trains with straight-through
gradients, converts to the QuantLinear computing the same function, and training with
distillation_loss beats post-training RTN; distillation_loss is the temperature-scaled KL."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qkernels
from qkernels import FakeQuantLinear, QuantConfig, QuantLinear
from tolerances import CLOSE_FP32_LAYER


CONFIGS = [QuantConfig(8, 8), QuantConfig(8, None), QuantConfig(4, None, 32), QuantConfig(4, 8, 32, False),
           QuantConfig(4, None, None)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"W{c.weight_bits}A{c.act_bits or 16}g{c.group_size}")
def test_fake_quant_computes_what_the_quant_linear_computes(cfg):
    torch.manual_seed(0)
    lin = nn.Linear(96, 40)
    fq = FakeQuantLinear.from_linear(lin, cfg)
    assert fq.weight is lin.weight  # trains the same Parameter
    q = QuantLinear.from_float(lin, cfg.weight_bits, cfg.act_bits, cfg.group_size, cfg.symmetric)
    assert torch.equal(qkernels.qat.fake_quantize_weight(lin.weight, cfg), q.dequantize())
    x = torch.randn(7, 96)
    with torch.no_grad():
        torch.testing.assert_close(fq(x), q(x), **CLOSE_FP32_LAYER)
        torch.testing.assert_close(fq.to_quant_linear()(x), q(x), rtol=0, atol=0)


def test_straight_through_gradients_reach_weight_and_input():
    fq = FakeQuantLinear.from_linear(nn.Linear(32, 8), QuantConfig(4, 8, 16))
    x = torch.randn(5, 32, requires_grad=True)
    fq(x).square().sum().backward()
    assert fq.weight.grad is not None and fq.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_qat_with_distillation_beats_post_training_rtn():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).eval()
    with torch.no_grad():
        teacher[2].weight.mul_(8)  # confident logits: a classifier, not a uniform guess
    cfg = QuantConfig(4, 8, 16)
    data = [torch.randn(64, 64) for _ in range(8)]
    test = torch.randn(256, 64)
    ptq = qkernels.quantize_(copy.deepcopy(teacher), cfg)
    student = qkernels.prepare_qat_(copy.deepcopy(teacher), cfg)
    assert all(isinstance(student[i], FakeQuantLinear) for i in (0, 2))
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)
    for step in range(60):
        x = data[step % len(data)]
        with torch.no_grad():
            t = teacher(x)
        loss = qkernels.distillation_loss(student(x), t, temperature=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    qkernels.convert_qat_(student)
    assert all(isinstance(student[i], QuantLinear) for i in (0, 2))
    with torch.no_grad():
        ref = teacher(test)
        err_qat = qkernels.distillation_loss(student(test), ref, 1.0)
        err_ptq = qkernels.distillation_loss(ptq(test), ref, 1.0)
    assert err_qat < 0.8 * err_ptq, (err_qat, err_ptq)  # held-out KL: 0.0050 vs 0.0074 when written


def test_distillation_loss_is_the_softened_kl():
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    assert qkernels.distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    T = 3.0
    want = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean") * T * T
    torch.testing.assert_close(qkernels.distillation_loss(s, t, T), want)
    with pytest.raises(ValueError, match="temperature"):
        qkernels.distillation_loss(s, t, 0)
    with pytest.raises(ValueError, match="same shape"):
        qkernels.distillation_loss(s, t[:, :5])


def test_prepare_qat_checks_before_swapping():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 8))
    with pytest.raises(ValueError, match="round to nearest"):
        qkernels.prepare_qat_(model, QuantConfig(4, None, 16, method="gptq"))
    assert all(type(m) is nn.Linear for m in model)
