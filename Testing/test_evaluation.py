"""Evaluation metrics, baseline A and a smoke run of `malenia eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from malenia.evaluation import (
    baseline_threshold,
    dice,
    evaluate,
    held_out_cases,
    lesion_detection,
    nsd,
)


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
    assert lesion_detection(a, instances) == (1, 2, 1, 1)
    assert lesion_detection(a | b | sphere((32, 32, 32), (4, 4, 4), 2), instances) == (2, 2, 2, 3)


def test_baseline_a_finds_a_rendered_cyst():
    for _, _, sample in held_out_cases(["renal cyst"], 2, (48, 48, 48)):
        prediction = baseline_threshold(sample.ct, sample.labels, sample.lesions[0].description)
        assert dice(prediction, sample.instance_mask > 0) > 0.2


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
    )
    for name in ("metrics.json", "per_case.csv", "summary.md", "dsc_per_category.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    assert set(summary["groups"]) == {"seen", "unseen"}
    entry = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_category"][
        "renal cyst"
    ]
    assert {
        "dice_true",
        "nsd_true",
        "recall",
        "precision",
        "dice_control_B_other_category",
        "dice_control_C_location_only",
        "dice_baseline_A",
    } <= set(entry)
