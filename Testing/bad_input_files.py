"""Broken and hostile inputs for the bad-input tests (issue 18), written once per module:
truncated, NaN, empty, 2D, RGB and absurd-spacing images, a header declaring 2000 cubed voxels,
and DICOM series with gaps, tilt, duplicates and mixed orientations."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from dicom_series import read_uid, series_files, write_series
from malenia.io import CTVolume

SPACING = (2.0, 2.0, 2.0)


def body_ct(shape=(24, 32, 32)) -> np.ndarray:
    """A small body-like CT in HU (air around soft tissue, a hypodense sphere)."""
    zz, yy, xx = np.indices(shape)
    array = np.full(shape, -1000, np.int16)
    body = ((yy - shape[1] / 2) / (shape[1] / 2.3)) ** 2 + (
        (xx - shape[2] / 2) / (shape[2] / 2.3)
    ) ** 2 <= 1
    array[body] = 45
    array[(zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2 <= 16] = 5
    return array


def huge_nifti_header() -> bytes:
    """A 352-byte NIfTI whose header declares 2000 x 2000 x 2000 int16 voxels (16 GB)."""
    buffer = io.BytesIO()
    image = sitk.GetImageFromArray(np.zeros((2, 2, 2), np.int16))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"malenia-huge-{os.getpid()}.nii"
    sitk.WriteImage(image, str(path))
    header = bytearray(path.read_bytes()[:352])
    path.unlink()
    struct.pack_into("<8h", header, 40, 3, 2000, 2000, 2000, 1, 1, 1, 1)
    buffer.write(bytes(header))
    return buffer.getvalue()


def write_bad_files(folder: Path) -> Path:
    """Every broken input, made once."""
    ct = body_ct()

    def write(array, name, spacing=SPACING, compress=True):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / name), useCompression=compress)

    write(ct, "ct.nii.gz")
    write(ct, "ct.nii", compress=False)
    (folder / "huge.nii").write_bytes(huge_nifti_header())
    (folder / "huge.nii.gz").write_bytes(gzip.compress(huge_nifti_header()))
    for name in ("ct.nii.gz", "ct.nii"):
        data = (folder / name).read_bytes()
        (folder / f"cut-{name}").write_bytes(data[: len(data) // 3])
    nan = ct.astype(np.float32)
    nan[4:8, 4:8, 4:8] = np.nan
    write(nan, "nan.nii.gz")
    write(np.full((8, 8, 8), np.inf, np.float32), "allinf.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "junk.nii.gz").write_bytes(os.urandom(4096))
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(folder / "slice.nrrd"))
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 3), str(folder / "rgb.nrrd"))
    write(ct, "spacing.nrrd", spacing=(2.0, 2.0, 900.0))
    (folder / "existing.seg.nrrd").write_bytes(b"the user's own segmentation")
    (folder / "out").mkdir()

    volume = CTVolume(ct, SPACING, (-30.0, -30.0, 10.0), tuple(np.eye(3).ravel()))
    origin = np.asarray(volume.origin)
    dicom = folder / "dicom"

    def series(name: str, **options) -> Path:
        target = dicom / name
        write_series(volume, target, **options)
        return target

    series_files(series("gap"))[7].unlink()
    cut = series_files(series("truncated"))[5]
    cut.write_bytes(cut.read_bytes()[:-700])
    two = series("two")
    write_series(volume, two, description="second", prefix="b")
    tilt = math.tan(math.radians(12))
    series("tilt", positions=[origin + [0, 2 * k * tilt, 2 * k] for k in range(ct.shape[0])])
    steps = np.cumsum([0] + [2.0] * 10 + [2.6] + [2.0] * (ct.shape[0] - 12))
    series("uneven", positions=[origin + [0, 0, z] for z in steps])
    same = [origin + [0, 0, 2 * k] for k in range(ct.shape[0])]
    same[6] = same[5]
    series("duplicate", positions=same)
    mixed = series("mixed")
    write_series(
        CTVolume(ct[:1], SPACING, volume.origin, volume.direction),
        mixed,
        series_uid=read_uid(series_files(mixed)[0]),
        orientation=(1, 0, 0, 0, 0, -1),
        prefix="localiser",
    )
    (dicom / "none").mkdir()
    series("good")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: a failed run must leave it equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
