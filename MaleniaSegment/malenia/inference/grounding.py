"""Anatomy grounding: answer a description in the organ its location names.

The prompt branch learnt lesions only in the organs of the training categories (kidney,
liver, pancreas, lung); asked for a lesion in the spleen it finds nothing, although the
prompt-free lesion map sees the lesion there. The location head knows every organ (trained
on organ masks, no lesion labels). A prompt's answer is therefore the union of

    prompt map                          (what the description as a whole points at)
    any-lesion map x location region    (every lesion the model sees in the named organ)
    whole lesions reaching the region   (the parts of those lesions outside it)

Both maps are probabilities on the model grid, so the calibrated threshold applies to the
union. A lesion is kept whole, not clipped at the region's border: colon and pancreatic
tumours grow out of their organ, and the location head's organ is approximate.

One organ needs no model to be found: the lungs are the air inside the body
(``malenia.hu_anatomy``). An answer naming a lung location keeps only the lesions that
touch them (``lesions_clear_of``), wherever the prompt map or the lesion map put others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# The region grows this far beyond the organ: lesions bulge out of it (exophytic renal
# masses, colon tumours through the wall) and the location map is soft at organ borders.
ORGAN_MARGIN_MM = 6.0
LOCATION_THRESHOLD = 0.5
# The prompt-free map's lesions are its connected components above this probability.
LESION_THRESHOLD = 0.5
# A lesion with at least this share of its voxels in the region is kept whole. Chosen on
# the validation seed (14 volumes per category; shares 0 to 0.1 did equally well, higher
# ones lost colon and adrenal lesions): unseen Dice 0.558 -> 0.630, seen 0.846 -> 0.851
# against clipping every lesion at the region's border.
WHOLE_LESION_SHARE = 0.1


# The largest grounding region (organ, holes filled, plus ORGAN_MARGIN_MM; in ml) that each
# location's organ can fill in an adult, disease included: about twice the upper normal organ
# volume plus what the margin adds. A larger region means the location head did not find the
# organ in this scan (it happens on real CT: a 930 ml "left kidney" on the sample CT), so the
# lesions it adds may lie in other organs; the answer says so (``region_warning``).
PLAUSIBLE_REGION_ML = {
    "left kidney": 600.0,
    "right kidney": 600.0,
    "left liver lobe": 1800.0,
    "right liver lobe": 3500.0,
    "pancreatic head": 250.0,
    "pancreatic body": 250.0,
    "pancreatic tail": 250.0,
    "ascending colon": 1000.0,
    "transverse colon": 1500.0,
    "descending colon": 1000.0,
    "sigmoid colon": 1000.0,
    "rectum": 600.0,
    "right upper lobe": 3000.0,
    "right middle lobe": 1500.0,
    "right lower lobe": 3500.0,
    "left upper lobe": 3500.0,
    "left lower lobe": 3500.0,
    "spleen": 2500.0,
    "gallbladder": 300.0,
    "left adrenal gland": 100.0,
    "right adrenal gland": 100.0,
    "stomach": 3500.0,
    "urinary bladder": 1500.0,
}


def region_warning(location: str, region_ml: float, bound: float | None = None) -> str | None:
    """A sentence for the user when the region named ``location`` is larger than that organ
    can be (None when it is plausible, or the location has no known bound). ``bound``: the
    largest plausible region, by default ``PLAUSIBLE_REGION_ML[location]`` (an organ-level
    location passes the sum over its parts)."""
    bound = PLAUSIBLE_REGION_ML.get(location) if bound is None else bound
    if bound is None or region_ml <= bound:
        return None
    return (
        f'The organ map for "{location}" covers {region_ml:.0f} ml, but a {location} fills at '
        f"most about {bound:.0f} ml: the model did not find the organ in this scan, so the "
        "answer was not grounded in it (the description alone answered, anywhere in the "
        "scan). Check each segment, or draw a box (ROI) around the organ."
    )


@dataclass(frozen=True)
class LesionComponents:
    """The prompt-free map's lesions, labelled once per encoded volume (query-independent)."""

    labels: np.ndarray  # int32, 0 background, 1..n lesion
    sizes: np.ndarray  # voxels per label (index 0: background)
    boxes: list  # ndimage.find_objects: the box of label i at [i - 1]

    @classmethod
    def of(cls, any_lesion: np.ndarray) -> LesionComponents:
        labels, count = ndimage.label(any_lesion > LESION_THRESHOLD)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        return cls(labels.astype(np.int32, copy=False), sizes, ndimage.find_objects(labels))

    def reaching(self, region: np.ndarray, box) -> list[int]:
        """Labels with at least ``WHOLE_LESION_SHARE`` of their voxels in the region."""
        inside = np.bincount(self.labels[box][region[box]], minlength=len(self.sizes))
        share = inside / np.maximum(self.sizes, 1)
        share[0] = 0.0
        return [int(i) for i in np.flatnonzero((inside > 0) & (share >= WHOLE_LESION_SHARE))]


# Locations whose organ is one connected piece: their region keeps only the largest piece
# of the organ map (as organ segmenters post-process). On real CT the location head also
# fires on look-alike tissue elsewhere (on the TotalSegmentator example, the head trained on
# real organs maps the 137 ml left kidney as 351 ml in 70 pieces, organ Dice 0.51; its largest
# piece alone has 0.78). Colon and rectum keep every piece: a tube is often seen in pieces.
SINGLE_PIECE_LOCATIONS = frozenset(PLAUSIBLE_REGION_ML) - {
    "ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum",
}  # fmt: skip


def location_region(
    location_probability: np.ndarray, spacing_mm, single_piece: bool = False
) -> np.ndarray:
    """Where the named organ is (only its largest piece when ``single_piece``), holes
    filled (a large lesion inside an organ is not organ tissue to the location head) and
    grown by ``ORGAN_MARGIN_MM``. Worked out inside the organ's bounding box only, so a
    query on a whole-body CT stays cheap."""
    from malenia.inference.postprocess import foreground_box

    organ = location_probability > LOCATION_THRESHOLD
    if single_piece:
        organ = _largest_piece(organ)
    region = np.zeros(organ.shape, bool)
    radius = margin_voxels(spacing_mm)
    box = foreground_box(organ, max(radius))
    if box is None:
        return region
    region[box] = grow_by_ellipsoid(fill_holes(organ[box]), radius)
    return region


def margin_voxels(spacing_mm) -> tuple[int, ...]:
    """``ORGAN_MARGIN_MM`` in voxels along each axis (at least one)."""
    return tuple(max(1, int(round(ORGAN_MARGIN_MM / s))) for s in spacing_mm)


def ellipsoid(radius) -> np.ndarray:
    """Boolean structuring element: the ellipsoid of semi-axes ``radius`` (voxels)."""
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    return sum((g / r) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1.0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` (6-connected background), as one labelling of the
    background: twice as fast on an organ's box, and the re-query runs it each time."""
    background, count = ndimage.label(~mask)
    outside = np.unique(
        np.concatenate([np.moveaxis(background, axis, 0)[[0, -1]].ravel() for axis in range(3)])
    )
    hole = np.ones(count + 1, bool)
    hole[outside] = False
    hole[0] = False
    return mask | hole[background]


def grow_by_ellipsoid(mask: np.ndarray, radius) -> np.ndarray:
    """``mask`` dilated by the ellipsoid of semi-axes ``radius`` (voxels), the same voxels as
    ``ndimage.binary_dilation`` with that structure, about 7x faster: only surface voxels
    can reach outside, so the ellipsoid's offsets are added to their flat indices alone."""
    radius = tuple(int(r) for r in radius)
    padded = np.pad(mask, [(r, r) for r in radius])  # offsets never wrap around an edge
    surface = np.flatnonzero(padded & ~ndimage.binary_erosion(padded))
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    grown = padded.ravel().copy()
    for offset in (np.argwhere(ellipsoid(radius)) - radius) @ strides:
        grown[surface + offset] = True
    inner = tuple(slice(r, r + n) for r, n in zip(radius, mask.shape, strict=True))
    return grown.reshape(padded.shape)[inner]


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (26-connected) of ``mask``, labelled inside its
    bounding box only."""
    from malenia.inference.postprocess import foreground_box

    box = foreground_box(mask, 0)
    if box is None:
        return mask
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    kept = np.zeros_like(mask)
    kept[box] = labels == largest
    return kept


def aligned_lesion_map(
    any_lesion: np.ndarray, lesion_cut: float, answer_cut: float, faint_only: bool = False
) -> np.ndarray:
    """The prompt-free map with ``lesion_cut`` moved onto ``answer_cut``: piecewise linear,
    monotone, 0 and 1 fixed, so one threshold still cuts the grounded union.

    Why: the map is mask x objectness, and on real CT the objectness of a real-looking
    lesion stays low (the lesion map peaks at p 0.25-0.38 in lesions drawn into the real
    training livers and kidneys, where the prompt map reaches 0.8-0.99), so at a threshold
    calibrated on phantoms a grounded answer of an unseen category, which rests on this map,
    comes back empty. ``malenia calibrate --organ-lesions`` chooses ``lesion_cut`` on lesions
    drawn into the organs of the real training scans.

    ``faint_only``: only the faint lesions (whose map never reaches ``LESION_THRESHOLD``, the
    map's own cut) are read at the lower cut; a lesion the map is sure of keeps the edge the
    answer's threshold gives it. On the white-noise phantoms the plain cut widened sure
    lesions past their edges (renal cell carcinoma 0.821 -> 0.800; docs/EVALUATION.md,
    "Stage 27c"), where real-looking lesions are the faint ones."""
    if not (0.0 < lesion_cut < 1.0 and 0.0 < answer_cut < 1.0):
        raise ValueError(f"cuts must lie in (0, 1), not {lesion_cut} and {answer_cut}")
    p = any_lesion.astype(np.float32, copy=False)
    below = p * np.float32(answer_cut / lesion_cut)
    above = answer_cut + (p - lesion_cut) * np.float32((1.0 - answer_cut) / (1.0 - lesion_cut))
    aligned = np.where(p <= lesion_cut, below, above).astype(np.float32)
    if faint_only and lesion_cut < answer_cut:
        labels, count = ndimage.label(p > lesion_cut, structure=np.ones((3, 3, 3), bool))
        if count:
            is_sure = np.zeros(count + 1, bool)  # per label: reaches the map's own cut
            is_sure[labels[p >= LESION_THRESHOLD]] = True  # (ndimage.maximum sorts: ~10x slower)
            is_sure[0] = False
            sure = is_sure[labels]
            # a sure lesion as the plain map has it; its rim (below the answer's cut) just
            # under that cut, so a lower cut (the browser's slider) never shows a ring
            rim = np.nextafter(np.float32(answer_cut), np.float32(0.0))
            aligned[sure] = np.maximum(p[sure], rim)
    return aligned


def grounded_probability(
    prompt_probability: np.ndarray,
    any_lesion: np.ndarray,
    region: np.ndarray,
    lesions: LesionComponents | None = None,
) -> np.ndarray:
    """Union (voxel-wise max) of the prompt map, the lesion map inside the region and the
    whole of each lesion reaching it; worked out in boxes only (an organ is a small part of
    a CT). ``lesions``: the components of ``any_lesion``, when the caller keeps them."""
    from malenia.inference.postprocess import foreground_box

    grounded = prompt_probability.astype(np.float32, copy=True)
    box = foreground_box(region)
    if box is None:
        return grounded
    inside = np.where(region[box], any_lesion[box], np.float32(0.0))
    np.maximum(grounded[box], inside, out=grounded[box])
    lesions = LesionComponents.of(any_lesion) if lesions is None else lesions
    for label in lesions.reaching(region, box):
        lesion_box = lesions.boxes[label - 1]
        whole = np.where(lesions.labels[lesion_box] == label, any_lesion[lesion_box], 0.0)
        np.maximum(grounded[lesion_box], whole, out=grounded[lesion_box])
    return grounded


def lesions_clear_of(labels: np.ndarray, count: int, envelope: np.ndarray) -> list[int]:
    """Ids (1..count) of the answer's lesions ``labels`` with no voxel in ``envelope``.

    A lung answer keeps only lesions that touch the lungs (found from HU, grown by
    ``ORGAN_MARGIN_MM``): a lung cancer lies in the lung or against it (pleura, mediastinum,
    diaphragm), whatever it has invaded. The prompt branch also fires outside the lungs on
    real chest CT (mediastinal fat, vertebrae), and nothing there answers "lung"."""
    touching = set(np.unique(labels[envelope]).tolist())
    return [i for i in range(1, count + 1) if i not in touching]
