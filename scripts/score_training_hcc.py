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
    import SimpleITK as sitk
    from malenia.data.real_ct import HCC_TRAIN, require_real_ct_root
    from malenia.evaluation.metrics import dice
    from malenia.inference import Engine
    from malenia.io import CTVolume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    root = require_real_ct_root() / "hcc_liver"
    for case in HCC_TRAIN:
        image = sitk.ReadImage(str(root / case / "ct.nii.gz"))
        tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(root / case / "label.nii.gz"))) == 2
        encoded = engine.encode(CTVolume.from_sitk(image, case))
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        for query in QUERIES:
            answer = encoded.segment(query).labelmap > 0
            print(f"{case} {query!r}: Dice {dice(answer, tumour):.3f}, predicted {answer.sum() * voxel_ml:.1f} ml"
                  f" (tumour {tumour.sum() * voxel_ml:.1f} ml)")  # fmt: skip


if __name__ == "__main__":
    main()
