"""Average checkpoints of one model, tensor by tensor.

Two files, a start and its fine-tuned continuation: (1 - alpha) * start + alpha * tuned

    python scripts/average_weights.py Resources/Weights/malenia-tiny.safetensors \
        runs/tiny_real10/last.safetensors --alpha 0.5 --out runs/soup14/last.safetensors

Three or more files, siblings trained from one start with different seeds: their uniform mean

    python scripts/average_weights.py runs/tiny_real29/last.safetensors \
        runs/tiny_real31/last.safetensors runs/tiny_real32/last.safetensors \
        --out runs/soup37/last.safetensors

Interpolating a model with its own fine-tuned continuation (Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022) tends to keep most of what the fine-tune gained
and much of what it forgot; averaging fine-tuned siblings of one start ("Model soups",
Wortsman et al., ICML 2022) tends to beat each of them and cancels part of what one seed
alone decides. Every file must share the model config (same tensors, same shapes); every
floating-point tensor is averaged, the location head too. The card is the last file's, with
``averaged_with`` naming the others and their shares.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))


def average_weights(checkpoints: list[Path], shares: list[float], out: Path) -> Path:
    """Write sum(share_i * checkpoint_i) to ``out``; shares must be >= 0 and sum to 1."""
    from malenia.weights import load_weights, save_weights, sha256_of

    if len(checkpoints) != len(shares) or len(checkpoints) < 2:
        raise SystemExit("give at least two checkpoints, one share each")
    if min(shares) < 0.0 or abs(sum(shares) - 1.0) > 1e-6:
        raise SystemExit(f"shares {shares}: each >= 0, summing to 1")
    loaded = [load_weights(path) for path in checkpoints]
    model, card = loaded[-1]
    for path, (_, other_card) in zip(checkpoints, loaded, strict=True):
        if other_card.get("config") != card.get("config"):
            raise SystemExit(
                f"{path} and {checkpoints[-1]} are different models (their configs differ)"
            )
    target = model.state_dict()
    sources = [other.state_dict() for other, _ in loaded]
    for key, value in target.items():
        if value.is_floating_point():
            mean = sum(
                share * source[key].double() for share, source in zip(shares, sources, strict=True)
            )
            value.copy_(mean.to(value.dtype))
    model.load_state_dict(target)
    card = {k: v for k, v in card.items() if k not in ("sha256", "weights_file")}
    others = [
        {
            "weights": path.name,
            "sha256": sha256_of(path),
            "share": share,
            "training": other_card.get("training"),
        }
        for path, share, (_, other_card) in zip(
            checkpoints[:-1], shares[:-1], loaded[:-1], strict=True
        )
    ]
    if len(checkpoints) == 2:  # start + tuned: the interpolation's own record
        card["averaged_with"] = {**others[0], "alpha": shares[-1]}
    else:
        card["averaged_with"] = {"share_of_this_file": shares[-1], "others": others}
    return save_weights(model, out, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+",
                        help="start and tuned (two files), or three or more siblings")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=None,
                        help="two files only: share of the tuned weights (default 0.5)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="new .safetensors (+ card)")
    args = parser.parse_args()
    count = len(args.checkpoints)
    if count < 2:
        parser.error("give at least two checkpoints")
    if args.alpha is not None and count != 2:
        parser.error(
            "--alpha is for a start and its tuned continuation; more files are averaged uniformly"
        )
    if count == 2:
        alpha = 0.5 if args.alpha is None else args.alpha
        if not 0.0 <= alpha <= 1.0:
            parser.error(f"--alpha {alpha}: use a value from 0 (start) to 1 (tuned)")
        shares = [1.0 - alpha, alpha]
    else:
        shares = [1.0 / count] * count
    print(average_weights(args.checkpoints, shares, args.out))


if __name__ == "__main__":
    main()
