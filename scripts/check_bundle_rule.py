"""Check a scored candidate against the bundling rule committed with its config.

    python scripts/check_bundle_rule.py runs/cand28 [--demo shipped]
    python scripts/check_bundle_rule.py runs/cand30 --rule real-first

Reads what ``scripts/evaluate_candidate.sh`` and the scoring steps after it wrote into the
candidate folder (calibration.json, synthetic/ and synthetic_scanner/ metrics.json,
real/metrics.json, left_right.txt, sample_scanner.txt, sample_white.txt) and prints each gate
with its figure. The gates are the rules written into the configs before training; the
bundle's own figures are the floors. ``--demo scan-noise`` (stages 27-28,
configs/tiny_cpu_real23.json and 24): both sample presets on the sample redrawn with the
scan's own noise. ``--demo shipped`` (stage 29 on, configs/tiny_cpu_real25.json): both presets
on the sample that ships, as the issue's acceptance asks, and the liver cancer of the redrawn
one; its renal cyst, which no weights have found, is reported only. Both: the location head's
left/right check within the bounds of the test that checks the bundled file.

``--rule real-first`` (stage 30 on, configs/tiny_cpu_real26.json): the real validation figures
decide, as the developers' guide says users do. Gated: macro at least the bundle's + 0.05 with no
real group below the bundle's, false positives within the true volume on at least the bundle's
scans, synthetic seen (white noise) and both phantom-noise figures at the bundle's floors, both
presets of the shipped sample found (Dice >= 0.25) with no warning, the left/right check.
Reported only: white-noise unseen, phantom calibration, LIDC training ROIs, the sample redrawn
with the scan's noise. Exit status 0
when every gate passes, 1 otherwise, 2 when a figure is missing (a step not run yet).

The rule lives here so that the verdict is read off files, not off a person reading tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# Floors of the committed rules, from the bundled weights' figures (malenia-tiny@c2706e104a0d;
# the calibration and ROI floors since stage 14: within 0.005 of the bundle then; EVALUATION.md).
BUNDLE_PHANTOM_NOISE = (0.348, 0.190)
BUNDLE_PHANTOM_CALIBRATION = 0.812
BUNDLE_LIDC_TRAINING_ROI = 0.746
BUNDLE_REAL_MACRO = 0.267
SYNTHETIC_TARGETS = (0.80, 0.60)
SAMPLE_PRESET_DICE = 0.5
# The real-first rule (configs/tiny_cpu_real26.json): the bundle's real validation figures.
BUNDLE_REAL_GROUPS = {"hcc": 0.000, "lidc": 0.736, "lung2": 0.211, "sarcoma": 0.119}
BUNDLE_FP_WITHIN_TRUTH = 161
REAL_FIRST_MACRO_MARGIN = 0.05
REAL_FIRST_SAMPLE_DICE = 0.25

LEFT_RIGHT = re.compile(r"map in own kidney ([0-9.]+) \(>0.3\), region covers ([0-9.]+) of it "
                        r"\(>0.5\) and (\d+) voxels of the other")  # fmt: skip
SAMPLE_LINE = re.compile(
    r"^(?P<preset>[^:]+): Dice (?P<dice>[0-9.]+), grounding warning: (?P<warn>.+)$"
)


def _synthetic(folder: Path) -> tuple[float, float]:
    groups = json.loads((folder / "metrics.json").read_text())["groups"]
    return groups["seen"]["dice_true"], groups["unseen"]["dice_true"]


def _sample(path: Path) -> list[tuple[str, float, str]]:
    rows = [SAMPLE_LINE.match(line.strip()) for line in path.read_text().splitlines()]
    return [(m["preset"], float(m["dice"]), m["warn"]) for m in rows if m]


def _left_right(path: Path) -> tuple[str, bool]:
    kidneys = [LEFT_RIGHT.search(line) for line in path.read_text().splitlines()]
    kidneys = [m for m in kidneys if m]
    if len(kidneys) != 2:
        raise FileNotFoundError(f"{path} lacks the two kidney lines")
    passed = all(float(m[1]) > 0.3 and float(m[2]) > 0.5 and m[3] == "0" for m in kidneys)
    return " / ".join(f"{m[1]}, {m[2]}, {m[3]}" for m in kidneys), passed


def _sample_gates(
    path: Path, presets: tuple[str, ...], label: str, floor: float = SAMPLE_PRESET_DICE
) -> list:
    rows = _sample(path)
    if len(rows) != 2:
        raise FileNotFoundError(f"{path} lacks the two preset lines")
    return [
        (f"sample ({label}) {preset} >= {floor}, no warning",
         f"{dice:.3f}, warning: {warn}", dice >= floor and warn == "none")
        for preset, dice, warn in rows if preset in presets
    ]  # fmt: skip


def real_first_gates(candidate: Path) -> tuple[list, list]:
    """(gates, reported-only rows) of the real-first rule; each row (name, measured, passed)."""
    real = json.loads((candidate / "real" / "metrics.json").read_text())
    scored = {
        group: next(q for q in queries.values() if q["scored"])["dice"]
        for group, queries in real["groups"].items()
        if group in BUNDLE_REAL_GROUPS
    }
    macro, fp_within = real["macro_dice"], real["targets"]["fp_within_truth"]["value"]
    seen, unseen = _synthetic(candidate / "synthetic")
    noisy_seen, noisy_unseen = _synthetic(candidate / "synthetic_scanner")
    calibration = json.loads((candidate / "calibration.json").read_text())
    left_right, left_right_passed = _left_right(candidate / "left_right.txt")
    macro_floor = BUNDLE_REAL_MACRO + REAL_FIRST_MACRO_MARGIN
    gated = [
        (f"real validation macro >= {macro_floor:.3f}", f"{macro:.3f}", macro >= macro_floor),
        *[(f"real {group} >= bundle's {floor:.3f}", f"{scored[group]:.3f}",
           scored[group] >= floor) for group, floor in BUNDLE_REAL_GROUPS.items()],
        (f"false positives within the true volume on >= {BUNDLE_FP_WITHIN_TRUTH} scans",
         f"{fp_within}", fp_within >= BUNDLE_FP_WITHIN_TRUTH),
        (f"synthetic seen >= {SYNTHETIC_TARGETS[0]}", f"{seen:.3f}", seen >= SYNTHETIC_TARGETS[0]),
        (f"phantom-noise set >= {BUNDLE_PHANTOM_NOISE[0]} / {BUNDLE_PHANTOM_NOISE[1]}",
         f"{noisy_seen:.3f} / {noisy_unseen:.3f}",
         noisy_seen >= BUNDLE_PHANTOM_NOISE[0] and noisy_unseen >= BUNDLE_PHANTOM_NOISE[1]),
        *_sample_gates(candidate / "sample_white.txt", ("renal cyst", "liver cancer"), "shipped",
                       REAL_FIRST_SAMPLE_DICE),
        ("kidney maps left / right (map > 0.3, covers > 0.5, 0 of the other)", left_right,
         left_right_passed),
    ]  # fmt: skip
    reported = [
        (f"synthetic unseen (issue: >= {SYNTHETIC_TARGETS[1]})", f"{unseen:.3f}",
         unseen >= SYNTHETIC_TARGETS[1]),
        (f"phantom calibration (bundle {BUNDLE_PHANTOM_CALIBRATION})",
         f"{calibration['validation_dice']:.3f}",
         calibration["validation_dice"] >= BUNDLE_PHANTOM_CALIBRATION),
        (f"LIDC training ROI (bundle {BUNDLE_LIDC_TRAINING_ROI})", f"{calibration['roi_dice']:.3f}",
         calibration["roi_dice"] >= BUNDLE_LIDC_TRAINING_ROI),
        *_sample_gates(candidate / "sample_scanner.txt", ("renal cyst", "liver cancer"),
                       "scan's noise"),
    ]  # fmt: skip
    return gated, reported


def gates(candidate: Path, demo: str = "scan-noise") -> list[tuple[str, str, bool]]:
    """(gate, measured, passed) for each gate of the rule."""
    seen, unseen = _synthetic(candidate / "synthetic")
    noisy_seen, noisy_unseen = _synthetic(candidate / "synthetic_scanner")
    calibration = json.loads((candidate / "calibration.json").read_text())
    macro = json.loads((candidate / "real" / "metrics.json").read_text())["macro_dice"]
    both = ("renal cyst", "liver cancer")
    if demo == "scan-noise":
        demo_gates = _sample_gates(candidate / "sample_scanner.txt", both, "scan's noise")
    else:
        demo_gates = _sample_gates(candidate / "sample_white.txt", both, "shipped")
        demo_gates += _sample_gates(
            candidate / "sample_scanner.txt", ("liver cancer",), "scan's noise"
        )
    left_right, left_right_passed = _left_right(candidate / "left_right.txt")
    return [
        (f"synthetic seen >= {SYNTHETIC_TARGETS[0]}", f"{seen:.3f}", seen >= SYNTHETIC_TARGETS[0]),
        (f"synthetic unseen >= {SYNTHETIC_TARGETS[1]}", f"{unseen:.3f}", unseen >= SYNTHETIC_TARGETS[1]),
        (f"phantom-noise set >= {BUNDLE_PHANTOM_NOISE[0]} / {BUNDLE_PHANTOM_NOISE[1]}",
         f"{noisy_seen:.3f} / {noisy_unseen:.3f}",
         noisy_seen >= BUNDLE_PHANTOM_NOISE[0] and noisy_unseen >= BUNDLE_PHANTOM_NOISE[1]),
        *demo_gates,
        (f"phantom calibration >= {BUNDLE_PHANTOM_CALIBRATION}",
         f"{calibration['validation_dice']:.3f}",
         calibration["validation_dice"] >= BUNDLE_PHANTOM_CALIBRATION),
        (f"LIDC training ROI >= {BUNDLE_LIDC_TRAINING_ROI}", f"{calibration['roi_dice']:.3f}",
         calibration["roi_dice"] >= BUNDLE_LIDC_TRAINING_ROI),
        (f"real validation macro >= {BUNDLE_REAL_MACRO}", f"{macro:.3f}", macro >= BUNDLE_REAL_MACRO),
        ("kidney maps left / right (map > 0.3, covers > 0.5, 0 of the other)", left_right,
         left_right_passed),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate", type=Path, help="folder evaluate_candidate.sh wrote")
    parser.add_argument(
        "--demo",
        choices=("scan-noise", "shipped"),
        default="scan-noise",
        help="which sample gates the demo (see above)",
    )
    parser.add_argument("--rule", choices=("phantom-gates", "real-first"),
                        default="phantom-gates", help="stages 26-29: phantom-gates")  # fmt: skip
    args = parser.parse_args()
    reported = []
    try:
        if args.rule == "real-first":
            rows, reported = real_first_gates(args.candidate)
        else:
            rows = gates(args.candidate, args.demo)
    except (FileNotFoundError, KeyError) as error:
        print(f"not fully scored yet: {error}", file=sys.stderr)
        return 2
    for gate, measured, passed in rows:
        print(f"{'pass' if passed else 'FAIL'}  {gate}: {measured}")
    for name, measured, met in reported:
        print(f"(reported; {'met' if met else 'not met'})  {name}: {measured}")
    verdict = all(passed for _, _, passed in rows)
    print("passes the rule" if verdict else "fails the rule")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
