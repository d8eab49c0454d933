"""Anatomy grounding: answer a description in the organ its location names.

The prompt branch learnt lesions only in the organs of the training categories (kidney,
liver, pancreas, lung); asked for a lesion in the spleen it finds nothing, although the
prompt-free lesion map sees the lesion there. The location head knows every organ (trained
on organ masks, no lesion labels). A prompt's answer is therefore the union of

    prompt map                          (what the description as a whole points at)
    any-lesion map x location region    (every lesion the model sees in the named organ)

Both are probabilities on the model grid, so the calibrated threshold applies to the union.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# The region grows this far beyond the organ: lesions bulge out of it (exophytic renal
# masses, colon tumours through the wall) and the location map is soft at organ borders.
ORGAN_MARGIN_MM = 6.0
LOCATION_THRESHOLD = 0.5


def location_region(location_probability: np.ndarray, spacing_mm) -> np.ndarray:
    """Where the named organ is, holes filled (a large lesion inside an organ is not organ
    tissue to the location head) and grown by ``ORGAN_MARGIN_MM``. Worked out inside the
    organ's bounding box only, so a query on a whole-body CT stays cheap."""
    from malenia.inference.postprocess import foreground_box

    organ = location_probability > LOCATION_THRESHOLD
    region = np.zeros(organ.shape, bool)
    radius = [max(1, int(round(ORGAN_MARGIN_MM / s))) for s in spacing_mm]
    box = foreground_box(organ, max(radius))
    if box is None:
        return region
    ball = np.zeros([2 * r + 1 for r in radius], bool)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball[sum((g / r) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1.0] = True
    filled = ndimage.binary_fill_holes(organ[box])
    region[box] = ndimage.binary_dilation(filled, structure=ball)
    return region


def grounded_probability(
    prompt_probability: np.ndarray, any_lesion: np.ndarray, region: np.ndarray
) -> np.ndarray:
    """Union (voxel-wise max) of the prompt map and the lesion map inside the region,
    worked out in the region's box only (an organ is a small part of a CT)."""
    from malenia.inference.postprocess import foreground_box

    grounded = prompt_probability.astype(np.float32, copy=True)
    box = foreground_box(region)
    if box is not None:
        inside = np.where(region[box], any_lesion[box], np.float32(0.0))
        np.maximum(grounded[box], inside, out=grounded[box])
    return grounded
