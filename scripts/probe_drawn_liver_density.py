"""The drawn liver lesions of ``malenia calibrate --organ-density``'s set, on *training* scans
only: each lesion's density against the liver map's median, and the "liver cancer" answer's
Dice with ``lesion_rules.keep_density`` off and at a few contrasts (on the described side, or
either side with ``--sides both``). It tells why a calibration kept the rule off or on.

    python scripts/probe_drawn_liver_density.py [--weights W] [--drawn 24] [--sides both]

Needs ../shared/data/real_ct. About a minute per liver lesion on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))

CONTRASTS_HU = (None, 5.0, 10.0)


def main() -> None:
    from malenia.data.drawn_lesions import drawn_organ_lesions
    from malenia.evaluation.metrics import dice
    from malenia.inference import Engine
    from malenia.inference.grounding import LOCATION_THRESHOLD
    from malenia.inference.lesion_rules import DENSITY_SIDES, SMOOTHING_VOXELS
    from scipy import ndimage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--drawn", type=int, default=24, help="the calibration's lesion count")
    parser.add_argument("--sides", choices=DENSITY_SIDES, default="described")
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    for name, volume, category, truth in drawn_organ_lesions(args.drawn):
        if "liver" not in category:
            continue
        encoded = engine.encode(volume)
        encoded.rules.organ_density_sides = args.sides
        scores = []
        for contrast in CONTRASTS_HU:
            encoded.rules.organ_density_contrast_hu = contrast
            answer = encoded.segment(category)
            scores.append(f"{'off' if contrast is None else contrast}: "
                          f"{dice(answer.labelmap > 0, truth):.3f}")  # fmt: skip
        organ = encoded.location_probability(answer.grounded_in) > LOCATION_THRESHOLD
        smooth = ndimage.gaussian_filter(encoded.hu.astype(np.float32), SMOOTHING_VOXELS)
        lesion_hu = float(np.median(np.asarray(volume.array)[truth]))
        print(f"{name:40s} lesion {lesion_hu:6.0f} HU, liver map median "
              f"{np.median(smooth[organ]):5.0f} HU, {int(truth.sum())} voxels  "
              + "  ".join(scores), flush=True)  # fmt: skip
        engine._cache.clear()


if __name__ == "__main__":
    main()
