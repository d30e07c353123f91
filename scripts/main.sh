#!/usr/bin/env bash
# The main job: set up, quantize a small Llama-style model (W8A8, W8A16), report logits SQNR and
# decode tokens/s against FP32, then print the kernel table for one shape.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh -r requirements-bench.txt
. .venv/bin/activate
python bench/main_job.py "$@"
