"""Anatomy grounding: the named organ's region, the union with the prompt map, and lesions
kept whole when they reach the region; lung answers keep only lesions touching the lungs."""

from __future__ import annotations

import numpy as np
from malenia.inference.grounding import (
    ORGAN_MARGIN_MM,
    PLAUSIBLE_REGION_ML,
    SINGLE_PIECE_LOCATIONS,
    LesionComponents,
    aligned_lesion_map,
    ellipsoid,
    fill_holes,
    grounded_probability,
    grow_by_ellipsoid,
    lesions_clear_of,
    location_region,
    region_warning,
)


def test_region_fills_a_lesion_inside_the_organ_and_grows_by_the_margin():
    location = np.zeros((40, 40, 40), np.float32)
    location[10:30, 10:30, 10:30] = 0.9
    location[17:23, 17:23, 17:23] = 0.1  # a cyst the location head does not call organ
    region = location_region(location, (2.0, 2.0, 2.0))
    assert region[20, 20, 20]  # the hole is filled
    reach = int(ORGAN_MARGIN_MM / 2.0)
    assert region[20, 20, 30 + reach - 1] and not region[20, 20, 30 + reach + 1]
    assert not location_region(np.zeros_like(location), (2.0, 2.0, 2.0)).any()


def test_fast_hole_filling_and_growth_give_the_same_voxels_as_scipy():
    """The re-query's fast region stages against scipy's reference operations, on rough
    shapes with holes, touching the box's edges, grown by an anisotropic ellipsoid."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for radius in ((3, 3, 3), (1, 3, 2)):
        mask = ndimage.binary_opening(rng.random((30, 36, 33)) > 0.45)
        mask[:, :4] = True  # reaches the edge of the box
        mask[10:20, 20:30, 20:30] = True
        mask[13:17, 23:27, 23:27] = False  # a cavity: a lesion inside the organ
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        assert fill_holes(mask).sum() >= mask.sum() + 64
        expected = ndimage.binary_dilation(mask, structure=ellipsoid(radius))
        np.testing.assert_array_equal(grow_by_ellipsoid(mask, radius), expected)
        assert grow_by_ellipsoid(mask, radius).sum() > mask.sum()


def test_a_solid_organ_keeps_its_largest_piece_and_a_colon_all_of_them():
    """A kidney map with a stray piece elsewhere (look-alike tissue on real CT): the
    kidney's region is the large piece only; a colon's pieces are all colon."""
    location = np.zeros((40, 40, 60), np.float32)
    location[10:30, 10:30, 5:20] = 0.9  # the organ
    location[15:20, 15:20, 40:45] = 0.8  # a stray piece 2 cm away
    kidney = location_region(location, (2.0, 2.0, 2.0), single_piece=True)
    assert kidney[20, 20, 10] and not kidney[17, 17, 42]
    colon = location_region(location, (2.0, 2.0, 2.0))
    assert colon[20, 20, 10] and colon[17, 17, 42]
    assert "left kidney" in SINGLE_PIECE_LOCATIONS and "spleen" in SINGLE_PIECE_LOCATIONS
    assert "sigmoid colon" not in SINGLE_PIECE_LOCATIONS and "rectum" not in SINGLE_PIECE_LOCATIONS


def test_grounded_answer_adds_lesions_in_the_region_and_nothing_outside():
    prompt = np.zeros((10, 10, 10), np.float32)
    prompt[1, 1, 1] = 0.8  # what the prompt branch found stays
    any_lesion = np.zeros_like(prompt)
    any_lesion[5, 5, 5] = 0.9  # a lesion inside the named organ
    any_lesion[8, 8, 8] = 0.9  # a lesion elsewhere
    region = np.zeros(prompt.shape, bool)
    region[3:7, 3:7, 3:7] = True
    answer = grounded_probability(prompt, any_lesion, region)
    assert answer[1, 1, 1] == np.float32(0.8) and answer[5, 5, 5] == np.float32(0.9)
    assert answer[8, 8, 8] == 0.0 and answer.dtype == np.float32


def test_a_lesion_growing_out_of_the_organ_is_kept_whole():
    """A colon tumour through the wall is one lesion: the part outside the organ's region
    belongs to the answer too. A lesion that barely touches the region (under
    ``WHOLE_LESION_SHARE`` of it inside) is a neighbour's: only its part inside is added."""
    shape = (30, 30, 30)
    region = np.zeros(shape, bool)
    region[5:15, 5:25, 5:25] = True
    any_lesion = np.zeros(shape, np.float32)
    any_lesion[10:20, 10:14, 10:14] = 0.8  # half inside the region, half outside
    any_lesion[14:29, 18:22, 18:22] = 0.7  # 1 of 15 slices inside: under a tenth
    answer = grounded_probability(np.zeros(shape, np.float32), any_lesion, region)
    assert np.all(answer[10:20, 10:14, 10:14] == np.float32(0.8))  # whole, outside part too
    assert np.all(answer[14, 18:22, 18:22] == np.float32(0.7))  # the neighbour's part inside
    assert not answer[15:29, 18:22, 18:22].any()  # and nothing more of it
    lesions = LesionComponents.of(any_lesion)
    assert lesions.sizes[1:].tolist() == [160, 240]
    np.testing.assert_array_equal(  # the engine passes the components it keeps: the same
        grounded_probability(np.zeros(shape, np.float32), any_lesion, region, lesions), answer
    )


def test_an_organ_map_larger_than_the_organ_can_be_is_reported_to_the_user():
    """On real CT the location head once called 930 ml "left kidney": the user is told the
    organ was not found, with the volume and what to do; a plausible kidney is not flagged."""
    assert region_warning("left kidney", 180.0) is None
    warning = region_warning("left kidney", 930.0)
    assert "left kidney" in warning and "930 ml" in warning and "not grounded" in warning
    assert region_warning("left adrenal gland", 150.0) is not None  # a small organ: small bound
    assert region_warning("somewhere new", 1e6) is None  # no known bound: no claim
    from malenia.attributes.vocabulary import load_vocabulary

    assert set(PLAUSIBLE_REGION_ML) == set(load_vocabulary().values("location"))


def test_lesions_clear_of_the_envelope_are_named_and_touching_ones_kept():
    labels = np.zeros((10, 10, 10), np.int16)
    labels[1:3, 1:3, 1:3] = 1  # inside the envelope
    labels[5, 5, 5] = 2  # one voxel on its edge
    labels[8:, 8:, 8:] = 3  # clear of it
    envelope = np.zeros(labels.shape, bool)
    envelope[:6, :6, :6] = True
    assert lesions_clear_of(labels, 3, envelope) == [3]
    assert lesions_clear_of(labels, 3, np.zeros(labels.shape, bool)) == [1, 2, 3]


def test_the_lesion_map_can_be_cut_at_its_own_calibrated_threshold():
    """A faint lesion map (real lesions peak near p 0.3) is aligned so its calibrated cut
    falls on the answer's threshold: monotone, 0 and 1 fixed, the cut onto the threshold, the
    identity where both agree; a grounded answer then keeps the faint lesion in the organ
    and still nothing of it outside the region."""
    p = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    aligned = aligned_lesion_map(p, 0.1, 0.4)
    assert np.all(np.diff(aligned) >= 0) and aligned[0] == 0.0 and aligned[-1] == 1.0
    assert abs(float(aligned[10]) - 0.4) < 1e-6
    np.testing.assert_allclose(aligned_lesion_map(p, 0.4, 0.4), p, atol=1e-6)
    for bad in ((0.0, 0.4), (0.3, 1.0)):
        try:
            aligned_lesion_map(p, *bad)
        except ValueError as error:
            assert "(0, 1)" in str(error)
        else:
            raise AssertionError(f"cuts {bad} accepted")

    shape = (30, 30, 30)
    any_lesion = np.zeros(shape, np.float32)
    any_lesion[5:10, 5:10, 5:10] = 0.25  # a faint lesion in the organ
    any_lesion[20:25, 20:25, 20:25] = 0.25  # the same outside the region
    region = np.zeros(shape, bool)
    region[:15, :15, :15] = True
    prompt = np.zeros(shape, np.float32)
    assert not (grounded_probability(prompt, any_lesion, region) > 0.4).any()
    answer = grounded_probability(prompt, aligned_lesion_map(any_lesion, 0.2, 0.4), region) > 0.4
    assert answer[5:10, 5:10, 5:10].all() and answer.sum() == 125


def test_faint_only_reads_faint_lesions_at_the_lower_cut_and_keeps_sure_edges():
    """With ``faint_only`` a lesion the map never calls sure (real-looking lesions peak near
    p 0.3) is read out to the lower cut as with the plain cut, while a sure lesion keeps the
    edge the answer's threshold gives it; below that threshold (the slider) the sure lesion
    grows from its edge outwards, never as a ring around an unmarked rim."""
    shape = (30, 30, 30)
    any_lesion = np.zeros(shape, np.float32)
    any_lesion[4:12, 4:12, 4:12] = 0.15  # the rim of a sure lesion
    any_lesion[6:10, 6:10, 6:10] = 0.9  # its core
    any_lesion[16:28, 16:28, 16:28] = 0.05  # the halo of a faint one
    any_lesion[18:26, 18:26, 18:26] = 0.15  # its edge
    any_lesion[20:24, 20:24, 20:24] = 0.3  # its peak, under the map's own cut 0.5
    plain = aligned_lesion_map(any_lesion, 0.1, 0.4)
    faint_only = aligned_lesion_map(any_lesion, 0.1, 0.4, faint_only=True)
    assert (plain > 0.4)[4:12, 4:12, 4:12].all()  # the plain cut widens the sure lesion
    marked = faint_only > 0.4
    assert marked[18:26, 18:26, 18:26].all() and marked[6:10, 6:10, 6:10].all()
    assert marked.sum() == 8**3 + 4**3  # the faint lesion to its edge, the sure one its core
    np.testing.assert_array_equal(faint_only[15:], plain[15:])
    sure = faint_only[:15, :15, :15]
    rim = (any_lesion[:15, :15, :15] > 0) & (any_lesion[:15, :15, :15] < 0.4)
    assert (sure[rim] < 0.4).all() and (sure[rim] >= sure[~rim & (sure < 0.4)].max()).all()
    np.testing.assert_array_equal(aligned_lesion_map(any_lesion, 0.4, 0.4, faint_only=True),
                                  aligned_lesion_map(any_lesion, 0.4, 0.4))  # fmt: skip
