"""Measure the nodule-box rule on LIDC nodules of the *training* patients (never the
validation fifth): a zoomed ROI's answer with every lesion, with the largest one, and with
the one nearest the box's centre (what the engine answers, ``EncodedVolume._keep_central``).

    python scripts/measure_nodule_box_rule.py [--n 120] [--seed 1] [--weights W]

Prints mean Dice, false-positive volume and how many answers stay within their nodule's
volume for each of the three. Needs ../shared/data/real_ct.
"""

from __future__ import annotations

from nodule_box_measurements import parse_args, print_summary, training_nodules


def main() -> None:
    from malenia.data.real_ct import nodule_description
    from malenia.evaluation.real import nodule_case, score
    from malenia.inference import Engine
    from malenia.inference.lesion_maps import components_in_box

    args = parse_args(__doc__)

    engine = Engine.load(args.weights, device="cpu")
    rows = []
    for nodule in training_nodules(args.n, args.seed):
        volume, roi = nodule_case(nodule)
        encoded = engine.encode(volume, roi=roi)
        description = nodule_description(nodule)
        answer = encoded.segment(description)
        minimum = max(1, int(round(answer.min_volume_ml / encoded._model_voxel_ml)))
        probability = encoded.probability(description)
        every, boxes = components_in_box(probability, answer.threshold, minimum)
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
    print_summary(rows, ("every lesion", "largest lesion", "nearest the centre (engine)"))


if __name__ == "__main__":
    main()
