"""The training data drawn from the real scans of ../shared/data/real_ct: lesions rendered
into real organs, real lesions, pasted LIDC nodules, masses in real muscle and lesion-free
windows (skipped with a reason where that folder is absent)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from real_ct_helpers import needs_data
from scipy import ndimage


@needs_data
def test_training_mixture_never_reads_validation_cases():
    from malenia.data.real_ct import HCC_VALIDATION, load_lidc
    from malenia.data.real_mix import RealMixDataset
    from malenia.synth.split import SEEN_CATEGORIES

    dataset = RealMixDataset(SEEN_CATEGORIES, seed=3)
    assert not {s.name for s in dataset.scans} & set(HCC_VALIDATION)
    validation = {n.patient for n in load_lidc("validation")}
    assert validation and not {n.patient for n in dataset.nodules} & validation
    kinds, sources = {}, set()
    for index in range(40):
        item = dataset[index]
        assert item["image"].shape == (1, 64, 64, 64) and item["instance_mask"].shape == (
            64,
            64,
            64,
        )
        assert len(item["descriptions"]) == len(item["categories"]) == item["instance_mask"].max()
        kinds.setdefault("negative" if not item["descriptions"] else item["categories"][0], item)
        sources.add(item["source"])  # which part of the mixture (per-source losses)
    assert sources <= {*dataset.kinds, "phantom_scanner_noise"} and "lidc" in sources
    assert "negative" in kinds and "lung nodule" in kinds  # real negatives and LIDC nodules
    synthetic_in_real = [k for k, v in kinds.items() if "known_locations" in v and k != "negative"]
    assert synthetic_in_real


@needs_data
def test_real_anatomy_windows_ask_only_labelled_organs_and_teach_the_location_head():
    """The location head's real windows: each organ the scan labels completely is centred
    in turn (a kidney as often as the liver), only those are asked, and a few steps of the
    anatomy task on them lower its organ loss."""
    import random

    import torch
    from malenia.data.real_anatomy import RealAnatomyDataset
    from malenia.data.real_ct import load_totalseg_example
    from malenia.model import MaleniaConfig, MaleniaNet
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.split import SEEN_CATEGORIES
    from malenia.train import TrainConfig
    from malenia.training.anatomy import anatomy_targets, compute_anatomy_loss
    from malenia.training.prompts import Vocabulary

    scan = load_totalseg_example()
    dataset = RealAnatomyDataset(SEEN_CATEGORIES, seed=4, phantom_share=0.0, scans=[scan])
    items = [dataset[i] for i in range(12)]
    assert items[0]["image"].shape == (1, 64, 64, 64) and items[0]["labels"].shape == (64,) * 3
    assert np.array_equal(dataset[5]["image"], items[5]["image"])  # item i is fixed
    centred = set()
    for item in items:
        assert item["known_locations"] == scan.known_locations
        middle = item["labels"][24:40, 24:40, 24:40]
        centred |= {n for n in scan.known_locations if (middle == LOCATION_LABEL[n]).any()}
        names, _ = anatomy_targets(item["labels"], random.Random(0), 9, 1.0, known=scan.known_locations)  # fmt: skip
        assert names and set(names) <= set(scan.known_locations)
    assert len(centred) >= 5  # many organs, not just the large ones in view
    kept = RealAnatomyDataset(SEEN_CATEGORIES, seed=4, phantom_share=0.0, scans=[scan], distinct=3)
    assert len(kept) == 3 and kept[4] is kept[1]  # made once, then cycled (features cached)
    with pytest.raises(ValueError, match="shares"):
        RealAnatomyDataset(SEEN_CATEGORIES, phantom_share=1.5, scans=[scan])

    torch.manual_seed(0)
    model = MaleniaNet(MaleniaConfig.from_dict({"name": "tiny", "location_head": True}))
    config = TrainConfig(task="anatomy", locations_per_item=4, coordinate_jitter_mm=(0.0, 0.0))
    trained = [p for n, p in model.named_parameters() if n.startswith("location_")]
    optimizer = torch.optim.Adam(trained, lr=3e-3)
    vocabulary, batch = Vocabulary("cpu"), items[:2]
    losses = []
    for _ in range(8):
        loss, _parts = compute_anatomy_loss(model, batch, vocabulary, config, 0, "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    nothing_known = [{**item, "known_locations": ()} for item in batch]
    loss, parts = compute_anatomy_loss(model, nothing_known, vocabulary, config, 0, "cpu")
    assert float(loss) == 0.0 and parts["total"] == 0.0


@needs_data
def test_soft_tissue_masses_grow_in_muscle_and_fat_never_in_bone():
    """The muscle kind of the training mixture: a mass in real skeletal muscle, prompted by
    attributes only (no location names muscle), in the window, never inside bone."""
    from malenia.data.real_mix import SOFT_TISSUE_CATEGORY, RealMixDataset
    from malenia.preprocessing import normalize_ct
    from malenia.synth.split import SEEN_CATEGORIES

    dataset = RealMixDataset(SEEN_CATEGORIES, seed=5, mix={"soft_tissue": 1.0})
    scan = next(s for s in dataset.scans if s.muscle is not None)
    assert scan.muscle.sum() * 8 / 1000 > 500  # ml of gluteal, paraspinal and psoas muscle
    bone_level = float(normalize_ct(np.array([300.0]))[0])
    volumes = []
    for index in range(6):
        item = dataset[index]
        assert item["categories"] == [SOFT_TISSUE_CATEGORY]
        (description,) = item["descriptions"]
        assert description.location is None and description.density and description.shape
        mask = item["instance_mask"] > 0
        volumes.append(mask.sum() * 8 / 1000)
        core = ndimage.binary_erosion(mask, iterations=2)
        assert (item["image"][0][core] > bone_level).mean() < 0.02  # not in bone
        assert core.any()
    assert 5 < np.median(volumes) < 400, volumes  # ml: masses of 2.5-9 cm


@needs_data
def test_lung_cancers_in_real_lungs_reach_chest_ct_size_under_the_pleura():
    """The real-lung renders: the masses of a chest CT (up to 7 cm), in lung (never in bowel
    gas), and, asked to, centred under the pleura, mediastinum or diaphragm."""
    from malenia.data.real_mix import PLEURAL_DEPTH_MM, RealMixDataset, subpleural
    from malenia.synth.lesions import LUNG_LABELS, LesionRecord, render_lesions
    from malenia.synth.split import SEEN_CATEGORIES

    dataset = RealMixDataset(SEEN_CATEGORIES, seed=7, mix={"real_synthetic": 1.0})
    volumes = []
    for index in range(120):
        item = dataset[index]
        mask = item["instance_mask"] == 1
        if item["categories"][:1] != ["lung cancer"] or not mask.any():
            continue
        volumes.append(mask.sum() * 8 / 1000)
        assert np.isin(item["labels"][mask], list(LUNG_LABELS)).mean() > 0.8
        if len(volumes) == 24:
            break
    assert len(volumes) == 24 and max(volumes) > 40, volumes  # ml: a 4-5 cm mass at least once

    scan = next(s for s in dataset.scans if s.name == "RadCTTACEomics_2022")
    labels = scan.labels[60:124, 40:136, 40:152]
    hu = scan.hu[60:124, 40:136, 40:152]
    near = subpleural(labels, (2.0, 2.0, 2.0))
    depth = ndimage.distance_transform_edt(np.isin(labels, list(LUNG_LABELS)), sampling=2.0)
    description = next(r.description for r in _lung_cancer_pool() if r.description.relation)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        record = LesionRecord("lung cancer", replace(description, location="left lower lobe"),
                              size_mm=(30, 40))  # fmt: skip
        _, mask, done = render_lesions(hu, labels, [record], rng, (2.0, 2.0, 2.0), placement=near)
        centre = tuple(done[0].rendered["centre_voxel"])
        assert near[centre] and depth[centre] <= PLEURAL_DEPTH_MM


def _lung_cancer_pool():
    from malenia.synth.dataset import lesion_pool

    return lesion_pool("lung cancer")


@needs_data
def test_pasted_lidc_nodules_are_real_masses_in_real_lungs_at_whole_scan_scale():
    """The lidc_paste kind: a real training nodule enlarged to a chest-CT mass, in a real
    lung of a training scan on the 2 mm grid, labelled only where it is in the lung, and
    prompted with its readers' description plus the lobe it landed in."""
    from malenia.data.real_ct import LUNG_LOBES, load_lidc
    from malenia.data.real_mix import LIDC_CATEGORY, RealMixDataset
    from malenia.synth.lesions import LUNG_LABELS
    from malenia.synth.split import SEEN_CATEGORIES

    dataset = RealMixDataset(SEEN_CATEGORIES, seed=5, mix={"lidc_paste": 1.0})
    validation = {n.patient for n in load_lidc("validation")}
    assert not {n.patient for n in dataset.nodules} & validation
    volumes = []
    for index in range(10):
        item = dataset[index]
        mask = item["instance_mask"] > 0
        if not item["descriptions"]:
            continue
        assert item["categories"] == [LIDC_CATEGORY] and "lung cancer" in item["compatible"]
        (description,) = item["descriptions"]
        assert description.location in LUNG_LOBES
        assert np.isin(item["labels"][mask], list(LUNG_LABELS)).all()
        # Solid tissue where the label is: a nodule pasted in, not lung parenchyma.
        lung_level = float(
            np.median(item["image"][0][np.isin(item["labels"], list(LUNG_LABELS)) & ~mask])
        )
        assert np.median(item["image"][0][ndimage.binary_erosion(mask)]) > lung_level + 0.2
        volumes.append(mask.sum() * 8 / 1000)
    assert len(volumes) >= 8 and max(volumes) > 30 and min(volumes) < 30, volumes  # ml


@needs_data
def test_lesion_free_windows_include_real_lungs():
    """Real negatives: empty answers in real tissue, a share of them centred in a real lung
    (vessels, fissures and airways are not lesions), the rest in the body."""
    from malenia.data.real_mix import NEGATIVE_LUNG_SHARE, RealMixDataset
    from malenia.synth.lesions import LUNG_LABELS
    from malenia.synth.split import SEEN_CATEGORIES

    dataset = RealMixDataset(SEEN_CATEGORIES, seed=11, mix={"real_negative": 1.0})
    assert dataset.lung_scans  # the HCC training scans reach well into the lung bases
    in_lung = 0
    for index in range(60):
        item = dataset[index]
        # A lung base fills a tenth to a half of a window centred in it (0.01 on average
        # for windows centred anywhere in the body).
        in_lung += np.isin(item["labels"], list(LUNG_LABELS)).mean() > 0.1
        # An empty window, or one holding a real lesion that is labelled as one.
        assert len(item["descriptions"]) == item["instance_mask"].max()
    share = NEGATIVE_LUNG_SHARE * len(dataset.lung_scans) / len(dataset.scans)
    assert 0.5 * share * 60 <= in_lung <= 1.5 * share * 60 + 3, in_lung


def test_paste_stops_at_the_chest_wall():
    """A juxtapleural paste: the part of the nodule outside the lung is neither drawn nor
    labelled (the chest wall's soft tissue hides it), the rest is the nodule's HU."""
    from malenia.data.nodule_paste import paste

    window = np.full((32, 32, 32), -850.0, np.float32)
    lung = np.ones(window.shape, bool)
    lung[:, :, 20:] = False  # chest wall from x = 20
    window[~lung] = 40.0
    z, y, x = np.mgrid[:15, :15, :15]
    nodule = (z - 7) ** 2 + (y - 7) ** 2 + (x - 7) ** 2 <= 36
    hu = np.where(nodule, 30.0, -850.0).astype(np.float32)
    out, lesion = paste(window, lung, hu, nodule, (16, 16, 18))
    assert lesion.any() and not lesion[:, :, 20:].any()
    assert lesion.sum() < nodule.sum()  # cut at the wall
    assert np.allclose(out[ndimage.binary_erosion(lesion, iterations=2)], 30.0, atol=1.0)
    assert np.allclose(out[:, :, 21:], 40.0)  # the wall unchanged
    assert np.allclose(out[:, :, :5], -850.0)  # lung far away unchanged


def test_soft_tissue_near_the_lung_opens_to_lung_masses_and_organs_stay_closed():
    """Unlabelled soft tissue within CONTACT_DEPTH_MM of the lung becomes free space for a
    lung mass; bone, air, tissue farther away and labelled organs (the liver) do not."""
    from malenia.data.real_mix import CONTACT_DEPTH_MM, soft_tissue_open_to_lung_masses
    from malenia.synth.anatomy import LABELS

    labels = np.zeros((8, 8, 40), np.uint8)
    hu = np.full(labels.shape, 40.0, np.float32)
    labels[:, :, :10] = LABELS["left lower lobe"]
    hu[:, :, :10] = -850.0
    labels[:, :, 12:14] = LABELS["right liver lobe"]
    hu[:, :, 14:16] = 700.0  # a rib
    opened = soft_tissue_open_to_lung_masses(labels, hu, (2.0, 2.0, 2.0))
    body = opened == LABELS["body"]
    reach = int(CONTACT_DEPTH_MM / 2.0) + 9  # the last x within the depth of the lung
    assert body[:, :, 10:12].all() and body[:, :, 16 : reach + 1].all()
    assert not body[:, :, reach + 1 :].any()  # too far from the lung
    assert (opened[:, :, 12:14] == LABELS["right liver lobe"]).all()  # an organ stays closed
    assert not body[:, :, 14:16].any() and (opened[:, :, :10] == labels[:, :, :10]).all()


@needs_data
def test_lung_masses_may_lie_on_the_mediastinum_and_chest_wall_when_asked():
    """With ``lung_contact_share`` the real-lung renders cross the pleura into the soft
    tissue beside it (a real mass on the aorta or chest wall has no air around that side);
    the location head's labels stay the scan's own. Without
    it (every config before stage 22) they stay in the lung."""
    from malenia.data.real_mix import RealMixDataset
    from malenia.synth.anatomy import LABELS
    from malenia.synth.lesions import LUNG_LABELS
    from malenia.synth.split import SEEN_CATEGORIES

    outside = {}
    for share in (0.0, 1.0):
        dataset = RealMixDataset(SEEN_CATEGORIES, seed=7, mix={"real_synthetic": 1.0},
                                 lung_contact_share=share)  # fmt: skip
        fractions = []
        for index in range(120):
            item = dataset[index]
            mask = item["instance_mask"] == 1
            if item["categories"][:1] != ["lung cancer"] or not mask.any():
                continue
            fractions.append(1.0 - np.isin(item["labels"][mask], list(LUNG_LABELS)).mean())
            assert not (item["labels"] == LABELS["body"]).any()  # opened for rendering only
            if len(fractions) == 12:
                break
        outside[share] = np.array(fractions)
    assert np.median(outside[0.0]) < 0.02, outside
    assert np.median(outside[1.0]) > 0.15 and outside[1.0].max() > 0.4, outside


def test_a_pasted_nodule_can_take_the_noise_of_the_scan_it_is_pasted_into():
    """An enlarged LIDC nodule is smooth (interpolated from another scanner's grid); with a
    ``noise_rng`` it gets noise like the host window's soft tissue instead."""
    from malenia.data.nodule_paste import paste

    rng = np.random.default_rng(0)
    shape = (40, 40, 80)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (1.0, 0.0, 0.0))
    window = (40.0 + noise * (10.0 / noise.std())).astype(np.float32)
    window[:, :, :40] = -850.0
    lung = np.zeros(shape, bool)
    lung[:, :, :40] = True
    zz, yy, xx = np.indices((21, 21, 21)) - 10
    mask = zz**2 + yy**2 + xx**2 <= 81
    nodule = np.where(mask, 30.0, -850.0).astype(np.float32)  # smooth inside
    inside = np.zeros(shape, bool)
    inside[15:26, 15:26, 15:26] = (
        mask[5:16, 5:16, 5:16] & (zz**2 + yy**2 + xx**2 <= 9)[5:16, 5:16, 5:16]
    )

    def grain(volume, where=inside):
        return float((volume - ndimage.gaussian_filter(volume, 1.5))[where].std())

    soft_tissue = np.roll(inside, 40, axis=2)

    as_is, lesion = paste(window, lung, nodule, mask, (20, 20, 20))
    noisy, lesion_again = paste(window, lung, nodule, mask, (20, 20, 20), np.random.default_rng(1))
    assert (lesion == lesion_again).all() and lesion[inside].all()
    assert grain(as_is) < 1.0
    assert abs(grain(noisy) - grain(window, soft_tissue)) < 0.2 * grain(window, soft_tissue)


def test_a_config_asks_for_lesions_that_keep_the_scanners_noise():
    """``data.keep_scanner_noise`` reaches the real mixture and ``data.phantom_scanner_noise``
    its phantoms (configs before stage 23 lack both and keep the white-noise renders they
    were trained with)."""
    from malenia.model import MaleniaConfig
    from malenia.training.config import TrainConfig
    from malenia.training.data import make_dataset

    for data, real, phantoms in (
        ({}, False, False),
        ({"keep_scanner_noise": True}, True, False),
        ({"keep_scanner_noise": True, "phantom_scanner_noise": True}, True, True),
    ):
        config = TrainConfig(data={"type": "real_mix", **data})
        dataset = make_dataset(config, MaleniaConfig.tiny())
        assert dataset.keep_scanner_noise is real
        assert dataset.phantoms.keep_scanner_noise is phantoms
        assert dataset.real_synthetic_categories is None
        assert dataset.slice_profile is False
    dataset = make_dataset(TrainConfig(data={"type": "real_mix", "slice_profile": True}),
                           MaleniaConfig.tiny())  # fmt: skip
    assert dataset.slice_profile is True
    config = TrainConfig(
        data={"type": "real_mix", "real_synthetic_categories": {"liver cancer": 2}}
    )
    dataset = make_dataset(config, MaleniaConfig.tiny())
    assert dataset.real_synthetic_categories == {"liver cancer": 2.0}


def test_a_share_of_the_phantoms_can_keep_their_own_noise():
    """``data.phantom_scanner_noise`` as a share: about that share of phantom items draw their
    lesions with the phantom's noise, the same items every time, and a share outside [0, 1]
    is refused before any rendering."""
    from malenia.synth import SyntheticLesionDataset

    half = SyntheticLesionDataset(("liver cancer",), seed=3, keep_scanner_noise=0.5)
    kept = [half._keeps_scanner_noise(i) for i in range(400)]
    assert 0.4 < np.mean(kept) < 0.6
    assert kept == [half._keeps_scanner_noise(i) for i in range(400)]
    both = [kept.index(True), kept.index(False)]  # each item says how it was drawn
    assert [half[i]["source"] for i in both] == ["phantom_scanner_noise", "phantom"]
    assert not any(SyntheticLesionDataset(("liver cancer",), keep_scanner_noise=0.0)
                   ._keeps_scanner_noise(i) for i in range(50))  # fmt: skip
    assert all(SyntheticLesionDataset(("liver cancer",), keep_scanner_noise=True)
               ._keeps_scanner_noise(i) for i in range(50))  # fmt: skip
    with pytest.raises(ValueError, match="share in"):
        SyntheticLesionDataset(("liver cancer",), keep_scanner_noise=1.5)


@needs_data
def test_liver_cancers_are_described_as_their_contrast_phase_shows_them():
    """Real HCC comes in every phase: a training tumour is described by its HU against the
    liver around it (0697 darker, equilibrium; 2022 brighter, arterial), and a share of the
    liver cancers rendered into real livers is drawn, and described, hyperdense."""
    from malenia.data.real_ct import HCC_TRAIN, load_hcc
    from malenia.data.real_mix import ARTERIAL_LIVER_CANCER_SHARE, RealMixDataset
    from malenia.preprocessing import hu_from_normalized
    from malenia.synth.anatomy import LOCATION_LABEL

    densities = {case: load_hcc(case).descriptions[0].density for case in HCC_TRAIN}
    assert densities == {"RadCTTACEomics_0697": "hypodense", "RadCTTACEomics_2022": "hyperdense"}

    dataset = RealMixDataset(("liver cancer",), seed=11, mix={"real_synthetic": 1.0})
    liver = [LOCATION_LABEL["right liver lobe"], LOCATION_LABEL["left liver lobe"]]
    differences = {"hyperdense": [], "other": []}
    for index in range(48):
        item = dataset[index]
        rendered = item["instance_mask"] == 1
        if item["categories"][:1] != ["liver cancer"] or rendered.sum() < 30:
            continue
        hu = hu_from_normalized(item["image"][0])
        ring = ndimage.binary_dilation(rendered, iterations=3) & ~rendered
        ring &= np.isin(item["labels"], liver) & (item["instance_mask"] == 0)
        if ring.sum() < 30:
            continue
        kind = "hyperdense" if item["descriptions"][0].density == "hyperdense" else "other"
        differences[kind].append(float(hu[rendered].mean() - hu[ring].mean()))
    drawn = len(differences["hyperdense"]) + len(differences["other"])
    assert drawn >= 25
    share = len(differences["hyperdense"]) / drawn
    assert 0.5 * ARTERIAL_LIVER_CANCER_SHARE < share < 2.0 * ARTERIAL_LIVER_CANCER_SHARE
    assert np.median(differences["hyperdense"]) > 5.0, differences  # brighter than the liver
    assert np.median(differences["other"]) < -5.0, differences  # the records: mostly darker


def test_a_config_chooses_how_often_each_category_is_rendered_into_real_organs():
    """``data.real_synthetic_categories`` weighs categories, not (category, location) pairs:
    lung cancer's five lobes no longer make it drawn two and a half times as often as
    liver cancer; a category the scan cannot host is skipped; a typo is refused."""
    from malenia.data.real_mix import RealMixDataset

    options = [("liver cancer", "right liver lobe"), ("liver cancer", "left liver lobe")] + [
        ("lung cancer", lobe) for lobe in ("a", "b", "c", "d", "e")
    ]
    rng = np.random.default_rng(0)
    by_pair = RealMixDataset(["liver cancer"])
    drawn = [by_pair._pick_real_synthetic(options, rng)[0] for _ in range(2000)]
    assert 0.2 < drawn.count("liver cancer") / 2000 < 0.36  # 2 of 7 pairs
    weighted = RealMixDataset(
        ["liver cancer"], real_synthetic_categories={"liver cancer": 3.0, "lung cancer": 1.0,
                                                     "pancreatic cyst": 5.0}
    )  # fmt: skip
    drawn = [weighted._pick_real_synthetic(options, rng) for _ in range(2000)]
    assert 0.7 < [c for c, _ in drawn].count("liver cancer") / 2000 < 0.8  # no pancreas here
    assert {loc for c, loc in drawn if c == "liver cancer"} == {"right liver lobe",
                                                                "left liver lobe"}  # fmt: skip
    with pytest.raises(ValueError, match="real_synthetic_categories"):
        RealMixDataset(["liver cancer"], real_synthetic_categories={"liver cancr": 1.0})


@needs_data
def test_a_lesion_drawn_into_a_5_mm_scan_can_take_its_slice_profile():
    """The HCC training scans are 5 mm scans on the 2 mm grid: a scan knows its own slice
    spacing, and a liver cancer drawn into it, passed through that profile, ramps up along z
    over several grid voxels instead of one, while its core keeps the drawn contrast."""
    from malenia.attributes.presets import load_presets
    from malenia.data.real_ct import load_hcc
    from malenia.data.real_mix import crop_window
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.lesions import LesionRecord, render_lesions
    from malenia.synth.slice_profile import through_slices

    scan = load_hcc("RadCTTACEomics_0697")
    assert scan.slice_mm == 5.0
    preset = load_presets()["liver cancer"]
    liver = scan.labels == LOCATION_LABEL["right liver lobe"]
    centre = np.round(ndimage.center_of_mass(liver)).astype(int)
    start = [int(np.clip(c - 32, 0, n - 64)) for c, n in zip(centre, scan.hu.shape, strict=True)]
    window = crop_window(scan.hu, start, (64, 64, 64))
    labels = crop_window(scan.labels, start, (64, 64, 64), mode="constant")
    description = replace(preset.description, location="right liver lobe", shape="round-like",
                          density_variation="homogeneous", surface="well-defined margin")  # fmt: skip
    record = LesionRecord("liver cancer", description, "", (30.0, 30.0), contrast=1.0)
    rng = np.random.default_rng(2)
    drawn, instances, rendered = render_lesions(window, labels, [record], rng, (2.0,) * 3,
                                                keep_scanner_noise=True)  # fmt: skip
    assert rendered
    profiled = through_slices(window, drawn, 2.0, scan.slice_mm, rng)
    z, y, x = np.round(ndimage.center_of_mass(instances == 1)).astype(int)
    core = ndimage.binary_erosion(instances == 1, iterations=3)

    def along_z(image):
        """(voxels of the z line through the centre between background and core level, the
        core's mean change)."""
        change = image - window
        level = float(change[core].mean())
        line = ndimage.uniform_filter(change, (1, 3, 3))[:, y, x] / level
        return int(((line > 0.15) & (line < 0.85)).sum()), level

    (sharp, level), (soft, level_after) = along_z(drawn), along_z(profiled)
    assert level < -30.0 and abs(level_after - level) < 0.2 * abs(level)
    assert soft >= sharp + 2, (sharp, soft)


@needs_data
def test_organ_negatives_ask_an_organs_own_lesion_type_where_it_has_none():
    """Whole-scan answers ask a lesion type in every window of its organ: organ negatives
    are such windows (clear of the scan's real lesions), asked for that organ's own lesion
    type, or muscle asked for a mass, and the prompt the loss draws is that ask, empty."""
    import random

    from malenia.data.real_mix import CATEGORY_LOCATIONS, SOFT_TISSUE_CATEGORY, RealMixDataset
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.dataset import lesion_pool
    from malenia.synth.split import SEEN_CATEGORIES
    from malenia.training.prompts import choose_prompt

    dataset = RealMixDataset(SEEN_CATEGORIES, seed=17, mix={"organ_negative": 1.0})
    pool = {c: [r.description for r in lesion_pool(c)] for c in SEEN_CATEGORIES}
    asked, rng = [], random.Random(0)
    for index in range(30):
        item = dataset[index]
        assert item["source"] == "organ_negative"
        assert not item["descriptions"] and not item["instance_mask"].any()
        category, description = item["ask"]
        asked.append(category)
        if category != SOFT_TISSUE_CATEGORY:
            assert description.location in CATEGORY_LOCATIONS[category]
            organ = item["labels"] == LOCATION_LABEL[description.location]
            assert organ.sum() > 300, (category, description.location, organ.sum())  # 2.4 ml
        prompted, _, target = choose_prompt(item, rng, 0.15, pool, dropout=0.2)
        assert prompted == category and not target.any()
    assert "liver cancer" in asked and len(set(asked)) >= 3, asked
