"""Build Resources/SampleData/: the TotalSegmentator example CT (real anatomy, Apache-2.0)
with two synthetic lesions rendered into it by malenia.synth from real attribute records.

    python scripts/make_sample_ct.py [--lesion-noise scanner --out DIR]

The bundled sample draws its lesions with fresh white noise (``--lesion-noise white``, the
renderer as it was when the sample was made); ``scanner`` draws the same lesions keeping the
scan's own noise, as real lesions do: the honest version of the demo check
(``scripts/score_sample_ct.py --sample-dir DIR``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from malenia.attributes.presets import get_preset
from malenia.synth.lesions import LesionRecord, render_lesions
from malenia.synth.real_ct import labels_from_totalseg

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "real_ct" / "totalseg_example"
OUT = REPO / "Resources" / "SampleData"
LESIONS = ("renal cyst", "liver cancer")  # one unseen and one seen category


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesion-noise", choices=("white", "scanner"), default="white")
    parser.add_argument("--out", type=Path, default=OUT, help="default: Resources/SampleData")
    args = parser.parse_args()
    out = args.out
    image = sitk.ReadImage(str(SOURCE / "example_ct.nii.gz"))
    organs = sitk.GetArrayFromImage(
        sitk.ReadImage(str(SOURCE / "example_seg_fast_force_split.nii.gz"))
    )
    labels = labels_from_totalseg(organs, image)
    ct = sitk.GetArrayFromImage(image).astype(np.float32)
    records = []
    for category in LESIONS:
        preset = get_preset(category)
        size = (26.0, 30.0) if category == "renal cyst" else (40.0, 45.0)
        records.append(LesionRecord(category, preset.description, preset.name, size))
    spacing_zyx = tuple(reversed(image.GetSpacing()))
    rendered_ct, instances, done = render_lesions(
        ct, labels, records, np.random.default_rng(4), spacing_zyx,
        keep_scanner_noise=args.lesion_noise == "scanner",
    )  # fmt: skip
    assert [r.category for r in done] == list(LESIONS), "a sample lesion could not be placed"
    out.mkdir(parents=True, exist_ok=True)
    out_ct = sitk.GetImageFromArray(np.round(rendered_ct).astype(np.int16))
    out_ct.CopyInformation(image)
    sitk.WriteImage(out_ct, str(out / "sample_ct.nii.gz"), useCompression=True)
    out_mask = sitk.GetImageFromArray(instances.astype(np.uint8))
    out_mask.CopyInformation(image)
    sitk.WriteImage(out_mask, str(out / "sample_ct_lesions.nii.gz"), useCompression=True)
    info = {
        "lesion_noise": args.lesion_noise,
        "lesions": [
            {
                "instance": r.rendered["instance"],
                "category": r.category,
                "attributes": r.description.to_dict(),
                **r.rendered,
            }
            for r in done
        ],
        "sha256": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (out / "sample_ct.nii.gz", out / "sample_ct_lesions.nii.gz")
        },
    }
    (out / "sample_ct.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
