"""What the nodule-box measurements share (``measure_nodule_box_rule.py``,
``measure_roi_flips.py``): their options, the same sample of LIDC *training* nodules (never
the validation fifth), and one summary line per way of answering."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    return parser.parse_args()


def training_nodules(n: int, seed: int) -> list:
    """``n`` nodules of the LIDC training patients, drawn by ``seed``, in a fixed order."""
    from malenia.data.real_ct import load_lidc

    nodules = load_lidc("train")
    chosen = sorted(np.random.default_rng(seed).choice(len(nodules), n, replace=False))
    return [nodules[index] for index in chosen]


def print_summary(rows: list[dict], names) -> None:
    """Mean Dice, total false-positive volume and answers within their nodule's volume for
    each name (a key of every row: ``malenia.evaluation.real.score`` of one answer)."""
    for name in names:
        dice = np.mean([r[name]["dice"] for r in rows])
        fp = sum(r[name]["false_positive_ml"] for r in rows)
        within = sum(r[name]["false_positive_ml"] <= r[name]["truth_ml"] for r in rows)
        print(f"{name:28s} Dice {dice:.4f}  FP {fp:6.2f} ml  within the nodule's volume "
              f"{within}/{len(rows)}")  # fmt: skip
