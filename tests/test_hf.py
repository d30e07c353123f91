"""Hugging Face transformers integration: QKernelsConfig quantizes while loading (the same result as
quantize_), save_pretrained writes the quantized tensors and the quantization_config, and
from_pretrained loads them back with nothing missing, unexpected or initialised at random."""
import json

import pytest
import torch

import qkernels
from qkernels import QuantConfig, QuantLinear

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from qkernels.hf import QKernelsConfig  # noqa: E402


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("float_llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


IDS = torch.tensor([[1, 5, 9, 33, 77, 2, 100]])


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("kw", [dict(weight_bits=4, act_bits=8, group_size=32), dict(weight_bits=8, act_bits=None)])
def test_quantize_while_loading_equals_quantize_(src, kw):
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=QKernelsConfig(**kw))
    assert isinstance(model.model.layers[1].self_attn.o_proj, QuantLinear)
    assert type(model.lm_head) is torch.nn.Linear  # modules_to_not_convert defaults to ["lm_head"]
    float_model = AutoModelForCausalLM.from_pretrained(src)
    qkernels.quantize_(float_model, QuantConfig(kw["weight_bits"], kw["act_bits"], kw.get("group_size")),
                       filter_fn=lambda m, name: name != "lm_head")
    assert torch.equal(_logits(model), _logits(float_model))


def test_save_pretrained_and_load_back(src, tmp_path, capfd):
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=QKernelsConfig(4, None, 32, False))
    want = _logits(model)
    model.save_pretrained(tmp_path)
    q = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "qkernels" and q["modules_to_not_convert"] == ["lm_head"]
    assert q["modules"]["model.layers.0.mlp.down_proj"] == {
        "kind": "QuantLinear", "in_features": 128, "out_features": 64, "bias": False, "weight_bits": 4,
        "act_bits": None, "group_size": 32, "symmetric": False}
    capfd.readouterr()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    out = capfd.readouterr()
    for word in ("MISSING", "UNEXPECTED", "newly initialized", "not used"):
        assert word not in out.out + out.err, out
    assert isinstance(loaded.model.layers[0].mlp.down_proj, QuantLinear)
    assert all(t.device.type == "cpu" for t in list(loaded.parameters()) + list(loaded.buffers()))
    assert torch.equal(_logits(loaded), want)
    float_bytes = AutoModelForCausalLM.from_pretrained(src).get_memory_footprint()
    assert loaded.get_memory_footprint() == model.get_memory_footprint() < 0.6 * float_bytes


def test_modules_to_not_convert(src):
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=QKernelsConfig(
        8, 8, modules_to_not_convert=["mlp", "lm_head"]))
    assert isinstance(model.model.layers[0].self_attn.q_proj, QuantLinear)
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear


def test_config_is_checked_and_a_mismatched_checkpoint_is_named(src, tmp_path):
    with pytest.raises(ValueError, match="weight_bits"):
        QKernelsConfig(weight_bits=3)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=QKernelsConfig(8, 8))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["quantization_config"]["modules"]["model.layers.1.mlp.up_proj"]["in_features"] = 65
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"module 'model.layers.1.mlp.up_proj'"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
