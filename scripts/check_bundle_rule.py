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
with the scan's noise. ``--rule real-first-27`` (stage 31 on, configs/tiny_cpu_real27.json): the
same rows with the floors of stage 27, the bundle since session 18: macro + 0.03, each real group
and the phantom-noise set within 0.02 below it. ``--rule real-first-27f`` (candidates scored
after session 23): the same with the floors of the stage 27f card, bundled then.
``--rule rules-only-27f`` (session 24: a new run-time rule on the bundle's own weights, where no
training seed moves the figures): no margin; macro at least 27f's, each real group and the
phantom-noise set within 0.005 below it. Exit status 0 when every gate passes, 1 otherwise, 2
when a figure is missing (a step not run yet).

The rule lives here so that the verdict is read off files, not off a person reading tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Floors of the committed rules, from the bundled weights' figures (malenia-tiny@c2706e104a0d;
# the calibration and ROI floors since stage 14: within 0.005 of the bundle then; EVALUATION.md).
BUNDLE_PHANTOM_CALIBRATION = 0.812
BUNDLE_LIDC_TRAINING_ROI = 0.746
SYNTHETIC_TARGETS = (0.80, 0.60)
SAMPLE_PRESET_DICE = 0.5
REAL_FIRST_SAMPLE_DICE = 0.25


@dataclass(frozen=True)
class Floors:
    """The figures a candidate must reach, set from the bundle it would replace."""

    real_macro: float
    real_groups: dict[str, float]
    fp_within_truth: int
    phantom_noise: tuple[float, float]


# Stages 26-30: the bundle then, malenia-tiny@c2706e104a0d; the real-first rule of
# configs/tiny_cpu_real26.json adds 0.05 to its macro.
FLOORS_C2706 = Floors(
    real_macro=0.267,
    real_groups={"hcc": 0.000, "lidc": 0.736, "lung2": 0.211, "sarcoma": 0.119},
    fp_within_truth=161,
    phantom_noise=(0.348, 0.190),
)
# Stage 31 on (configs/tiny_cpu_real27.json): the bundle malenia-tiny@ec1b83f75979 (stage 27);
# macro + 0.03, each real group and the phantom-noise set within 0.02 below it.
FLOORS_EC1B83 = Floors(
    real_macro=0.367,
    real_groups={"hcc": 0.175, "lidc": 0.728, "lung2": 0.301, "sarcoma": 0.185},
    fp_within_truth=164,
    phantom_noise=(0.614, 0.276),
)
# The figures of the stage 27f card (bundled in session 23), from which its rules' floors are set.
FIGURES_27F = Floors(
    real_macro=0.410,
    real_groups={"hcc": 0.248, "lidc": 0.748, "lung2": 0.440, "sarcoma": 0.205},
    fp_within_truth=164,
    phantom_noise=(0.643, 0.302),
)


def _floors_below(figures: Floors, by: float) -> Floors:
    """``figures`` with each real group and the phantom-noise set ``by`` lower; the macro and
    the false-positive count as they are (a rule adds its own margin to the macro)."""
    return Floors(
        real_macro=figures.real_macro,
        real_groups={group: round(v - by, 3) for group, v in figures.real_groups.items()},
        fp_within_truth=figures.fp_within_truth,
        phantom_noise=tuple(round(v - by, 3) for v in figures.phantom_noise),
    )


# Candidates scored after session 23: macro + 0.03, each real group and the phantom-noise set
# within 0.02 below the stage 27f card's figures.
FLOORS_27F = _floors_below(FIGURES_27F, 0.02)
# Session 24 on, a run-time rule on the bundle's own weights (the same file, the card alone
# changes): nothing random moves the figures, so no margin; within 0.005 below stage 27f's.
FLOORS_27F_SAME_WEIGHTS = _floors_below(FIGURES_27F, 0.005)

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


Row = tuple[str, str, bool]  # (gate, measured, passed)


def _sample_gates(
    path: Path, presets: tuple[str, ...], label: str, floor: float = SAMPLE_PRESET_DICE
) -> list[Row]:
    rows = _sample(path)
    if len(rows) != 2:
        raise FileNotFoundError(f"{path} lacks the two preset lines")
    return [
        (f"sample ({label}) {preset} >= {floor}, no warning",
         f"{dice:.3f}, warning: {warn}", dice >= floor and warn == "none")
        for preset, dice, warn in rows if preset in presets
    ]  # fmt: skip


def _rows(candidate: Path, floors: Floors, macro_margin: float) -> dict[str, list[Row]]:
    """Every row any rule uses, by name, each read off the candidate's files once."""
    seen, unseen = _synthetic(candidate / "synthetic")
    noisy_seen, noisy_unseen = _synthetic(candidate / "synthetic_scanner")
    calibration = json.loads((candidate / "calibration.json").read_text())
    real = json.loads((candidate / "real" / "metrics.json").read_text())
    macro, fp_within = real["macro_dice"], real["targets"]["fp_within_truth"]["value"]
    scored = {
        group: next(q for q in queries.values() if q["scored"])["dice"]
        for group, queries in real["groups"].items()
        if group in floors.real_groups
    }
    left_right, left_right_passed = _left_right(candidate / "left_right.txt")
    macro_floor = floors.real_macro + macro_margin
    noise_floor = floors.phantom_noise
    both, white, scanner = (
        ("renal cyst", "liver cancer"), candidate / "sample_white.txt",
        candidate / "sample_scanner.txt",
    )  # fmt: skip
    return {
        "seen": [(f"synthetic seen >= {SYNTHETIC_TARGETS[0]}", f"{seen:.3f}",
                  seen >= SYNTHETIC_TARGETS[0])],
        "unseen": [(f"synthetic unseen >= {SYNTHETIC_TARGETS[1]}", f"{unseen:.3f}",
                    unseen >= SYNTHETIC_TARGETS[1])],
        "phantom noise": [
            (f"phantom-noise set >= {noise_floor[0]} / {noise_floor[1]}",
             f"{noisy_seen:.3f} / {noisy_unseen:.3f}",
             noisy_seen >= noise_floor[0] and noisy_unseen >= noise_floor[1])],
        "calibration": [(f"phantom calibration >= {BUNDLE_PHANTOM_CALIBRATION}",
                         f"{calibration['validation_dice']:.3f}",
                         calibration["validation_dice"] >= BUNDLE_PHANTOM_CALIBRATION)],
        "roi": [(f"LIDC training ROI >= {BUNDLE_LIDC_TRAINING_ROI}",
                 f"{calibration['roi_dice']:.3f}",
                 calibration["roi_dice"] >= BUNDLE_LIDC_TRAINING_ROI)],
        "macro": [(f"real validation macro >= {floors.real_macro}", f"{macro:.3f}",
                   macro >= floors.real_macro)],
        "macro + margin": [(f"real validation macro >= {macro_floor:.3f}", f"{macro:.3f}",
                            macro >= macro_floor)],
        "real groups": [(f"real {group} >= {floor:.3f}", f"{scored[group]:.3f}",
                         scored[group] >= floor) for group, floor in floors.real_groups.items()],
        "fp within truth": [
            (f"false positives within the true volume on >= {floors.fp_within_truth} scans",
             f"{fp_within}", fp_within >= floors.fp_within_truth)],
        "left/right": [("kidney maps left / right (map > 0.3, covers > 0.5, 0 of the other)",
                        left_right, left_right_passed)],
        "sample scan's noise": _sample_gates(scanner, both, "scan's noise"),
        "sample scan's noise, liver": _sample_gates(scanner, ("liver cancer",), "scan's noise"),
        "sample shipped": _sample_gates(white, both, "shipped"),
        "sample shipped, found": _sample_gates(white, both, "shipped", REAL_FIRST_SAMPLE_DICE),
    }  # fmt: skip


@dataclass(frozen=True)
class Rule:
    gating: tuple[str, ...]  # rows that decide, in order
    reported: tuple[str, ...]  # rows printed, not deciding
    floors: Floors = FLOORS_C2706
    macro_margin: float = 0.0


_PHANTOM_REPORTED = ("unseen", "calibration", "roi", "sample scan's noise")
_REAL_FIRST_GATING = ("macro + margin", "real groups", "fp within truth", "seen", "phantom noise",
                      "sample shipped, found", "left/right")  # fmt: skip
RULES: dict[str, Rule] = {
    "phantom-gates/scan-noise": Rule(
        ("seen", "unseen", "phantom noise", "sample scan's noise", "calibration", "roi", "macro",
         "left/right"), ()),
    "phantom-gates/shipped": Rule(
        ("seen", "unseen", "phantom noise", "sample shipped", "sample scan's noise, liver",
         "calibration", "roi", "macro", "left/right"), ()),
    "real-first": Rule(_REAL_FIRST_GATING, _PHANTOM_REPORTED, FLOORS_C2706, 0.05),
    "real-first-27": Rule(_REAL_FIRST_GATING, _PHANTOM_REPORTED, FLOORS_EC1B83, 0.03),
    "real-first-27f": Rule(_REAL_FIRST_GATING, _PHANTOM_REPORTED, FLOORS_27F, 0.03),
    "rules-only-27f": Rule(_REAL_FIRST_GATING, _PHANTOM_REPORTED, FLOORS_27F_SAME_WEIGHTS, 0.0),
}  # fmt: skip


def gates(candidate: Path, rule: str = "phantom-gates/scan-noise") -> tuple[list[Row], list[Row]]:
    """(gating rows, reported-only rows) of ``rule`` for a scored candidate."""
    chosen = RULES[rule]
    rows = _rows(candidate, chosen.floors, chosen.macro_margin)
    return ([r for name in chosen.gating for r in rows[name]],
            [r for name in chosen.reported for r in rows[name]])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate", type=Path, help="folder evaluate_candidate.sh wrote")
    parser.add_argument(
        "--demo",
        choices=("scan-noise", "shipped"),
        default="scan-noise",
        help="which sample gates the demo (see above)",
    )
    rule_names = tuple(dict.fromkeys(name.split("/")[0] for name in RULES))
    parser.add_argument("--rule", choices=rule_names,
                        default="phantom-gates", help="stages 26-29: phantom-gates")  # fmt: skip
    args = parser.parse_args()
    rule = f"{args.rule}/{args.demo}" if args.rule == "phantom-gates" else args.rule
    try:
        rows, reported = gates(args.candidate, rule)
    except (FileNotFoundError, KeyError) as error:
        print(f"not fully scored yet: {error}", file=sys.stderr)
        return 2
    for gate, measured, passed in rows:
        print(f"{'pass' if passed else 'FAIL'}  {gate}: {measured}")
    for gate, measured, met in reported:
        print(f"(reported; {'met' if met else 'not met'})  {gate}: {measured}")
    verdict = all(passed for _, _, passed in rows)
    print("passes the rule" if verdict else "fails the rule")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
