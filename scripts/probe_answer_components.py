"""Where the lesions of grounded answers lie, on *training* scans only: each lesion of the
answer with its volume, the share of it inside the true lesion, its density against its
organ's (smoothed HU medians) and its mean probability. It tells which run-time rule could
drop the false positives of an answer, and what the same rule would cost the true lesions.

Cases: the shipped sample CT's two presets, the "liver cancer" preset on the two HCC
training cases, and N lesions drawn into the training organs (``drawn_organ_lesions``, the
cases ``malenia calibrate --organ-lesions`` reads). No validation case is read.

    python scripts/probe_answer_components.py [--weights W] [--drawn 9]

Needs ../shared/data/real_ct. About a minute per case on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))


def training_cases(n_drawn: int):
    """(name, CTVolume, query, truth on the volume's grid) of the training scans."""
    import SimpleITK as sitk
    from malenia.data.drawn_lesions import drawn_organ_lesions
    from malenia.data.real_ct import hcc_training_tumours
    from malenia.evaluation.real import SAMPLE_LESIONS
    from malenia.io import read_volume
    from malenia.paths import resource

    sample = resource("SampleData", "sample_ct.nii.gz").parent
    lesions = sitk.GetArrayFromImage(sitk.ReadImage(str(sample / "sample_ct_lesions.nii.gz")))
    volume = read_volume(sample / "sample_ct.nii.gz")
    for preset, instance in SAMPLE_LESIONS:
        yield f"sample CT {preset}", volume, preset, lesions == instance
    for case, volume, tumour in hcc_training_tumours():
        yield case, volume, "liver cancer", tumour
    yield from drawn_organ_lesions(n_drawn)


def describe(encoded, result, truth: np.ndarray) -> list[str]:
    """One line per lesion of ``result``: volume, share in ``truth``, density against the
    organ the answer is grounded in, mean probability."""
    from malenia.inference.grounding import LOCATION_THRESHOLD
    from malenia.inference.lesion_rules import SMOOTHING_VOXELS
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(encoded.hu.astype(np.float32), SMOOTHING_VOXELS)
    organ = (
        encoded.location_probability(result.grounded_in) > LOCATION_THRESHOLD
        if result.grounded_in
        else np.zeros(smooth.shape, bool)
    )
    organ_hu = float(np.median(smooth[organ])) if organ.any() else float("nan")
    labelmap = result.labelmap
    lines = []
    for lesion in result.lesions:
        model_voxels = result.labels_model == lesion.index
        input_voxels = labelmap == lesion.index
        share = float(truth[input_voxels].mean()) if input_voxels.any() else 0.0
        lesion_hu = float(np.median(smooth[model_voxels]))
        lines.append(
            f"  {lesion.volume_ml:7.1f} ml  in truth {share:4.2f}  {lesion_hu:5.0f} HU "
            f"({lesion_hu - organ_hu:+4.0f} against the organ)  "
            f"p {float(result.probability[model_voxels].mean()):.2f}"
        )
    return lines


def main() -> None:
    from malenia.evaluation.metrics import dice
    from malenia.inference import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--drawn", type=int, default=9, help="lesions drawn into organs")
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    for name, volume, query, truth in training_cases(args.drawn):
        encoded = engine.encode(volume)
        result = encoded.segment(query)
        print(f"{name} ({query!r}, grounded in {result.grounded_in}): "
              f"Dice {dice(result.labelmap > 0, truth):.3f}", flush=True)  # fmt: skip
        print("\n".join(describe(encoded, result, truth)), flush=True)
        engine._cache.clear()


if __name__ == "__main__":
    main()
