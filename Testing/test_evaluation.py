"""Evaluation metrics, baseline A and a smoke run of `malenia eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from malenia.evaluation import (
    Detection,
    dice,
    evaluate,
    held_out_cases,
    lesion_detection,
    nsd,
)
from malenia.evaluation.baselines import threshold_baseline


def sphere(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def test_metrics_on_known_masks():
    a = sphere((32, 32, 32), (16, 16, 16), 6)
    b = sphere((32, 32, 32), (16, 16, 27), 3)
    assert dice(a, a) == pytest.approx(1.0) and nsd(a, a, (2, 2, 2)) == pytest.approx(1.0)
    assert dice(a, b) == pytest.approx(0.0) and nsd(a, b, (2, 2, 2)) < 0.05
    shifted = np.roll(a, 1, axis=2)
    assert 0.8 < dice(a, shifted) < 1.0 and nsd(a, shifted, (2, 2, 2)) == pytest.approx(
        1.0
    )  # 1 voxel = 2 mm
    instances = a.astype(np.int16) + 2 * b
    assert lesion_detection(a, instances) == Detection(1, 2, 1, 1)
    extra = sphere((32, 32, 32), (4, 4, 4), 2)
    assert lesion_detection(a | b | extra, instances) == Detection(2, 2, 2, 3)
    # A component on a lesion the query did not ask for is a false positive.
    only_first = lesion_detection(a | b, instances, target_ids=[1])
    assert (only_first.recall, only_first.precision) == (1.0, 0.5)


def test_baseline_a_finds_a_rendered_cyst():
    scores = [
        dice(threshold_baseline(case.ct, case.labels, case.prompt), case.truth)
        for case in held_out_cases(["renal cyst"], 4, (48, 48, 48), (2.0, 2.0, 2.0))
    ]
    # Small cysts (a few hundred voxels at 2 mm) are hard for a threshold; the mean is not.
    assert np.mean(scores) > 0.3, scores


def test_smoke_eval_writes_every_output(tmp_path):
    from malenia.inference import Engine
    from malenia.model import MaleniaNet
    from malenia.weights import save_weights

    torch.manual_seed(0)
    weights = save_weights(MaleniaNet(), tmp_path / "w.safetensors", {"name": "malenia-test"})
    summary = evaluate(
        Engine.load(weights, "cpu"),
        tmp_path / "eval",
        ["renal cyst", "liver cancer"],
        1,
        (48, 48, 48),
        lesion_noise="scanner",
    )
    assert "the phantom's own noise" in (tmp_path / "eval" / "summary.md").read_text()
    assert summary["settings"]["lesion_noise"] == "scanner"
    for name in ("metrics.json", "per_case.csv", "summary.md", "dsc_per_category.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    assert {"seen", "unseen"} <= set(summary["groups"])
    entry = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))[
        "per_category"
    ]["renal cyst"]
    assert {
        "dice_true",
        "nsd_true",
        "recall_true",
        "precision_true",
        "dice_control_B",
        "dice_control_C",
        "dice_baseline_A",
        "recall_baseline_A",
    } <= set(entry)


def test_calibration_uses_the_validation_set_of_seen_categories_only():
    """`malenia calibrate` never sees the test set or an unseen category, and picks the
    threshold with the best validation Dice (ties towards 0.5)."""
    from malenia.evaluation.calibrate import calibrate
    from malenia.evaluation.testset import make_case
    from malenia.inference import Engine
    from malenia.synth.split import SEEN_CATEGORIES, VALIDATION_SET_SEED

    validation = make_case(
        "liver cancer", 0, (64, 64, 64), (2.0, 2.0, 2.0), VALIDATION_SET_SEED,
        tuple(SEEN_CATEGORIES),
    )  # fmt: skip
    test = make_case("liver cancer", 0, (64, 64, 64), (2.0, 2.0, 2.0))
    assert not np.array_equal(validation.ct, test.ct)
    for case in held_out_cases(
        list(SEEN_CATEGORIES), 3, (64, 64, 64), (2.0, 2.0, 2.0), VALIDATION_SET_SEED,
        tuple(SEEN_CATEGORIES),
    ):  # fmt: skip
        assert set(case.categories) <= set(SEEN_CATEGORIES)

    engine = Engine.load(device="cpu")
    result = calibrate(engine, n_per_category=1, thresholds=(0.1, 0.5, 0.9))
    by_threshold = {float(t): d for t, d in result["mean_dice_by_threshold"].items()}
    assert set(by_threshold) == {0.1, 0.5, 0.9}
    assert result["best_validation_dice"] == max(by_threshold.values())
    assert by_threshold[result["threshold"]] == result["validation_dice"]
    assert result["validation_dice"] >= result["best_validation_dice"] - 0.01
    closer = [t for t in by_threshold if abs(t - 0.5) < abs(result["threshold"] - 0.5)]
    assert all(by_threshold[t] < result["best_validation_dice"] - 0.01 for t in closer)
    assert result["validation_set"]["categories"] == list(SEEN_CATEGORIES)
    assert result["validation_set"]["seed"] == VALIDATION_SET_SEED


def test_calibration_tie_break_on_a_flat_curve_takes_nearest_half_or_lowest():
    """A curve like stage 31's phantom one: 0.2 best, 0.15-0.3 within 0.01 of it.
    The default rule took 0.3; ``--tie-break lowest`` takes 0.15; a clear winner wins both."""
    from malenia.evaluation.calibrate import _choose

    flat = {0.1: 0.7600, 0.15: 0.777, 0.2: 0.7794, 0.25: 0.7745, 0.3: 0.7774, 0.4: 0.7650,
            0.5: 0.7689}  # fmt: skip
    assert _choose(flat) == (0.3, 0.7794)
    assert _choose(flat, "lowest") == (0.15, 0.7794)
    peaked = {0.1: 0.60, 0.2: 0.70, 0.3: 0.80, 0.5: 0.65}
    assert _choose(peaked) == _choose(peaked, "lowest") == (0.3, 0.80)
    with pytest.raises(ValueError, match="tie_break"):
        _choose(flat, "highest")


def test_calibration_from_an_earlier_one_refuses_other_weights(tmp_path):
    """``malenia calibrate --from JSON`` adds parts to an earlier calibration of the same
    weights; one made for other weights is refused with what to do, and nothing is written."""
    from malenia.cli import main
    from malenia.inference import Engine

    engine = Engine.load(device="cpu")
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"model": "malenia-tiny@000000000000", "threshold": 0.3}))
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--from", str(earlier), "--out", str(out)]) == 2
    assert not out.exists()
    earlier.write_text(json.dumps({"model": engine.model_id, "threshold": 0.3}))
    assert main(["calibrate", "--from", str(earlier), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"model": engine.model_id, "threshold": 0.3}


def test_calibration_on_real_scans_without_the_data_says_so_before_any_work(
    tmp_path, monkeypatch, capsys
):
    """--roi / --lung / --organ-lesions need ../shared/data/real_ct: without it the user is
    told where it is looked for at once, not after minutes of phantom calibration."""
    from malenia.cli import main

    monkeypatch.setenv("MALENIA_REAL_CT", str(tmp_path / "absent"))
    out = tmp_path / "calibration.json"
    for option in ("--roi", "--lung", "--organ-lesions"):
        assert main(["calibrate", option, "3", "--out", str(out)]) == 1
        assert "real-CT data folder" in capsys.readouterr().err
    assert not out.exists()


def test_distractor_split_separates_volumes_holding_another_category():
    """The split the docs quote: a volume with a lesion of another category is counted
    apart from one holding only the target's category (two target lesions are not a
    distractor)."""
    from malenia.evaluation.run import distractor_split

    def row(category, lesions, targets, true, control):
        return {
            "category": category,
            "lesions_in_volume": lesions,
            "target_lesions": targets,
            "dice_true": true,
            "dice_control_B": control,
        }

    rows = [
        row("renal cyst", 1, 1, 0.9, 0.1),
        row("renal cyst", 2, 2, 0.7, 0.3),  # two cysts: still "target alone"
        row("renal cyst", 2, 1, 0.4, 0.2),  # a cyst and another category's lesion
        row("liver cancer", 2, 1, 0.8, 0.6),
    ]
    split = distractor_split(rows, {"liver cancer"}, ["true", "control_B"])
    assert split["unseen, target alone"] == {"volumes": 2, "dice_true": 0.8, "dice_control_B": 0.2}
    assert split["unseen, with distractor"]["dice_true"] == 0.4
    assert split["seen, with distractor"]["volumes"] == 1 and "seen, target alone" not in split


def test_the_synthetic_set_can_draw_its_lesions_with_the_phantoms_own_noise():
    """`malenia eval --lesion-noise scanner`: the same lesions in the same phantoms, each
    keeping the phantom's noise instead of fresh white noise, so a model that scores only
    on white-noise lesions (as the weights up to stage 23 did) shows it."""
    from malenia.evaluation.testset import HeldOutSetError, make_case

    white = make_case("renal cyst", 1, (48, 48, 48), (2.0, 2.0, 2.0))
    scanner = make_case("renal cyst", 1, (48, 48, 48), (2.0, 2.0, 2.0), lesion_noise="scanner")
    assert np.array_equal(white.instances, scanner.instances)  # same lesions, same places
    lesion = white.instances > 0
    assert lesion.sum() > 100
    assert not np.allclose(white.ct[lesion], scanner.ct[lesion], atol=1.0)
    with pytest.raises(HeldOutSetError, match="lesion_noise must be one of"):
        make_case("renal cyst", 1, (48, 48, 48), (2.0, 2.0, 2.0), lesion_noise="pink")
