"""How far apart two synthetic benchmark runs really are: the seen and unseen group means of
each, and a paired bootstrap (cases resampled within each category, the same cases for both
runs) of the difference, with its 95 % interval. Both files are the per_case.csv of
``malenia eval`` on the same held-out set (same seed and n per category).

    python scripts/compare_synthetic_runs.py docs/eval/synthetic/per_case.csv \\
        docs/eval/candidate_stage22/synthetic/per_case.csv [--draws 2000]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))


def per_case_dice(path: Path) -> dict[str, dict[str, float]]:
    """category -> case -> Dice of the true prompt."""
    table: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            table.setdefault(row["category"], {})[row["case"]] = float(row["dice_true"])
    return table


def group_mean(table, categories, picks=None) -> float:
    """Macro mean over ``categories`` of the mean Dice of their cases (``picks``: the
    resampled case names of each category)."""
    return float(
        np.mean(
            [np.mean([table[c][k] for k in (picks[c] if picks else table[c])]) for c in categories]
        )
    )


def main() -> None:
    from malenia.synth.split import SEEN_CATEGORIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="per_case.csv of the reference run")
    parser.add_argument("candidate", type=Path, help="per_case.csv of the run to compare")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reference, candidate = per_case_dice(args.reference), per_case_dice(args.candidate)
    if {c: sorted(v) for c, v in reference.items()} != {c: sorted(v) for c, v in candidate.items()}:
        sys.exit("the two runs scored different cases: compare runs of the same held-out set")
    rng = np.random.default_rng(args.seed)
    for group in ("seen", "unseen"):
        categories = sorted(c for c in reference if (c in SEEN_CATEGORIES) == (group == "seen"))
        cases = {c: sorted(reference[c]) for c in categories}
        differences, alone = [], []
        for _ in range(args.draws):
            picks = {c: [cases[c][i] for i in rng.integers(0, len(cases[c]), len(cases[c]))]
                     for c in categories}  # fmt: skip
            base = group_mean(reference, categories, picks)
            differences.append(group_mean(candidate, categories, picks) - base)
            alone.append(base)
        low, high = np.percentile(differences, [2.5, 97.5])
        ref_low, ref_high = np.percentile(alone, [2.5, 97.5])
        print(f"{group:6s} reference {group_mean(reference, categories):.4f} "
              f"(95 % interval {ref_low:.4f} to {ref_high:.4f}), candidate "
              f"{group_mean(candidate, categories):.4f}, difference 95 % interval "
              f"{low:+.4f} to {high:+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
