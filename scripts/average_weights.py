"""Interpolate two checkpoints of the same model: (1 - alpha) * start + alpha * tuned.

    python scripts/average_weights.py Resources/Weights/malenia-tiny.safetensors \
        runs/tiny_real10/last.safetensors --alpha 0.5 --out runs/soup14/last.safetensors

Weight interpolation between a model and its own fine-tuned continuation (Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022) tends to keep most of what the
fine-tune gained and much of what it forgot. Both files must share the model config (same
tensors, same shapes); every floating-point tensor is interpolated, the location head too.
The card is the tuned checkpoint's, with ``averaged_with`` naming the other file and alpha.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))


def average_weights(start: Path, tuned: Path, alpha: float, out: Path) -> Path:
    from malenia.weights import load_weights, save_weights, sha256_of

    if not 0.0 <= alpha <= 1.0:
        raise SystemExit(f"--alpha {alpha}: use a value from 0 (start) to 1 (tuned)")
    base, base_card = load_weights(start)
    model, card = load_weights(tuned)
    if base_card.get("config") != card.get("config"):
        raise SystemExit(f"{start} and {tuned} are different models (their configs differ)")
    source, target = base.state_dict(), model.state_dict()
    for key, value in target.items():
        if value.is_floating_point():
            value.copy_(source[key].to(value.dtype) * (1.0 - alpha) + value * alpha)
    model.load_state_dict(target)
    card = {k: v for k, v in card.items() if k not in ("sha256", "weights_file")}
    card["averaged_with"] = {"weights": start.name, "sha256": sha256_of(start),
                             "alpha": alpha, "training": base_card.get("training")}  # fmt: skip
    return save_weights(model, out, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("start", type=Path, help="the checkpoint fine-tuning started from")
    parser.add_argument("tuned", type=Path, help="the fine-tuned checkpoint")
    parser.add_argument("--alpha", type=float, default=0.5, help="share of the tuned weights")
    parser.add_argument("--out", type=Path, required=True, help="new .safetensors (+ card)")
    args = parser.parse_args()
    print(average_weights(args.start, args.tuned, args.alpha, args.out))


if __name__ == "__main__":
    main()
