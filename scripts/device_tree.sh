#!/usr/bin/env bash
# Make the working tree small enough for the lent GPU machine, and back (docs/TRAINING_GPU.md).
#
#   bash scripts/device_tree.sh slim      # before the device calls
#   bash scripts/device_tree.sh restore   # after them
#
# A device call takes the working tree and its carried paths, 64 MiB at most; docs/ (the
# evaluation record: overlays, logs, every candidate's weights) alone is over 120 MB. "slim"
# leaves docs/, the browser viewer's bundle and the sample CT out of the working tree through
# git's sparse checkout: they stay tracked, and a commit made meanwhile keeps them. "restore"
# brings them back.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  slim)
    git sparse-checkout set --no-cone '/*' '!/docs/' '!/Resources/Web/' '!/Resources/SampleData/'
    ;;
  restore)
    git sparse-checkout disable
    ;;
  *)
    echo "usage: bash scripts/device_tree.sh slim|restore" >&2
    exit 2
    ;;
esac
git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | awk '{printf "tracked files present: %.1f MB\n", $1 / 1e6}'
