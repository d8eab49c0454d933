"""Whole-scan threshold on real *training* scans (idea (c) of docs/EVALUATION.md, "Where it
fails"): the bundled threshold was calibrated on synthetic phantoms; this measures, at each
threshold of a fixed grid, the mean Dice of the answers on two groups of real training-side
cases, never a validation case:

- HCC: the two training HCC scans (0697, 2022) on their native grid, "liver cancer" preset;
- lung: ``--n`` training scans at 2 mm with an enlarged *solid* LIDC training nodule (20-55 mm)
  pasted into their real lungs (``real_mix.pasted_lung_masses``, the cases of
  ``malenia calibrate --lung``), "lung cancer" preset.

Each case is encoded once and the answer re-cut at every threshold (numpy only). The line it
prints last names the threshold with the best macro mean of the two groups.

    python scripts/measure_real_threshold.py [--weights W] [--n 12] [--seed 7]

Needs ../shared/data/real_ct.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def hcc_cases():
    """(name, CTVolume, tumour mask on its grid, query) of the HCC training scans."""
    from malenia.data.real_ct import hcc_training_tumours

    for case, volume, tumour in hcc_training_tumours():
        yield case, volume, tumour, "liver cancer"


def lung_proxies(n: int, seed: int):
    """(name, CTVolume, mass, query): training scans with a pasted training nodule."""
    from malenia.data.nodule_paste import pasted_lung_masses

    for name, volume, mass in pasted_lung_masses(n, seed):
        yield name, volume, mass, "lung cancer"


def main() -> None:
    from malenia.evaluation.real import score
    from malenia.inference import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--n", type=int, default=12, help="lung proxies")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    rows = []
    for group, cases in (("hcc", hcc_cases()), ("lung", lung_proxies(args.n, args.seed))):
        for name, volume, truth, query in cases:
            encoded = engine.encode(volume)
            answer = encoded.segment(query)
            spacing = tuple(reversed(volume.spacing))
            for threshold in THRESHOLDS:
                cut = encoded.recut(answer, threshold)
                rows.append({"group": group, "case": name, "threshold": threshold,
                             **score(cut.labelmap > 0, truth, spacing)})  # fmt: skip
            engine._cache.clear()
            dice = "  ".join(f"{r['threshold']}: {r['dice']:.3f}" for r in rows[-len(THRESHOLDS) :])
            print(f"{group} {name}: Dice {dice}")
    print(f"{'threshold':>9s}  {'HCC':>6s}  {'lung':>6s}  {'macro':>6s}  FP ml (HCC, lung)")
    best = None
    for threshold in THRESHOLDS:
        means, fps = [], []
        for group in ("hcc", "lung"):
            chosen = [r for r in rows if r["group"] == group and r["threshold"] == threshold]
            means.append(float(np.mean([r["dice"] for r in chosen])))
            fps.append(sum(r["false_positive_ml"] for r in chosen))
        macro = float(np.mean(means))
        best = max(best or (macro, threshold), (macro, threshold))
        print(f"{threshold:9.2f}  {means[0]:6.3f}  {means[1]:6.3f}  {macro:6.3f}  "
              f"{fps[0]:.1f}, {fps[1]:.1f}")  # fmt: skip
    print(f"best macro {best[0]:.3f} at threshold {best[1]}")


if __name__ == "__main__":
    main()
