"""The calibrated activation preparation in the kernels: a per-input-channel scale (SmoothQuant /
AWQ) in W8A8, W4A8, W8A16, W4A16, and a static per-tensor int8 scale in W8A8, W4A8 and 2:4 int8.
Integer paths are bit-exact with the reference on every CPU path (and the Triton impls); float
paths within the fp32 layer bound; gradients go through W * input_scale; bad scales are named."""
import pytest
import torch

import qkernels
from conftest import nan_eq
from qkernels import QuantLinear, SparseLinear, ops
from tolerances import CLOSE_FP32_LAYER

K, N = 200, 48
KINDS = {"W8A8": dict(weight_bits=8, act_bits=8), "W8A16": dict(weight_bits=8, act_bits=None),
         "W4A8": dict(weight_bits=4, act_bits=8, group_size=64, symmetric=False),
         "W4A16": dict(weight_bits=4, act_bits=None, group_size=64)}


def _call(m, x, input_scale, act_scale):
    x2 = x.reshape(-1, m.in_features)
    if isinstance(m, SparseLinear):
        return ops.sparse24_linear(x2, m._packed, m._layout, m.value_dtype, m.weight_scale, m.bias, N, act_scale)
    if m.weight_bits == 8:
        return ops.int8_linear(x2, m._packed, m._layout, m.weight_scale, m.bias, m.act_bits, input_scale, act_scale)
    return ops.int4_linear(x2, m._packed, m._layout, m.bias, N, m._group, m.act_bits, m.symmetric, input_scale,
                           act_scale)


def _data(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(13, K, generator=g) * (torch.rand(K, generator=g) * 4)  # channel outliers
    x[2, 5] = float("inf")
    return x.to(dtype), torch.rand(K, generator=g) + 0.25


@pytest.mark.parametrize("kind,static", [(k, st) for k in KINDS for st in (False, True)
                                         if not st or KINDS[k]["act_bits"] == 8])  # static: int8 activations
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepared_activations_match_the_reference(isa, kind, dtype, static):
    kw = KINDS[kind]
    m = QuantLinear.from_float(torch.nn.Linear(K, N), **kw)
    x, smooth = _data(dtype)
    act_scale = torch.tensor([3.0]) if static else None  # below the data's range: saturation too
    for input_scale in (smooth, None):
        y = _call(m, x, input_scale, act_scale)
        with qkernels.use_backend("reference"):
            want = _call(m, x, input_scale, act_scale)
        assert y.dtype == dtype
        if kw["act_bits"] == 8:
            assert nan_eq(y, want), kind
        else:
            fin = torch.isfinite(want)
            torch.testing.assert_close(y[fin].float(), want[fin].float(), **CLOSE_FP32_LAYER)


def test_static_scale_for_sparse_int8_and_nan_rows(isa):
    s = SparseLinear.from_float(torch.nn.Linear(K, N), weight_bits=8)
    x, _ = _data(torch.float32)
    x[4, 7] = float("nan")
    y = _call(s, x, None, torch.tensor([2.5]))
    with qkernels.use_backend("reference"):
        want = _call(s, x, None, torch.tensor([2.5]))
    assert nan_eq(y, want)
    assert torch.isnan(y[4]).all() and torch.isfinite(y[5]).all()


def test_smoothing_is_the_same_as_scaling_the_weight():
    """(x * s) @ W.T == x @ (W * s).T: the smoothed W8A16 layer equals a layer with W * s folded in."""
    m = QuantLinear.from_float(torch.nn.Linear(K, N), 8, None)
    x, s = _data(torch.float32)
    x = x[[0, 1, 3, 4]]
    folded = m.dequantize() * s[None, :]
    torch.testing.assert_close(_call(m, x, s, None), x @ folded.T + m.bias, **CLOSE_FP32_LAYER)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_goes_through_the_scaled_weight(kind):
    m = QuantLinear.from_float(torch.nn.Linear(K, N), **KINDS[kind])
    x, s = _data(torch.float32)
    x = x[[0, 1, 3]].clone().requires_grad_()
    _call(m, x, s, None).sum().backward()
    want = (torch.ones(3, N) @ (m.dequantize() * s[None, :]))
    torch.testing.assert_close(x.grad, want, **CLOSE_FP32_LAYER)
    xr = x.detach().clone().requires_grad_()
    with qkernels.use_backend("reference"):
        _call(m, xr, s, None).sum().backward()
    torch.testing.assert_close(xr.grad, want, **CLOSE_FP32_LAYER)


def test_bad_scales_are_named():
    m8 = QuantLinear.from_float(torch.nn.Linear(K, N), 8, 8)
    m16 = QuantLinear.from_float(torch.nn.Linear(K, N), 4, None, 64)
    x = torch.randn(3, K)
    with pytest.raises(ValueError, match="input_scale must have shape"):
        _call(m8, x, torch.ones(K + 1), None)
    with pytest.raises(ValueError, match="input_scale must be finite"):
        _call(m8, x, torch.full((K,), float("inf")), None)
    with pytest.raises(ValueError, match="act_scale must be finite and > 0"):
        _call(m8, x, None, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="int8 activations only"):
        _call(m16, x, None, torch.tensor([1.0]))


def test_modules_carry_the_calibration_in_state_and_files(tmp_path):
    lin = torch.nn.Linear(K, N)
    x, s = _data(torch.float32)
    x = x[[0, 1, 3, 4]]
    q = QuantLinear.from_float(lin, 4, 8, 64, input_scale=s, act_scale=2.0)
    assert q.smooth and q.act_scale == "static" and "smooth" in repr(q) and "static" in repr(q)
    torch.testing.assert_close(q.dequantize(), QuantLinear.from_float(
        _linear(lin.weight / s, lin.bias), 4, None, 64).dequantize() * s)  # W / s quantized, times s
    sd = q.state_dict()
    assert torch.equal(sd["input_scale"], s) and sd["activation_scale"].tolist() == [2.0]
    plain = QuantLinear(K, N, True, 4, 8, 64)
    with pytest.raises(ValueError, match="smooth=True; this module has smooth=False"):
        plain.load_state_dict(sd)
    with pytest.raises(ValueError, match="act_scale='static'; this module has act_scale='dynamic'"):
        QuantLinear(K, N, True, 4, 8, 64, smooth=True).load_state_dict(sd)
    back = QuantLinear(K, N, True, 4, 8, 64, smooth=True, act_scale="static")
    back.load_state_dict(sd)
    assert torch.equal(back(x), q(x))
    bad = dict(sd, input_scale=-s)
    with pytest.raises(ValueError, match="input_scale: must be > 0"):
        back.load_state_dict(bad)
    assert q.half().input_scale.dtype == torch.float32  # calibration tensors stay fp32
    model = torch.nn.Sequential(q, torch.nn.ReLU(),
                                SparseLinear.from_float(torch.nn.Linear(N, 8), weight_bits=8, act_scale=0.5))
    qkernels.save_quantized(model, tmp_path)
    with torch.device("meta"):
        skeleton = torch.nn.Sequential(torch.nn.Linear(K, N), torch.nn.ReLU(), torch.nn.Linear(N, 8))
    loaded = qkernels.load_quantized(skeleton, str(tmp_path))
    assert loaded[2].act_scale == "static" and loaded[0].smooth
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="needs int8 activations"):
        QuantLinear(K, N, True, 8, None, act_scale="static")


def _linear(w, b):
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin
