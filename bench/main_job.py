"""The main job: quantize a small Llama-style decoder with qkernels and report what it buys.

Builds a seeded random LlamaForCausalLM from a config (no download), swaps its nn.Linear layers
with qkernels.quantize_ (W8A8, W8A16, and int4 group 128: W4A16, W4A8) and qkernels.sparsify_
(2:4 with float values, 2:4 with int8 values + int8 activations), and prints
  (a) logits SQNR vs the FP32 model (2:4 also vs the 2:4-pruned FP32 model), and parity of the
      native kernels with qkernels.reference,
  (b) greedy decode tokens/s (batch 1, KV cache) for FP32 and each variant,
  (c) real weights and model files (bench/real_models.py): all-MiniLM-L6-v2 quantized five ways
      (embedding cosine vs float on real sentences, encode speed, save_quantized + load_quantized in
      a fresh process), a GPTQ checkpoint of the Llama-shaped model loaded and run, the peak memory
      of load_quantized, and QuantLinear.from_float speed for a 4096x11008 int4 layer,
  (d) the kernel table from bench/bench_kernels.py for one shape.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_kernels  # noqa: E402
import real_models  # noqa: E402

import qkernels  # noqa: E402
from qkernels import QuantConfig, SparseConfig  # noqa: E402

VARIANTS = {"W8A8": QuantConfig(weight_bits=8, act_bits=8), "W8A16": QuantConfig(weight_bits=8, act_bits=None),
            "W4A16": QuantConfig(weight_bits=4, act_bits=None, group_size=128),
            "W4A8": QuantConfig(weight_bits=4, act_bits=8, group_size=128),
            "2:4 fp": SparseConfig(weight_bits=None), "2:4 int8": SparseConfig(weight_bits=8)}


def convert(model, cfg):
    model = copy.deepcopy(model)
    if isinstance(cfg, SparseConfig):
        return qkernels.sparsify_(model, cfg, progress=False)
    return qkernels.quantize_(model, cfg, progress=False)


def pruned_copy(model):
    """The FP32 model with every nn.Linear weight pruned to 2:4 (what the 2:4 variants approximate)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(qkernels.prune_24(m.weight)[1])
    return model


def build_model(hidden, layers, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                      num_key_value_heads=max(1, hidden // 256), max_position_embeddings=1024,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def sqnr_db(ref, approx):
    ref, approx = ref.double(), approx.double()
    return float(20 * torch.log10(ref.norm() / (ref - approx).norm()))


@torch.no_grad()
def decode_tokens_per_s(model, prompt, new_tokens, repeats=3):
    rates = []
    for _ in range(repeats):
        out = model(input_ids=prompt, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        rates.append(new_tokens / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--bench-shape", default="4096x4096")
    p.add_argument("--skip-bench", action="store_true")
    a = p.parse_args(argv)

    model = build_model(a.hidden, a.layers)
    n_lin = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    n_par = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"# Llama-style decoder: hidden {a.hidden}, {a.layers} layers, {n_lin} nn.Linear, {n_par:.0f}M params "
          f"(seeded random weights); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"qkernels cpu path {qkernels.cpu_isa()}")
    g = torch.Generator().manual_seed(1)
    eval_ids = torch.randint(0, model.config.vocab_size, (4, 64), generator=g)
    prompt = torch.randint(0, model.config.vocab_size, (1, 32), generator=g)
    with torch.no_grad():
        ref_logits = model(input_ids=eval_ids).logits
        pruned_logits = pruned_copy(model)(input_ids=eval_ids).logits

    rows = [("FP32", None, None, None, decode_tokens_per_s(model, prompt, a.new_tokens))]
    for name, cfg in VARIANTS.items():
        qm = convert(model, cfg)
        with torch.no_grad():
            logits = qm(input_ids=eval_ids).logits
            with qkernels.use_backend("reference"):
                ref_q = qm(input_ids=eval_ids).logits
        diff = (logits - ref_q).abs().max().item()
        parity = "bit-exact" if diff == 0 else f"max |diff| {diff:.2e}"
        vs_pruned = sqnr_db(pruned_logits, logits) if isinstance(cfg, SparseConfig) else None
        rows.append((name, sqnr_db(ref_logits, logits), vs_pruned, parity,
                     decode_tokens_per_s(qm, prompt, a.new_tokens)))
        del qm

    base = rows[0][4]
    print(f"\n{'model':<8} {'logits SQNR vs FP32':>20} {'vs pruned FP32':>15} {'native vs reference':>22} "
          f"{'decode tok/s':>13} {'speedup':>8}")
    for name, sq, sqp, parity, tps in rows:
        print(f"{name:<8} {('-' if sq is None else f'{sq:.1f} dB'):>20} {('-' if sqp is None else f'{sqp:.1f} dB'):>15} "
              f"{(parity or '-'):>22} {tps:>13.1f} {tps / base:>7.2f}x")

    real_models.gptq_report(model, eval_ids, prompt, a.new_tokens, decode_tokens_per_s, sqnr_db)
    real_models.load_memory_report(model)
    print()
    real_models.from_float_report()
    real_models.minilm_report()
    real_models.accuracy_report()

    if not a.skip_bench:
        print(f"\n# kernel tables, {a.bench_shape}")
        bench_kernels.main(["--shapes", a.bench_shape])


if __name__ == "__main__":
    main()
