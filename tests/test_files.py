"""Quantized models as files: save_quantized / load_quantized round trips (meta skeletons, shards,
tied weights, every layer kind), the errors for a model that does not match its files, and the
GPTQ / AWQ checkpoint directories written here by packers that follow the published layouts."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import qkernels
from qkernels import QuantConfig, QuantLinear, SparseLinear
from qkernels import reference as R
from qkernels.reference import checkpoints as RC

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 64)
        self.a = nn.Linear(64, 96)
        self.b = nn.Linear(96, 72, bias=False)
        self.c = nn.Linear(72, 64)
        self.d = nn.Linear(64, 64)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 50, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids):
        h = self.emb(ids)
        h = self.d(self.c(torch.relu(self.b(torch.relu(self.a(h))))))
        return self.head(self.norm(h))


def _toy_quantized():
    torch.manual_seed(0)
    m = Toy().eval()
    plan = {"a": QuantConfig(8, 8), "b": QuantConfig(4, None, 32, False), "c": QuantConfig(4, 8, 24)}
    qkernels.quantize_(m, plan)
    qkernels.sparsify_(m, {"d": qkernels.SparseConfig(8)})
    return m


def _tiny_llama_config(**kw):
    return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=False, **kw)


@pytest.mark.parametrize("shard", ["4GB", "20KB"])
def test_save_load_round_trip_from_a_meta_skeleton(tmp_path, shard):
    m = _toy_quantized()
    ids = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        want = m(ids)
    qkernels.save_quantized(m, tmp_path, max_shard_size=shard)
    names = sorted(os.listdir(tmp_path))
    assert all(n.endswith((".safetensors", ".json")) for n in names), names  # no pickle
    assert ("model.safetensors.index.json" in names) == (shard == "20KB")
    cfg = json.loads((tmp_path / "qkernels_config.json").read_text())
    assert cfg["modules"]["b"] == {"kind": "QuantLinear", "in_features": 96, "out_features": 72, "bias": False,
                                   "weight_bits": 4, "act_bits": None, "group_size": 32, "symmetric": False}
    assert cfg["modules"]["d"]["kind"] == "SparseLinear"
    assert cfg["aliases"] == {"head.weight": "emb.weight"}
    with torch.device("meta"):
        skeleton = Toy()
    got = qkernels.load_quantized(skeleton, str(tmp_path))
    assert got is skeleton
    assert isinstance(got.a, QuantLinear) and isinstance(got.d, SparseLinear) and isinstance(got.head, nn.Linear)
    assert all(t.device.type == "cpu" for t in list(got.parameters()) + list(got.buffers()))
    assert got.head.weight.data_ptr() == got.emb.weight.data_ptr()  # the alias shares memory again
    with torch.no_grad():
        assert torch.equal(got(ids), want)


def test_load_checks_the_model_against_the_files(tmp_path):
    m = _toy_quantized()
    qkernels.save_quantized(m, tmp_path)

    class Wider(Toy):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(96, 80, bias=False)

    with pytest.raises(ValueError, match=r"module 'b'.*out_features=72.*96, 80"):
        qkernels.load_quantized(Wider(), str(tmp_path))

    class NoC(Toy):
        def __init__(self):
            super().__init__()
            del self.c

    with pytest.raises(ValueError, match="quantizes module 'c', which the model does not have"):
        qkernels.load_quantized(NoC(), str(tmp_path))
    sd = load_file(tmp_path / "model.safetensors")
    del sd["norm.bias"]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="the files lack: norm.bias"):
        qkernels.load_quantized(Toy(), str(tmp_path))
    sd["norm.bias"], sd["extra.weight"] = torch.zeros(64), torch.zeros(3)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="the model lacks: extra.weight"):
        qkernels.load_quantized(Toy(), str(tmp_path))
    os.remove(tmp_path / "qkernels_config.json")
    with pytest.raises(ValueError, match="not a checkpoint"):
        qkernels.load_quantized(Toy(), str(tmp_path))


def test_load_rejects_a_configuration_the_tensors_do_not_have(tmp_path):
    m = _toy_quantized()
    qkernels.save_quantized(m, tmp_path)
    cfg = json.loads((tmp_path / "qkernels_config.json").read_text())
    for field, value, match in (("symmetric", True, "the model lacks: b.weight_zero_point"),
                                ("group_size", 48, r"b.qconfig: the state_dict was saved by a QuantLinear with "
                                                   "group_size=32; this module has group_size=48"),
                                ("weight_bits", 3, "module 'b' has an invalid entry")):
        bad = json.loads(json.dumps(cfg))
        bad["modules"]["b"][field] = value  # the tensors were saved by another configuration
        (tmp_path / "qkernels_config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            qkernels.load_quantized(Toy(), str(tmp_path))


def test_save_needs_a_quantized_model(tmp_path):
    with pytest.raises(ValueError, match="no QuantLinear"):
        qkernels.save_quantized(Toy(), tmp_path)
    with pytest.raises(ValueError, match="max_shard_size"):
        qkernels.save_quantized(_toy_quantized(), tmp_path, max_shard_size="lots")


def test_hf_llama_round_trip_rebuilds_rotary_buffers(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_llama_config()
    m = LlamaForCausalLM(cfg).eval()
    qkernels.quantize_(m, QuantConfig(4, None, 32), filter_fn=lambda mod, name: name != "lm_head")
    ids = torch.randint(0, 128, (1, 9))
    with torch.no_grad():
        want = m(ids).logits
    qkernels.save_quantized(m, tmp_path, max_shard_size="50KB")
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(cfg)
    got = qkernels.load_quantized(skeleton, str(tmp_path))
    assert all(b.device.type == "cpu" for b in got.buffers())
    with torch.no_grad():
        assert torch.equal(got(ids).logits, want)


# ---- GPTQ / AWQ directories ------------------------------------------------------------------------
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")


def _write_int4_checkpoint(path, kind, cfg, group_size, sym=True, desc_act=False, fmt="gptq", bits=4,
                           config_file="config.json"):
    """A GPTQ / AWQ checkpoint of a random tiny Llama (fp16 scales, embeddings, norms, lm_head;
    sharded with an index) and the float model with the dequantized weights it stands for."""
    g = torch.Generator().manual_seed(1)
    ref_model = LlamaForCausalLM(cfg).eval()
    tensors = {}
    sd = ref_model.state_dict()
    for name, t in sd.items():
        if not any(f".{lin}.weight" in name for lin in LINEARS):
            tensors[name] = t.half()
            with torch.no_grad():
                t.copy_(t.half().float())
    for layer in range(cfg.num_hidden_layers):
        for lin in LINEARS:
            fqn = f"model.layers.{layer}.{lin}"
            w = sd[f"{fqn}.weight"]
            N, K = w.shape
            gs = K if group_size == -1 else group_size
            G = K // gs
            q = torch.randint(0, 16, (N, K), generator=g, dtype=torch.int8)
            if sym:
                z = torch.full((N, G), 8, dtype=torch.int32)
            else:
                z = torch.randint(1 if fmt == "gptq" else 0, 16, (N, G), generator=g, dtype=torch.int32)
            scale = (torch.rand(N, G, generator=g) * 0.02 + 0.001).half().float()
            if desc_act:
                perm = torch.randperm(K, generator=g)
                g_idx = torch.empty(K, dtype=torch.int64)
                g_idx[perm] = torch.arange(K) // gs
            else:
                g_idx = torch.arange(K) // gs
            deq = (q.float() - z.float()[:, g_idx]) * scale[:, g_idx]
            with torch.no_grad():
                w.copy_(deq)
            if kind == "gptq":
                qw, qz, sc, gi = RC.pack_gptq(q, z, scale, g_idx, legacy_zero_offset=(fmt == "gptq"))
                tensors.update({f"{fqn}.qweight": qw, f"{fqn}.qzeros": qz, f"{fqn}.scales": sc, f"{fqn}.g_idx": gi})
            else:
                qw, qz, sc = RC.pack_awq(q, z, scale)
                tensors.update({f"{fqn}.qweight": qw, f"{fqn}.qzeros": qz, f"{fqn}.scales": sc})
    names = sorted(tensors)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n].contiguous() for n in shard}, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    if kind == "gptq":
        q_cfg = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act, "sym": sym,
                 "checkpoint_format": fmt}
    else:
        q_cfg = {"quant_method": "awq", "bits": bits, "group_size": group_size, "zero_point": True, "version": "gemm"}
    hf = cfg.to_dict()
    if config_file == "config.json":
        hf["quantization_config"] = q_cfg
    else:
        with open(os.path.join(path, config_file), "w") as f:
            json.dump(q_cfg, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f)
    return ref_model


def _greedy(model, ids, n=8):
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids


@pytest.mark.parametrize("kind,group_size,sym,desc_act,fmt,config_file", [
    ("gptq", 32, True, False, "gptq", "config.json"),
    ("gptq", 32, False, True, "gptq", "quantize_config.json"),
    ("gptq", -1, False, False, "gptq_v2", "config.json"),
    ("gptq", 64, True, True, "gptq_v2", "config.json"),
    ("awq", 32, False, False, None, "config.json"),
])
def test_int4_checkpoint_import_matches_the_dequantized_model(tmp_path, kind, group_size, sym, desc_act, fmt,
                                                              config_file):
    torch.manual_seed(0)
    cfg = _tiny_llama_config()
    ref_model = _write_int4_checkpoint(tmp_path, kind, cfg, group_size, sym, desc_act, fmt or "gptq",
                                       config_file=config_file)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(cfg)
    got = qkernels.load_quantized(skeleton, str(tmp_path))
    q = got.model.layers[1].mlp.down_proj
    assert isinstance(q, QuantLinear) and q.weight_bits == 4 and q.act_bits is None
    assert (q.input_perm is not None) == desc_act
    assert torch.equal(q.dequantize(), ref_model.model.layers[1].mlp.down_proj.weight)  # the integers, exactly
    assert isinstance(got.lm_head, nn.Linear) and got.lm_head.weight.dtype == torch.float32
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(3))
    assert torch.equal(_greedy(got, ids), _greedy(ref_model, ids))
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, ref_model(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["gptq", "awq"])
def test_int4_import_refuses_other_bits(tmp_path, kind):
    cfg = _tiny_llama_config()
    _write_int4_checkpoint(tmp_path, kind, cfg, 32, bits=8)
    with pytest.raises(NotImplementedError, match="bits=8"):
        qkernels.load_quantized(LlamaForCausalLM(cfg), str(tmp_path))


def test_int4_import_names_a_mismatched_module(tmp_path):
    cfg = _tiny_llama_config()
    _write_int4_checkpoint(tmp_path, "gptq", cfg, 32)
    other = _tiny_llama_config()
    other.intermediate_size = 96
    with pytest.raises(ValueError, match=r"module 'model.layers.0.mlp.down_proj'"):
        qkernels.load_quantized(LlamaForCausalLM(other), str(tmp_path))


def test_reference_dequantization_of_the_test_packer():
    """The packer used above writes what formats.gptq_to_int4 reads (independent of the modules)."""
    q = torch.randint(0, 16, (16, 64), dtype=torch.int8)
    z = torch.randint(1, 16, (16, 2), dtype=torch.int32)
    s = torch.rand(16, 2).half().float()
    qw, qz, sc, gi = RC.pack_gptq(q, z, s, torch.arange(64) // 32)
    got = QuantLinear.from_gptq(qw, qz, sc, gi).dequantize()
    assert torch.equal(got, R.dequantize(q, s, z, "per_group", 32))


def test_gptq_import_of_a_model_with_tied_embeddings(tmp_path):
    """transformers / GPTQ checkpoints store a tied embedding once; the loaded model stays tied."""
    torch.manual_seed(0)
    cfg = _tiny_llama_config()
    cfg.tie_word_embeddings = True
    _write_int4_checkpoint(tmp_path, "gptq", cfg, 32)
    for shard in tmp_path.glob("*.safetensors"):  # drop lm_head.weight as a tied checkpoint does
        sd = load_file(shard)
        if "lm_head.weight" in sd:
            del sd["lm_head.weight"]
            save_file(sd, shard, metadata={"format": "pt"})
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"].pop("lm_head.weight", None)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(cfg)
    got = qkernels.load_quantized(skeleton, str(tmp_path))
    assert got.lm_head.weight.data_ptr() == got.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        assert torch.isfinite(got(torch.tensor([[1, 2, 3]])).logits).all()
