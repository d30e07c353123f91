#!/usr/bin/env bash
# Creates .venv (if needed), installs the pinned dependencies and builds the native extension.
# Usage: bash scripts/setup.sh [extra requirements files...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt "$@"
# --no-build-isolation: build against the torch installed above (works offline too).
python -m pip install -q --no-build-isolation -e .
python -c "import qkernels; print('qkernels', qkernels.__version__, 'cpu path:', qkernels.cpu_isa())"
