#!/usr/bin/env bash
# Create ./.venv (Python 3.11) and install MaleniaSegment with the given extras.
# Usage: bash scripts/setup_venv.sh [EXTRAS]   e.g. "server" or "test"
# torch is pinned to the CPU build that installs in seconds on CI machines; a GPU user
# installs the CUDA build of torch into .venv first (see README) and this keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server}"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
