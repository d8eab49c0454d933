"""Score the liver-cancer preset on the two HCC *training* cases (0697, equilibrium phase,
tumour darker than the liver; 2022, arterial phase, tumour brighter). A training-case check,
not evidence: both cases are in every training mixture. It shows whether weights learnt the
tumours they were shown, e.g. the arterial-phase one (docs/EVALUATION.md, stage 20).

    python scripts/score_training_hcc.py [--weights W]

Needs ../shared/data/real_ct.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))

QUERIES = ("liver cancer", "hyperdense mass in the liver")


def main() -> None:
    from malenia.data.real_ct import hcc_training_tumours
    from malenia.evaluation.metrics import dice
    from malenia.inference import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    for case, volume, tumour in hcc_training_tumours():
        encoded = engine.encode(volume)
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        for query in QUERIES:
            answer = encoded.segment(query).labelmap > 0
            print(f"{case} {query!r}: Dice {dice(answer, tumour):.3f}, predicted {answer.sum() * voxel_ml:.1f} ml"
                  f" (tumour {tumour.sum() * voxel_ml:.1f} ml)")  # fmt: skip


if __name__ == "__main__":
    main()
