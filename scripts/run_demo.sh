#!/usr/bin/env bash
# Set up ./.venv, then segment the bundled sample CT from a lesion preset and print the report.
# Outputs land in ./out/: a Slicer .seg.nrrd, a labelmap, a JSON report and an overlay PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh server
mkdir -p out
sample="$(ls Resources/SampleData/*.nii.gz Resources/SampleData/*.nrrd 2>/dev/null | head -n 1 || true)"
if [ -z "$sample" ]; then
  echo "error: no sample CT in Resources/SampleData (run scripts/make_sample_ct.py)" >&2
  exit 1
fi
.venv/bin/malenia info
.venv/bin/malenia segment "$sample" --preset "${PRESET:-renal cyst}" \
  -o out/sample.seg.nrrd --labelmap out/sample_labelmap.nii.gz \
  --report out/sample_report.json --overlay out/sample_overlay.png --overwrite  # the demo's own out/
echo "Wrote out/sample.seg.nrrd, out/sample_labelmap.nii.gz, out/sample_report.json, out/sample_overlay.png"
