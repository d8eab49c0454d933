"""Measure the nodule-box rule on LIDC nodules of the *training* patients (never the
validation fifth): a zoomed ROI's answer with every lesion, with the largest one, and with
the one nearest the box's centre (what the engine answers, ``EncodedVolume._keep_central``).

    python scripts/measure_nodule_box_rule.py [--n 120] [--seed 1] [--weights W]

Prints mean Dice, false-positive volume and how many answers stay within their nodule's
volume for each of the three. Needs ../shared/data/real_ct.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))


def main() -> None:
    from malenia.data.real_ct import load_lidc, nodule_description
    from malenia.evaluation.real import nodule_case, score
    from malenia.inference import Engine
    from malenia.inference.encoded import _components_in_box

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    nodules = load_lidc("train")
    chosen = sorted(np.random.default_rng(args.seed).choice(len(nodules), args.n, replace=False))
    rows = []
    for index in chosen:
        nodule = nodules[index]
        volume, roi = nodule_case(nodule)
        encoded = engine.encode(volume, roi=roi)
        description = nodule_description(nodule)
        answer = encoded.segment(description)
        minimum = max(1, int(round(answer.min_volume_ml / encoded._model_voxel_ml)))
        probability = encoded.probability(description)
        every, boxes = _components_in_box(probability, answer.threshold, minimum)
        every_in = encoded.to_input_labelmap(probability, every, answer.threshold)
        spacing = nodule.spacing_zyx
        rows.append({
            "every lesion": score(every_in > 0, nodule.mask, spacing),
            "largest lesion": score(every_in == 1, nodule.mask, spacing),
            "nearest the centre (engine)": score(answer.labelmap > 0, nodule.mask, spacing),
            "several": len(boxes) > 1,
        })  # fmt: skip
        engine._cache.clear()
    print(f"{len(rows)} LIDC training nodules (seed {args.seed}); "
          f"{sum(r['several'] for r in rows)} answers held several lesions")  # fmt: skip
    for name in ("every lesion", "largest lesion", "nearest the centre (engine)"):
        dice = np.mean([r[name]["dice"] for r in rows])
        fp = sum(r[name]["false_positive_ml"] for r in rows)
        within = sum(r[name]["false_positive_ml"] <= r[name]["truth_ml"] for r in rows)
        print(f"{name:28s} Dice {dice:.4f}  FP {fp:6.2f} ml  within the nodule's volume "
              f"{within}/{len(rows)}")  # fmt: skip


if __name__ == "__main__":
    main()
