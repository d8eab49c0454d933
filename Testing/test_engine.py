"""The inference engine: geometry, caching, cancel, OOM fallback, bad input, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from malenia.errors import (
    CancelledError,
    InvalidRequestError,
    InvalidVolumeError,
    MaleniaError,
    UnknownAttributeValueError,
    WeightsError,
)
from malenia.inference import CancelToken, Engine
from malenia.io import CTVolume, read_volume, validate_ct
from malenia.model import MaleniaNet
from malenia.preprocessing import to_input_grid, to_model_grid
from malenia.weights import save_weights

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A real weights file of the tiny architecture (untrained: these tests check plumbing,
    not accuracy; docs/EVALUATION.md measures the trained weights)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_weights(MaleniaNet(), path, {"name": "malenia-test"})


@pytest.fixture(scope="module")
def engine(weights):
    return Engine.load(weights, device="cpu")


def body_ct(shape=(40, 44, 48), spacing=(2.0, 2.0, 2.0), direction=None, seed=0) -> CTVolume:
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000, np.int16)
    zz, yy, xx = np.indices(shape)
    body = ((yy - shape[1] / 2) / (shape[1] * 0.45)) ** 2 + (
        (xx - shape[2] / 2) / (shape[2] * 0.45)
    ) ** 2 <= 1
    array[body] = 40 + rng.normal(0, 10, body.sum()).astype(np.int16)
    sphere = (zz - 20) ** 2 + (yy - 22) ** 2 + (xx - 20) ** 2 <= 36
    array[sphere] = -5
    return CTVolume(
        array,
        spacing,
        (-40.0, 30.0, -100.0),
        tuple(np.ravel(direction if direction is not None else np.eye(3))),
        "test",
    )


def oblique(angle_deg=25.0) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.diag([1.0, -1.0, -1.0])],
    ids=["LPS", "RAS", "flipped"],
)
def test_geometry_round_trip_is_exact_at_model_spacing(direction):
    volume = body_ct(direction=direction)
    mask = (volume.array == -5).astype(np.float32)
    masked = CTVolume(mask, volume.spacing, volume.origin, volume.direction, "mask")
    model_image = to_model_grid(masked, (2.0, 2.0, 2.0))
    back = to_input_grid(
        sitk.GetArrayFromImage(model_image), model_image, volume.to_sitk(), nearest=True
    )
    assert np.array_equal(back > 0.5, mask > 0.5)


def test_geometry_round_trip_oblique_anisotropic_lands_on_the_same_voxels():
    volume = body_ct(shape=(24, 96, 96), spacing=(0.8, 0.8, 2.5), direction=oblique())
    zz, yy, xx = np.indices(volume.array.shape)
    centre = np.array([12, 48, 48])
    mask = (
        ((zz - centre[0]) * 2.5) ** 2
        + ((yy - centre[1]) * 0.8) ** 2
        + ((xx - centre[2]) * 0.8) ** 2
    ) <= 15.0**2
    model_image = to_model_grid(
        CTVolume(mask.astype(np.float32), volume.spacing, volume.origin, volume.direction),
        (2.0, 2.0, 2.0),
    )
    back = to_input_grid(sitk.GetArrayFromImage(model_image), model_image, volume.to_sitk()) > 0.5
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.9
    assert np.allclose(np.argwhere(back).mean(0), np.argwhere(mask).mean(0), atol=0.6)


def test_dicom_series_folder_reads_with_geometry(tmp_path):
    volume = body_ct(shape=(6, 32, 32), spacing=(0.7, 0.7, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    image = volume.to_sitk()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in position), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|1052": "0", "0028|1053": "1", "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
        }.items():  # fmt: skip
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    read = read_volume(tmp_path)
    assert read.array.shape == volume.array.shape
    assert np.array_equal(read.array, volume.array)
    assert np.allclose(read.spacing, volume.spacing, atol=1e-3)
    assert np.allclose(read.origin, volume.origin, atol=1e-3)


def test_requery_and_recut_do_not_run_the_encoder(engine):
    calls = {"n": 0}
    original = engine.model.encode_image

    def counting(images):
        calls["n"] += 1
        return original(images)

    engine.model.encode_image = counting
    try:
        encoded = engine.encode(body_ct(seed=1))
        after_encode = calls["n"]
        assert after_encode >= 1
        first = encoded.segment("renal cyst", threshold=0.5)
        encoded.segment({"location": "left kidney", "density": "hyperdense"}, threshold=0.5)
        encoded.segment("irregular hypodense mass in the pancreatic head")
        recut = encoded.recut(first, 0.7)
        assert engine.encode(body_ct(seed=1)) is encoded  # cached by content
        assert calls["n"] == after_encode
        assert recut.threshold == 0.7 and recut.probability is first.probability
        assert first.labelmap.shape == body_ct().array.shape
    finally:
        engine.model.encode_image = original


def test_cancel_stops_within_one_window(engine):
    calls = {"n": 0}
    original = engine.model.encode_image

    def counting(images):
        calls["n"] += 1
        return original(images)

    token = CancelToken()

    def progress(stage, done, total):
        if done >= 1:
            token.cancel()

    engine.model.encode_image = counting
    try:
        with pytest.raises(CancelledError, match="Cancelled"):
            engine.encode(body_ct(shape=(70, 70, 130), seed=2), progress=progress, cancel=token)
    finally:
        engine.model.encode_image = original
    assert calls["n"] == 1


def test_out_of_memory_falls_back_to_smaller_batches(weights):
    engine = Engine.load(weights, device="cpu")
    engine.window_batch = 2
    original = engine.model.encode_image
    seen = []

    def fragile(images):
        seen.append(images.shape[0])
        if images.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(images)

    engine.model.encode_image = fragile
    encoded = engine.encode(body_ct(shape=(40, 44, 100), seed=3))
    assert seen[0] == 2 and set(seen[1:]) == {1}
    assert "retrying with 1 window" in engine.device_note
    assert len(encoded.windows) == 2

    engine.model.encode_image = lambda images: (_ for _ in ()).throw(
        torch.OutOfMemoryError("out of memory")
    )
    with pytest.raises(MaleniaError, match="crop the volume"):
        engine.encode(body_ct(seed=4))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((32, 32), np.int16), "not a 3D volume"),
        (np.zeros((1, 32, 32), np.int16), "not a 3D volume"),
        (np.full((8, 16, 16), np.nan, np.float32), "NaN"),
        (np.zeros((8, 16, 16), np.int16), "constant"),
        (np.random.default_rng(0).integers(0, 3000, (8, 16, 16)).astype(np.int16), "MR"),
        (np.broadcast_to(np.int16(-1000), (1200, 1100, 1100)), "billion voxels"),
        (np.random.default_rng(0).integers(-1024, -850, (8, 16, 16)).astype(np.int16), "range"),
    ],
    ids=["2D", "single-slice", "NaN", "all-zero", "MR-like", "huge", "air-only"],
)
def test_bad_volumes_are_refused_with_a_clear_message(array, message):
    with pytest.raises(InvalidVolumeError, match=message):
        validate_ct(
            CTVolume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), "bad")
        )


def test_a_box_inside_the_lung_is_ct():
    """A crop around a ground-glass nodule holds nothing above -300 HU: still CT."""
    crop = np.random.default_rng(1).integers(-974, -291, (8, 16, 16)).astype(np.int16)
    validate_ct(CTVolume(crop, (0.7, 0.7, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), "gg"))


def test_rgb_and_2d_files_are_refused(tmp_path):
    rgb = sitk.Image([16, 16, 4], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InvalidVolumeError, match="components"):
        read_volume(tmp_path / "rgb.nrrd")
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkInt16), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InvalidVolumeError, match="2D"):
        read_volume(tmp_path / "flat.nrrd")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InvalidVolumeError, match="Cannot read"):
        read_volume(tmp_path / "junk.nii.gz")


def test_unknown_attribute_and_text_are_refused(engine):
    encoded = engine.encode(body_ct(seed=1))
    with pytest.raises(UnknownAttributeValueError, match="Allowed values"):
        encoded.segment({"density": "sparkly"})
    with pytest.raises(UnknownAttributeValueError, match="neither a preset"):
        encoded.segment("purple elephant")
    with pytest.raises(InvalidRequestError, match="threshold"):
        encoded.segment("renal cyst", threshold=1.5)


def test_missing_and_corrupt_weights_are_refused(weights, tmp_path):
    with pytest.raises(WeightsError, match="No model weights"):
        Engine.load(tmp_path / "nothing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(weights.read_bytes()[:-100] + b"\x00" * 100)
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    corrupt.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="corrupt"):
        Engine.load(corrupt)
    orphan = tmp_path / "orphan.safetensors"
    orphan.write_bytes(weights.read_bytes())
    with pytest.raises(WeightsError, match="card"):
        Engine.load(orphan)
    edited = tmp_path / "edited.safetensors"  # intact tensors, a card edited by hand
    edited.write_bytes(weights.read_bytes())
    for key, value in (("threshold", 1.5), ("organ_lesion_threshold", "0.1"),
                       ("lung_threshold", 0.0)):  # fmt: skip
        edited.with_suffix(".json").write_text(json.dumps({**card, "postprocess": {key: value}}))
        with pytest.raises(WeightsError, match=f"postprocess.{key} .* between 0 and 1"):
            Engine.load(edited)


def test_outputs_open_as_slicer_segmentation(engine, tmp_path, slicer_scene):
    import slicer
    from malenia.inference.outputs import (
        write_labelmap,
        write_overlay,
        write_report,
        write_seg_nrrd,
    )

    volume = body_ct(seed=1, direction=oblique(15))
    result = engine.encode(volume).segment("renal cyst", threshold=0.3)
    # Replace the untrained model's guess by a known lesion so the check is about files.
    known = np.zeros(volume.array.shape, np.int16)
    known[(volume.array == -5)] = 1
    result._labelmap = known
    result.lesions = result.lesions[:1] or result.lesions
    if not result.lesions:
        pytest.skip("untrained model produced no component to name")
    result.lesions[0].index = 1
    write_seg_nrrd(result, tmp_path / "out.seg.nrrd")
    write_labelmap(result, tmp_path / "out.nii.gz")
    write_report(result, tmp_path / "out.json")
    write_overlay(result, tmp_path / "out.png")

    node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    slicer_scene.scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "out.seg.nrrd"))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    assert segmentation.GetNthSegment(0).GetName() == result.lesions[0].name
    labelmap = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(labelmap), known)
    assert np.allclose(labelmap.GetDirection(), volume.direction)
    report = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert {
        "name",
        "category_ranking",
        "score",
        "volume_ml",
        "diameter_mm",
        "centroid_ras",
        "attributes",
    } <= set(report["lesions"][0])


def test_labelmap_resampled_around_lesions_equals_the_whole_grid_resample(engine):
    """The input-grid labelmap is resampled only around the lesions (fast on big CTs); it
    must be voxel-identical to resampling the whole grid, also for oblique anisotropic input."""
    from scipy import ndimage

    volume = body_ct(shape=(30, 60, 50), spacing=(2.5, 0.8, 0.9), direction=oblique(20.0))
    encoded = engine.encode(volume)
    probability = np.zeros(encoded.shape, np.float32)
    zz, yy, xx = np.indices(encoded.shape)
    centre = np.array(encoded.shape) // 2
    distance = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2] - 3) ** 2)
    probability[:] = np.clip(1.2 - distance / 5.0, 0, 1)
    probability[2:5, 2:5, 2:5] = 0.9  # a second lesion at the edge of the grid
    result = encoded._result(probability, 0.5, None, "auto", "test", None, 0.001)
    assert len(result.lesions) == 2

    ids = ndimage.grey_dilation(result.labels_model, size=(3, 3, 3)).astype(np.int16)
    whole_probability = to_input_grid(probability, encoded.model_reference, encoded.input_reference)
    whole_ids = to_input_grid(ids, encoded.model_reference, encoded.input_reference, nearest=True)
    expected = np.where(whole_probability > 0.5, whole_ids, 0)
    assert expected.max() == 2
    np.testing.assert_array_equal(result.labelmap, expected)


def test_components_are_ordered_by_size_and_small_ones_dropped():
    from malenia.inference.postprocess import components

    mask = np.zeros((20, 30, 30), bool)
    mask[2:5, 2:5, 2:5] = True  # 27 voxels
    mask[10:16, 10:20, 10:20] = True  # 600 voxels
    mask[18, 28, 28] = True  # 1 voxel: below the minimum
    labels, boxes = components(mask, min_voxels=2)
    assert labels.dtype == np.int16 and labels.max() == 2 and len(boxes) == 2
    assert (labels == 1).sum() == 600 and (labels == 2).sum() == 27
    assert labels[18, 28, 28] == 0
    assert boxes[0] == (slice(10, 16), slice(10, 20), slice(10, 20))


def test_longest_axial_diameter_of_a_disc_and_a_thin_line():
    from malenia.inference.postprocess import longest_axial_diameter

    yy, xx = np.indices((41, 41))
    disc = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2)[None].repeat(3, 0)
    disc[0] = False
    disc[0, 20, 5:36] = True  # a one-voxel-thin line of 31 voxels (no edge after erosion)
    diameter = longest_axial_diameter(disc, (5.0, 0.5, 0.5))
    assert diameter == pytest.approx(31 * 0.5, abs=0.01)  # 30 voxel centres apart + one voxel


def test_the_model_cards_calibrated_threshold_is_the_default(weights, tmp_path):
    """A card with postprocess.threshold (from `malenia calibrate`) sets the threshold a
    query gets when the caller gives none; an explicit threshold still wins."""
    import json
    import shutil

    from malenia.weights import card_path

    calibrated = tmp_path / "calibrated.safetensors"
    shutil.copy(weights, calibrated)
    card = json.loads(card_path(weights).read_text(encoding="utf-8"))
    card["postprocess"] = {"threshold": 0.2}
    card_path(calibrated).write_text(json.dumps(card))
    engine = Engine.load(calibrated, device="cpu")
    assert Engine.load(weights, device="cpu").default_threshold == 0.5  # uncalibrated card
    assert engine.default_threshold == 0.2
    encoded = engine.encode(body_ct())
    default = encoded.segment("renal cyst")
    assert default.threshold == 0.2
    expected = (default.probability > 0.2).sum()
    assert int((default.labels_model > 0).sum()) <= expected
    assert encoded.segment("renal cyst", threshold=0.6).threshold == 0.6
    assert encoded.find_lesions().threshold == 0.5  # the prompt-free map is not calibrated


def test_anatomy_grounding_adds_only_lesions_reaching_the_named_organ(
    weights, tmp_path, monkeypatch
):
    """Weights with a location head answer with the prompt map plus the prompt-free lesion
    map inside the named organ's region (lesions reaching it whole): nothing the prompt
    branch found is removed, nothing else is added; weights without the head are not
    grounded. A region larger than its organ can be is reported and not used."""
    from malenia.attributes import LesionDescription
    from malenia.inference.grounding import PLAUSIBLE_REGION_ML, location_region
    from malenia.model import MaleniaConfig

    # The untrained head below calls the whole body "kidney": lift the kidneys' plausibility
    # bound to test the mechanics (the adrenal keeps its bound, checked at the end).
    for kidney in ("right kidney", "left kidney"):
        monkeypatch.setitem(PLAUSIBLE_REGION_ML, kidney, 1e9)

    assert not Engine.load(weights, device="cpu").anatomy_grounding
    torch.manual_seed(1)
    model = MaleniaNet(MaleniaConfig(location_head=True))
    with torch.no_grad():  # an untrained head; a bias that calls everything "organ"
        model.location_head[-1].bias[-1] = 3.0
    path = save_weights(model, tmp_path / "grounded.safetensors", {"name": "grounded"})
    engine = Engine.load(path, device="cpu")
    assert engine.anatomy_grounding
    encoded = engine.encode(body_ct())
    query = LesionDescription(location="right kidney", density="hypodense")
    grounded = encoded.probability(query)
    alone = encoded.probability(query, grounding=False)
    region = location_region(encoded.location_probability("right kidney"), (2.0, 2.0, 2.0))
    assert region.any() and np.all(grounded >= alone)
    lesions = encoded.lesion_components()  # lesions reaching the region are added whole
    added = region | np.isin(lesions.labels, lesions.reaching(region, np.s_[:, :, :]))
    np.testing.assert_array_equal(grounded[~added], alone[~added])
    np.testing.assert_array_equal(grounded[region], np.maximum(alone, encoded.any_lesion)[region])
    for density in ("hypodense", "isodense", "hyperdense"):  # other queries push it out of
        encoded.probability(LesionDescription(location="left kidney", density=density))  # cache
    np.testing.assert_array_equal(encoded.probability(query), grounded)  # recomputed: the same
    # This head calls everything organ: an adrenal "region" of the whole body is reported
    adrenal = encoded.segment(LesionDescription(location="right adrenal gland"))
    assert "right adrenal gland" in adrenal.grounding_warning
    assert "--organ-features astra" in adrenal.grounding_warning  # the way to better organ maps
    assert adrenal.to_dict()["grounding_warning"] == adrenal.grounding_warning
    assert encoded.recut(adrenal, 0.7).grounding_warning == adrenal.grounding_warning
    # ... and not used: a region that cannot be the organ does not add lesions to the answer
    assert adrenal.grounded_in is None
    adrenal_alone = encoded.probability(LesionDescription(location="right adrenal gland"), False)
    np.testing.assert_array_equal(adrenal.probability, adrenal_alone)
    assert encoded.segment(query, grounding=False).grounding_warning is None
    result = encoded.segment(query)  # the report says where the answer was grounded
    assert result.to_dict()["grounded_in"] == "right kidney"
    assert encoded.recut(result, 0.7).grounded_in == "right kidney"
    assert encoded.segment(query, grounding=False).to_dict()["grounded_in"] is None
    engine.grounding = False  # switched off: the prompt branch alone
    np.testing.assert_array_equal(
        engine.encode(body_ct(seed=3)).probability(query),
        engine.encode(body_ct(seed=3)).probability(query, grounding=False),
    )


def test_whole_scan_lung_answers_default_to_the_threshold_calibrated_on_real_lungs(
    weights, tmp_path
):
    """A card with postprocess.lung_threshold (``malenia calibrate --lung``) sets the default
    of whole-scan answers naming a lung location (an organ or a lobe); other organs, answers
    without a location, boxes encoded on the finer grid and explicit thresholds keep theirs."""
    import json
    import shutil

    from malenia.weights import card_path

    calibrated = tmp_path / "calibrated.safetensors"
    shutil.copy(weights, calibrated)
    card = json.loads(card_path(weights).read_text(encoding="utf-8"))
    card["postprocess"] = {"threshold": 0.2, "roi_threshold": 0.4, "lung_threshold": 0.6}
    card_path(calibrated).write_text(json.dumps(card))
    engine = Engine.load(calibrated, device="cpu")
    volume = body_ct()
    encoded = engine.encode(volume)
    assert encoded.segment("lung cancer").threshold == 0.6
    assert encoded.segment({"location": "right lower lobe"}).threshold == 0.6
    assert encoded.segment("liver cancer").threshold == 0.2
    assert encoded.segment({"density": "hypodense"}).threshold == 0.2
    assert encoded.segment("lung cancer", threshold=0.3).threshold == 0.3
    lung_array = np.where(volume.array > 0, volume.array - 900, volume.array).astype(np.int16)
    lung = CTVolume(lung_array, volume.spacing, volume.origin, volume.direction, "lung")
    centre = tuple(volume.ijk_to_ras()[:3, :3] @ [24, 22, 20] + volume.ijk_to_ras()[:3, 3])
    box = engine.encode(lung, roi=(centre, (30.0, 30.0, 30.0)))
    assert box.zoomed and box.segment("lung cancer").threshold == 0.4


def test_answers_without_a_location_default_to_their_own_calibrated_threshold(weights, tmp_path):
    """A card with postprocess.unlocated_threshold (``malenia calibrate --unlocated``) sets the
    default of whole-scan answers whose description names no location; answers naming an
    organ or a lung location, boxes and explicit thresholds keep theirs, and a card without it
    answers at its threshold."""
    import json
    import shutil

    from malenia.weights import card_path

    calibrated = tmp_path / "calibrated.safetensors"
    shutil.copy(weights, calibrated)
    card = json.loads(card_path(weights).read_text(encoding="utf-8"))
    card["postprocess"] = {"threshold": 0.2, "roi_threshold": 0.4, "lung_threshold": 0.6,
                           "unlocated_threshold": 0.1}  # fmt: skip
    card_path(calibrated).write_text(json.dumps(card))
    engine = Engine.load(calibrated, device="cpu")
    volume = body_ct()
    encoded = engine.encode(volume)
    assert encoded.segment({"density": "hypodense", "shape": "irregular"}).threshold == 0.1
    assert encoded.segment("heterogeneous mass with ill-defined margins").threshold == 0.1
    assert encoded.segment("liver cancer").threshold == 0.2
    assert encoded.segment("lung cancer").threshold == 0.6
    assert encoded.segment({"density": "hypodense"}, threshold=0.3).threshold == 0.3
    centre = tuple(volume.ijk_to_ras()[:3, :3] @ [24, 22, 20] + volume.ijk_to_ras()[:3, 3])
    lung_array = np.where(volume.array > 0, volume.array - 900, volume.array).astype(np.int16)
    lung = CTVolume(lung_array, volume.spacing, volume.origin, volume.direction, "lung")
    box = engine.encode(lung, roi=(centre, (30.0, 30.0, 30.0)))
    assert box.zoomed and box.segment({"density": "hypodense"}).threshold == 0.4
    card["postprocess"] = {"threshold": 0.2, "unlocated_threshold": 1.5}
    card_path(calibrated).write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="unlocated_threshold"):
        Engine.load(calibrated, device="cpu")


def test_roi_queries_keep_the_input_grid_and_refuse_a_box_off_the_volume(engine):
    """A box of 100 mm or more is encoded at the model's spacing inside the box, and so is a
    small box in soft tissue; a small box that is mostly lung gets a finer grid of its own
    (the model learnt it on lung-nodule boxes); all answer on the input grid; a box beside
    the volume is a clear error."""
    volume = body_ct()
    centre = tuple(volume.ijk_to_ras()[:3, :3] @ [24, 22, 20] + volume.ijk_to_ras()[:3, 3])
    large = engine.encode(volume, roi=(centre, (100.0, 100.0, 100.0)))
    assert large.spacing_mm == (2.0, 2.0, 2.0) and not large.zoomed
    soft = engine.encode(volume, roi=(centre, (30.0, 30.0, 30.0)))
    assert not soft.zoomed
    lung_array = np.where(volume.array > 0, volume.array - 900, volume.array).astype(np.int16)
    lung = CTVolume(lung_array, volume.spacing, volume.origin, volume.direction, "lung")
    small = engine.encode(lung, roi=(centre, (30.0, 30.0, 30.0)))
    assert small.zoomed and max(small.spacing_mm) < 2.0
    for encoded in (large, soft, small):
        result = encoded.segment({"density": "hypodense"})
        assert result.labelmap.shape == volume.array.shape
    with pytest.raises(InvalidRequestError, match="outside the volume"):
        engine.encode(volume, roi=((5000.0, 0.0, 0.0), (20.0, 20.0, 20.0)))
