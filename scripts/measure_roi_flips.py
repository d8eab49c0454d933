"""Measure test-time flips for nodule boxes on LIDC nodules of the *training* patients (never
the validation fifth): the engine's answer from the box as drawn, against the answer from the
mean probability of the box and its left-right and front-back mirror images (three encodings
of a small zoomed ROI, about 1 s each on 2 CPU cores).

    python scripts/measure_roi_flips.py [--n 120] [--seed 1] [--weights W]

Prints mean Dice, false-positive volume and how many answers stay within their nodule's
volume for both. Needs ../shared/data/real_ct.
"""

from __future__ import annotations

import numpy as np
from nodule_box_measurements import parse_args, print_summary, training_nodules

MIRRORS = (None, 2, 1)  # as drawn; x (left-right); y (front-back), as array axes (z, y, x)


def main() -> None:
    from dataclasses import replace

    from malenia.data.real_ct import nodule_description
    from malenia.evaluation.real import nodule_case, score
    from malenia.inference import Engine

    args = parse_args(__doc__)

    engine = Engine.load(args.weights, device="cpu")
    rows = []
    for nodule in training_nodules(args.n, args.seed):
        description = nodule_description(nodule)
        maps = []
        for axis in MIRRORS:
            mirrored = (
                nodule if axis is None else replace(nodule, hu=np.flip(nodule.hu, axis).copy())
            )
            volume, roi = nodule_case(mirrored)
            encoded = engine.encode(volume, roi=roi)
            probability = encoded.probability(description)
            maps.append(probability if axis is None else np.flip(probability, axis))
            if axis is None:
                first, answer = encoded, encoded.segment(description)
        mean = np.mean(maps, axis=0).astype(np.float32)
        flipped = first._result(mean, answer.threshold, description, "prompt", answer.query,
                                answer.ranking, answer.min_volume_ml)  # fmt: skip
        spacing = nodule.spacing_zyx
        rows.append({
            "as drawn (engine)": score(answer.labelmap > 0, nodule.mask, spacing),
            "mean of three mirror images": score(flipped.labelmap > 0, nodule.mask, spacing),
        })  # fmt: skip
        engine._cache.clear()
    print(f"{len(rows)} LIDC training nodules (seed {args.seed})")
    print_summary(rows, list(rows[0]))


if __name__ == "__main__":
    main()
