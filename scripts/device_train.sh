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
# .devkit/start.safetensors (with their card, start.json), the chunk starts from them (a fresh optimizer: its state is
# larger than one returned file may be). DEVKIT and MALENIA_DEVICE (default cuda) change where
# the kit is and what trains (Testing/test_training_kit.py runs this script on the CPU).
set -euo pipefail
minutes="${1:-8}"
config="${2:-configs/tiny_gpu_real.json}"
out="${OUT:?OUT is where the device machine returns files}"
devkit="$(cd "${DEVKIT:-.devkit}" && pwd)"
run="$(mktemp -d)"
source "$(dirname "$0")/device_env.sh"
shopt -s nullglob
use_carried_wheels "$run" "$devkit"/wheels/*.whl
shopt -u nullglob
export MALENIA_REAL_CT="$devkit/data"
python3 - "$config" "$run" "$devkit/start.safetensors" <<'EOF'
import json
import sys
from pathlib import Path

config_file, run, start = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
config = json.loads(Path(config_file).read_text())
if start.exists():
    config["init_from"] = str(start)
config["out"] = str(run / "out")
(run / "chunk.json").write_text(json.dumps(config))
print(f"chunk from {config['init_from']}, {config['steps']} steps planned")
EOF
nvidia-smi -L || true
python3 -m malenia.cli train --config "$run/chunk.json" --max-minutes "$minutes" \
  --device "${MALENIA_DEVICE:-cuda}" 2>&1 | tr '\r' '\n' | { grep -v '^training: ' || true; } \
  | tee "$out/train.txt"
cp "$run/out/last.safetensors" "$run/out/last.json" "$run/out/log.csv" "$out/"
tail -n 3 "$run/out/log.csv"
