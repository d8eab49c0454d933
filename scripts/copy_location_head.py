"""Put the location head of one checkpoint into another whose encoder it was trained on.

    python scripts/copy_location_head.py runs/tiny_real6/last.safetensors \
        --head runs/tiny_real_anatomy9/last.safetensors --out runs/merge10/last.safetensors

The location head reads the decoder map F2 (encoder through ``up2``). A lesion model trained
with those layers frozen (config ``frozen``) computes the same F2 as the checkpoint the head
was fitted on, so the head can be moved over unchanged. Refused unless every tensor of the
encoder through ``up2`` is identical in both files: otherwise the head would read features
it never saw and the organ maps would be wrong without any error. ``--as-start`` copies it
anyway, as the starting point of a head fine-tune on the new features (``"task": "anatomy"``
with ``init_from`` the output); such a file is marked so and is not for publishing as is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))

# The layers that compute F2 (``MaleniaNet.encode_image``) and the head itself.
FEATURE_PREFIXES = ("enc0.", "enc1.", "enc2.", "enc3.", "soft_tissue.", "up2.")
HEAD_PREFIXES = ("location_head.", "location_features.", "location_centre")


def copy_location_head(
    lesion_weights: Path, head_weights: Path, out: Path, as_start: bool = False
) -> Path:
    from malenia.weights import load_weights, save_weights, sha256_of

    model, card = load_weights(lesion_weights)
    donor, donor_card = load_weights(head_weights)
    target, source = model.state_dict(), donor.state_dict()
    changed = [
        k
        for k in target
        if k.startswith(FEATURE_PREFIXES) and not torch.equal(target[k], source[k])
    ]
    if changed and not as_start:
        raise SystemExit(
            f"{lesion_weights} and {head_weights} compute different F2 features ({changed[:3]} "
            "differ): fine-tune the head on this model instead (--as-start, then task 'anatomy')."
        )
    if donor.location_head is None or model.location_head is None:
        raise SystemExit("both checkpoints need a location head (model config location_head)")
    for key in target:
        if key.startswith(HEAD_PREFIXES):
            target[key].copy_(source[key])
    model.load_state_dict(target)
    card = {k: v for k, v in card.items() if k not in ("sha256", "weights_file")}
    card["location_head_from"] = {
        "weights": head_weights.name,
        "sha256": sha256_of(head_weights),
        "training": donor_card.get("training"),
    }
    if changed:
        card["location_head_from"]["fitted_on_other_features"] = (
            "a starting point for task 'anatomy' on these features, not a finished head"
        )
    return save_weights(model, out, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lesion_weights", type=Path, help="checkpoint whose lesion model is kept")
    parser.add_argument("--head", type=Path, required=True, help="checkpoint giving the head")
    parser.add_argument("--out", type=Path, required=True, help="new .safetensors (+ card)")
    parser.add_argument(
        "--as-start", action="store_true", help="copy even when F2 differs, to fine-tune from"
    )
    args = parser.parse_args()
    print(copy_location_head(args.lesion_weights, args.head, args.out, args.as_start))


if __name__ == "__main__":
    main()
