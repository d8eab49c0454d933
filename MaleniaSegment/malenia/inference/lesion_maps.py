"""Lesion maps on the model grid and their way to the input grid: connected lesions of a
probability map, dropping some of them, and the boxes and blank grids that carry a map from
the model's grid onto the part of the input grid it covers. Numpy and SimpleITK only; the
queries that use them live in ``encoded``."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from malenia.inference.postprocess import components, foreground_box

if TYPE_CHECKING:  # imported where used: training imports this module without SimpleITK
    import SimpleITK as sitk


def without_lesions(probability, labels, boxes, dropped: list[int]):
    """(probability, labels, boxes) with the lesions ``dropped`` removed and the rest
    renumbered in order. The dropped lesions' voxels go to 0 in the probability, so that a
    higher re-cut or the browser's slider does not show them again (a lower cut may show a
    faint rim of one, which the engine's next re-cut drops again)."""
    if not dropped:
        return probability, labels, boxes
    probability = probability.copy()
    kept_labels = np.zeros_like(labels)
    kept_boxes = []
    for index, box in enumerate(boxes, start=1):
        inside = labels[box] == index
        if index in dropped:
            probability[box][inside] = 0.0
            continue
        kept_boxes.append(box)
        kept_labels[box][inside] = len(kept_boxes)
    return probability, kept_labels, kept_boxes


def components_in_box(probability: np.ndarray, threshold: float, min_voxels: int):
    """Connected components of ``probability > threshold``, labelled only inside the box
    holding the foreground (most of a CT is not lesion; labelling all of it is slow)."""
    foreground = probability > threshold
    labels = np.zeros(probability.shape, np.int16)
    box = foreground_box(foreground)
    if box is None:
        return labels, []
    local, boxes = components(foreground[box], min_voxels)
    labels[box] = local
    shifted = [
        tuple(slice(b.start + o.start, b.stop + o.start) for b, o in zip(inner, box, strict=True))
        for inner in boxes
    ]
    return labels, shifted


def input_box(mask: np.ndarray, model_image, input_image, margin_vox: int = 2):
    """The box of input-grid voxels (k, j, i slices) covering ``mask`` on the model grid,
    grown by a couple of model voxels; None when it misses the input grid."""
    hit = [
        np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)
    ]
    low = [int(h[0]) - margin_vox for h in hit]
    high = [int(h[-1]) + margin_vox for h in hit]
    corners = []
    for z, y, x in itertools.product(*zip(low, high, strict=True)):
        point = model_image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
        corners.append(input_image.TransformPhysicalPointToContinuousIndex(point)[::-1])
    corners = np.asarray(corners)
    size = input_image.GetSize()[::-1]
    start = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, size)
    if np.any(stop <= start):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def input_maps(probability, labels_model, cover, model_image, input_image):
    """(box, probability, lesion ids) on the input voxels (k, j, i slices) around the
    model-grid voxels ``cover``: probability resampled linearly (float32), ids from the
    nearest model voxel of ``labels_model`` grown by one voxel. None when ``cover`` is
    empty or misses the input grid."""
    from scipy import ndimage

    from malenia.preprocessing import to_input_grid

    if not cover.any():
        return None
    box = input_box(cover, model_image, input_image)
    if box is None:
        return None
    reference = sub_grid(input_image, box)
    ids = ndimage.grey_dilation(labels_model, size=(3, 3, 3)).astype(np.int16)
    probability_in = to_input_grid(probability, model_image, reference)
    ids_in = to_input_grid(ids, model_image, reference, nearest=True)
    return box, probability_in, ids_in


def sub_grid(image: sitk.Image, box) -> sitk.Image:
    """A blank image on the part ``box`` (k, j, i slices) of ``image``'s grid."""
    import SimpleITK as sitk

    size = [b.stop - b.start for b in box[::-1]]
    sub = sitk.Image(size, sitk.sitkUInt8)
    sub.SetSpacing(image.GetSpacing())
    sub.SetDirection(image.GetDirection())
    sub.SetOrigin(image.TransformIndexToPhysicalPoint([b.start for b in box[::-1]]))
    return sub


def blank_like(image) -> sitk.Image:
    import SimpleITK as sitk

    blank = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    blank.CopyInformation(image)
    return blank
