"""QuantLinear and quantize_: SQNR floors, parity with the reference, state, devices, compile."""
import copy
import io
import pickle

import pytest
import torch
from torch import nn

import qkernels
from qkernels import QuantConfig, QuantLinear
from tolerances import CLOSE, CLOSE_FP32, HALF_STEP_SLACK, SQNR_DB, sqnr_db

MODES = {"w8a8": 8, "w8a16": None}


@pytest.mark.parametrize("mode", MODES)
def test_sqnr_floor_vs_fp32_linear(isa, mode):
    lin = nn.Linear(1024, 512)
    nn.init.normal_(lin.weight)
    x = torch.randn(64, 1024)
    q = QuantLinear.from_float(lin, weight_bits=8, act_bits=MODES[mode])
    with torch.no_grad():
        assert sqnr_db(lin(x), q(x)) >= SQNR_DB[mode]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_native_matches_reference_backend(isa, mode, dtype):
    lin = nn.Linear(67, 129)
    q = QuantLinear.from_float(lin, act_bits=MODES[mode])
    x = torch.randn(2, 5, 67).to(dtype)
    y = q(x)
    with qkernels.use_backend("reference"):
        yr = q(x)
    assert y.shape == (2, 5, 129) and y.dtype == dtype
    if mode == "w8a8":
        assert torch.equal(y, yr)
    else:
        torch.testing.assert_close(y.float(), yr.float(), **CLOSE[dtype])


@pytest.mark.parametrize("mode", MODES)
def test_awkward_shapes_and_layouts(mode):
    for K, N in [(1, 1), (7, 4095), (4097, 3)]:
        lin = nn.Linear(K, N, bias=N % 2 == 1)
        q = QuantLinear.from_float(lin, act_bits=MODES[mode])
        for x in (torch.randn(0, K), torch.randn(3, K), torch.randn(2, 3, K),
                  torch.randn(K, 6).T, torch.randn(4, 2 * K)[:, ::2]):
            y = q(x)
            with qkernels.use_backend("reference"):
                yr = q(x)
            assert y.shape == (*x.shape[:-1], N)
            torch.testing.assert_close(y, yr, **CLOSE_FP32)


def test_dequantize_is_the_effective_weight():
    lin = nn.Linear(64, 32)
    q = QuantLinear.from_float(lin, act_bits=None)
    w = q.dequantize()
    assert w.shape == (32, 64) and w.dtype == torch.float32
    x = torch.randn(4, 64)
    torch.testing.assert_close(q(x), x @ w.T + q.bias, **CLOSE_FP32)
    assert (w - lin.weight).abs().max() <= q.weight_scale.max() / 2 * (1 + HALF_STEP_SLACK)


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_roundtrip_safetensors(tmp_path, mode):
    from safetensors.torch import load_file, save_file
    lin = nn.Linear(100, 70)
    q = QuantLinear.from_float(lin, act_bits=MODES[mode])
    sd = q.state_dict()
    assert set(sd) == {"qweight", "weight_scale", "bias", "format_version", "qconfig"}
    assert sd["qweight"].dtype == torch.int8 and sd["weight_scale"].dtype == torch.float32
    save_file(sd, tmp_path / "q.safetensors")
    q2 = QuantLinear(100, 70, bias=True, weight_bits=8, act_bits=MODES[mode])
    q2.load_state_dict(load_file(tmp_path / "q.safetensors"))
    x = torch.randn(3, 100)
    assert torch.equal(q(x), q2(x))


@pytest.mark.parametrize("mode", MODES)
def test_cpu_keeps_one_copy_of_the_weight(mode):
    """The packed kernel layout is the only int8 weight in memory (~1 byte per weight)."""
    N, K = 300, 1000
    q = QuantLinear.from_float(nn.Linear(K, N), act_bits=MODES[mode])
    held = {id(t): t for t in [*q.buffers(), *vars(q).values()] if isinstance(t, torch.Tensor)}
    int8_bytes = sum(t.numel() * t.element_size() for t in held.values() if t.dtype == torch.int8)
    assert N * K <= int8_bytes <= 1.3 * N * K


def test_state_dict_rejects_bad_qweight():
    q = QuantLinear(8, 4)
    sd = q.state_dict()
    sd["qweight"] = torch.zeros(4, 9, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"qweight: expected a int8 tensor of shape \(4, 8\)"):
        q.load_state_dict(sd)
    del sd["qweight"]
    with pytest.raises(RuntimeError, match="Missing key.*qweight"):
        q.load_state_dict(sd)


def test_state_dict_version_mismatch_is_an_error():
    q = QuantLinear(8, 4)
    sd = q.state_dict()
    sd["format_version"] = torch.tensor(99, dtype=torch.int32)
    with pytest.raises(ValueError, match="format_version"):
        q.load_state_dict(sd)


def test_deepcopy_pickle_and_to():
    q = QuantLinear.from_float(nn.Linear(40, 24))
    x = torch.randn(2, 40)
    y = q(x)
    assert torch.equal(copy.deepcopy(q)(x), y)
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), y)
    assert torch.equal(pickle.loads(pickle.dumps(q))(x), y)
    q.to("cpu")
    q.to(torch.bfloat16)  # scales and bias stay fp32; the module still takes bf16 or fp32 input
    assert q.weight_scale.dtype == torch.float32 and q.bias.dtype == torch.float32
    assert torch.equal(q(x), y)


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    q = QuantLinear.from_float(nn.Linear(64, 48), act_bits=MODES[mode])
    x = torch.randn(3, 5, 64)
    compiled = torch.compile(q, fullgraph=True)
    assert torch.equal(compiled(x), q(x))


def test_quantize_model_with_filter():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 8), nn.Linear(8, 4)))
    x = torch.randn(5, 16)
    ref = model(x)
    out = qkernels.quantize_(model, QuantConfig(weight_bits=8, act_bits=8),
                             filter_fn=lambda m, name: name != "2.1")
    assert out is model
    assert isinstance(model[0], QuantLinear) and isinstance(model[2][0], QuantLinear)
    assert type(model[2][1]) is nn.Linear
    assert sqnr_db(ref, model(x)) > SQNR_DB["model_w8a8"]


def test_backend_env_var_forces_reference(monkeypatch):
    q = QuantLinear.from_float(nn.Linear(33, 17), act_bits=None)
    x = torch.randn(4, 33)
    with qkernels.use_backend("reference"):
        yr = q(x)
    monkeypatch.setenv("QKERNELS_BACKEND", "reference")
    assert qkernels.current_backend() == "reference"
    assert torch.equal(q(x), yr)
    monkeypatch.setenv("QKERNELS_BACKEND", "fast")
    with pytest.raises(ValueError, match="QKERNELS_BACKEND"):
        q(x)


KINDS16 = {"w8a8": dict(), "w8a16": dict(act_bits=None), "w4a8": dict(weight_bits=4, group_size=32),
           "w4a16": dict(weight_bits=4, act_bits=None, group_size=32, symmetric=False)}


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", KINDS16)
def test_float16_input_on_cpu_runs_in_fp32(kind, backend):
    """float16 (models loaded with dtype='auto') is accepted on the CPU, computed in fp32 and
    returned as float16: exactly the fp32 result of the widened input, rounded once."""
    q = QuantLinear.from_float(nn.Linear(64, 40), **KINDS16[kind])
    x = torch.randn(2, 3, 64).half()
    with qkernels.use_backend(backend):
        y, y32 = q(x), q(x.float())
    assert y.dtype == torch.float16 and y.shape == (2, 3, 40)
    assert torch.equal(y, y32.half())


def test_float16_sparse_on_cpu():
    from qkernels import SparseLinear
    for bits in (None, 8):
        s = SparseLinear.from_float(nn.Linear(64, 40), weight_bits=bits)
        x = torch.randn(5, 64).half()
        assert torch.equal(s(x), s(x.float()).half())


def test_bench_probes_are_not_in_the_production_extension():
    from qkernels import _C
    public = [n for n in dir(_C) if not n.startswith("_")]
    assert not [n for n in public if "read" in n or "peak" in n or "ptr" in n], public
