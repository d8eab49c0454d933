"""Baseline A: attribute-aware HU thresholding, the reference the model has to beat.

It needs no model but it is given more than the model: the host organ's label map (from the
phantom or a TotalSegmentator-style label map). It reads two attributes only, location (which
organ) and density (which HU window relative to that organ), and keeps the largest connected
component. The HU offsets come from the attribute definitions (density is relative to the
host organ's parenchyma; in the lung relative to soft tissue), not from the test set.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from malenia.attributes import LesionDescription

# A lesion is "hypo/hyperdense" when it differs visibly from the organ: ~20 HU is about
# twice the CT noise of a portal-venous abdomen, below any radiologist's "clearly darker".
DENSITY_MARGIN_HU = 20.0
ISODENSE_MARGIN_HU = 8.0
LUNG_MEDIAN_BELOW_HU = -500.0  # a host this dark is aerated lung
SMOOTHING_SIGMA_VOX = 1.0  # suppresses voxel noise before thresholding


def host_organ(labels: np.ndarray, description: LesionDescription, location_labels) -> np.ndarray:
    """The organ the description's location names, or an empty mask when it is absent."""
    from malenia.synth.anatomy import LOCATION_LABEL

    label = (location_labels or LOCATION_LABEL).get(description.location or "")
    if label is None:
        return np.zeros(labels.shape, bool)
    return labels == label


def density_window(density: str | None, host_median_hu: float) -> tuple[float, float]:
    """(low, high) HU a lesion of this density occupies in a host of this median HU."""
    if host_median_hu < LUNG_MEDIAN_BELOW_HU:  # lung: relative to soft tissue
        if density in ("hypodense", "mixed ground-glass and solid"):
            return -750.0, np.inf  # ground glass and everything denser
        return -300.0, np.inf  # solid nodule
    if density == "hyperdense":
        return host_median_hu + DENSITY_MARGIN_HU, np.inf
    if density == "isodense":
        return host_median_hu - ISODENSE_MARGIN_HU, host_median_hu + ISODENSE_MARGIN_HU
    return -np.inf, host_median_hu - DENSITY_MARGIN_HU  # hypodense or unspecified


def largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == (int(np.argmax(sizes)) + 1)


def threshold_baseline(
    ct: np.ndarray,
    labels: np.ndarray,
    description: LesionDescription,
    location_labels: dict[str, int] | None = None,
) -> np.ndarray:
    """Baseline A mask (bool, same grid as ``ct``); empty when the location is unknown or
    not in the label map (there is nothing to threshold in, and guessing would flatter it)."""
    organ = host_organ(labels, description, location_labels)
    if not organ.any():
        return np.zeros(ct.shape, bool)
    # Eroded organ: partial volume with fat or air at its border is not a lesion.
    interior = ndimage.binary_erosion(organ, iterations=1)
    smooth = ndimage.gaussian_filter(ct.astype(np.float32), SMOOTHING_SIGMA_VOX)
    low, high = density_window(description.density, float(np.median(ct[organ])))
    candidate = interior & (smooth >= low) & (smooth <= high)
    # Give back the eroded rim around what was found, inside the organ only.
    return ndimage.binary_dilation(largest_component(candidate)) & organ & (candidate | ~interior)
