"""Each attribute has a measurable effect in the rendered volume."""

from __future__ import annotations

import numpy as np
import pytest
from malenia.attributes import LesionDescription
from malenia.synth import LesionRecord, SyntheticLesionDataset, make_phantom, render_lesions
from malenia.synth.anatomy import LABELS
from malenia.synth.phantom import LOCATION_CENTRES
from scipy import ndimage

SPACING = (2.0, 2.0, 2.0)
BASE = dict(
    location="right liver lobe", shape="round-like", density="hypodense", density_variation="homogeneous",
    surface="well-defined margin", enhancement="contrast-enhanced CT",
    relation="not closely related to surrounding organs",
)  # fmt: skip


@pytest.fixture(scope="module")
def liver_phantom():
    return make_phantom(7, (56, 72, 72), SPACING, centre_mm=LOCATION_CENTRES["right liver lobe"])


def render(phantom, seed=3, category="liver cancer", size=(30, 30), contrast=1.0, **changes):
    description = LesionDescription(**{**BASE, **changes})
    rng = np.random.default_rng(seed)
    ct, mask, done = render_lesions(
        phantom.ct,
        phantom.labels,
        [LesionRecord(category, description, size_mm=size, contrast=contrast)],
        rng,
        SPACING,
    )
    assert len(done) == 1 and mask.any()
    return ct, mask > 0, done[0]


def host_ring(phantom, mask, label="right liver lobe"):
    """The host tissue 2-4 voxels around a lesion (the phantom before rendering)."""
    ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(
        mask, iterations=1
    )
    return phantom.ct[ring & (phantom.labels == LABELS[label])]


def host_mean(phantom, mask, label="right liver lobe"):
    return float(host_ring(phantom, mask, label).mean())


def test_density_relative_to_host(liver_phantom):
    hypo_ct, hypo, _ = render(liver_phantom, density="hypodense")
    hyper_ct, hyper, _ = render(liver_phantom, density="hyperdense")
    iso_ct, iso, _ = render(liver_phantom, density="isodense")
    assert hypo_ct[hypo].mean() < host_mean(liver_phantom, hypo) - 25
    assert hyper_ct[hyper].mean() > host_mean(liver_phantom, hyper) + 25
    assert abs(iso_ct[iso].mean() - host_mean(liver_phantom, iso)) < 20


def test_heterogeneous_has_more_internal_variation(liver_phantom):
    het_ct, het, _ = render(liver_phantom, density_variation="heterogeneous")
    hom_ct, hom, _ = render(liver_phantom, density_variation="homogeneous")
    core = lambda m: ndimage.binary_erosion(m, iterations=2)  # noqa: E731
    assert het_ct[core(het)].std() > 1.5 * hom_ct[core(hom)].std()


def test_ill_defined_margin_has_lower_edge_gradient(liver_phantom):
    def edge_gradient(ct, mask):
        gradient = np.sqrt(sum(g**2 for g in np.gradient(ndimage.gaussian_filter(ct, 0.7))))
        edge = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        return float(gradient[edge].mean())

    sharp = np.mean(
        [
            edge_gradient(*render(liver_phantom, seed=s, surface="well-defined margin")[:2])
            for s in (1, 2)
        ]
    )
    blurred = np.mean(
        [
            edge_gradient(*render(liver_phantom, seed=s, surface="ill-defined margin")[:2])
            for s in (1, 2)
        ]
    )
    assert blurred < 0.8 * sharp


def test_irregular_shapes_are_less_spherical(liver_phantom):
    def sphericity(mask):
        volume = mask.sum() * 8.0
        surface = (mask ^ ndimage.binary_erosion(mask)).sum() * 4.0
        return (np.pi ** (1 / 3)) * (6 * volume) ** (2 / 3) / surface

    round_like = np.mean(
        [sphericity(render(liver_phantom, seed=s, shape="round-like")[1]) for s in (1, 2, 3)]
    )
    irregular = np.mean(
        [sphericity(render(liver_phantom, seed=s, shape="irregular")[1]) for s in (1, 2, 3)]
    )
    assert irregular < round_like - 0.03


def test_lesion_lies_in_the_named_subregion():
    phantom = make_phantom(11, (48, 72, 96), SPACING, centre_mm=LOCATION_CENTRES["pancreatic head"])
    for location in ("pancreatic head", "right kidney"):
        _, mask, _ = render(
            phantom, seed=5, category="pancreatic cancer", size=(12, 14), location=location
        )
        labels_under = phantom.labels[mask]
        assert (labels_under == LABELS[location]).mean() > 0.7, location


def test_closely_related_lesions_cross_into_a_neighbour(liver_phantom):
    crossing = []
    for seed in range(4):
        _, mask, _ = render(
            liver_phantom,
            seed=seed,
            relation="closely related to surrounding organs",
            size=(36, 36),
        )
        organ = ~np.isin(
            liver_phantom.labels,
            [LABELS[n] for n in ("air", "body", "subcutaneous fat", "muscle", "right liver lobe")],
        )
        crossing.append((mask & organ).sum())
    contained = [
        (
            render(liver_phantom, seed=s, size=(36, 36))[1]
            & ~np.isin(
                liver_phantom.labels,
                [
                    LABELS["right liver lobe"],
                    LABELS["body"],
                    LABELS["subcutaneous fat"],
                    LABELS["muscle"],
                ],
            )
        ).sum()
        for s in range(4)
    ]
    assert np.mean(crossing) > 20 and np.mean(crossing) > 3 * (np.mean(contained) + 1)


def test_same_seed_same_volume():
    a = SyntheticLesionDataset(("renal cyst", "lung cancer"), seed=5, shape=(40, 48, 48))[3]
    b = SyntheticLesionDataset(("renal cyst", "lung cancer"), seed=5, shape=(40, 48, 48))[3]
    c = SyntheticLesionDataset(("renal cyst", "lung cancer"), seed=6, shape=(40, 48, 48))[3]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(
        a["instance_mask"], b["instance_mask"]
    )
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].shape == (1, 40, 48, 48) and a["image"].dtype == np.float32
    assert a["instance_mask"].max() == len(a["descriptions"]) >= 1
    assert set(a["categories"]) <= {"renal cyst", "lung cancer"}


def test_anisotropic_spacing_is_supported():
    phantom = make_phantom(2, (24, 128, 128), (2.5, 0.8, 0.8))
    assert phantom.ct.shape == (24, 128, 128) and phantom.spacing == (2.5, 0.8, 0.8)
    assert (phantom.labels == LABELS["vertebra"]).any()
    # Anatomy sits at the same millimetre position whatever the voxel size: the aorta is
    # left of the midline (x ~ +16 mm) and anterior to the spine.
    z, y, x = np.argwhere(phantom.labels == LABELS["aorta"]).mean(0)
    x_mm = phantom.origin_mm[2] + x * 0.8
    assert 5 < x_mm < 30


def test_lesions_render_into_a_real_ct(shared_data):
    """The renderer works on real anatomy: TotalSegmentator organ labels -> our locations."""
    import SimpleITK as sitk
    from malenia.synth.real_ct import labels_from_totalseg

    folder = shared_data / "real_ct" / "totalseg_example"
    image = sitk.ReadImage(str(folder / "example_ct.nii.gz"))
    organs = sitk.GetArrayFromImage(
        sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz"))
    )
    labels = labels_from_totalseg(organs, image)
    ct = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(reversed(image.GetSpacing()))
    records = [
        LesionRecord(
            "renal cyst", LesionDescription(**{**BASE, "location": "left kidney"}), size_mm=(20, 24)
        ),
        LesionRecord(
            "pancreatic cancer",
            LesionDescription(**{**BASE, "location": "pancreatic head", "density": "hypodense"}),
            size_mm=(14, 16),
        ),
    ]
    rendered, mask, done = render_lesions(ct, labels, records, np.random.default_rng(0), spacing)
    assert [r.category for r in done] == ["renal cyst", "pancreatic cancer"]
    for instance, location in ((1, "left kidney"), (2, "pancreatic head")):
        assert (labels[mask == instance] == LABELS[location]).mean() > 0.6
    assert rendered[mask == 1].mean() < 25  # a cyst is water, whatever the phase of the scan
    pancreas = labels == LABELS["pancreatic head"]
    assert rendered[mask == 2].mean() < np.median(ct[pancreas]) - 20  # hypodense vs its host
    # The left kidney of the real scan is on the patient's left (physical LPS x > 0 side).
    left = np.argwhere(labels == LABELS["left kidney"]).mean(0)
    right = np.argwhere(labels == LABELS["right kidney"]).mean(0)
    x_left = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in left[::-1]))[0]
    x_right = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in right[::-1]))[0]
    assert x_left > x_right


@pytest.mark.parametrize(
    ("seed", "seen_only"),
    [(10_256, False), (10_380, False)],  # found by drawing 400 samples; each crashed training
)
def test_samples_near_the_volume_edge_render(seed, seen_only):
    """Organ slivers one voxel thick (no room for vessels) and pleural strands reaching the
    edge of the volume once raised errors that stopped a training run."""
    from malenia.attributes.presets import load_presets
    from malenia.synth.dataset import make_sample
    from malenia.synth.split import SEEN_CATEGORIES

    categories = SEEN_CATEGORIES if seen_only else tuple(load_presets())
    sample = make_sample(seed, categories, distractor_prob=0.7)
    assert sample.ct.shape == sample.instance_mask.shape == (64, 64, 64)
    assert np.isfinite(sample.ct).all()


def test_contrast_scales_the_lesion_offset_from_its_host(liver_phantom):
    """A subtle lesion (contrast < 1, as an HCC in its equilibrium phase) differs less from
    its host than the same lesion at full contrast, on the same side."""
    offsets = {}
    for contrast in (1.0, 0.25):
        ct, mask, _ = render(liver_phantom, contrast=contrast)
        offsets[contrast] = float(ct[mask].mean()) - host_mean(liver_phantom, mask)
    assert offsets[1.0] < -25 and offsets[1.0] < offsets[0.25] < -3
    assert abs(offsets[0.25]) < 0.5 * abs(offsets[1.0])


def _scanner_noise(ct, mask):
    """(std, lag-1 autocorrelation along x) of the fine grain of ``ct`` inside ``mask``."""
    grain = ct - ndimage.gaussian_filter(ct, 1.5)
    pairs = mask[:, :, 1:] & mask[:, :, :-1]
    lag1 = np.corrcoef(grain[:, :, 1:][pairs], grain[:, :, :-1][pairs])[0, 1]
    return float(grain[mask].std()), float(lag1)


def test_a_lesion_rendered_into_real_ct_keeps_the_scanners_noise(liver_phantom):
    """Real CT noise is correlated between neighbouring voxels; a lesion drawn with fresh
    white noise carries a texture no real tissue has, and weights trained on such lesions
    found the noise, not the lesion (a real-liver blob: probability 0.000 with the liver's
    grain, 1.000 with white noise). With ``keep_scanner_noise`` the lesion keeps the scan's
    own grain, and its mass effect does not smooth the grain around it."""
    rng = np.random.default_rng(0)
    grain = ndimage.gaussian_filter(rng.standard_normal(liver_phantom.ct.shape), 0.9)
    scan = ndimage.gaussian_filter(liver_phantom.ct, 2.0) + grain * (12.0 / grain.std())
    scan = scan.astype(np.float32)  # a "real" scan: smooth anatomy + correlated noise
    liver = liver_phantom.labels == LABELS["right liver lobe"]
    record = LesionRecord("liver cancer", LesionDescription(**BASE), size_mm=(30, 30))
    ct, instances, done = render_lesions(scan, liver_phantom.labels, [record],
                                         np.random.default_rng(3), SPACING, keep_scanner_noise=True)  # fmt: skip
    lesion = instances > 0
    assert len(done) == 1 and lesion.sum() > 500
    inside = ndimage.binary_erosion(lesion, iterations=2)
    shell = ndimage.binary_dilation(lesion, iterations=5) & ~ndimage.binary_dilation(
        lesion, iterations=1
    )
    far = ndimage.binary_erosion(liver, iterations=2) & ~ndimage.binary_dilation(
        lesion, iterations=10
    )
    host_std, host_lag1 = _scanner_noise(scan, inside)  # the same voxels before rendering
    lesion_std, lesion_lag1 = _scanner_noise(ct, inside)
    assert abs(lesion_lag1 - host_lag1) < 0.1, (lesion_lag1, host_lag1)  # white noise: ~0.15
    assert abs(lesion_std - host_std) < 0.15 * host_std, (lesion_std, host_std)
    assert _scanner_noise(ct, shell & liver)[0] > 0.95 * _scanner_noise(ct, far)[0]
    assert float(np.median(ct[inside])) < float(np.median(scan[inside])) - 30  # still hypodense


def test_a_lesion_in_the_lung_gets_noise_like_the_scans_soft_tissue():
    """A lung's fine grain is its vessels and septa, not noise: a mass rendered there gets
    the noise of the scan's flat soft tissue, at its level and with its correlation per axis
    (here a thick-slice scan: neighbours agree along z, hardly in-plane)."""
    from malenia.synth.lesions import matched_scanner_noise

    rng = np.random.default_rng(1)
    shape = (40, 48, 96)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (1.0, 0.0, 0.0))
    ct = 40.0 + noise * (10.0 / noise.std())  # soft tissue, x >= 48
    labels = np.full(shape, LABELS["muscle"], np.uint8)
    lung_texture = 120.0 * ndimage.gaussian_filter(rng.standard_normal(shape), 0.7)
    ct[:, :, :48] = -850.0 + lung_texture[:, :, :48]
    labels[:, :, :48] = LABELS["right lower lobe"]
    ct = ct.astype(np.float32)
    soft = np.zeros(shape, bool)
    soft[4:-4, 4:-4, 56:-4] = True
    soft_std, soft_lag = _scanner_noise(ct, soft)
    soft_lag_z = _scanner_noise(ct.transpose(2, 1, 0).copy(), soft.transpose(2, 1, 0).copy())[1]

    drawn = matched_scanner_noise(ct, (30, 30, 30), rng)
    everywhere = np.ones(drawn.shape, bool)
    drawn_std, drawn_lag = _scanner_noise(drawn, everywhere)
    drawn_lag_z = _scanner_noise(drawn.transpose(2, 1, 0).copy(), everywhere)[1]
    assert abs(drawn_std - soft_std) < 0.15 * soft_std, (drawn_std, soft_std)
    assert abs(drawn_lag - soft_lag) < 0.1 and abs(drawn_lag_z - soft_lag_z) < 0.1
    assert soft_lag_z > 0.5 > soft_lag + 0.3  # the scan is anisotropic, and so is the draw

    description = LesionDescription(
        **{**BASE, "location": "right lower lobe", "density": "isodense"}
    )
    record = LesionRecord("lung cancer", description, size_mm=(50, 50))
    out, instances, done = render_lesions(ct, labels, [record], np.random.default_rng(2), SPACING,
                                          keep_scanner_noise=True)  # fmt: skip
    inside = ndimage.binary_erosion(instances > 0, iterations=5)  # away from the edge
    assert len(done) == 1 and inside.sum() > 300
    lung_std = _scanner_noise(ct, inside)[0]  # the lung's grain at the same voxels
    lesion_std = _scanner_noise(out, inside)[0]
    assert lung_std > 3 * soft_std  # the lung grain it replaces
    assert abs(lesion_std - soft_std) < 0.3 * soft_std, (lesion_std, soft_std)


def test_a_subtle_lesion_is_subtle_in_texture_too(liver_phantom):
    """Contrast scales the heterogeneous mottle as well as the mean: a subtle HCC keeps
    about the liver's own grain (a loud texture would give away what the mean hides)."""
    spread, host = {}, {}
    for contrast in (1.0, 0.25):
        ct, mask, _ = render(liver_phantom, contrast=contrast, density_variation="heterogeneous")
        spread[contrast] = float(ct[ndimage.binary_erosion(mask, iterations=2)].std())
        host[contrast] = float(host_ring(liver_phantom, mask).std())
    assert spread[1.0] > 1.5 * host[1.0]  # loud at full contrast
    assert spread[0.25] < 1.15 * host[0.25]  # about the liver's own grain when subtle


def test_a_lesion_drawn_into_a_thick_slice_scan_is_blurred_along_z_as_its_slices_are():
    """A sharp 100 HU block drawn on a 2 mm grid into a 5 mm scan: along z its edge spreads
    over the slab width (a real lesion in such a scan has no 2 mm edge), in the plane it stays
    sharp, its core and its total along z are kept; a scan whose slices are no thicker than
    the grid is left as drawn."""
    from malenia.synth.slice_profile import slice_profile_matrix, through_slices

    rng = np.random.default_rng(0)
    before = rng.normal(40.0, 10.0, (64, 24, 24)).astype(np.float32)
    after = before.copy()
    after[20:40, 8:16, 8:16] += 100.0
    blurred = through_slices(before, after, 2.0, 5.0, rng)
    change = blurred - before
    assert np.allclose(change[:, :8], 0.0, atol=1e-3) and np.allclose(
        change[:, :, 16:], 0.0, atol=1e-3
    )
    profile = change[:, 12, 12]
    rise = np.flatnonzero((profile > 10.0) & (profile < 90.0))
    assert 2 <= rise[rise < 30].size <= 6  # 4-12 mm of ramp where the drawing had none
    assert profile[27:33].min() > 95.0
    assert abs(profile.sum() - 2000.0) < 20.0
    assert through_slices(before, after, 2.0, 2.0, rng) is after
    assert through_slices(before, after, 2.0, None, rng) is after
    for phase in (0.0, 1.3, 4.9):
        assert np.allclose(slice_profile_matrix(30, 2.0, 5.0, phase).sum(axis=1), 1.0)
