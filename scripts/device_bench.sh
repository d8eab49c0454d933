#!/usr/bin/env bash
# The inference benchmark on the GPU machine lent to some sessions (docs/TRAINING_GPU.md).
# Runs there, from the repository root, with .devkit/bench and .devkit/wheels carried
# (scripts/make_device_kit.py --bench: SimpleITK and MONAI, which the machine lacks):
#
#   bash scripts/device_bench.sh [bench_inference.py options]
#
# Prints the figures and leaves them in $OUT/bench_gpu.txt.
set -euo pipefail
devkit="$(cd "${DEVKIT:-.devkit}" && pwd)"
source "$(dirname "$0")/device_env.sh"
use_carried_wheels "$(mktemp -d)" "$devkit"/bench/*.whl "$devkit"/wheels/*.whl
python3 benchmarks/bench_inference.py --device "${MALENIA_DEVICE:-cuda}" "$@" 2>&1 \
  | tee "${OUT:-.}/bench_gpu.txt"
