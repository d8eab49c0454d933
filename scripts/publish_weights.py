"""Publish a training checkpoint as the bundled weights, with its model card.

    python scripts/publish_weights.py runs/tiny_stage2/last.safetensors \
        --eval docs/eval/synthetic/metrics.json --real-eval docs/eval/real/metrics.json \
        --config configs/tiny_cpu_stage2.json --hardware "2-core CPU, no GPU"

The checkpoint's card (training history, data, split, start weights) is kept; the evaluation
summary, the config file name and the hardware are added; the weights are saved (fp32 unless
--half) with the card's sha256, which the engine verifies on load. Given the bundled file itself,
only its card is rewritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))

DEFAULT_TARGET = REPO / "Resources" / "Weights" / "malenia-tiny.safetensors"


def evaluation_summary(metrics_file: Path | None, real_eval_file: Path | None = None) -> dict:
    """The figures a user needs from the card: the real-CT benchmark first, then the
    synthetic group means."""
    summary: dict = {}
    if real_eval_file:  # `malenia eval --real`
        real = json.loads(real_eval_file.read_text(encoding="utf-8"))
        summary["real_ct_benchmark"] = {
            key: real[key] for key in ("groups", "macro_dice", "targets", "organ_dice")
        } | {"report": "docs/EVALUATION.md", "splits": "malenia/data/real_ct.py"}
    if metrics_file:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        summary["synthetic_held_out"] = {
            "groups": metrics["groups"],
            "settings": {k: v for k, v in metrics["settings"].items() if k != "model"},
            "report": "docs/EVALUATION.md",
        }
    return summary


def main() -> None:
    from malenia.weights import card_path, load_weights, read_card, save_weights, write_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a .safetensors with its .json card")
    parser.add_argument("--out", type=Path, default=DEFAULT_TARGET)
    parser.add_argument("--eval", type=Path, default=None, help="metrics.json of `malenia eval`")
    parser.add_argument(
        "--real-eval", type=Path, default=None, help="metrics.json of `malenia eval --real`"
    )
    parser.add_argument("--config", default=None, help="the training config file, for the card")
    parser.add_argument("--hardware", default=None, help="where it was trained, for the card")
    parser.add_argument("--description", default=None, help="one line for users")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="`malenia calibrate` output: the default threshold, stored in the card",
    )
    parser.add_argument("--half", action="store_true", help="store fp16 (check accuracy first)")
    args = parser.parse_args()

    model, card = load_weights(args.checkpoint)
    card = {k: v for k, v in card.items() if k not in ("sha256", "weights_file")}
    card["name"] = args.out.stem
    if card_path(args.out).is_file():  # keep the hand-written parts of the previous card
        previous = read_card(args.out)
        for key in ("description", "architecture_details"):
            if key in previous:
                card.setdefault(key, previous[key])
    training = card.setdefault("training", {})
    if args.config:
        training["config"] = args.config
    if args.hardware:
        training["hardware"] = args.hardware
    if args.description:
        card["description"] = args.description
    if args.calibration:
        calibration = json.loads(args.calibration.read_text(encoding="utf-8"))
        card["postprocess"] = {
            key: calibration[key]
            for key in (
                "threshold",
                "rule",
                "validation_dice",
                "dice_at_0.5",
                "validation_set",
                "roi_threshold",
                "roi_dice",
                "roi_dice_at_0.5",
                "roi_set",
                "lung_threshold",
                "lung_dice",
                "lung_set",
                "unlocated_threshold",
                "unlocated_dice",
                "unlocated_set",
                "organ_lesion_threshold",
                "organ_lesion_faint_only",
                "organ_lesion_dice",
                "organ_lesion_dice_at_answer_threshold",
                "organ_lesion_set",
                "lung_keep_share",
                "lung_keep_by",
                "lung_keep_dice",
                "lung_keep_set",
                "organ_growth_mm",
                "organ_growth_dice",
                "organ_growth_set",
                "organ_fat_hu",
                "organ_fat_dice",
                "organ_fat_set",
                "organ_density_contrast_hu",
                "organ_density_sides",
                "organ_density_dice",
                "organ_density_set",
            )  # fmt: skip
            if key in calibration
        } | {"calibrated_with": "malenia calibrate"}
    if str(training.get("data", {}).get("type", "")).startswith("real"):  # real_mix, real_anatomy
        from malenia.data.real_ct import REAL_TRAINING_DATA

        training["real_data"] = REAL_TRAINING_DATA
    evaluation = evaluation_summary(args.eval, args.real_eval)
    if evaluation:
        card["evaluation"] = evaluation
    if args.checkpoint.resolve() == args.out.resolve() and not args.half:
        # Only the card changes: keep the file's bytes (and so its sha256 and model id);
        # safetensors does not promise the same header bytes when saved again.
        write_card(model, args.out, card, card.get("dtype", "float32"))
    else:
        save_weights(model, args.out, card, half=args.half)
    _, card = load_weights(args.out)  # proves the published pair loads and verifies
    print(f"published {args.out} (sha256 {card['sha256'][:12]}..., {training.get('steps')} steps)")


if __name__ == "__main__":
    main()
