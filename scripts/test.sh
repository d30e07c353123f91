#!/usr/bin/env bash
# The test command: set up from a clean clone, then run the whole suite (CPU; Triton interpreted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest tests -q -p no:cacheprovider -W ignore::DeprecationWarning "$@"
