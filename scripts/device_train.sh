#!/usr/bin/env bash
# One training chunk on the GPU machine lent to some sessions (docs/TRAINING_GPU.md).
# Runs there, from the repository root, with .devkit carried (scripts/make_device_kit.py):
#
#   bash scripts/device_train.sh [MINUTES] [CONFIG]
#
# The machine has PyTorch, numpy, scipy and safetensors; MONAI comes from .devkit/wheels, the
# training split of the real CT from .devkit/data (no SimpleITK needed). Trains CONFIG
# (default configs/tiny_gpu_real.json) for MINUTES (default 8) and leaves the weights, their
# card and the loss log in $OUT. Where the previous chunk's weights were carried back as
# .devkit/start.safetensors, the chunk starts from them (a fresh optimizer: its state is
# larger than one returned file may be).
set -euo pipefail
minutes="${1:-8}"
config="${2:-configs/tiny_gpu_real.json}"
out="${OUT:?OUT is where the device machine returns files}"
site=/tmp/malenia-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" .devkit/wheels/*.whl
export PYTHONPATH="$site:$PWD/MaleniaSegment" PYTHONUNBUFFERED=1
export MALENIA_REAL_CT="$PWD/.devkit/data"
chunk=/tmp/device_train.json
python3 - "$config" "$chunk" <<'EOF'
import json
import sys
from pathlib import Path

config = json.loads(Path(sys.argv[1]).read_text())
start = Path(".devkit/start.safetensors")
if start.exists():
    config["init_from"] = str(start)
config["out"] = "/tmp/device_run"
Path(sys.argv[2]).write_text(json.dumps(config))
print(f"chunk from {config['init_from']}, {config['steps']} steps planned")
EOF
nvidia-smi -L || true
set -o pipefail
python3 -m malenia.cli train --config "$chunk" --max-minutes "$minutes" --device "${MALENIA_DEVICE:-cuda}" 2>&1 \
  | tr '\r' '\n' | grep -v '^training: ' | tee "$out/train.txt"
cp /tmp/device_run/last.safetensors /tmp/device_run/last.json /tmp/device_run/log.csv "$out/"
tail -n 3 /tmp/device_run/log.csv
