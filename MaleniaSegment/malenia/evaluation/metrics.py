"""Segmentation metrics: Dice and normalised surface Dice (MONAI) and lesion-level detection.

Masks are boolean arrays [z, y, x]; spacing is given in the same axis order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

NSD_TOLERANCE_MM = 2.0
DETECTION_IOU = 0.1  # a predicted component "finds" a lesion above this IoU
_CROP_MARGIN_VOX = 4  # cropping to the masks' box (plus a margin) changes neither metric


def _crop(*masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Both masks cut to their joint bounding box grown by a margin: same Dice and NSD,
    much less work for the distance transforms."""
    union = np.logical_or.reduce(masks)
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    box = tuple(
        slice(max(0, s.start - _CROP_MARGIN_VOX), min(n, s.stop + _CROP_MARGIN_VOX))
        for s, n in zip(box, union.shape, strict=True)
    )
    return tuple(np.pad(m[box], 1) for m in masks)  # pad: a border is a surface


def _one_hot(mask: np.ndarray):
    import torch

    foreground = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.cat([1 - foreground, foreground], dim=1)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """MONAI Dice of the foreground; two empty masks agree perfectly (1.0)."""
    from monai.metrics import compute_dice

    if not truth.any() and not prediction.any():
        return 1.0
    p, t = _crop(prediction.astype(bool), truth.astype(bool))
    return float(compute_dice(_one_hot(p), _one_hot(t), include_background=False)[0, 0])


def nsd(prediction: np.ndarray, truth: np.ndarray, spacing_zyx) -> float:
    """MONAI normalised surface Dice at NSD_TOLERANCE_MM; 1.0 when both are empty, 0.0 when
    exactly one is."""
    from monai.metrics import compute_surface_dice

    if not prediction.any() or not truth.any():
        return float(prediction.any() == truth.any())
    p, t = _crop(prediction.astype(bool), truth.astype(bool))
    with warnings.catch_warnings():  # MONAI 1.5 warns about an argument it passes itself
        warnings.filterwarnings(
            "ignore", message=".*always_return_as_numpy", category=FutureWarning
        )
        value = compute_surface_dice(
            _one_hot(p),
            _one_hot(t),
            class_thresholds=[NSD_TOLERANCE_MM],
            include_background=False,
            spacing=[float(s) for s in spacing_zyx],
        )
    return float(value[0, 0])


@dataclass
class Detection:
    """Lesion-level counts of one prediction against the target lesions of one query."""

    found: int  # target lesions with a predicted component at IoU > DETECTION_IOU
    lesions: int  # target lesions
    true_components: int  # predicted components at IoU > DETECTION_IOU with a target lesion
    components: int  # predicted components

    @property
    def recall(self) -> float | None:
        return self.found / self.lesions if self.lesions else None

    @property
    def precision(self) -> float | None:
        return self.true_components / self.components if self.components else None


def lesion_detection(
    prediction: np.ndarray, instances: np.ndarray, target_ids: list[int] | None = None
) -> Detection:
    """Match predicted connected components (26-connected) to target lesions by IoU.

    ``instances`` labels every lesion (0 = background); ``target_ids`` are the lesions the
    query asked for (default: all). A component overlapping only a non-target lesion counts
    as a false positive: the query asked for something else.
    """
    components, count = ndimage.label(prediction, structure=np.ones((3, 3, 3), bool))
    ids = sorted(int(i) for i in np.unique(instances) if i) if target_ids is None else target_ids
    target = np.isin(instances, ids) & (instances > 0)
    overlap = (components > 0) & target
    pairs, intersections = np.unique(
        np.stack([components[overlap], instances[overlap]]), axis=1, return_counts=True
    )
    component_sizes = np.bincount(components.ravel(), minlength=count + 1)
    lesion_sizes = {i: int((instances == i).sum()) for i in ids}
    found, true_components = set(), set()
    for (component, lesion), intersection in zip(pairs.T, intersections, strict=True):
        union = component_sizes[component] + lesion_sizes[int(lesion)] - intersection
        if intersection / union > DETECTION_IOU:
            found.add(int(lesion))
            true_components.add(int(component))
    return Detection(len(found), len(ids), len(true_components), int(count))
