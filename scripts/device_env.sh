# Sourced by the device scripts (device_train.sh, device_bench.sh): the GPU machine has
# PyTorch, numpy, scipy and safetensors only, so the wheels carried in .devkit are installed
# into a fresh folder and put on the path with the package.
#
#   use_carried_wheels FOLDER [WHEEL ...]
use_carried_wheels() {
  local site="$1/site"
  shift
  if (($#)); then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$@"
  fi
  export PYTHONPATH="$site:$PWD/MaleniaSegment${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
}
