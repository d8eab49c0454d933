"""`malenia calibrate`: choose the default probability threshold of a set of weights.

A model trained with many empty-target prompts is not calibrated at 0.5: its masks are
too small there. As nnU-Net picks its post-processing on validation folds, we pick the
threshold that maximises mean Dice on a validation set: the test-set generator with its own
seed (``VALIDATION_SET_SEED``), the training (seen) categories only, distractors drawn from
those categories only. The test set and the unseen categories are never looked at. The
result goes into the model card (``postprocess.threshold``), which the engine uses whenever a
caller does not pass a threshold. The run-time rules it can add (``--organ-lesions``,
``--lung-keep``, ``--organ-fat``, ``--organ-density``, ``--organ-growth``) are chosen on real training scans:
``calibrate_rules``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from malenia.evaluation.metrics import dice
from malenia.evaluation.testset import held_out_cases

TOLERANCE = 0.01
PHANTOM_CHECK_N = 40  # phantoms per seen category that check the run-time rules (calibrate_rules)
# How a tie (thresholds within TOLERANCE of the best phantom Dice) is broken. "nearest-0.5":
# every bundle so far. "lowest" (stage 32 on, configs/tiny_cpu_real28.json): real lesions get
# lower probabilities than phantom ones (scripts/measure_noise_cue.py), so among thresholds
# equally good on phantoms the lowest suits real anatomy.
TIE_BREAKS = ("nearest-0.5", "lowest")
THRESHOLDS: tuple[float, ...] = (0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose the default threshold of a model on the validation set (seen categories)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--out", type=Path, required=True, help="calibration JSON to write")
    parser.add_argument("--n-per-category", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--roi",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate the threshold of small-ROI (zoomed) queries on N nodules of the "
        "LIDC training patients (needs ../shared/data/real_ct; never the validation fifth)",
    )
    parser.add_argument(
        "--lung",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate the threshold of whole-scan answers in the lung on N training scans "
        "with a pasted LIDC training nodule (needs ../shared/data/real_ct)",
    )
    parser.add_argument(
        "--unlocated",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate the threshold of whole-scan answers without a location on N masses "
        "drawn into the training scans' skeletal muscle (needs ../shared/data/real_ct)",
    )
    parser.add_argument(
        "--organ-lesions",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate where grounded answers cut the prompt-free lesion map, on N "
        "lesions drawn into the organs of the real training scans (needs ../shared/data/real_ct)",
    )
    parser.add_argument(
        "--lung-keep",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate which lesions a whole-scan lung answer keeps (a share of the "
        "largest one's volume), on N training scans with a pasted training nodule",
    )
    parser.add_argument(
        "--organ-fat",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate whether answers naming a solid organ drop lesions of fat density, "
        "on N lesions drawn into the training organs",
    )
    parser.add_argument(
        "--organ-density",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate how much darker (hypodense) or brighter (hyperdense) than the "
        "liver a liver answer's voxels must be, on N lesions drawn into the training organs "
        "and the real tumours of the HCC training scans",
    )
    parser.add_argument(
        "--organ-growth",
        type=int,
        default=0,
        metavar="N",
        help="also calibrate how far grounded answers in abdominal organs grow to their "
        "lesions' density edge, on N lesions drawn into the training organs",
    )
    parser.add_argument(
        "--phantom-check",
        type=int,
        default=PHANTOM_CHECK_N,
        metavar="N",
        help="phantoms per seen category that check the --organ-lesions / --lung-keep / "
        "--organ-fat / --organ-density / --organ-growth rules: together they may cost them no more than 0.01",
    )
    parser.add_argument(
        "--from",
        dest="start_from",
        type=Path,
        default=None,
        metavar="JSON",
        help="keep an earlier calibration of the same weights (its phantom threshold) and "
        "add only the --roi / --lung / --unlocated / --organ-lesions / --lung-keep / --organ-fat / "
        "--organ-density / --organ-growth parts",
    )
    parser.add_argument(
        "--tie-break",
        choices=TIE_BREAKS,
        default="nearest-0.5",
        help="among thresholds within 0.01 of the best phantom Dice, take the one nearest 0.5 "
        "(default) or the lowest; the small-ROI and lung thresholds keep nearest-0.5",
    )
    parser.set_defaults(handler=_run)


def calibrate(
    engine,
    n_per_category: int = 20,
    thresholds: tuple[float, ...] = THRESHOLDS,
    shape=(64, 64, 64),
    spacing_mm: float = 2.0,
    log=None,
    tie_break: str = "nearest-0.5",
) -> dict:
    """Mean Dice per threshold (macro over the seen categories) and the chosen threshold."""
    from malenia.evaluation.run import _volume
    from malenia.synth.split import SEEN_CATEGORIES, VALIDATION_SET_SEED

    spacing = (float(spacing_mm),) * 3
    scores: dict[str, dict[float, list[float]]] = {}
    started = time.time()
    cases = held_out_cases(
        list(SEEN_CATEGORIES), n_per_category, tuple(shape), spacing,
        seed=VALIDATION_SET_SEED, distractor_categories=tuple(SEEN_CATEGORIES),
    )  # fmt: skip
    for number, case in enumerate(cases, 1):
        probability = engine.encode(_volume(case)).probability(case.prompt)
        per_threshold = scores.setdefault(case.category, {t: [] for t in thresholds})
        for threshold in thresholds:
            per_threshold[threshold].append(dice(probability > threshold, case.truth))
        if log:
            log(f"[{number}/{n_per_category * len(SEEN_CATEGORIES)}] {case.name} "
                f"{time.time() - started:.0f} s")  # fmt: skip
    mean_dice = {
        t: float(np.mean([np.mean(per[t]) for per in scores.values()])) for t in thresholds
    }
    best, top = _choose(mean_dice, tie_break)
    which = "nearest 0.5" if tie_break == "nearest-0.5" else "lowest"
    return {
        "threshold": best,
        "rule": f"the {which} threshold whose mean Dice is within {TOLERANCE} of the best",
        "validation_dice": round(mean_dice[best], 4),
        "best_validation_dice": round(top, 4),
        "dice_at_0.5": round(mean_dice[0.5], 4) if 0.5 in mean_dice else None,
        "mean_dice_by_threshold": {str(t): round(v, 4) for t, v in mean_dice.items()},
        "model": engine.model_id,
        "validation_set": {
            "seed": VALIDATION_SET_SEED,
            "categories": list(SEEN_CATEGORIES),
            "n_per_category": n_per_category,
            "shape_zyx": list(shape),
            "spacing_mm": list(spacing),
            "rule": "test-set generator with its own seed; seen categories and seen "
            "distractors only; macro mean Dice of the true prompt over categories",
        },
    }


def _choose(
    mean_dice: dict[float, float], tie_break: str = "nearest-0.5", centre: float = 0.5
) -> tuple[float, float]:
    """(chosen threshold, best Dice). Among thresholds within TOLERANCE of the best Dice,
    the one nearest ``centre``, 0.5 (a lower cut also admits more false positives off the
    training distribution) or, with ``tie_break="lowest"``, the lowest (see TIE_BREAKS)."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, not {tie_break!r}")
    top = max(mean_dice.values())
    near = [t for t, v in mean_dice.items() if v >= top - TOLERANCE]
    if tie_break == "lowest":
        return min(near), top
    return min(near, key=lambda t: (abs(t - centre), t)), top


def _recut_mean_dice(engine, cases, count: int, thresholds, log=None, tag="") -> dict:
    """Mean Dice per threshold over the ``count`` ``cases`` of (name, volume, roi, query,
    truth), read one at a time: each is encoded once and its answer re-cut at every
    threshold (numpy only)."""
    scores: dict[float, list[float]] = {t: [] for t in thresholds}
    for number, (name, volume, roi, query, truth) in enumerate(cases, 1):
        encoded = engine.encode(volume, roi=roi)
        result = encoded.segment(query, 0.5)
        for threshold in thresholds:
            scores[threshold].append(dice(encoded.recut(result, threshold).labelmap > 0, truth))
        engine._cache.clear()
        if log:
            log(f"[{tag} {number}/{count}] {name}")
    return {t: float(np.mean(v)) for t, v in scores.items()}


def _chosen(prefix: str, mean_dice: dict[float, float]) -> dict:
    """The ``prefix``-named figures of one calibration: the threshold ``_choose`` picks, its
    Dice, the best Dice, the Dice at 0.5 and every threshold's mean."""
    best, top = _choose(mean_dice)
    return {
        f"{prefix}_threshold": best,
        f"{prefix}_dice": round(mean_dice[best], 4),
        f"{prefix}_best_dice": round(top, 4),
        f"{prefix}_dice_at_0.5": round(mean_dice[0.5], 4) if 0.5 in mean_dice else None,
        f"{prefix}_mean_dice_by_threshold": {str(t): round(v, 4) for t, v in mean_dice.items()},
    }


def calibrate_roi(engine, n_nodules: int = 60, thresholds=THRESHOLDS, log=None) -> dict:
    """The default threshold of small-ROI queries (encoded on a finer grid): mean Dice per
    threshold over ``n_nodules`` LIDC nodules of the *training* patients (a fixed random
    subset), each queried as an ROI of its crop with its ratings' description."""
    from malenia.data.real_ct import load_lidc, nodule_description
    from malenia.evaluation.real import nodule_case

    nodules = load_lidc("train")
    chosen = np.random.default_rng(0).choice(len(nodules), min(n_nodules, len(nodules)), False)
    cases = (
        (nodule.uid, *nodule_case(nodule), nodule_description(nodule), nodule.mask)
        for nodule in (nodules[index] for index in sorted(chosen))
    )
    mean_dice = _recut_mean_dice(engine, cases, len(chosen), thresholds, log, "roi")
    return _chosen("roi", mean_dice) | {
        "roi_set": {
            "source": "LIDC-IDRI nodule crops of the training patients (malenia.data.real_ct."
            "lidc_split), fixed random subset (seed 0); the validation fifth is never read",
            "n": len(chosen),
            "query": "ROI of the crop's extent, description from the readers' ratings",
        },
    }


def calibrate_lung(engine, n_masses: int = 12, thresholds=THRESHOLDS, log=None) -> dict:
    """The default threshold of whole-scan answers naming a lung location. A mass in aerated
    lung stands out sharply, so its map is surer than an abdominal one and the vessels and
    fissures beside it reach middling probabilities; the phantom-calibrated threshold keeps
    those. Mean Dice per threshold of the "lung cancer" preset over ``n_masses`` training
    scans with an enlarged solid LIDC *training* nodule pasted into their real lungs
    (``real_mix.pasted_lung_masses``; no validation case)."""
    from malenia.data.nodule_paste import pasted_lung_masses

    cases = (
        (name, volume, None, "lung cancer", mass)
        for name, volume, mass in pasted_lung_masses(n_masses)
    )
    mean_dice = _recut_mean_dice(engine, cases, n_masses, thresholds, log, "lung")
    return _chosen("lung", mean_dice) | {
        "lung_set": {
            "source": "the real training scans (malenia.data.real_ct.load_training_scans) with a "
            "solid LIDC nodule of the training patients enlarged to 20-55 mm pasted into their "
            "lungs (malenia.data.real_mix.pasted_lung_masses, seed 7); no validation case",
            "n": n_masses,
            "query": "lung cancer",
        },
    }


def calibrate_unlocated(engine, n_masses: int = 12, thresholds=THRESHOLDS, log=None) -> dict:
    """The default threshold of whole-scan answers whose description names no location (a
    mass in a limb or the trunk wall: no location of the vocabulary names muscle). Such an
    answer is the prompt branch alone, which the phantom calibration sets for organ answers.
    Mean Dice per threshold over ``n_masses`` masses drawn into the skeletal muscle of the
    training scans, each asked for with its own attributes (``drawn_muscle_masses``; no
    validation case)."""
    from malenia.data.drawn_lesions import drawn_muscle_masses

    cases = (
        (name, volume, None, description, mass)
        for name, volume, description, mass in drawn_muscle_masses(n_masses)
    )
    mean_dice = _recut_mean_dice(engine, cases, n_masses, thresholds, log, "unlocated")
    return _chosen("unlocated", mean_dice) | {
        "unlocated_set": {
            "source": "masses drawn into the labelled skeletal muscle of the real training scans "
            "as training draws them (malenia.data.drawn_lesions.drawn_muscle_masses, seed 13); "
            "no validation case",
            "n": n_masses,
            "query": "each mass's attributes, no location",
        },
    }


def _run(args: argparse.Namespace) -> int:
    from malenia.inference import Engine

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # The run-time rules asked for, by the prefix of their calibration keys.
    asked = {"organ_lesion": args.organ_lesions, "lung_keep": args.lung_keep,
             "organ_fat": args.organ_fat, "organ_density": args.organ_density,
             "organ_growth": args.organ_growth}  # fmt: skip
    if any((args.roi, args.lung, args.unlocated, *asked.values())):  # before minutes of work
        from malenia.data.real_ct import require_real_ct_root

        require_real_ct_root()
    engine = Engine.load(args.weights, args.device)
    if args.start_from:  # an earlier calibration of these weights: add only what is asked
        result = json.loads(args.start_from.read_text(encoding="utf-8"))
        if result.get("model") != engine.model_id:
            print(f"{args.start_from} calibrated {result.get('model')}, not {engine.model_id}: "
                  "run the whole calibration for these weights", file=sys.stderr)  # fmt: skip
            return 2
    else:
        result = calibrate(engine, args.n_per_category, log=log, tie_break=args.tie_break)
    if args.roi:
        result |= calibrate_roi(engine, args.roi, log=log)
    if args.lung:
        result |= calibrate_lung(engine, args.lung, log=log)
    if args.unlocated:
        result |= calibrate_unlocated(engine, args.unlocated, log=log)
    from malenia.evaluation import calibrate_rules as rules

    check = {"log": log, "phantom_n": args.phantom_check}
    # Of the phantom check's TOLERANCE, shared by the rules in turn: what the rules kept from
    # an earlier calibration (--from) spent is spent.
    spent = sum(result.get(f"{rule}_phantom_cost") or 0.0 for rule in asked if not asked[rule])
    if args.organ_lesions:
        result |= rules.calibrate_organ_lesions(
            engine, args.organ_lesions, result["threshold"], budget=TOLERANCE - spent, **check
        )
        spent += result["organ_lesion_phantom_cost"]
    if args.lung_keep:
        lung_threshold = result.get("lung_threshold") or result["threshold"]
        result |= rules.calibrate_lung_keep(
            engine, args.lung_keep, lung_threshold, budget=TOLERANCE - spent, **check
        )
        spent += result["lung_keep_phantom_cost"]
    if args.organ_fat:
        result |= rules.calibrate_organ_fat(
            engine, args.organ_fat, result, budget=TOLERANCE - spent, **check
        )
        spent += result["organ_fat_phantom_cost"]
    if args.organ_density:
        result |= rules.calibrate_organ_density(
            engine, args.organ_density, result, budget=TOLERANCE - spent, **check
        )
        spent += result["organ_density_phantom_cost"]
    if args.organ_growth:
        result |= rules.calibrate_organ_growth(
            engine, args.organ_growth, result, budget=TOLERANCE - spent, **check
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    keys = ("threshold", "validation_dice", "dice_at_0.5", "roi_threshold", "roi_dice",
            "lung_threshold", "lung_dice", "unlocated_threshold", "unlocated_dice",
            "organ_lesion_threshold", "organ_lesion_faint_only",
            "organ_lesion_dice", "lung_keep_share", "lung_keep_by", "lung_keep_dice",
            "organ_fat_hu", "organ_fat_dice", "organ_density_contrast_hu", "organ_density_dice",
            "organ_growth_mm", "organ_growth_dice")  # fmt: skip
    print(json.dumps({k: result[k] for k in keys if k in result}))
    return 0
