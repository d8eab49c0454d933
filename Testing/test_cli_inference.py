"""`malenia segment`, `malenia find` and `malenia info` as a user runs them: real files in,
real files out, exit codes and messages for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from malenia.cli import main
from malenia.model import MaleniaNet
from malenia.weights import save_weights

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained but deterministic weights: these tests check the command line, not accuracy."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_weights(MaleniaNet(), path, {"name": "malenia-cli-test"})


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    """A small oblique, anisotropic body CT with a hypodense sphere, as NRRD."""
    shape = (36, 48, 44)
    zz, yy, xx = np.indices(shape)
    array = np.full(shape, -1000, np.int16)
    body = ((yy - 24) / 21.0) ** 2 + ((xx - 22) / 19.0) ** 2 <= 1
    array[body] = 45
    array[(zz - 18) ** 2 + (yy - 24) ** 2 + (xx - 20) ** 2 <= 49] = 0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.6, 1.7, 2.5))
    image.SetOrigin((-30.0, 12.0, -80.0))
    a = np.radians(15.0)
    image.SetDirection((np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1))
    path = tmp_path_factory.mktemp("ct") / "body.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def test_an_answer_with_no_lesion_says_what_to_try_next(weights, ct_file, capsys):
    """At a threshold nothing reaches, the answer says so and names the ways to look again."""
    code = main(["segment", str(ct_file), "--preset", "renal cyst", "--threshold", "0.999",
                 "--weights", str(weights), "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "0 lesion(s) for: Renal cyst" in printed
    assert "none above threshold 0.999: try a lower --threshold, an --roi box" in printed
    assert "`malenia find`" in printed


def test_segment_writes_every_output_on_the_input_grid(weights, ct_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # an output folder must exist: the CLI does not create folders for a typo
    code = main(
        [
            "segment", str(ct_file), "--attr", "location=left kidney", "--attr",
            "density=hypodense", "--threshold", "0.5", "--weights", str(weights),
            "--device", "cpu", "-o", str(out / "r.seg.nrrd"), "--labelmap",
            str(out / "r.nii.gz"), "--report", str(out / "r.json"), "--overlay",
            str(out / "r.png"),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    assert "lesion(s) for:" in printed.out and "wrote" in printed.out
    for name in ("r.seg.nrrd", "r.nii.gz", "r.json", "r.png"):
        assert (out / name).is_file(), name

    source, labelmap = sitk.ReadImage(str(ct_file)), sitk.ReadImage(str(out / "r.nii.gz"))
    assert labelmap.GetSize() == source.GetSize()
    np.testing.assert_allclose(labelmap.GetSpacing(), source.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(labelmap.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labelmap.GetDirection(), source.GetDirection(), atol=1e-6)

    report = json.loads((out / "r.json").read_text(encoding="utf-8"))
    lesions = report["lesions"]
    ids = np.unique(sitk.GetArrayFromImage(labelmap))
    assert len(lesions) >= 1 and set(ids[ids > 0]) <= {lesion["index"] for lesion in lesions}
    for lesion in lesions:
        assert {"name", "category_ranking", "score", "volume_ml", "diameter_mm"} <= set(lesion)
        assert len(lesion["centroid_ras"]) == 3 and lesion["volume_ml"] > 0
    assert report["description"]["location"] == "left kidney"


def test_find_runs_in_auto_mode(weights, ct_file, tmp_path):
    code = main(
        ["find", str(ct_file), "--weights", str(weights), "--device", "cpu",
         "--report", str(tmp_path / "auto.json")]
    )  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "auto.json").read_text(encoding="utf-8"))["mode"] == "auto"


def test_info_shows_a_summary_and_the_card_behind_json(weights, capsys):
    assert main(["info", "--weights", str(weights), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "malenia-cli-test" in printed and "device:" in printed and "--json" in printed
    assert len(printed.splitlines()) < 15  # a summary, not the card
    assert main(["info", "--weights", str(weights), "--device", "cpu", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "malenia-cli-test" and "sha256" in card


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "no such lesion"], "neither a preset nor a description"),
        (["--attr", "density"], "KEY=VALUE"),
        (["--attr", "density=purple"], "density"),
    ],
)
def test_bad_queries_exit_1_with_a_message(weights, ct_file, extra, message, capsys):
    code = main(["segment", str(ct_file), *extra, "--weights", str(weights), "--device", "cpu"])
    assert code == 1
    assert message in capsys.readouterr().err


def test_bad_files_exit_1_with_what_to_do(weights, tmp_path, capsys):
    flat = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(flat))
    assert main(["segment", str(flat), "--preset", "renal cyst", "--weights", str(weights)]) == 1
    assert "2D" in capsys.readouterr().err
    missing = tmp_path / "missing.safetensors"
    assert main(["info", "--weights", str(missing)]) == 1
    assert "No model weights found" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "nope.nii.gz"), "--preset", "renal cyst"]) == 1
    assert capsys.readouterr().err.startswith("error:")
