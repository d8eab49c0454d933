"""The training kit (``malenia.data.training_kit``): the real-CT training split as one compact
folder, and training from it without SimpleITK, as on the GPU machine lent to some sessions
(``scripts/make_device_kit.py``, ``scripts/device_train.sh``)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from real_ct_helpers import needs_data

REPO = Path(__file__).resolve().parents[1]


def test_training_resamples_crops_exactly_as_the_engine_does():
    """The numpy stage training uses for nodule crops gives SimpleITK's result, the voxels
    past the image's last centre included."""
    import SimpleITK as sitk
    from malenia.preprocessing import resample_array, resample_to_spacing

    rng = np.random.default_rng(0)
    for shape, spacing, target in (
        ((11, 64, 53), (2.5, 0.703125, 0.703125), (0.9375,) * 3),
        ((3, 43, 44), (2.5, 0.78125, 0.78125), (0.7161458,) * 3),
        ((20, 30, 30), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),
    ):
        array = rng.normal(-500, 300, shape).astype(np.float32)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(reversed(spacing)))
        expected = sitk.GetArrayFromImage(resample_to_spacing(image, tuple(reversed(target))))
        got = resample_array(array, spacing, target)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=0.01)
        assert (got == -1024.0).any() == (expected == -1024.0).any()


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from malenia.data.training_kit import write_training_kit

    folder = tmp_path_factory.mktemp("kit") / "kit"
    write_training_kit(folder)
    return folder


@needs_data
def test_a_kit_holds_the_training_split_and_nothing_else(kit, monkeypatch):
    from malenia.data.real_ct import (
        HCC_VALIDATION,
        REAL_CT_ENV,
        lidc_split,
        load_lidc,
        load_training_scans,
    )

    index = json.loads((kit / "training_kit.json").read_text())
    names = [scan["name"] for scan in index["scans"]]
    assert not set(names) & set(HCC_VALIDATION)
    with open(kit / "lidc_nodules" / "lidc_nodules.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(lidc_split(row["patient_id"]) == "train" for row in rows)
    files = {p.name for p in kit.rglob("*") if p.is_file()}
    assert not any(case in name for case in HCC_VALIDATION for name in files)

    direct, nodules = load_training_scans(), load_lidc("train")
    monkeypatch.setenv(REAL_CT_ENV, str(kit))
    from_kit = load_training_scans()
    assert [s.name for s in from_kit] == [s.name for s in direct] == names
    for a, b in zip(direct, from_kit, strict=True):
        assert np.abs(a.hu - b.hu).max() <= 0.5  # whole HU, as scanners write them
        assert (a.labels == b.labels).all() and (a.instances == b.instances).all()
        assert a.descriptions == b.descriptions and a.categories == b.categories
        assert a.origin_zyx == b.origin_zyx and a.known_locations == b.known_locations
        assert a.slice_mm == b.slice_mm and (a.muscle is None) == (b.muscle is None)
    assert [n.uid for n in load_lidc("train")] == [n.uid for n in nodules]
    assert load_lidc("validation") == []  # the kit has none to give


@needs_data
def test_a_kit_is_never_written_over_a_users_files_nor_read_at_another_spacing(kit, tmp_path):
    from malenia.data.training_kit import read_training_scans, write_training_kit
    from malenia.errors import MaleniaError

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(MaleniaError, match="not empty"):
        write_training_kit(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    with pytest.raises(MaleniaError, match="make a kit at that spacing"):
        read_training_scans(kit, (3.0, 3.0, 3.0))


@needs_data
def test_training_runs_from_a_kit_without_simpleitk(kit, tmp_path):
    """What the lent GPU machine lacks (SimpleITK) is not needed to train on the real mix."""
    config = json.loads((REPO / "configs" / "tiny_gpu_real.json").read_text())
    config.update(out=str(tmp_path / "run"), steps=2, batch_size=1, num_workers=0,
                  checkpoint_every=1, init_from=str(REPO / "Resources/Weights/malenia-tiny.safetensors"))  # fmt: skip
    config["data"]["mix"] = {"lidc": 0.5, "real_synthetic": 0.5}  # crops and real scans
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = (
        "import sys; sys.modules['SimpleITK'] = None\n"
        "from malenia.cli import main\n"
        f"sys.exit(main(['train', '--config', {str(tmp_path / 'config.json')!r}, '--device', 'cpu']))"
    )
    env = {**os.environ, "MALENIA_REAL_CT": str(kit)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, encoding="utf-8",
        errors="replace", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "last.safetensors").stat().st_size > 1_000_000


@needs_data
def test_the_device_script_trains_a_chunk_from_the_kit_and_goes_on_from_it(kit, tmp_path):
    """``scripts/device_train.sh`` as the GPU machine runs it, on the CPU here: one chunk
    leaves its weights in $OUT; carried back as start.safetensors, the next starts there."""
    config = json.loads((REPO / "configs" / "tiny_gpu_real.json").read_text())
    config.update(steps=1, batch_size=1, num_workers=0, checkpoint_every=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    devkit, out = tmp_path / "devkit", tmp_path / "out"
    devkit.mkdir()
    (devkit / "data").symlink_to(kit)
    env = {**os.environ, "DEVKIT": str(devkit), "OUT": str(out), "MALENIA_DEVICE": "cpu",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    for chunk in ("first", "second"):
        out.mkdir()
        done = subprocess.run(
            ["bash", "scripts/device_train.sh", "5", str(tmp_path / "config.json")],
            cwd=REPO, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert {"last.safetensors", "last.json", "log.csv", "train.txt"} <= {
            p.name for p in out.iterdir()
        }
        start = devkit / "start.safetensors" if chunk == "second" else config["init_from"]
        assert f"initialised from {start}" in done.stdout
        (out / "last.safetensors").rename(devkit / "start.safetensors")
        (out / "last.json").rename(devkit / "start.json")  # the weights' card goes with them
        for leftover in out.iterdir():
            leftover.unlink()
        out.rmdir()
