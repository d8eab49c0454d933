#!/usr/bin/env bash
# Score a training checkpoint the way a bundle is judged (docs/EVALUATION.md):
#   bash scripts/evaluate_candidate.sh CHECKPOINT CONFIG OUTDIR "one-line description"
# 1. calibrate its thresholds (synthetic validation volumes + 60 LIDC *training* nodules);
#    not --lung: a lung threshold of its own was measured and not adopted (EVALUATION.md)
# 2. publish it in fp16 with that calibration into OUTDIR/weights (the engine's format);
# 3. the synthetic held-out benchmark (20 per category) and the real-CT benchmark;
# 4. the location head's left/right kidney and spleen check on a phantom, with the bounds of
#    test_bundled_location_head_tells_left_from_right (which checks only the bundled file);
# 5. the figures the bundling rules also read (the shipped sample CT's presets, the sample
#    redrawn with the scan's own noise, the synthetic set drawn with the phantom's own noise),
#    then the verdict of scripts/check_bundle_rule.py --rule $RULE (default real-first-27f).
# About an hour on 2 CPU cores. Nothing here reads a validation case before step 3.
# CALIBRATE_ARGS: more options for step 1, as the candidate's config fixes them
# (stage 32 on: CALIBRATE_ARGS="--tie-break lowest"; the bundled card's rules, for weights
# judged against it: CALIBRATE_ARGS="--organ-lesions 24 --lung-keep 24 --organ-growth 24
# --organ-fat 24 --unlocated 24"). CALIBRATION: a calibration JSON of this checkpoint made
# already (e.g. by `malenia calibrate --from ... --organ-lesions 24`).
set -euo pipefail
checkpoint=$1 config=$2 out=$3 description=${4:-candidate}
here=$(cd "$(dirname "$0")/.." && pwd)
malenia="$here/.venv/bin/malenia"
python="$here/.venv/bin/python"
mkdir -p "$out/weights"
# shellcheck disable=SC2086  # CALIBRATE_ARGS is a list of options
if [[ -n "${CALIBRATION:-}" ]]; then  # a calibration of this checkpoint made already
    cp "$CALIBRATION" "$out/calibration.json"
else
    "$malenia" calibrate --weights "$checkpoint" --out "$out/calibration.json" --roi 60 \
        ${CALIBRATE_ARGS:-}
fi
"$python" "$here/scripts/publish_weights.py" "$checkpoint" --half --config "$config" \
    --calibration "$out/calibration.json" --description "$description" \
    --out "$out/weights/malenia-tiny.safetensors"
weights="$out/weights/malenia-tiny.safetensors"
"$malenia" eval --weights "$weights" --out "$out/synthetic" --n-per-category 20 --device cpu
"$malenia" eval --real --weights "$weights" --out "$out/real" --device cpu
"$python" - "$weights" > "$out/left_right.txt" <<'PY'
import sys

import numpy as np
from malenia.inference import Engine
from malenia.io import CTVolume
from malenia.synth.anatomy import organ_mask
from malenia.synth.phantom import make_phantom

engine = Engine.load(sys.argv[1], device="cpu")
phantom = make_phantom(2, (40, 64, 112), (2.0, 2.0, 2.0), "abdomen", "portal_venous",
                       (20.0, 40.0, 0.0))
oz, oy, ox = phantom.origin_mm
volume = CTVolume(phantom.ct, (2.0, 2.0, 2.0), (ox, oy, oz), tuple(np.eye(3).ravel()), "p")
encoded = engine.encode(volume)
left, right = (organ_mask(phantom.labels, f"{side} kidney") for side in ("left", "right"))
for name, own, other in (("left kidney", left, right), ("right kidney", right, left)):
    probability, region = encoded.location_probability(name), encoded.location_region(name)
    print(f"{name}: map in own kidney {probability[own].mean():.3f} (>0.3), region covers "
          f"{region[own].mean():.2f} of it (>0.5) and {int(region[other].sum())} voxels of the other (0)")
spleen, liver = organ_mask(phantom.labels, "spleen"), organ_mask(phantom.labels, "right liver lobe")
p = encoded.location_probability("spleen")
print(f"spleen ratio {p[spleen].mean() / max(p[liver].mean(), 1e-9):.2f} (>5)")
PY
cat "$out/left_right.txt"
"$python" "$here/scripts/score_sample_ct.py" --weights "$weights" > "$out/sample_white.txt"
sample_scanner="$here/runs/sample_scanner"  # the sample redrawn with the scan's noise (made once)
[[ -d "$sample_scanner" ]] || "$python" "$here/scripts/make_sample_ct.py" --lesion-noise scanner \
    --out "$sample_scanner"
"$python" "$here/scripts/score_sample_ct.py" --weights "$weights" --sample-dir "$sample_scanner" \
    > "$out/sample_scanner.txt"
"$malenia" eval --lesion-noise scanner --weights "$weights" --out "$out/synthetic_scanner" \
    --n-per-category 20 --no-overlays --device cpu
"$python" "$here/scripts/check_bundle_rule.py" "$out" --rule "${RULE:-real-first-27f}" \
    | tee "$out/rule.txt" || true
