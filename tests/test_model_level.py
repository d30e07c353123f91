"""quantize_ / sparsify_: all or nothing, shared modules stay shared, Linear subclasses convert,
configs checked when built, per-layer config dicts; limits checked at construction."""
import threading

import pytest
import torch
from torch import nn

import qkernels
from qkernels import QuantConfig, QuantLinear, SparseConfig, SparseLinear


class Tied(nn.Module):
    """One nn.Linear used at two places (weight tying / a shared projection)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 16)
        self.shared = nn.Linear(16, 16)
        self.block = nn.Sequential(nn.ReLU(), self.shared)
        self.out = nn.Linear(16, 8)

    def forward(self, x):
        return self.out(self.block(self.shared(self.inp(x))))


class MyLinear(nn.Linear):
    pass


@pytest.mark.parametrize("convert,cls", [(lambda m: qkernels.quantize_(m, QuantConfig()), QuantLinear),
                                         (lambda m: qkernels.sparsify_(m, SparseConfig()), SparseLinear)])
def test_shared_module_is_replaced_everywhere_by_one_module(convert, cls):
    model = Tied()
    convert(model)
    assert isinstance(model.shared, cls) and model.block[1] is model.shared
    assert isinstance(model.inp, cls) and isinstance(model.out, cls)
    model(torch.randn(3, 16))


def test_linear_subclasses_are_converted():
    model = nn.Sequential(MyLinear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    qkernels.quantize_(model)
    assert isinstance(model[0], QuantLinear) and isinstance(model[2], QuantLinear)


def test_multihead_attention_out_proj_is_left_alone():
    model = nn.Sequential(nn.Linear(16, 16))
    model.attn = nn.MultiheadAttention(16, 2, batch_first=True)
    with pytest.warns(UserWarning, match="attn.out_proj"):
        qkernels.quantize_(model)
    assert isinstance(model[0], QuantLinear)
    assert type(model.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    x = torch.randn(2, 5, 16)
    model.attn(x, x, x)


@pytest.mark.parametrize("convert", [qkernels.quantize_, qkernels.sparsify_])
def test_all_or_nothing_on_a_bad_later_layer(convert):
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    before = [type(m) for m in model]
    with pytest.raises(ValueError, match=r"^2: weight holds NaN or Inf \(nothing was replaced\)"):
        convert(model)
    assert [type(m) for m in model] == before


def test_all_or_nothing_on_a_layer_beyond_a_kernel_limit():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(70000, 2, device="meta"))
    with pytest.raises(ValueError, match=r"^1: in_features=70000 is above 66000, the largest K the W8A8 kernels"):
        qkernels.quantize_(model, QuantConfig(weight_bits=8, act_bits=8))
    assert type(model[0]) is nn.Linear


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(weight_bits=3), ValueError, "weight_bits must be 8 or 4, got 3"),
    (dict(act_bits=4), ValueError, "act_bits must be 8 or None"),
    (dict(weight_bits=4, group_size=0), ValueError, "group_size must be None or a positive int"),
    (dict(weight_bits=4, symmetric=1), TypeError, "symmetric must be a bool"),
    (dict(weight_bits=8, group_size=64), NotImplementedError, "per-channel scales only"),
])
def test_quant_config_is_checked_when_built(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        QuantConfig(**kw)


def test_sparse_config_is_checked_when_built():
    with pytest.raises(ValueError, match="weight_bits must be None"):
        SparseConfig(weight_bits=4)


def test_per_layer_config_dict():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 4)))
    plan = {"0": QuantConfig(weight_bits=4, act_bits=None, group_size=16), "2.0": QuantConfig(),
            "2.1": None}
    qkernels.quantize_(model, plan)
    assert isinstance(model[0], QuantLinear) and model[0].weight_bits == 4 and model[0].group_size == 16
    assert isinstance(model[2][0], QuantLinear) and model[2][0].weight_bits == 8
    assert type(model[2][1]) is nn.Linear
    with pytest.raises(ValueError, match=r"not convertible nn.Linear modules of the model: \['nope'\]"):
        qkernels.quantize_(nn.Sequential(nn.Linear(4, 4)), {"nope": QuantConfig()})
    with pytest.raises(TypeError, match=r"config\['0'\] must be a QuantConfig or None, got SparseConfig"):
        qkernels.quantize_(nn.Sequential(nn.Linear(4, 4)), {"0": SparseConfig()})


def test_shared_module_with_conflicting_choices_is_an_error():
    model = Tied()
    with pytest.raises(ValueError, match="is shared but would get different configurations"):
        qkernels.quantize_(model, QuantConfig(), filter_fn=lambda m, name: name != "block.1")
    assert type(model.shared) is nn.Linear


@pytest.mark.parametrize("make,msg", [
    (lambda: QuantLinear(66001, 8), "in_features=66001 is above 66000"),
    (lambda: QuantLinear(1000001, 1, weight_bits=4, act_bits=None, device="meta"), "is above 1000000"),
    (lambda: SparseLinear(200001, 8, weight_bits=8, device="meta"), "in_features=200001 is above 200000"),
])
def test_limits_are_checked_at_construction(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_limits_allow_what_the_kernels_accumulate_exactly():
    QuantLinear(66000, 1)
    QuantLinear(70000, 1, act_bits=None, device="meta")
    SparseLinear(200000, 1, weight_bits=8, device="meta")


def test_from_float_on_meta_builds_a_meta_module():
    for make in (lambda l: QuantLinear.from_float(l), lambda l: QuantLinear.from_float(l, weight_bits=4, group_size=32),
                 lambda l: SparseLinear.from_float(l, weight_bits=8)):
        m = make(nn.Linear(64, 16, device="meta"))
        assert m._packed.device.type == "meta" and m.in_features == 64


def test_use_backend_is_per_thread():
    q = QuantLinear.from_float(nn.Linear(32, 8), act_bits=None)
    inside, seen = threading.Event(), {}

    def other():
        inside.wait()
        seen["backend"] = qkernels.current_backend()

    t = threading.Thread(target=other)
    t.start()
    with qkernels.use_backend("reference"):
        assert qkernels.current_backend() == "reference"
        inside.set()
        t.join()
    assert seen["backend"] == "native" and qkernels.current_backend() == "native"
    q(torch.randn(2, 32))


# ---- real models: transformers Conv1D, tied lm_head, warnings, progress and summary ------------------
def _gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_gpt2_conv1d_layers_are_converted_and_the_tied_lm_head_stays_float():
    model = _gpt2()
    ids = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        want = model(ids).logits
    before = model.get_memory_footprint()
    attn = model.transformer.h[0].attn.c_attn
    w_t = attn.weight.detach().t().clone()
    with pytest.warns(UserWarning, match=r"stay float: lm_head \(tied to transformer.wte.weight\)"):
        qkernels.quantize_(model, QuantConfig(8, None))
    q = model.transformer.h[0].attn.c_attn
    assert isinstance(q, QuantLinear) and (q.in_features, q.out_features) == (64, 192)
    ref = QuantLinear.from_float(_linear_from(w_t, attn.bias), 8, None)
    assert torch.equal(q.dequantize(), ref.dequantize())
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=0.05)
    summary = model._qkernels_summary
    assert summary.kinds == {"W8A16": 8} and summary.bytes_after < summary.bytes_before / 3
    # the packed weights are buffers, so transformers' footprint sees them: int8 is ~1/4 of fp32
    per_layer_float = sum(p.numel() for n, p in _gpt2().named_parameters() if ".h." in n and p.dim() == 2) * 4
    assert before - model.get_memory_footprint() > 0.7 * per_layer_float


def _linear_from(w, b):
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin


def test_a_dict_naming_the_tied_lm_head_converts_it():
    model = _gpt2()
    qkernels.quantize_(model, {"lm_head": QuantConfig(8, None)})
    assert isinstance(model.lm_head, QuantLinear)
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # not in the dict: stays float


def test_multihead_out_proj_is_named_in_the_warning():
    model = nn.Sequential(nn.Linear(16, 16))
    model.attn = nn.MultiheadAttention(16, 2, batch_first=True)
    with pytest.warns(UserWarning, match=r"attn.out_proj \(NonDynamicallyQuantizableLinear: not convertible\)"):
        qkernels.quantize_(model)


def test_progress_bar_and_summary(capsys, caplog):
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(qkernels.quantize.PROGRESS_MIN_LAYERS)])
    with caplog.at_level("INFO", logger="qkernels"):
        qkernels.quantize_(model, QuantConfig(4, 8, 16))
    err = capsys.readouterr().err
    assert "qkernels.quantize_" in err and "16/16" in err  # the tqdm bar
    assert "converted 16 W4A8" in err and "MiB" in err
    assert any("converted 16 W4A8" in r.getMessage() for r in caplog.records)
    s = model._qkernels_summary
    assert s.bytes_before == 16 * (32 * 32 + 32) * 4 and 0 < s.bytes_after < s.bytes_before / 2
    small = nn.Sequential(nn.Linear(8, 8))
    qkernels.quantize_(small)
    assert "qkernels" not in capsys.readouterr().err  # below the threshold: quiet
    qkernels.sparsify_(nn.Sequential(nn.Linear(8, 8)), progress=True)
    assert "converted 1 2:4" in capsys.readouterr().err
