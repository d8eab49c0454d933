#!/usr/bin/env bash
# Make a scored candidate the bundled weights, keeping the outgoing bundle's figures:
#   bash scripts/bundle_candidate.sh CANDIDATE_DIR "one line for users (the card's description)"
# CANDIDATE_DIR is the folder scripts/evaluate_candidate.sh and the scoring after it wrote
# (weights/, calibration.json, real/, synthetic/, synthetic_scanner/, sample_scanner.txt,
# rule.txt); its rule.txt must end "passes the rule" (scripts/check_bundle_rule.py), so a
# candidate that failed the rule fixed before its training cannot be bundled by accident.
# 1. the outgoing bundle's card, calibration and figures move to docs/eval/bundled_<sha12>/
#    (ARCHIVE_SUFFIX=<name>: to bundled_<sha12>_<name>/, for a candidate that changes only the
#    card of weights whose earlier card is archived under that name already);
# 2. the candidate's fp16 file is copied unchanged (same bytes, so the same model id that its
#    figures name) and only its card gains the evaluation summary (scripts/publish_weights.py);
# 3. its figures become docs/eval/{calibration.json,real,synthetic,synthetic_scanner_noise}.
# README.md and docs/EVALUATION.md are written by hand afterwards.
set -euo pipefail
candidate=${1:?usage: bash scripts/bundle_candidate.sh CANDIDATE_DIR DESCRIPTION}
description=${2:?usage: bash scripts/bundle_candidate.sh CANDIDATE_DIR DESCRIPTION}
here=$(cd "$(dirname "$0")/.." && pwd)
python="$here/.venv/bin/python"
weights="$here/Resources/Weights/malenia-tiny.safetensors"
for need in weights/malenia-tiny.safetensors weights/malenia-tiny.json calibration.json \
    real/metrics.json synthetic/metrics.json synthetic_scanner/metrics.json rule.txt; do
    [[ -e "$candidate/$need" ]] || { echo "$candidate/$need is missing: score it first" >&2; exit 2; }
done
if [[ "$(tail -n 1 "$candidate/rule.txt")" != "passes the rule" ]]; then
    echo "$candidate/rule.txt does not say 'passes the rule': not bundled" >&2
    exit 1
fi
outgoing=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['sha256'][:12])" \
    "${weights%.safetensors}.json")
archive="$here/docs/eval/bundled_$outgoing${ARCHIVE_SUFFIX:+_$ARCHIVE_SUFFIX}"
[[ -e "$archive" ]] && {
    echo "$archive exists already (an earlier card of these weights?): nothing moved; set" \
        "ARCHIVE_SUFFIX to name the outgoing card" >&2
    exit 1
}
mkdir -p "$archive"
cp "${weights%.safetensors}.json" "$archive/model_card.json"
for figures in calibration.json real synthetic synthetic_scanner_noise; do
    git -C "$here" mv "docs/eval/$figures" "$archive/$figures"
done
cp "$candidate/weights/malenia-tiny.safetensors" "$weights"
cp "$candidate/weights/malenia-tiny.json" "${weights%.safetensors}.json"
"$python" "$here/scripts/publish_weights.py" "$weights" --out "$weights" \
    --eval "$candidate/synthetic/metrics.json" --real-eval "$candidate/real/metrics.json" \
    --description "$description"
cp "$candidate/calibration.json" "$here/docs/eval/calibration.json"
cp -r "$candidate/real" "$here/docs/eval/real"
cp -r "$candidate/synthetic" "$here/docs/eval/synthetic"
cp -r "$candidate/synthetic_scanner" "$here/docs/eval/synthetic_scanner_noise"
if [[ -f "$candidate/sample_scanner.txt" ]]; then
    cp "$candidate/sample_scanner.txt" \
        "$here/docs/eval/synthetic_scanner_noise/bundle_sample_ct_scanner_noise.txt"
fi
echo "bundled $candidate; the outgoing bundle's figures are in $archive/"
