"""Anatomy found from HU and connectivity alone, with no model: the lungs.

Air inside the body is lung or bowel gas, and the two differ in HU; a chest radiologist's
lung mask is that air with its vessels and airway walls. Used to label the lungs of the
training scans, to score the location head's lung map, and at inference to keep a lung
answer in the lungs (``malenia.inference.grounding.lesions_clear_of``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from malenia.synth.anatomy import LABELS

# Bowel gas is pure air (about -1000 HU); aerated lung holds tissue and blood (-700 to -900
# HU). On the training scans 44-57 % of each gas pocket over 50 ml lies below -950 HU and 0 %
# of each lung (RadCTTACEomics_0697's 600 ml of colon gas was labelled lung before this):
# a part with more than GAS_SHARE below GAS_HU is gas. Severe emphysema reaches 30 %.
GAS_HU, GAS_SHARE = -950.0, 0.35


def lung_lobe_labels(hu: np.ndarray, spacing_zyx, origin_zyx) -> np.ndarray:
    """Approximate lung lobes from HU: the air-filled parts inside the body (< -400 HU,
    enclosed by the body in the axial plane, at least 50 ml, not bowel gas), their vessels
    included, split left/right by LPS x, and each lung into lobes by an oblique plane (upper
    lobes anterior-superior, lower lobes posterior-inferior; the right middle lobe the
    anterior-inferior part). Fissures are not found: this is a coarse label for grounding and
    rendering, recorded as such."""
    labels = np.zeros(hu.shape, np.uint8)
    body, count = ndimage.label(hu > -500)
    if count == 0:
        return labels
    body = body == 1 + int(np.argmax(ndimage.sum(body > 0, body, range(1, count + 1))))
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in body])
    inner = (hu < -400) & filled
    inner = ndimage.binary_opening(inner, iterations=1)
    parts, count = ndimage.label(inner)
    if count == 0:
        return labels
    sizes = ndimage.sum(inner, parts, range(1, count + 1))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000
    gas = ndimage.mean(hu < GAS_HU, parts, range(1, count + 1)) > GAS_SHARE
    lungs = np.isin(parts, 1 + np.flatnonzero((sizes * voxel_ml >= 50) & ~gas))
    # Vessels and airway walls are lung too (as in any lung mask): fill each axial section.
    lungs = np.stack([ndimage.binary_fill_holes(plane) for plane in lungs]) & filled
    # The lungs meet at the trachea: split them at the body's midline, not by component.
    x = origin_zyx[2] + np.arange(hu.shape[2]) * spacing_zyx[2]
    midline = float(np.median(x[np.argwhere(body[::4, ::4, ::4])[:, 2] * 4]))
    for side, lung in (("right", lungs & (x <= midline)), ("left", lungs & (x > midline))):
        coords = np.argwhere(lung)
        if len(coords) * voxel_ml < 50:
            continue
        z, y = coords[:, 0].astype(float), coords[:, 1].astype(float)
        zn = (z - z.min()) / max(np.ptp(z), 1)
        yn = (y - y.min()) / max(np.ptp(y), 1)
        upper = zn + 0.6 * (0.5 - yn) > 0.45
        names = np.where(upper, f"{side} upper lobe", f"{side} lower lobe").astype(object)
        if side == "right":
            names[~upper & (yn < 0.45) & (zn > 0.15)] = "right middle lobe"
        for name in set(names.tolist()):
            labels[tuple(coords[names == name].T)] = LABELS[name]
    return labels


def lungs_from_hu(hu: np.ndarray, spacing_zyx, origin_zyx, box=None) -> np.ndarray:
    """Both lungs (bool, shape of ``hu``) by ``lung_lobe_labels``, worked out inside ``box``
    (the body's bounding box) only; all False where none is found, or where the lungs found
    are not whole (``cut_by_the_edge``: a crop, a small field of view), since an answer kept
    to them would lose lesions in the part that was not found."""
    box = box or tuple(slice(0, n) for n in hu.shape)
    corner = [o + s.start * d for o, s, d in zip(origin_zyx, box, spacing_zyx, strict=True)]
    inside = hu[box].astype(np.float32, copy=False)
    found = lung_lobe_labels(inside, spacing_zyx, corner) > 0
    lungs = np.zeros(hu.shape, bool)
    if found.any() and not cut_by_the_edge(inside, found):
        lungs[box] = found
    return lungs


def cut_by_the_edge(hu: np.ndarray, lungs: np.ndarray) -> bool:
    """Whether the air of the lungs found reaches the in-plane edge of the volume. Whole
    lungs are closed by the chest wall, so their air never does (the air outside the body
    does); in a crop or a small field of view the lung runs out of the image, and the part
    enclosed in a few sections is all ``lung_lobe_labels`` finds."""
    air, _ = ndimage.label(hu < -400)
    own = np.unique(air[lungs & (air > 0)])
    edges = np.concatenate([air[:, [0, -1], :].ravel(), air[:, :, [0, -1]].ravel()])
    return bool(np.intersect1d(own, edges[edges > 0]).size)
