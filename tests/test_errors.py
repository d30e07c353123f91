"""Bad input raises ValueError / TypeError naming the argument, what was expected and what was given."""
import pytest
import torch
from torch import nn

import qkernels
from qkernels import QuantLinear, SparseLinear


@pytest.fixture
def q():
    return QuantLinear.from_float(nn.Linear(16, 8))


def test_wrong_in_features(q):
    with pytest.raises(ValueError, match=r"x.shape\[-1\] must equal in_features=16, got shape \(2, 15\)"):
        q(torch.randn(2, 15))
    with pytest.raises(ValueError, match="in_features"):
        q(torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.float64, torch.complex64])
def test_wrong_dtype(q, dtype):
    with pytest.raises(TypeError, match=f"x must have dtype in .* got {dtype}"):
        q(torch.zeros(2, 16, dtype=dtype))


def test_not_a_tensor(q):
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        q([1.0] * 16)


def test_wrong_device(q):
    with pytest.raises(ValueError, match="x is on meta but the weights are on cpu"):
        q(torch.empty(2, 16, device="meta"))


@pytest.mark.parametrize("bits", [2, 3, 16, None])
def test_weight_bits(bits):
    with pytest.raises(ValueError, match=f"weight_bits must be 8 or 4, got {bits}"):
        QuantLinear.from_float(nn.Linear(4, 4), weight_bits=bits)


def test_act_bits():
    with pytest.raises(ValueError, match="act_bits must be 8 or None"):
        QuantLinear.from_float(nn.Linear(4, 4), act_bits=4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weight(bad):
    lin = nn.Linear(8, 4)
    with torch.no_grad():
        lin.weight[1, 2] = bad
    with pytest.raises(ValueError, match="linear.weight holds NaN or Inf"):
        QuantLinear.from_float(lin)


def test_not_a_linear():
    with pytest.raises(TypeError, match="linear must be an nn.Linear, got Conv1d"):
        QuantLinear.from_float(nn.Conv1d(4, 4, 1))


def test_bad_sizes():
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        QuantLinear(0, 4)


def test_int4_group_size_must_suit_the_kernels():
    with pytest.raises(ValueError, match="group_size must be a multiple of 8 for int4 weights"):
        QuantLinear.from_float(nn.Linear(64, 8), weight_bits=4, group_size=12)
    with pytest.raises(ValueError, match="group_size must be None or a positive int"):
        QuantLinear(64, 8, weight_bits=4, group_size=0)
    QuantLinear.from_float(nn.Linear(10, 8), weight_bits=4, group_size=12)  # one group: fine


def test_int4_state_dict_mismatch_is_reported():
    q = QuantLinear.from_float(nn.Linear(64, 8), weight_bits=4, act_bits=None, group_size=32)
    sd = q.state_dict()
    other = QuantLinear(64, 8, weight_bits=4, act_bits=None, group_size=16)
    with pytest.raises(ValueError, match=r"qconfig: .* group_size=32; this module has group_size=16"):
        other.load_state_dict(sd)
    asym = QuantLinear(64, 8, weight_bits=4, act_bits=None, group_size=32, symmetric=False)
    with pytest.raises(ValueError, match="symmetric=True; this module has symmetric=False"):
        asym.load_state_dict(sd)
    sd["weight_scale"] = torch.ones(8, 3)
    with pytest.raises(ValueError, match=r"weight_scale: expected a float32 tensor of shape \(8, 2\), got float32 \(8, 3\)"):
        q.load_state_dict(sd)


def test_pack_int4_rejects_bad_zero_points_and_layouts():
    qw, L4 = torch.zeros(2, 8, dtype=torch.uint8), "int4_panels"
    with pytest.raises(ValueError, match=r"zero_point must hold values in \[0, 15\]"):
        torch.ops.qkernels.pack_int4(qw, torch.ones(2, 1), torch.full((2, 1), 16, dtype=torch.int32), 16, 16, L4)
    with pytest.raises(ValueError, match=r"scale must have shape \[2, 2\]"):
        torch.ops.qkernels.pack_int4(qw, torch.ones(2, 1), None, 16, 8, L4)
    with pytest.raises(ValueError, match="layout: the CPU int4 layout is 'int4_panels', got 'int4_blob'"):
        torch.ops.qkernels.pack_int4(qw, torch.ones(2, 2), None, 16, 8, "int4_blob")


def test_not_yet_implemented_is_loud():
    with pytest.raises(NotImplementedError, match="group_size"):
        QuantLinear.from_float(nn.Linear(8, 8), group_size=64)
    with pytest.raises(NotImplementedError, match="symmetric"):
        QuantLinear.from_float(nn.Linear(8, 8), symmetric=False)

def test_sparse_linear_errors():
    with pytest.raises(ValueError, match="weight_bits must be None .* or 8"):
        SparseLinear.from_float(nn.Linear(8, 8), weight_bits=4)
    lin = nn.Linear(8, 8)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        SparseLinear.from_float(lin)
    s = SparseLinear.from_float(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="x.shape\\[-1\\] must equal in_features=8"):
        s(torch.randn(2, 7))
    with pytest.raises(TypeError, match="x must have dtype"):
        s(torch.randn(2, 8).double())
    meta = torch.zeros(4, 1, dtype=torch.uint8)  # i0 = i1 = 0: not two positions
    with pytest.raises(ValueError, match="i0 < i1"):
        torch.ops.qkernels.pack_sparse24(torch.zeros(4, 4), meta, 8, "sparse24_panels")


def test_quantize_config_type():
    with pytest.raises(TypeError, match="config must be a QuantConfig or a dict"):
        qkernels.quantize_(nn.Sequential(nn.Linear(2, 2)), 8)
    with pytest.raises(ValueError, match=r"not convertible nn.Linear modules of the model: \['weight_bits'\]"):
        qkernels.quantize_(nn.Sequential(nn.Linear(2, 2)), {"weight_bits": 8})


def test_use_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        with qkernels.use_backend("cuda"):
            pass
