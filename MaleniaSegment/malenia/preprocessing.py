"""Named preprocessing stages shared by training and inference.

``normalize_ct`` is the one intensity normalisation the model ever sees; the model card
records its window so weights and preprocessing cannot drift apart.
"""

from __future__ import annotations

import numpy as np

HU_WINDOW: tuple[float, float] = (-1000.0, 1000.0)


def normalize_ct(hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Clip Hounsfield units to ``window`` and scale linearly to [-1, 1] (float32)."""
    low, high = window
    clipped = np.clip(np.asarray(hu, dtype=np.float32), low, high)
    return (clipped - low) * (2.0 / (high - low)) - 1.0


def hu_from_normalized(image, window: tuple[float, float] = HU_WINDOW):
    """The inverse of ``normalize_ct`` inside its window (numpy arrays or torch tensors):
    what the model's soft-tissue view and tests read back as Hounsfield units."""
    low, high = window
    return (image + 1.0) * ((high - low) / 2.0) + low


# --------------------------------------------------------------------------- geometry stages
# The model sees arrays [z, y, x] with x to the patient's left, y posterior, z superior at a
# fixed spacing. These stages take any input grid there and bring results back exactly onto
# the input grid (resampling in physical space, so oblique and flipped inputs are handled).


def canonical_orientation(image):
    """Stage 1: permute/flip axes to the closest LPS orientation (no resampling)."""
    import SimpleITK as sitk

    return sitk.DICOMOrient(image, "LPS")


def resampled_size(size, spacing, target) -> list[int]:
    """Voxels per axis of the grid ``resample_to_spacing`` and ``resample_array`` resample
    onto: the same physical extent at ``target`` spacing (axes in the order given)."""
    return [max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, target, strict=True)]


def resample_to_spacing(image, spacing_xyz, interpolator=None, default: float = -1024.0):
    """Stage 2: resample to the model's spacing on the same origin and direction."""
    import SimpleITK as sitk

    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    size = resampled_size(image.GetSize(), image.GetSpacing(), spacing_xyz)
    return sitk.Resample(
        image, size, sitk.Transform(), interpolator or sitk.sitkLinear, image.GetOrigin(), spacing_xyz,
        image.GetDirection(), default, sitk.sitkFloat32,
    )  # fmt: skip


def resample_array(
    array: np.ndarray, spacing_zyx, target_zyx, default: float = -1024.0
) -> np.ndarray:
    """``resample_to_spacing`` on a bare array (identity direction, origin kept), in numpy
    and scipy alone: the same grid, the same linear interpolation and the same ``default``
    where SimpleITK's interpolator finds a point outside the image (half a voxel beyond the
    last centre). Training's nodule crops use it, so training runs without SimpleITK; a test
    checks it against SimpleITK's result."""
    from scipy import ndimage

    size = resampled_size(array.shape, spacing_zyx, target_zyx)
    coords = [np.arange(m) * (t / s) for m, s, t in zip(size, spacing_zyx, target_zyx, strict=True)]
    out = ndimage.map_coordinates(
        array.astype(np.float32), np.meshgrid(*coords, indexing="ij"), order=1, mode="nearest"
    )
    for axis, (positions, n) in enumerate(zip(coords, array.shape, strict=True)):
        outside = [slice(None)] * array.ndim
        outside[axis] = positions >= n - 0.5
        out[tuple(outside)] = default
    return out


def to_model_grid(volume, spacing_zyx):
    """Stages 1-2 on a CTVolume: returns the model-grid SimpleITK image (float32 HU)."""
    import SimpleITK as sitk

    image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    return resample_to_spacing(canonical_orientation(image), tuple(reversed(spacing_zyx)))


def to_input_grid(
    array: np.ndarray, model_image, input_image, nearest: bool = False, default: float = 0.0
):
    """Bring an array on the model grid back onto the input grid (exact input geometry)."""
    import SimpleITK as sitk

    moving = sitk.GetImageFromArray(array)
    moving.CopyInformation(model_image)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    output = sitk.Resample(
        moving, input_image, sitk.Transform(), interpolator, default, moving.GetPixelID()
    )
    return sitk.GetArrayFromImage(output)


# A region of interest (a box the user drew) is encoded on a finer grid when it is small, so
# that a 1 cm lung nodule covers many voxels: the box sets the scale, as a zoomed-in view
# does. The ROI's longest side then spans ROI_FILL of the window, at no less than
# MIN_ROI_SPACING_MM per voxel and never coarser than the model's own spacing.
ROI_FILL = 0.75
MIN_ROI_SPACING_MM = 0.5


def roi_spacing_mm(extent_mm, model_spacing, patch) -> tuple[float, float, float]:
    """Isotropic (z, y, x) spacing for encoding an ROI of ``extent_mm`` (z, y, x)."""
    spacing = max(extent_mm) / (ROI_FILL * min(patch))
    spacing = float(np.clip(spacing, MIN_ROI_SPACING_MM, min(model_spacing)))
    if spacing >= min(model_spacing):
        return tuple(float(s) for s in model_spacing)  # type: ignore[return-value]
    return (spacing, spacing, spacing)


def body_bounding_box(
    hu: np.ndarray, margin: int = 4, threshold: float = -500.0
) -> tuple[slice, slice, slice]:
    """Stage 4 (optional crop): the box holding the body (voxels above -500 HU, largest
    connected part), so that sliding windows skip the air around the patient."""
    from scipy import ndimage

    body = hu > threshold
    if not body.any():
        return tuple(slice(0, n) for n in hu.shape)  # type: ignore[return-value]
    labels, count = ndimage.label(body[::2, ::2, ::2])
    if count > 1:
        sizes = ndimage.sum(np.ones_like(labels), labels, range(1, count + 1))
        keep = np.zeros(count + 1, bool)
        keep[1:] = sizes >= 0.05 * sizes.max()
        body_small = keep[labels]
    else:
        body_small = labels > 0
    coords = np.argwhere(body_small) * 2
    low = np.maximum(coords.min(0) - margin, 0)
    high = np.minimum(coords.max(0) + 2 + margin, hu.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))  # type: ignore[return-value]
