"""Score the sample CT's demo presets (renal cyst, liver cancer) on a sample folder: the
bundled one (lesions drawn with white noise) or one redrawn with the scan's own noise by
``scripts/make_sample_ct.py --lesion-noise scanner --out DIR``. A demo check, not evidence:
the sample's scan is in training.

    python scripts/score_sample_ct.py [--sample-dir DIR] [--weights W]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))


def main() -> None:
    import SimpleITK as sitk
    from malenia.evaluation.metrics import dice
    from malenia.evaluation.real import SAMPLE_LESIONS
    from malenia.inference import Engine
    from malenia.io import read_volume
    from malenia.paths import resource

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-dir", type=Path, default=None, help="default: bundled sample")
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    args = parser.parse_args()

    folder = args.sample_dir or resource("SampleData", "sample_ct.nii.gz").parent
    instances = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "sample_ct_lesions.nii.gz")))
    engine = Engine.load(args.weights, device="cpu")
    encoded = engine.encode(read_volume(folder / "sample_ct.nii.gz"))
    for preset, instance in SAMPLE_LESIONS:
        result = encoded.segment(preset)
        print(f"{preset}: Dice {dice(result.labelmap > 0, instances == instance):.3f}, "
              f"grounding warning: {result.grounding_warning or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
