"""Loading a state_dict: the configuration is part of it and checked; every tensor is validated
(dtype, shape, range, permutation, finiteness); ValueError naming the field or key, never a silent
wrong result."""
import pytest
import safetensors.torch as st
import torch
from torch import nn

from qkernels import QuantLinear, SparseLinear
from qkernels import reference as R


def _q(**kw):
    return QuantLinear.from_float(nn.Linear(kw.pop("K", 64), 24), **kw)


@pytest.mark.parametrize("saved,target,field", [
    (dict(weight_bits=4, group_size=32, symmetric=False), dict(weight_bits=4, group_size=32), "symmetric"),
    (dict(weight_bits=4, act_bits=8, group_size=32), dict(weight_bits=4, act_bits=None, group_size=32), "act_bits"),
    (dict(K=240, weight_bits=4, group_size=128), dict(K=240, weight_bits=4, group_size=120), "group_size"),
    (dict(weight_bits=8, act_bits=8), dict(weight_bits=8, act_bits=None), "act_bits"),
    (dict(weight_bits=4, group_size=64), dict(weight_bits=8), "weight_bits"),
])
def test_configuration_mismatch_names_the_field(saved, target, field):
    """The issue's cases: each loaded "All keys matched" before and gave wrong outputs."""
    K = saved.pop("K", 64)
    target.pop("K", None)
    sd = _q(K=K, **saved).state_dict()
    other = QuantLinear(K, 24, **target)
    with pytest.raises(ValueError, match=rf"qconfig: .*{field}=.*; this module has {field}="):
        other.load_state_dict(sd)


def test_sparse_configuration_mismatch():
    sd = SparseLinear.from_float(nn.Linear(64, 24).bfloat16()).state_dict()
    with pytest.raises(ValueError, match="value_dtype='bfloat16'; this module has value_dtype='float32'"):
        SparseLinear(64, 24).load_state_dict(sd)
    sd8 = SparseLinear.from_float(nn.Linear(64, 24), weight_bits=8).state_dict()
    with pytest.raises(ValueError, match="weight_bits=8.*; this module has weight_bits=None"):
        SparseLinear(64, 24).load_state_dict(sd8)
    SparseLinear(64, 24, value_dtype=torch.bfloat16).load_state_dict(sd)


def _act_order_layer():
    q = _q(weight_bits=4, act_bits=None, group_size=16, symmetric=False)
    qw, s, zp = q._int4_tensors()
    return QuantLinear.from_int4(R.unpack_int4(qw, 64, signed=False), s, zp, 16, q.bias,
                                 input_perm=torch.randperm(64))


@pytest.mark.parametrize("perm", [torch.arange(63), torch.zeros(64, dtype=torch.int64),
                                  torch.arange(64).float(), torch.arange(1, 65)])
def test_input_perm_must_be_a_permutation(perm):
    m = _act_order_layer()
    sd = m.state_dict()
    sd["input_perm"] = perm
    with pytest.raises(ValueError, match="input_perm"):
        QuantLinear(64, 24, weight_bits=4, act_bits=None, group_size=16, symmetric=False).load_state_dict(sd)


def test_act_order_round_trip_and_no_stale_permutation():
    m = _act_order_layer()
    x = torch.randn(3, 64)
    fresh = QuantLinear(64, 24, weight_bits=4, act_bits=None, group_size=16, symmetric=False)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh(x), m(x))
    plain = _q(weight_bits=4, act_bits=None, group_size=16, symmetric=False)
    fresh.load_state_dict(plain.state_dict())  # no input_perm key: the old one must go
    assert fresh.input_perm is None and torch.equal(fresh(x), plain(x))


@pytest.mark.parametrize("kind,key", [
    (dict(weight_bits=8), "weight_scale"), (dict(weight_bits=4, group_size=32), "weight_scale"),
    (dict(weight_bits=8), "bias"), (dict(weight_bits=4, act_bits=None), "bias"),
])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_scales_and_bias(kind, key, bad):
    sd = _q(**kind).state_dict()
    sd[key] = sd[key].clone()
    sd[key].view(-1)[3] = bad
    with pytest.raises(ValueError, match=f"{key}: holds NaN or Inf"):
        QuantLinear(64, 24, **kind).load_state_dict(sd)


@pytest.mark.parametrize("version,msg", [
    (torch.tensor(1.5), "format_version: expected an integer tensor with one element"),
    (torch.tensor([2, 2], dtype=torch.int32), "format_version: expected an integer tensor with one element"),
    (torch.tensor(1, dtype=torch.int32), "has 1 .format 1 did not record the module configuration"),
    (torch.tensor(99, dtype=torch.int32), "reads QuantLinear format 2, the state_dict has 99"),
])
def test_format_version(version, msg):
    sd = _q().state_dict()
    sd["format_version"] = version
    with pytest.raises(ValueError, match=msg):
        QuantLinear(64, 24).load_state_dict(sd)


def test_weights_without_a_configuration_are_refused():
    sd = _q().state_dict()
    del sd["qconfig"]
    with pytest.raises(ValueError, match="no format_version / qconfig"):
        QuantLinear(64, 24).load_state_dict(sd, strict=False)
    with pytest.raises(ValueError, match=r"qconfig: expected a int32 tensor of shape \(4,\)"):
        QuantLinear(64, 24).load_state_dict({**_q().state_dict(), "qconfig": torch.zeros(3, dtype=torch.int32)})


def test_partial_load_without_weights_is_allowed():
    q = QuantLinear(64, 24)
    q.load_state_dict({"bias": torch.ones(24)}, strict=False)
    assert torch.equal(q.bias, torch.ones(24))


@pytest.mark.parametrize("kind,key,value,msg", [
    (dict(weight_bits=8), "qweight", -128, r"qweight: values must lie in \[-127, 127\]"),
    (dict(weight_bits=4, group_size=32, symmetric=False), "weight_zero_point", 16,
     r"weight_zero_point: values must lie in \[0, 15\]"),
    (dict(weight_bits=4, group_size=32, symmetric=False), "weight_zero_point", -1,
     r"weight_zero_point: values must lie in \[0, 15\]"),
])
def test_integer_ranges(kind, key, value, msg):
    sd = _q(**kind).state_dict()
    sd[key] = sd[key].clone()
    sd[key].view(-1)[5] = value
    with pytest.raises(ValueError, match=msg):
        QuantLinear(64, 24, **kind).load_state_dict(sd)


def test_wrong_dtype_is_not_converted_silently():
    sd = _q(weight_bits=4, group_size=32).state_dict()
    sd["weight_scale"] = sd["weight_scale"].double()
    with pytest.raises(ValueError, match=r"weight_scale: expected a float32 tensor of shape \(24, 2\), got float64"):
        QuantLinear(64, 24, weight_bits=4, group_size=32).load_state_dict(sd)


def test_sparse_tensors_are_validated():
    base = SparseLinear.from_float(nn.Linear(66, 24)).state_dict()  # 17 groups: odd, padded meta
    sd = dict(base, meta=base["meta"].clone())
    sd["meta"][2, 1] = 0x05  # group 2: i0 = 1, i1 = 1
    with pytest.raises(ValueError, match="meta: group 2 of row 2 must name two positions i0 < i1"):
        SparseLinear(66, 24).load_state_dict(sd)
    sd = dict(base, values=base["values"].clone())
    sd["values"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="values: holds NaN or Inf"):
        SparseLinear(66, 24).load_state_dict(sd)
    s8 = SparseLinear.from_float(nn.Linear(66, 24), weight_bits=8).state_dict()
    s8["values"] = s8["values"].clone()
    s8["values"][1, 1] = -128
    with pytest.raises(ValueError, match=r"values: values must lie in \[-127, 127\]"):
        SparseLinear(66, 24, weight_bits=8).load_state_dict(s8)


@pytest.mark.parametrize("make", [
    lambda: _q(), lambda: _q(act_bits=None), lambda: _q(weight_bits=4, group_size=32, symmetric=False),
    lambda: _q(weight_bits=4, act_bits=None), lambda: SparseLinear.from_float(nn.Linear(64, 24)),
    lambda: SparseLinear.from_float(nn.Linear(64, 24), weight_bits=8), _act_order_layer])
def test_safetensors_round_trip_of_every_kind(tmp_path, make):
    m = make()
    st.save_file(m.state_dict(), tmp_path / "m.safetensors")
    if isinstance(m, QuantLinear):
        fresh = QuantLinear(64, 24, True, m.weight_bits, m.act_bits, m.group_size, m.symmetric)
    else:
        fresh = SparseLinear(64, 24, True, m.weight_bits, value_dtype=m.value_dtype)
    fresh.load_state_dict(st.load_file(tmp_path / "m.safetensors"))
    x = torch.randn(4, 64)
    assert torch.equal(fresh(x), m(x))
