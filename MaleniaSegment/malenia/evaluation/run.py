"""`malenia eval`: zero-shot evaluation on the fixed-seed held-out synthetic test set.

Every case is encoded once through the same ``malenia.inference`` engine users get, and
the cached encoding answers several prompts:

- ``true``: the target lesion's own description (from its real record);
- ``control_B``: another category's description (must fail if the model reads prompts);
- ``control_C``: the target's location alone;

plus baseline A (``malenia.evaluation.baselines``, no model, given the organ labels) and, for each
``--ablation-weights NAME=PATH``, the true prompt through that model's engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from malenia.astra import ORGAN_FEATURES, ORGAN_FEATURES_HELP
from malenia.errors import MaleniaError
from malenia.evaluation.metrics import DETECTION_IOU, NSD_TOLERANCE_MM, dice, lesion_detection, nsd
from malenia.evaluation.testset import (
    DISTRACTOR_P,
    LESION_NOISE,
    SECOND_SAME_CATEGORY_P,
    HeldOutCase,
    check_categories,
    control_b_prompt,
    held_out_cases,
)

DEFAULT_SHAPE = (64, 64, 64)  # one model window at the model spacing: measures the model itself
DEFAULT_SPACING_MM = 2.0
RULES = {
    "ground_truth": "union of every lesion of the target lesion's category in the volume",
    "prompt": "the target lesion's own description, from a real Malenia record of its "
    "category (its literature preset when the category has no records)",
    "control_B": "full description of a lesion of another category in the same body region "
    "(the distractor's own when the volume has one; any region when no other category "
    "lives in the target's, as for lung cancer)",
    "control_C": "the target's location only",
    "baseline_A": "host organ from the phantom labels, HU window implied by the density "
    "attribute relative to the organ's median HU, largest connected component",
    "lesion_detection": f"26-connected predicted components; a target lesion is found and a "
    f"component is a true positive when their IoU > {DETECTION_IOU}; recall and precision are "
    "pooled over the cases of a category",
    "nsd": f"MONAI compute_surface_dice, tolerance {NSD_TOLERANCE_MM} mm, volume spacing",
    "group_means": "macro: mean of the per-category means",
}


NO_GROUNDING = "no_grounding"  # ablation row: the same weights without anatomy grounding


class EvaluationError(MaleniaError):
    """The evaluation cannot run as asked."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="zero-shot evaluation on the held-out synthetic test set",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (--real: default eval/real)"
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="the real-CT benchmark on ../shared/data/real_ct (validation cases only)",
    )
    parser.add_argument(
        "--groups",
        nargs="+",
        default=None,
        help="--real: hcc lidc lung2 sarcoma sample (default all; sample is a demo, not scored)",
    )
    parser.add_argument("--limit", type=int, default=None, help="--real: cases per group")
    parser.add_argument("--n-per-category", type=int, default=20)
    parser.add_argument("--categories", nargs="+", help="default: every preset category")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=DEFAULT_SHAPE, metavar=("Z", "Y", "X")
    )
    parser.add_argument("--spacing", type=float, default=DEFAULT_SPACING_MM, help="mm, isotropic")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="default: each model's calibrated threshold (model card, `malenia calibrate`)",
    )
    parser.add_argument(
        "--ablation-weights",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="extra models asked the true prompt on the same cases, e.g. no_cmki=W.safetensors",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--organ-features", choices=ORGAN_FEATURES, help="--real: " + ORGAN_FEATURES_HELP
    )
    parser.add_argument(
        "--lesion-noise",
        choices=LESION_NOISE,
        default="white",
        help="synthetic set: lesions drawn with fresh white noise (the published benchmark) "
        "or keeping the phantom's own noise (scanner), as real lesions keep their scan's",
    )
    parser.add_argument("--no-overlays", action="store_true", help="skip overlays.png")
    parser.set_defaults(handler=_run)


def parse_ablations(items: list[str]) -> dict[str, Path]:
    ablations = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EvaluationError(
                f"--ablation-weights expects NAME=PATH (e.g. no_cmki=runs/no_cmki.safetensors), got '{item}'."
            )
        ablations[name] = Path(path)
    return ablations


# --------------------------------------------------------------------------- one case


def _volume(case: HeldOutCase):
    from malenia.io import CTVolume

    sz, sy, sx = case.spacing_zyx
    oz, oy, ox = case.origin_mm
    return CTVolume(case.ct, (sx, sy, sz), (ox, oy, oz), tuple(np.eye(3).ravel()), case.name)


def _predict(encoded, description, threshold: float | None) -> np.ndarray:
    labelmap = encoded.segment(description, threshold).labelmap
    return labelmap > 0


def evaluate_case(
    case: HeldOutCase, engine, ablations: dict, threshold: float | None
) -> tuple[dict, dict]:
    """Metrics of one case; also the masks (for overlays)."""
    from malenia.evaluation.baselines import threshold_baseline

    truth = case.truth
    volume = _volume(case)
    started = time.time()
    encoded = engine.encode(volume)
    encode_s = time.time() - started
    predictions = {
        "true": _predict(encoded, case.prompt, threshold),
        "control_B": _predict(encoded, control_b_prompt(case), threshold),
        "control_C": _predict(encoded, case.prompt.only("location"), threshold),
        "baseline_A": threshold_baseline(case.ct, case.labels, case.prompt),
    }
    if encoded.grounded:  # same weights, same encoding: the prompt branch alone
        predictions[f"ablation_{NO_GROUNDING}"] = (
            encoded.segment(case.prompt, threshold, grounding=False).labelmap > 0
        )
    for name, ablation_engine in ablations.items():
        predictions[f"ablation_{name}"] = _predict(
            ablation_engine.encode(volume), case.prompt, threshold
        )
    row = {
        "category": case.category,
        "case": case.name,
        "lesions_in_volume": len(case.categories),
        "target_lesions": len(case.target_ids),
        "truth_ml": round(float(truth.sum() * np.prod(case.spacing_zyx) / 1000), 3),
        "encode_s": round(encode_s, 2),
    }
    for name, prediction in predictions.items():
        row[f"dice_{name}"] = round(dice(prediction, truth), 4)
        row[f"nsd_{name}"] = round(nsd(prediction, truth, case.spacing_zyx), 4)
        if name in ("true", "baseline_A"):
            detection = lesion_detection(prediction, case.instances, case.target_ids)
            row[f"found_{name}"] = detection.found
            row[f"true_components_{name}"] = detection.true_components
            row[f"components_{name}"] = detection.components
    return row, predictions


# --------------------------------------------------------------------------- summary


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def summarise(rows: list[dict], seen: set[str]) -> dict:
    """Per-category means, pooled detection, macro means for seen and unseen, targets."""
    prompts = [k[len("dice_") :] for k in rows[0] if k.startswith("dice_")]
    per_category = {}
    for category in dict.fromkeys(r["category"] for r in rows):
        subset = [r for r in rows if r["category"] == category]
        entry = {"seen": category in seen, "n": len(subset)}
        for prompt in prompts:
            entry[f"dice_{prompt}"] = _mean(r[f"dice_{prompt}"] for r in subset)
            entry[f"nsd_{prompt}"] = _mean(r[f"nsd_{prompt}"] for r in subset)
        for prompt in ("true", "baseline_A"):
            lesions = sum(r["target_lesions"] for r in subset)
            components = sum(r[f"components_{prompt}"] for r in subset)
            entry[f"recall_{prompt}"] = (
                round(sum(r[f"found_{prompt}"] for r in subset) / lesions, 4) if lesions else None
            )
            entry[f"precision_{prompt}"] = (
                round(sum(r[f"true_components_{prompt}"] for r in subset) / components, 4)
                if components
                else None
            )
        per_category[category] = entry
    metric_keys = [k for k in next(iter(per_category.values())) if k not in ("seen", "n")]
    groups = {}
    for group, members in (
        ("seen", [e for e in per_category.values() if e["seen"]]),
        ("unseen", [e for e in per_category.values() if not e["seen"]]),
        ("all", list(per_category.values())),
    ):
        if members:
            groups[group] = {"categories": len(members)} | {
                k: _mean(e[k] for e in members) for k in metric_keys
            }
    return {
        "per_category": per_category,
        "groups": groups,
        "distractor_split": distractor_split(rows, seen, prompts),
        "targets": targets(groups),
    }


def distractor_split(rows: list[dict], seen: set[str], prompts: list[str]) -> dict:
    """Mean DSC per volume, by seen/unseen and whether the volume holds a lesion of another
    category: a description earns its keep where two kinds of lesion share a volume."""
    split = {}
    for group in ("seen", "unseen"):
        for setting in ("target alone", "with distractor"):
            subset = [
                r
                for r in rows
                if (r["category"] in seen) == (group == "seen")
                and (r["lesions_in_volume"] > r["target_lesions"]) == (setting != "target alone")
            ]
            if subset:
                split[f"{group}, {setting}"] = {"volumes": len(subset)} | {
                    f"dice_{prompt}": _mean(r[f"dice_{prompt}"] for r in subset)
                    for prompt in prompts
                }
    return split


def targets(groups: dict) -> dict:
    """The issue's targets, measured (None where this run lacks the group)."""

    def get(group, key):
        return groups.get(group, {}).get(key)

    def check(value, goal):
        return None if value is None else bool(value >= goal)

    unseen, seen = get("unseen", "dice_true"), get("seen", "dice_true")
    margin_a = None if unseen is None else round(unseen - get("unseen", "dice_baseline_A"), 4)
    everything, control_b = get("all", "dice_true"), get("all", "dice_control_B")
    margin_b = None if everything is None else round(everything - control_b, 4)
    return {
        "unseen_dice_at_least_0.60": {"measured": unseen, "met": check(unseen, 0.60)},
        "seen_dice_at_least_0.80": {"measured": seen, "met": check(seen, 0.80)},
        "unseen_minus_baseline_A_at_least_0.25": {
            "measured": margin_a,
            "met": check(margin_a, 0.25),
        },
        "true_minus_control_B_at_least_0.30": {
            "measured": margin_b,
            "met": check(margin_b, 0.30),
        },
    }


def grounding_settings() -> dict:
    """The grounding rule the figures were measured with (it lives in code, not weights)."""
    from malenia.inference import grounding

    return {
        "location_threshold": grounding.LOCATION_THRESHOLD,
        "organ_margin_mm": grounding.ORGAN_MARGIN_MM,
        "lesion_threshold": grounding.LESION_THRESHOLD,
        "whole_lesion_share": grounding.WHOLE_LESION_SHARE,
    }


# --------------------------------------------------------------------------- the run


def evaluate(
    engine,
    out: Path,
    categories: list[str] | None = None,
    n_per_category: int = 20,
    shape=DEFAULT_SHAPE,
    spacing_mm: float = DEFAULT_SPACING_MM,
    threshold: float | None = None,
    ablations: dict | None = None,
    overlays: bool = True,
    log=None,
    lesion_noise: str = "white",
) -> dict:
    """Run the whole evaluation and write metrics.json, per_case.csv, summary.md,
    dsc_per_category.png (and overlays.png). ``ablations``: name -> Engine."""
    from malenia.attributes import load_presets
    from malenia.evaluation.report import write_outputs
    from malenia.synth.split import SEEN_CATEGORIES, TEST_SET_SEED

    if n_per_category < 1:
        raise EvaluationError("--n-per-category must be at least 1.")
    categories = list(categories or load_presets())
    check_categories(categories)
    ablations = ablations or {}
    spacing = (float(spacing_mm),) * 3
    out.mkdir(parents=True, exist_ok=True)
    rows, examples = [], {}
    started = time.time()
    total = len(categories) * n_per_category
    for number, case in enumerate(
        held_out_cases(
            categories, n_per_category, tuple(shape), spacing, lesion_noise=lesion_noise
        ),
        1,
    ):
        row, predictions = evaluate_case(case, engine, ablations, threshold)
        rows.append(row)
        if case.index == 0 and overlays:
            examples[case.category] = (case, predictions)
        if log:
            log(
                f"[{number}/{total}] {case.name}: DSC {row['dice_true']:.3f} "
                f"(B {row['dice_control_B']:.3f}, C {row['dice_control_C']:.3f}, "
                f"A {row['dice_baseline_A']:.3f}) {time.time() - started:.0f} s"
            )
    summary = summarise(rows, set(SEEN_CATEGORIES))
    summary["settings"] = {
        "model": engine.model_id,
        "ablations": (
            {NO_GROUNDING: f"{engine.model_id}, prompt branch only"}
            if engine.anatomy_grounding
            else {}
        )
        | {name: e.model_id for name, e in ablations.items()},
        "categories": categories,
        "n_per_category": n_per_category,
        "shape_zyx": list(shape),
        "spacing_mm": list(spacing),
        "threshold": engine.default_threshold if threshold is None else threshold,
        "lung_threshold": (engine.card.get("postprocess") or {}).get("lung_threshold")
        if threshold is None
        else threshold,
        "ablation_thresholds": {
            name: e.default_threshold if threshold is None else threshold
            for name, e in ablations.items()
        },
        "grounding": grounding_settings() if engine.anatomy_grounding else None,
        "nsd_tolerance_mm": NSD_TOLERANCE_MM,
        "test_set_seed": TEST_SET_SEED,
        "lesion_noise": lesion_noise,
        "second_same_category_p": SECOND_SAME_CATEGORY_P,
        "distractor_p": DISTRACTOR_P,
        "seconds": round(time.time() - started, 1),
        "rules": RULES,
    }
    write_outputs(out, rows, summary, examples)
    return summary


def _run(args: argparse.Namespace) -> int:
    from malenia.inference import Engine

    if args.real:
        return _run_real(args)
    if args.out is None:
        raise EvaluationError("give an output folder: malenia eval --out FOLDER")
    ablation_paths = parse_ablations(args.ablation_weights)
    engine = Engine.load(args.weights, args.device)
    ablations = {name: Engine.load(path, args.device) for name, path in ablation_paths.items()}
    summary = evaluate(
        engine,
        args.out,
        args.categories,
        args.n_per_category,
        tuple(args.shape),
        args.spacing,
        args.threshold,
        ablations,
        overlays=not args.no_overlays,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        lesion_noise=args.lesion_noise,
    )
    print((args.out / "summary.md").read_text(encoding="utf-8"))
    print(json.dumps(summary["targets"], indent=1))
    return 0


def _run_real(args: argparse.Namespace) -> int:
    from malenia.evaluation.real import DEMO_GROUPS, GROUPS, evaluate_real, real_cases
    from malenia.inference import Engine

    groups = tuple(args.groups or GROUPS + DEMO_GROUPS)
    next(iter(real_cases(groups[:1], 1)), None)  # the data is there: before loading weights
    engine = Engine.load(args.weights, args.device, args.organ_features)
    out = args.out or Path("eval") / "real"
    summary = evaluate_real(
        engine, out, groups, args.limit, args.threshold,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0 if summary["macro_dice"] is not None else 1
