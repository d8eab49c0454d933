"""Reading CT volumes (NIfTI, NRRD, MHA, DICOM series folders, numpy) and checking that
they are usable 3D CT in Hounsfield units before any model sees them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.errors import InvalidVolumeError
from malenia.validation import MAX_VOXELS, DicomSeries, check_source, non_finite_message


@dataclass
class CTVolume:
    """A CT in SimpleITK conventions: array [z, y, x] (k, j, i), geometry in LPS mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]  # (x, y, z)
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major 3x3
    name: str = "volume"
    # The checked DICOM series it was read from (slice files in k order), for DICOM SEG.
    dicom: DicomSeries | None = None

    @classmethod
    def from_sitk(cls, image: sitk.Image, name: str = "volume") -> CTVolume:
        if image.GetDimension() != 3:
            raise InvalidVolumeError(
                f"'{name}' is a {image.GetDimension()}D image; MaleniaSegment needs a 3D CT volume "
                "(a stack of axial slices). Load the whole series, not a single slice."
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InvalidVolumeError(
                f"'{name}' has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or "
                "vector image); choose the original greyscale CT series."
            )
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            image.GetDirection(),
            name,
        )

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(tuple(float(s) for s in self.spacing))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction))
        return image

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 IJK-to-RAS matrix (Slicer's convention)."""
        matrix = np.eye(4)
        matrix[:3, :3] = (
            np.diag([-1.0, -1.0, 1.0]) @ np.reshape(self.direction, (3, 3)) @ np.diag(self.spacing)
        )
        matrix[:3, 3] = np.array(self.origin) * [-1.0, -1.0, 1.0]
        return matrix

    @classmethod
    def from_ijk_to_ras(
        cls, array: np.ndarray, ijk_to_ras: np.ndarray, name: str = "volume"
    ) -> CTVolume:
        lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(ijk_to_ras, dtype=float)[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        direction = (lps / spacing).ravel()
        origin = np.asarray(ijk_to_ras, dtype=float)[:3, 3] * [-1.0, -1.0, 1.0]
        return cls(np.asarray(array), tuple(spacing), tuple(origin), tuple(direction), name)

    def key(self) -> str:
        """Content + geometry hash: the cache key of an encoded volume."""
        import hashlib

        digest = hashlib.sha1()
        digest.update(
            np.ascontiguousarray(self.array)
            .view(np.uint8)
            .ravel()[:: max(1, self.array.nbytes // (64 << 20))]
            .tobytes()
        )
        digest.update(
            repr(
                (self.array.shape, str(self.array.dtype), self.spacing, self.origin, self.direction)
            ).encode()
        )
        return digest.hexdigest()


def read_volume(
    path: str | Path, series_uid: str | None = None, budget_bytes: int | None = None
) -> CTVolume:
    """Read a CT from a file (.nii/.nii.gz/.nrrd/.mha/...) or a DICOM series folder, after
    ``validation.check_source`` has checked its header, size, integrity and slices."""
    path = Path(path)
    source = check_source(path, series_uid, budget_bytes)
    try:
        if isinstance(source, DicomSeries):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in source.files])
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InvalidVolumeError(
            f"Cannot read {path} as an image ({str(error).strip().splitlines()[-1]}). Is it a CT in NIfTI, NRRD, MHA or DICOM format?"
        ) from error
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    volume = CTVolume.from_sitk(image, path.name)
    if isinstance(source, DicomSeries):
        volume.dicom = source
    validate_ct(volume)
    return volume


def validate_ct(volume: CTVolume) -> None:
    """Refuse what is not a 3D CT in Hounsfield units, saying what to do instead."""
    array = volume.array
    name = volume.name
    if array.ndim != 3 or min(array.shape) < 2:
        raise InvalidVolumeError(
            f"'{name}' has shape {array.shape}: it is not a 3D volume. Load the whole CT series (several slices)."
        )
    if array.size > MAX_VOXELS:
        raise InvalidVolumeError(
            f"'{name}' has {array.size / 1e9:.1f} billion voxels, more than any CT series "
            f"({MAX_VOXELS / 1e9:.2f} billion allowed). Crop it to a region of interest or downsample it first."
        )
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidVolumeError(
            f"'{name}' has voxel type {array.dtype}; expected CT intensities (integers or floats)."
        )
    sample = array.ravel()[:: max(1, array.size // 2_000_000)].astype(np.float64)
    if array.dtype.kind == "f":
        finite = int(np.count_nonzero(np.isfinite(array)))
        if finite < array.size:
            raise InvalidVolumeError(non_finite_message(name, array.size - finite, array.size))
    low, high = float(sample.min()), float(sample.max())
    if low == high:
        raise InvalidVolumeError(
            f"'{name}' is constant ({low:g} everywhere): an empty or blank volume. Load a CT with image content."
        )
    if low >= 0 and high > 255:
        raise InvalidVolumeError(
            f"'{name}' has intensities {low:g}..{high:g} with nothing below 0: this looks like MR, or CT stored without "
            "its rescale slope/intercept. MaleniaSegment needs CT in Hounsfield units (air = -1000, water = 0)."
        )
    if low >= 0:
        raise InvalidVolumeError(
            f"'{name}' has intensities {low:g}..{high:g}: not Hounsfield units (8-bit image?). Use the original CT."
        )
    # A box inside the lung may hold nothing denser than a ground-glass nodule (-300 HU):
    # only a volume with no voxel above -800 HU (air and nothing else) is refused.
    if high < -800 or low < -5000 or high > 40000:
        raise InvalidVolumeError(
            f"'{name}' has intensities {low:g}..{high:g}, outside the range of CT in Hounsfield units. "
            "Check the rescale slope/intercept of the export."
        )
