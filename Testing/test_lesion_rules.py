"""The calibrated lesion rules (``malenia.inference.lesion_rules``): a whole-scan lung answer
keeps its largest lesions, an organ answer drops lesions of fat density, a liver answer keeps
the voxels as dark as its description says, a lesion in an organ grows to its density edge and
no further; and the engine applies them only where the card
asks and only to the answers they are for."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from malenia.inference.lesion_maps import components_in_box
from malenia.inference.lesion_rules import (
    FAT_HU,
    GROWTH_CONTRAST_HU,
    drop_fat,
    grow_to_density,
    keep_density,
    keep_largest,
)
from malenia.weights import WeightsError, card_path

SPACING = (2.0, 2.0, 2.0)


def ball(shape, centre, radius) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def answer(probability, threshold=0.3):
    labels, boxes = components_in_box(probability, threshold, 1)
    return probability, labels, boxes


def test_keep_largest_drops_lesions_smaller_than_the_share_and_zeroes_them():
    shape = (30, 40, 40)
    probability = np.zeros(shape, np.float32)
    probability[ball(shape, (15, 12, 12), 6)] = 0.8  # ~900 voxels
    probability[ball(shape, (15, 30, 30), 3)] = 0.6  # ~120 voxels
    kept, labels, boxes = keep_largest(*answer(probability), share=0.5)
    assert len(boxes) == 1 and labels[15, 12, 12] == 1 and labels[15, 30, 30] == 0
    assert kept[15, 30, 30] == 0.0  # a re-cut or the slider does not bring it back
    assert probability[15, 30, 30] == 0.6  # the caller's map is not changed
    both = keep_largest(*answer(probability), share=0.1)
    assert len(both[2]) == 2


def test_keep_largest_by_mass_keeps_a_sure_lesion_over_a_larger_faint_one():
    """Sized by probability mass, a lung answer's sure mass outweighs a larger faint
    answer (vessels, an effusion's rim); sized by volume the faint one would win."""
    shape = (30, 40, 40)
    probability = np.zeros(shape, np.float32)
    probability[ball(shape, (15, 12, 12), 6)] = 0.32  # ~900 voxels, barely over the cut
    probability[ball(shape, (15, 30, 30), 5)] = 0.95  # ~520 voxels, sure
    by_volume = keep_largest(*answer(probability), share=1.0)
    by_mass = keep_largest(*answer(probability), share=1.0, by="mass")
    assert by_volume[1][15, 12, 12] > 0 and by_volume[1][15, 30, 30] == 0
    assert by_mass[1][15, 30, 30] > 0 and by_mass[1][15, 12, 12] == 0
    assert by_mass[0][15, 12, 12] == 0.0
    with pytest.raises(ValueError, match="sized by one of"):
        keep_largest(*answer(probability), share=1.0, by="area")


def test_drop_fat_drops_fat_lesions_and_keeps_fluid_and_soft_tissue_ones():
    """Renal sinus fat (-80 HU with grain) goes; a cyst (5 HU) and a soft-tissue mass (40 HU)
    with the same grain stay, renumbered; the dropped one's probability is 0."""
    rng = np.random.default_rng(3)
    shape = (30, 40, 90)
    hu = rng.normal(0, 15, shape).astype(np.float32) + 40.0
    probability = np.zeros(shape, np.float32)
    for x, level in ((15, -80.0), (45, 5.0), (75, 40.0)):
        lesion = ball(shape, (15, 20, x), 5)
        hu[lesion] += level - 40.0
        probability[lesion] = 0.6
    kept, labels, boxes = drop_fat(*answer(probability), hu, FAT_HU)
    assert len(boxes) == 2 and set(np.unique(labels)) == {0, 1, 2}
    assert labels[15, 20, 15] == 0 and kept[15, 20, 15] == 0.0
    assert labels[15, 20, 45] > 0 and labels[15, 20, 75] > 0


def organ_with_a_dark_lesion(lesion_hu: float, seed=0):
    """A 60 HU organ with a 10-voxel-radius lesion; the model marked a radius-4 core."""
    rng = np.random.default_rng(seed)
    shape = (40, 48, 48)
    organ = ball(shape, (20, 24, 24), 19)
    hu = np.full(shape, -100.0, np.float32)  # fat around the organ
    hu[organ] = 60.0
    lesion = ball(shape, (20, 24, 24), 10)
    hu[lesion] = lesion_hu
    hu += rng.normal(0, 12, shape)  # the scan's grain
    probability = np.where(ball(shape, (20, 24, 24), 4), 0.5, 0.05).astype(np.float32)
    return hu, organ, lesion, probability


def test_keep_density_keeps_the_voxels_darker_or_brighter_than_the_organ_by_the_contrast():
    shape = (30, 40, 40)
    hu = np.full(shape, 60, np.int16)  # the organ's parenchyma
    organ = np.zeros(shape, bool)
    organ[5:25, 5:35, 5:35] = True
    hu[~organ] = -100  # fat around it does not move the organ's level
    dark, bright = ball(shape, (15, 12, 12), 4), ball(shape, (15, 27, 27), 4)
    hu[dark], hu[bright] = 40, 90
    probability = np.where(organ, 0.3, 0.0).astype(np.float32)  # faint all over the organ
    hypodense = keep_density(probability, hu, organ, "hypodense", 10.0)
    assert hypodense.dtype == probability.dtype
    assert hypodense[15, 12, 12] == 0.3 and hypodense[15, 27, 27] == 0.0
    assert hypodense[10, 20, 20] == 0.0  # isodense parenchyma is no hypodense lesion
    hyperdense = keep_density(probability, hu, organ, "hyperdense", 10.0)
    assert hyperdense[15, 27, 27] == 0.3 and hyperdense[15, 12, 12] == 0.0
    assert keep_density(probability, hu, organ, "hypodense", 30.0)[15, 12, 12] == 0.0
    either = keep_density(probability, hu, organ, "hypodense", 10.0, sides="both")
    assert either[15, 12, 12] == either[15, 27, 27] == 0.3 and either[10, 20, 20] == 0.0
    nowhere = np.zeros(shape, bool)
    assert keep_density(probability, hu, nowhere, "hypodense", 10.0)[10, 20, 20] == 0.3
    with pytest.raises(ValueError, match="sides"):
        keep_density(probability, hu, organ, "hypodense", 10.0, sides="up")
    assert probability[10, 20, 20] == 0.3  # the caller's map is not changed


def test_a_dark_lesion_grows_to_its_density_edge_and_stays_in_it():
    hu, organ, lesion, probability = organ_with_a_dark_lesion(lesion_hu=10.0)
    grown = grow_to_density(*answer(probability), hu, organ, SPACING, max_mm=30.0)
    marked = grown > 0.3
    assert (marked & lesion).sum() / lesion.sum() > 0.9
    assert (marked & ~lesion).sum() < 0.1 * lesion.sum()
    assert np.allclose(grown[marked & ~(probability > 0.3)], 0.5)  # the lesion's own score
    assert not (probability > grown).any()  # growth only adds
    near = grow_to_density(*answer(probability), hu, organ, SPACING, max_mm=4.0)
    assert (near > 0.3).sum() < 0.6 * lesion.sum()  # the reach bounds it


def test_growth_keeps_an_isodense_lesion_and_stays_in_the_organ():
    hu, organ, lesion, probability = organ_with_a_dark_lesion(60.0 - GROWTH_CONTRAST_HU / 2)
    same = grow_to_density(*answer(probability), hu, organ, SPACING, max_mm=30.0)
    np.testing.assert_array_equal(same, probability)  # no density edge to grow to
    hu, organ, lesion, probability = organ_with_a_dark_lesion(lesion_hu=10.0)
    half = organ.copy()
    half[:, :, 24:] = False  # the organ map misses half the lesion
    grown = grow_to_density(*answer(probability), hu, half, SPACING, max_mm=30.0)
    added = (grown > 0.3) & ~(probability > 0.3)
    assert added.any() and not added[:, :, 26:].any()  # one voxel of slack at the map's edge


def abdomen_phantom(seed: int):
    """(Phantom, CTVolume) of a small abdominal phantom on the model's 2 mm grid."""
    from malenia.io import CTVolume
    from malenia.synth.phantom import make_phantom

    phantom = make_phantom(
        seed, (40, 64, 112), (2.0, 2.0, 2.0), "abdomen", "portal_venous", (20.0, 40.0, 0.0)
    )
    oz, oy, ox = phantom.origin_mm
    volume = CTVolume(phantom.ct, (2.0,) * 3, (ox, oy, oz), tuple(np.eye(3).ravel()), "p")
    return phantom, volume


def card_with(tmp_path, **rules):
    """A copy of the bundled weights whose card sets ``rules`` in its postprocess."""
    from malenia.inference.engine import default_weights_path

    weights = default_weights_path()
    copy = tmp_path / "rules.safetensors"
    shutil.copy(weights, copy)
    card = json.loads(card_path(weights).read_text(encoding="utf-8"))
    card["postprocess"] = (card.get("postprocess") or {}) | rules
    card_path(copy).write_text(json.dumps(card))
    return copy


def test_the_engine_grows_grounded_organ_answers_only_where_the_card_asks(tmp_path):
    """With postprocess.organ_growth_mm the bundled engine grows a grounded liver answer's
    lesion to the dark lesion drawn into the liver (a re-cut keeps it grown); without it, or
    for an answer without a location, the answer is the marked core alone. Out-of-range rule
    settings are refused at load."""
    from malenia.attributes import LesionDescription
    from malenia.inference import Engine
    from malenia.synth.anatomy import organ_mask

    phantom, volume = abdomen_phantom(2)
    engine = Engine.load(card_with(tmp_path, organ_growth_mm=20.0), device="cpu")
    encoded = engine.encode(volume)
    assert encoded.rules.organ_growth_mm == 20.0 and encoded.hu is not None
    liver = organ_mask(phantom.labels, "right liver lobe")
    centre = tuple(int(c) for c in np.median(np.argwhere(liver), axis=0))
    lesion = ball(liver.shape, centre, 6) & liver
    encoded.hu[lesion] = int(np.median(encoded.hu[liver])) - 50  # a dark lesion in the liver
    query = LesionDescription(location="right liver lobe", density="hypodense")
    core = ball(liver.shape, centre, 2)
    plain = LesionDescription(density="hypodense")
    for probability in (encoded.probability(query), encoded.probability(plain)):
        probability[...] = 0.0  # the cached maps the answers read: only the core is marked
        probability[core] = 0.9

    grown = encoded.segment(query, threshold=0.5)
    assert grown.grounded_in == "right liver lobe" and len(grown.lesions) == 1
    marked = grown.labels_model > 0
    assert (marked & lesion).sum() > 0.8 * lesion.sum() and (marked & ~lesion).sum() < 30
    assert np.array_equal(encoded.recut(grown, 0.6).labels_model > 0, marked)
    no_location = encoded.segment(plain, threshold=0.5)
    assert np.array_equal(no_location.labels_model > 0, core)
    encoded.rules.organ_growth_mm = None
    assert np.array_equal(encoded.segment(query, threshold=0.5).labels_model > 0, core)
    for key, value in (("organ_growth_mm", 0), ("organ_growth_mm", 500.0),
                       ("lung_keep_share", 1.5), ("lung_keep_share", "all"),
                       ("lung_keep_by", "area"), ("organ_lesion_faint_only", 1),
                       ("organ_lesion_faint_only", "yes")):  # fmt: skip
        with pytest.raises(WeightsError, match=f"postprocess.{key}"):
            Engine.load(card_with(tmp_path, **{key: value}), device="cpu")


def test_the_bundled_card_reads_faint_organ_lesions_at_its_cut_from_encoding_on():
    """The bundled card (stage 27f) cuts the prompt-free map at 0.1 for faint lesions only:
    a grounded answer is the union of the prompt map and that aligned map in the organ, the
    aligned map is made while encoding (not in the first interactive query), and a lung
    answer keeps the map as it is."""
    from malenia.inference import Engine
    from malenia.inference.grounding import aligned_lesion_map, grounded_probability

    engine = Engine.load(device="cpu")
    postprocess = engine.card["postprocess"]
    assert postprocess["organ_lesion_threshold"] == 0.1 and postprocess["organ_lesion_faint_only"]
    phantom, volume = abdomen_phantom(3)
    encoded = engine.encode(volume)
    threshold = encoded.default_threshold
    assert (0.1, threshold, True) in encoded._aligned_maps  # ready before any query
    expected_map = aligned_lesion_map(encoded.any_lesion, 0.1, threshold, faint_only=True)
    query = "liver cancer"
    description = encoded.resolve(query)[0]
    assert encoded.grounding_warning(description.location) is None  # the liver was found
    region = encoded.location_region(description.location)
    expected = grounded_probability(
        encoded.probability(description, grounding=False), expected_map, region
    )
    np.testing.assert_allclose(encoded.probability(description), expected, atol=1e-6)
    lung = encoded.resolve("lung cancer")[0]
    assert encoded._grounding_lesion_map(lung)[0] is encoded.any_lesion


def test_the_engine_drops_fat_from_organ_answers_only_where_the_card_asks(tmp_path):
    """With postprocess.organ_fat_hu an answer naming the kidney loses a lesion lying in fat
    and keeps the one in the kidney; a description with fat (an angiomyolipoma's), a lung
    answer and a colon answer (its lesions lie against gas) keep both, as does the same
    answer without the card's rule."""
    from malenia.attributes import LesionDescription
    from malenia.inference import Engine
    from malenia.synth.anatomy import organ_mask

    phantom, volume = abdomen_phantom(2)
    engine = Engine.load(card_with(tmp_path, organ_fat_hu=FAT_HU), device="cpu")
    encoded = engine.encode(volume)
    kidney = organ_mask(phantom.labels, "left kidney")
    in_kidney = tuple(int(c) for c in np.median(np.argwhere(kidney), axis=0))
    fat = np.argwhere(encoded.hu < -80)
    in_fat = tuple(int(c) for c in fat[len(fat) // 2])
    marks = ball(kidney.shape, in_kidney, 2) | ball(kidney.shape, in_fat, 2)
    encoded.hu[ball(kidney.shape, in_fat, 4)] = -100  # the fat around the mark is fat
    kidney_mass = LesionDescription(location="left kidney", density="isodense")
    with_fat = LesionDescription(location="left kidney", specific_features=("fat",))
    lung = LesionDescription(location="left lower lobe")
    colon = LesionDescription(location="descending colon")

    def marked(query):
        encoded.probability(query)[...] = np.where(marks, 0.9, 0.0)  # the map the answer reads
        return encoded.segment(query, threshold=0.5).labels_model > 0

    assert marked(kidney_mass)[in_kidney] and not marked(kidney_mass)[in_fat]
    for query in (with_fat, lung, colon):
        assert marked(query)[in_kidney] and marked(query)[in_fat]
    encoded.rules.organ_fat_hu = None
    assert marked(kidney_mass)[in_fat]
    for value in (0.5, -600.0, "fat"):
        with pytest.raises(WeightsError, match="postprocess.organ_fat_hu"):
            Engine.load(card_with(tmp_path, organ_fat_hu=value), device="cpu")


def test_the_engine_keeps_dense_voxels_of_liver_answers_only_where_the_card_asks(tmp_path):
    """With postprocess.organ_density_contrast_hu a hypodense liver answer keeps the marked
    lesion that is darker than the liver and loses the isodense one (a re-cut too); an
    isodense description and the same answer without the card's rule keep both, and a kidney
    answer (its map is no density reference: it holds fat) keeps an isodense mark; the lesion
    made bright is lost, unless the card keeps either side. Out-of-range settings are refused
    at load."""
    from malenia.attributes import LesionDescription
    from malenia.inference import Engine
    from malenia.synth.anatomy import organ_mask
    from scipy import ndimage

    phantom, volume = abdomen_phantom(2)
    engine = Engine.load(card_with(tmp_path, organ_density_contrast_hu=5.0), device="cpu")
    encoded = engine.encode(volume)
    assert encoded.rules.organ_density_contrast_hu == 5.0 and encoded._hu is not None
    liver = organ_mask(phantom.labels, "right liver lobe")
    inside = np.argwhere(ndimage.binary_erosion(liver, iterations=4))
    dark_at, iso_at = (tuple(int(c) for c in inside[len(inside) * k // 3]) for k in (1, 2))
    level = int(np.median(encoded.hu[liver]))
    encoded.hu[liver] = level  # a liver of one density, but for the dark lesion
    encoded.hu[ball(liver.shape, dark_at, 3)] = level - 40
    encoded.hu[ball(liver.shape, iso_at, 3)] = level + 2  # isodense, not exactly the median
    kidney = organ_mask(phantom.labels, "left kidney")
    in_kidney = tuple(int(c) for c in np.median(np.argwhere(kidney), axis=0))
    marks = ball(liver.shape, dark_at, 2) | ball(liver.shape, iso_at, 2)
    marks |= ball(liver.shape, in_kidney, 2)
    hypodense = LesionDescription(location="right liver lobe", density="hypodense")
    isodense = LesionDescription(location="right liver lobe", density="isodense")
    renal = LesionDescription(location="left kidney", density="hypodense")

    def answered(query):
        encoded.probability(query)[...] = np.where(marks, 0.9, 0.0)  # the map the answer reads
        return encoded.segment(query, threshold=0.5)

    answer = answered(hypodense)
    kept = answer.labels_model > 0
    assert answer.grounded_in == "right liver lobe"
    assert kept[dark_at] and not kept[iso_at]
    assert not (encoded.recut(answer, 0.3).labels_model > 0)[iso_at]
    assert (answered(isodense).labels_model > 0)[iso_at]
    assert (answered(renal).labels_model > 0)[in_kidney]
    encoded.hu[ball(liver.shape, dark_at, 3)] = level + 40  # the same lesion, bright
    assert not (answered(hypodense).labels_model > 0)[dark_at]
    encoded.rules.organ_density_sides = "both"  # a lesion bright in another phase
    kept = answered(hypodense).labels_model > 0
    assert kept[dark_at] and not kept[iso_at]
    encoded.rules.organ_density_contrast_hu = None
    assert (answered(hypodense).labels_model > 0)[iso_at]
    for key, value in (("organ_density_contrast_hu", 150.0), ("organ_density_contrast_hu", -200.0),
                       ("organ_density_contrast_hu", "dark"), ("organ_density_sides", "up")):  # fmt: skip
        with pytest.raises(WeightsError, match=f"postprocess.{key}"):
            Engine.load(card_with(tmp_path, **{key: value}), device="cpu")
