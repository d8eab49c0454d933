"""Run the engine on the real CT cases in ../shared/data/real_ct and report DSC per case.

    python scripts/eval_real_ct.py [--weights W] [--out docs/eval/real_ct.json]

No tuning on these cases: the lung CT is queried with the lung-cancer preset as it is, and
the soft-tissue sarcoma crops (an extremity tumour type the model never saw, at a site our
location vocabulary does not have) with one description fixed before looking at results.
The bundled sample CT (real anatomy, two synthetic lesions; Resources/SampleData/SOURCE.md)
is queried with the presets of its lesions, each scored against its own instance: the only
case here where the organ a description names is real anatomy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "real_ct"
SAMPLE = REPO / "Resources" / "SampleData"
SARCOMA_DESCRIPTION = {
    "shape": "irregular",
    "density": "isodense",
    "density_variation": "heterogeneous",
    "surface": "ill-defined margin",
    "enhancement": "contrast-enhanced CT",
}
CASES = [
    (
        "lung2 (pyradiomics)",
        "pyradiomics_lung/lung2_image.nrrd",
        "pyradiomics_lung/lung2_label.nrrd",
        "lung cancer",
    )
] + [
    (
        f"{case} (IBSI soft-tissue sarcoma)",
        f"sts_ct/{case}/CT_image.nii.gz",
        f"sts_ct/{case}/CT_mask.nii.gz",
        SARCOMA_DESCRIPTION,
    )
    for case in ("STS_002", "STS_003", "STS_006", "STS_008")
]
# (name, image, instance mask, instance id, preset) of the sample CT's synthetic lesions
SAMPLE_CASES = [
    ("sample CT, renal cyst (unseen)", "sample_ct.nii.gz", "sample_ct_lesions.nii.gz", 1, "renal cyst"),
    ("sample CT, liver cancer (seen)", "sample_ct.nii.gz", "sample_ct_lesions.nii.gz", 2, "liver cancer"),
]  # fmt: skip


def _cases():
    """(name, image path, truth mask, query) of every case."""
    for name, image, mask, query in CASES:
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / mask))) > 0
        yield name, DATA / image, truth, query
    for name, image, mask, instance, query in SAMPLE_CASES:
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / mask))) == instance
        yield name, SAMPLE / image, truth, query


def main() -> None:
    from malenia.evaluation import dice
    from malenia.evaluation.run import grounding_settings
    from malenia.inference import Engine
    from malenia.io import read_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "eval" / "real_ct.json")
    parser.add_argument(
        "--threshold", type=float, default=None, help="default: the model's calibrated one"
    )
    args = parser.parse_args()
    engine = Engine.load(args.weights, "auto")
    rows = []
    for name, image, truth, query in _cases():
        volume = read_volume(image)
        result = engine.encode(volume).segment(query, args.threshold)
        threshold = result.threshold
        score = dice(result.labelmap > 0, truth)
        rows.append(
            {
                "case": name,
                "query": query,
                "dsc": round(score, 4),
                "predicted_ml": round(
                    float((result.labelmap > 0).sum() * np.prod(volume.spacing) / 1000), 2
                ),
                "truth_ml": round(float(truth.sum() * np.prod(volume.spacing) / 1000), 2),
                "lesions": len(result.lesions),
                "grounded_in": result.grounded_in,
                "grounding_warning": result.grounding_warning,
            }
        )
        print(
            f"{name:40s} DSC {score:.3f}  ({rows[-1]['predicted_ml']} ml predicted, {rows[-1]['truth_ml']} ml true)",
            flush=True,
        )
        engine._cache.clear()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": engine.model_id,
                "threshold": threshold,
                "grounding": grounding_settings(),
                "cases": rows,
            },
            indent=1,
        ),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
