"""Calibration: GPTQ through quantize_(..., calibration_data=...), its exactness where it must
equal round-to-nearest, its gain where inputs are correlated, determinism, save/load, and the
errors for bad use (before any layer changes)."""
import copy

import pytest
import torch
from torch import nn

import qkernels
from qkernels import QuantConfig, QuantLinear, formats
from qkernels.calibration import gptq_quantize


def _correlated(n=1024, K=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, K, generator=g) / K ** 0.5
    return torch.randn(n, K, generator=g) @ A + 0.1 * torch.randn(n, K, generator=g)


def _model(K=256, N=96, seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(K, N), nn.GELU(), nn.Linear(N, 64))


def _rel_err(model, ref, x):
    with torch.no_grad():
        y, r = model(x), ref(x)
    return ((y - r).norm() / r.norm()).item()


@pytest.mark.parametrize("bits,group_size,symmetric", [(4, 32, True), (4, 32, False), (4, None, True), (8, None, True)])
def test_gptq_with_an_identity_hessian_is_round_to_nearest(bits, group_size, symmetric):
    """Uncorrelated inputs (H = I) leave no error to spread: GPTQ must give RTN's integers and scales."""
    w = torch.randn(40, 96)
    q, scale, zp, perm = gptq_quantize(w, torch.eye(96, dtype=torch.float64), bits, group_size, symmetric)
    assert perm is None
    if bits == 8:
        rq, rs = qkernels.ops.quantize_per_token_int8(w)
        assert torch.equal(q, rq) and torch.equal(scale[:, 0], rs)
        return
    rq, rs, rz = formats.quantize_weight_int4(w, group_size, symmetric)
    assert torch.equal(q, rq) and torch.equal(scale, rs)
    assert (zp is None and rz is None) or torch.equal(zp, rz)


@pytest.mark.parametrize("cfg", [QuantConfig(4, None, 32, method="gptq"), QuantConfig(4, 8, 32, False, method="gptq"),
                                 QuantConfig(4, None, 32, method="gptq", act_order=True),
                                 QuantConfig(4, None, None, method="gptq"), QuantConfig(8, None, method="gptq")],
                         ids=["w4a16-g32", "w4a8-g32-asym", "act-order", "per-channel", "w8a16"])
def test_gptq_beats_round_to_nearest_on_correlated_inputs(cfg):
    x = _correlated()
    ref = _model()
    rtn = qkernels.quantize_(copy.deepcopy(ref), QuantConfig(cfg.weight_bits, cfg.act_bits, cfg.group_size,
                                                             cfg.symmetric))
    gptq = qkernels.quantize_(copy.deepcopy(ref), cfg, calibration_data=list(x.split(128)))
    assert isinstance(gptq[0], QuantLinear) and isinstance(gptq[2], QuantLinear)
    assert (gptq[0].input_perm is not None) == cfg.act_order
    e_rtn, e_gptq = _rel_err(rtn, ref, x[:256]), _rel_err(gptq, ref, x[:256])
    assert e_gptq < 0.9 * e_rtn, (e_gptq, e_rtn)
    with qkernels.use_backend("reference"):  # an ordinary QuantLinear: the reference path agrees
        torch.testing.assert_close(gptq(x[:8]), gptq(x[:8]), rtol=0, atol=0)


def test_gptq_is_reproducible_and_saves_like_any_model(tmp_path):
    x = _correlated(512)
    cfg = QuantConfig(4, None, 32, method="gptq", act_order=True)
    a = qkernels.quantize_(_model(), cfg, calibration_data=list(x.split(64)))
    b = qkernels.quantize_(_model(), cfg, calibration_data=list(x.split(64)))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    qkernels.save_quantized(a, tmp_path)
    with torch.device("meta"):
        skeleton = _model()
    loaded = qkernels.load_quantized(skeleton, str(tmp_path))
    with torch.no_grad():
        assert torch.equal(loaded(x[:5]), a(x[:5]))


def test_calibration_batches_may_be_tuples_and_dicts():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(32, 16)

        def forward(self, x, scale=1.0):
            return self.lin(x * scale)

    x = _correlated(64, 32)
    for batches in ([(x,)], [{"x": x, "scale": 2.0}], [x]):
        m = qkernels.quantize_(Two(), QuantConfig(4, None, 16, method="gptq"), calibration_data=batches)
        assert isinstance(m.lin, QuantLinear)


def test_bad_calibration_use_is_named_before_any_layer_changes():
    cfg = QuantConfig(4, None, 32, method="gptq")
    model = _model()
    with pytest.raises(ValueError, match="calibration_data"):
        qkernels.quantize_(model, cfg)
    with pytest.raises(ValueError, match=r"calibration_data\[0\]: the model cannot take"):
        qkernels.quantize_(model, cfg, calibration_data=[torch.randn(4, 7)])
    with pytest.raises(ValueError, match="calibration_data must be an iterable"):
        qkernels.quantize_(model, cfg, calibration_data=torch.randn(4, 256))
    with pytest.raises(ValueError, match="calibration_data is empty"):
        qkernels.quantize_(model, cfg, calibration_data=[])
    assert all(type(m) is not QuantLinear for m in model.modules())
    with pytest.raises(ValueError, match="method must be one of"):
        QuantConfig(method="smart")
    with pytest.raises(ValueError, match="observer must be one of"):
        QuantConfig(observer="median")
    with pytest.raises(ValueError, match="act_scale must be one of"):
        QuantConfig(act_scale="sometimes")
    with pytest.raises(ValueError, match="smooth_alpha"):
        QuantConfig(smooth_alpha=1.5)
    with pytest.raises(ValueError, match="act_order applies"):
        QuantConfig(4, None, None, method="gptq", act_order=True)
    with pytest.raises(ValueError, match="need act_bits=8"):
        QuantConfig(4, None, 32, act_scale="static")
    with pytest.raises(ValueError, match="cannot be combined"):
        QuantConfig(4, 8, 32, method="awq", smooth_alpha=0.5)
    for kw in (dict(method="awq"), dict(act_scale="static"), dict(smooth_alpha=0.5)):
        with pytest.raises(ValueError, match="calibration_data"):
            qkernels.quantize_(model, QuantConfig(**kw))


def test_from_int8_checks_its_values():
    q = torch.randint(-127, 128, (8, 16), dtype=torch.int8)
    s = torch.rand(8) + 0.1
    m = QuantLinear.from_int8(q, s, act_bits=None)
    assert torch.equal(m.dequantize(), q.float() * s[:, None])
    with pytest.raises(ValueError, match="values must lie in"):
        QuantLinear.from_int8(torch.full((8, 16), -128, dtype=torch.int8), s)
    with pytest.raises(ValueError, match="scale must be"):
        QuantLinear.from_int8(q, s[:4])


def _outlier_inputs(n=1024, K=256, seed=0):
    """Correlated inputs with a few large channels (the activation outliers SmoothQuant / AWQ target)."""
    x = _correlated(n, K, seed)
    x[:, :: 32] *= 25
    return x


@pytest.mark.parametrize("cfg,base", [
    (QuantConfig(4, None, 32, method="awq"), QuantConfig(4, None, 32)),
    (QuantConfig(4, 8, 32, method="awq"), QuantConfig(4, 8, 32)),
    (QuantConfig(8, 8, smooth_alpha=0.5), QuantConfig(8, 8)),
    (QuantConfig(8, 8, method="gptq", smooth_alpha=0.5), QuantConfig(8, 8, method="gptq")),
], ids=["awq-w4a16", "awq-w4a8", "smoothquant-w8a8", "smoothquant-gptq-w8a8"])
def test_smoothing_beats_the_same_method_without_it(cfg, base):
    x = _outlier_inputs()
    ref = _model()
    if cfg.method == "awq":  # AWQ's case: the large-activation channels meet small weights RTN rounds away
        with torch.no_grad():
            ref[0].weight[:, ::32] *= 0.05
    batches = list(x.split(128))
    a = qkernels.quantize_(copy.deepcopy(ref), cfg, calibration_data=batches)
    b = qkernels.quantize_(copy.deepcopy(ref), base, calibration_data=batches if base.calibrates else None)
    assert a[0].smooth and not b[0].smooth
    e_a, e_b = _rel_err(a, ref, x[:256]), _rel_err(b, ref, x[:256])
    assert e_a < 0.9 * e_b, (e_a, e_b)
    with qkernels.use_backend("reference"):  # the reference runs the same smoothed layer exactly
        with torch.no_grad():
            if cfg.act_bits == 8:
                assert torch.equal(a(x[:8]), a(x[:8]))


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse", "kl"])
def test_static_scales_from_every_observer(observer):
    x = _correlated(512)
    ref = _model()
    cfg = QuantConfig(8, 8, act_scale="static", observer=observer)
    m = qkernels.quantize_(copy.deepcopy(ref), cfg, calibration_data=list(x.split(64)))
    assert m[0].act_scale == "static" and float(m[0].activation_scale) > 0
    amax = float(x.abs().max())
    s = float(m[0].activation_scale)
    if observer == "minmax":
        assert s == pytest.approx(amax / 127, rel=1e-6)
    else:
        assert s <= amax / 127 * 1.01  # the others clip
    assert _rel_err(m, ref, x[:256]) < 0.1
    y = m(x[:8])
    with qkernels.use_backend("reference"):
        assert torch.equal(m(x[:8]), y)  # static int8 is bit-exact with the reference


def test_observers_clip_heavy_tails_that_minmax_keeps():
    torch.manual_seed(0)
    x = torch.randn(4096, 64)
    x[0, 0] = 400.0  # one extreme value: the histogram observers ignore it
    st = qkernels.calibration.LayerStats(64)
    st.add(x)
    mm = qkernels.calibration.observe(st, None, "minmax")
    assert mm == pytest.approx(400 / 127)
    for obs in ("kl", "percentile"):
        assert qkernels.calibration.observe(st, None, obs) < 0.2 * mm, obs
    p = float(torch.quantile(x.abs().flatten(), 0.99999)) / 127  # the 99.999th percentile (onnxruntime's)
    assert qkernels.calibration.observe(st, None, "percentile") == pytest.approx(p, rel=1e-6)
    assert qkernels.calibration.observe(st, None, "mse") <= mm  # its squared clipping error counts
    lap = torch.distributions.Laplace(0.0, 1.0).sample((4096, 64))  # a heavy tail everywhere: MSE clips
    st2 = qkernels.calibration.LayerStats(64)
    st2.add(lap)
    assert qkernels.calibration.observe(st2, None, "mse") < 0.9 * qkernels.calibration.observe(st2, None, "minmax")
