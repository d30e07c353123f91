"""plan_mixed_precision: sensitive layers get the bits, the budget holds, the model is unchanged,
the plan beats uniform int4 at the same method, and bad arguments are named."""
import copy

import pytest
import torch
from torch import nn

import qkernels
from qkernels import QuantConfig, QuantLinear


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64),
                      nn.GELU(), nn.Linear(64, 16))
    with torch.no_grad():
        m[2].weight[:, ::16] *= 30  # two outliers in every group of 32: int4 hurts this layer most
    return m


def _err(model, ref, x):
    with torch.no_grad():
        return ((model(x) - ref(x)).norm() / ref(x).norm()).item()


def test_plan_puts_the_bits_where_they_matter_and_meets_the_budget():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    data = [torch.randn(32, 64) for _ in range(4)]
    w4, w8 = QuantConfig(4, None, 32), QuantConfig(8, None)
    plan = qkernels.plan_mixed_precision(model, data, [w4, w8], max_avg_bits=6.0)
    assert set(plan) == {"0", "2", "4", "6"}
    sizes = {n: model.get_submodule(n).weight.numel() for n in plan}
    avg = sum((16 if c is None else c.weight_bits) * sizes[n] for n, c in plan.items()) / sum(sizes.values())
    assert avg <= 6.0
    assert plan["2"] == w8  # the outlier layer
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # unchanged
    assert all(type(m) is not QuantLinear for m in model.modules())
    x = torch.randn(256, 64)
    mixed = qkernels.quantize_(copy.deepcopy(model), plan)
    uniform = qkernels.quantize_(copy.deepcopy(model), w4)
    assert _err(mixed, model, x) < 0.7 * _err(uniform, model, x)


def test_plan_with_float_and_a_budget_that_cannot_be_met():
    model = _model()
    data = [torch.randn(8, 64)]
    plan = qkernels.plan_mixed_precision(model, data, [None, QuantConfig(8, 8)], max_avg_bits=16)
    assert all(c is None for c in plan.values())  # float has no error and fits 16 bits
    with pytest.raises(ValueError, match="cannot be met"):
        qkernels.plan_mixed_precision(model, data, [QuantConfig(8, 8)], max_avg_bits=4)
    with pytest.raises(ValueError, match="candidates"):
        qkernels.plan_mixed_precision(model, data, [], 4)
    with pytest.raises(TypeError, match=r"candidates\[0\]"):
        qkernels.plan_mixed_precision(model, data, ["int4"], 4)
    with pytest.raises(ValueError, match="max_avg_bits"):
        qkernels.plan_mixed_precision(model, data, [QuantConfig()], "four")
    with pytest.raises(ValueError, match="calibration_data"):
        qkernels.plan_mixed_precision(model, None, [QuantConfig()], 8)
