"""What ``lesion_rules.keep_density`` would do to grounded organ answers, on *training* scans
only: each answer's Dice with its voxels kept where they are at least C HU darker
(hypodense descriptions) or brighter (hyperdense) than their organ map's median, and that
median itself (which says whether the map is the organ or holds its surroundings).

Cases: those of ``scripts/probe_answer_components.py`` (the shipped sample CT's presets, the
HCC training tumours, N lesions drawn into the training organs). No validation case is read.

    python scripts/probe_density_rule.py [--weights W] [--drawn 12]

Needs ../shared/data/real_ct. About a minute per case on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CONTRASTS_HU = (0.0, 5.0, 10.0, 20.0)


def main() -> None:
    from malenia.evaluation.metrics import dice
    from malenia.inference import Engine
    from malenia.inference.grounding import LOCATION_THRESHOLD
    from malenia.inference.lesion_rules import DENSITY_SIGNS, SMOOTHING_VOXELS, keep_density
    from probe_answer_components import training_cases
    from scipy import ndimage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--drawn", type=int, default=12, help="lesions drawn into organs")
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    scores: dict[float | None, list[float]] = {c: [] for c in (None, *CONTRASTS_HU)}
    for name, volume, query, truth in training_cases(args.drawn):
        encoded = engine.encode(volume)
        encoded.rules.organ_density_contrast_hu = None  # the answer as the card gives it otherwise
        result = encoded.segment(query)
        density = result.description.density if result.description else None
        if not result.grounded_in or density not in DENSITY_SIGNS:
            print(f"{name}: not grounded or no density ({result.grounded_in}, {density})")
            engine._cache.clear()
            continue
        organ = encoded.location_probability(result.grounded_in) > LOCATION_THRESHOLD
        smooth = ndimage.gaussian_filter(encoded.hu.astype(np.float32), SMOOTHING_VOXELS)
        line = [f"{name[:44]:44s} {density:10s} organ median {np.median(smooth[organ]):5.0f} HU"]
        for contrast in scores:
            answer = result
            if contrast is not None:
                kept = keep_density(result.probability, encoded.hu, organ, density, contrast)
                answer = encoded._result(
                    kept, result.threshold, result.description, "prompt", result.query,
                    result.ranking, result.min_volume_ml,
                    encoded._organ_envelope(result.grounded_in),
                )  # fmt: skip
            value = dice(answer.labelmap > 0, truth)
            scores[contrast].append(value)
            line.append(f"{'off' if contrast is None else contrast}: {value:.3f}")
        print("  ".join(line), flush=True)
        engine._cache.clear()
    for contrast, values in scores.items():
        label = "off" if contrast is None else f"{contrast} HU"
        print(f"mean Dice, {label}: {np.mean(values):.4f} over {len(values)} answers")


if __name__ == "__main__":
    main()
