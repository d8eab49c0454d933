"""Upload bodies -> validated CTVolume, or an `UploadError` whose message says what to send.

Two forms:
  * a raw array (what the Slicer module sends): `Content-Type: application/x-malenia-array`,
    `X-Shape: k,j,i` (numpy order [z, y, x]), `X-Dtype` (numpy dtype string, e.g. `<i2`), and
    the geometry either as `X-Ijk-To-Ras` (16 numbers, Slicer's 4x4 matrix, row-major) or as
    `X-Spacing: sx,sy,sz`, `X-Origin: ox,oy,oz` and optionally `X-Direction` (9 numbers,
    row-major) in SimpleITK's LPS convention;
  * a NIfTI / NRRD / MHA file: any other content type; `X-Format: nifti|nrrd|mha`, or the
    format is recognised from the first bytes;
  * a DICOM series as a zip of its files (`Content-Type: application/zip` or
    `X-Format: dicom-zip`; `X-Series: UID` picks one series of several). Only such an
    upload can be answered as a DICOM SEG (GET .../results/{id}/dicom-seg).
Every form is checked on what it declares (shape x dtype, the file's header) against the
server's per-volume memory budget before the voxels are allocated.
Optional `X-Roi`: JSON `[[centre RAS mm x3], [size mm x3]]`; `X-Name`: a label for messages.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from malenia.errors import MaleniaError
from malenia.io import CTVolume, read_volume, validate_ct
from malenia.validation import VolumeHeader, check_header

ARRAY_CONTENT_TYPE = "application/x-malenia-array"
ALLOWED_DTYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"}
SUFFIXES = {"nifti": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "mha": ".mha"}
ZIP_CONTENT_TYPE = "application/zip"
MAX_ZIP_FILES = 5000  # slices of one series; more is not one CT


class UploadError(MaleniaError):
    """The upload cannot be turned into a volume (answered with 400)."""


def parse_upload(headers, body: bytes, budget_bytes: int | None = None) -> tuple[CTVolume, object]:
    """(volume, roi) from the request headers and body; ``budget_bytes``: memory one volume
    may need (default: ``validation.default_memory_budget``)."""
    if not body:
        raise UploadError("The upload is empty: send the volume in the request body.")
    roi = _roi(headers.get("x-roi"))
    name = (headers.get("x-name") or "upload")[:200]
    content_type = headers.get("content-type", "")
    if content_type.startswith(ARRAY_CONTENT_TYPE):
        return _raw_array(headers, body, name, budget_bytes), roi
    if content_type.startswith(ZIP_CONTENT_TYPE) or headers.get("x-format") == "dicom-zip":
        return _dicom_zip(body, name, headers.get("x-series"), budget_bytes), roi
    return _file(headers.get("x-format"), body, name, budget_bytes), roi


def _numbers(headers, key: str, count: int | None, example: str) -> list[float] | None:
    text = headers.get(key)
    if text is None:
        return None
    try:
        values = json.loads(text) if text.strip().startswith("[") else text.split(",")
        numbers = [float(v) for v in np.asarray(values, dtype=object).ravel()]
    except (ValueError, TypeError) as error:
        raise UploadError(
            f"Header {key} is not a list of numbers ({error}); e.g. {example}."
        ) from None
    if count is not None and len(numbers) != count:
        raise UploadError(
            f"Header {key} needs {count} numbers, got {len(numbers)}; e.g. {example}."
        )
    if not np.isfinite(numbers).all():
        raise UploadError(f"Header {key} contains NaN or infinity.")
    return numbers


def _raw_array(headers, body: bytes, name: str, budget_bytes: int | None) -> CTVolume:
    shape_text = headers.get("x-shape")
    if not shape_text:
        raise UploadError(
            "A raw array upload needs X-Shape (k,j,i), X-Dtype and its geometry "
            "(X-Ijk-To-Ras, or X-Spacing + X-Origin [+ X-Direction])."
        )
    try:
        shape = tuple(int(v) for v in shape_text.split(","))
    except ValueError:
        raise UploadError(
            f"X-Shape '{shape_text}' is not integers; e.g. X-Shape: 80,256,256."
        ) from None
    if len(shape) != 3 or min(shape) < 1:
        raise UploadError(f"X-Shape {shape} is not a 3D shape (k,j,i); send one 3D CT volume.")
    try:
        dtype = np.dtype(headers.get("x-dtype", "<i2"))
    except TypeError:
        raise UploadError(
            f"X-Dtype '{headers.get('x-dtype')}' is not a numpy dtype; e.g. <i2."
        ) from None
    if dtype.name not in ALLOWED_DTYPES:
        raise UploadError(
            f"X-Dtype {dtype} is not a CT voxel type; use one of {sorted(ALLOWED_DTYPES)}."
        )
    check_header(
        VolumeHeader(name, tuple(reversed(shape)), dtype.name, 1, (1.0, 1.0, 1.0), ()),
        budget_bytes,
    )
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise UploadError(
            f"The body has {len(body)} bytes but X-Shape {shape} of {dtype} needs {expected}: "
            "send the array's raw bytes in C order."
        )
    array = np.frombuffer(body, dtype=dtype).reshape(shape).copy()
    matrix = _numbers(headers, "x-ijk-to-ras", 16, "the 16 numbers of the 4x4 IJK-to-RAS matrix")
    if matrix is not None:
        matrix4 = np.array(matrix).reshape(4, 4)
        if abs(np.linalg.det(matrix4[:3, :3])) < 1e-9:
            raise UploadError(
                "X-Ijk-To-Ras is singular (a zero spacing?); send the volume's matrix."
            )
        volume = CTVolume.from_ijk_to_ras(array, matrix4, name)
    else:
        spacing = _numbers(headers, "x-spacing", 3, "X-Spacing: 0.8,0.8,2.5")
        origin = _numbers(headers, "x-origin", 3, "X-Origin: -200,-180,-400")
        direction = _numbers(headers, "x-direction", 9, "X-Direction: 1,0,0,0,1,0,0,0,1")
        if spacing is None or origin is None:
            raise UploadError(
                "A raw array upload needs its geometry: X-Ijk-To-Ras, or X-Spacing and X-Origin "
                "(and X-Direction unless it is the identity)."
            )
        if min(spacing) <= 0:
            raise UploadError(f"X-Spacing {spacing} must be positive (mm).")
        direction = direction or [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        if abs(np.linalg.det(np.reshape(direction, (3, 3)))) < 1e-6:
            raise UploadError("X-Direction is singular; send the volume's direction cosines.")
        volume = CTVolume(array, tuple(spacing), tuple(origin), tuple(direction), name)
    validate_ct(volume)
    return volume


def _sniff(body: bytes) -> str | None:
    head = body[:348]
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head.startswith(b"\x1f\x8b"):
        return "nifti"  # gzip: a .nii.gz
    if head.startswith(b"ObjectType") or b"ElementDataFile" in body[:4096]:
        return "mha"
    if len(head) >= 4 and (
        int.from_bytes(head[:4], "little") in (348, 540)
        or int.from_bytes(head[:4], "big") in (348, 540)
    ):
        return "nii"
    return None


def _file(declared: str | None, body: bytes, name: str, budget_bytes: int | None) -> CTVolume:
    kind = (declared or _sniff(body) or "").lower()
    if kind not in SUFFIXES:
        raise UploadError(
            "The upload is neither a raw array (Content-Type application/x-malenia-array) nor a "
            "recognisable NIfTI, NRRD or MHA file; send one of those (X-Format says which)."
        )
    suffix = SUFFIXES[kind]
    if kind == "nifti" and not body.startswith(b"\x1f\x8b"):
        suffix = ".nii"
    with tempfile.TemporaryDirectory(prefix="malenia-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(body)
        volume = read_volume(path, budget_bytes=budget_bytes)
    volume.name = name
    return volume


def _dicom_zip(body: bytes, name: str, series: str | None, budget_bytes: int | None) -> CTVolume:
    """A zipped DICOM series, unpacked into a private temporary folder. The archive's own
    directory is checked first: no more than MAX_ZIP_FILES files, no paths leaving the
    folder, and no more uncompressed bytes than the budget (a zip bomb stops here)."""
    import io
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError) as error:
        raise UploadError(f"The upload is not a readable zip archive ({error}).") from None
    from malenia.validation import default_memory_budget

    budget = default_memory_budget() if budget_bytes is None else budget_bytes
    if len(members) > MAX_ZIP_FILES:
        raise UploadError(
            f"The zip holds {len(members)} files; one CT series has at most {MAX_ZIP_FILES}."
        )
    if sum(m.file_size for m in members) > budget:
        raise UploadError(
            f"The zip unpacks to {sum(m.file_size for m in members)} bytes, more than the "
            f"server's per-volume budget of {budget} bytes; send one series, or crop it."
        )
    with tempfile.TemporaryDirectory(prefix="malenia-dicom-") as folder:
        for index, member in enumerate(members):
            target = Path(folder) / f"{index:05d}.dcm"  # our names: no path from the archive
            try:
                target.write_bytes(archive.read(member))
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise UploadError(
                    f"The zip is damaged ({member.filename}: {error}); zip the series again."
                ) from None
        volume = read_volume(Path(folder), series, budget_bytes)
    volume.name = name
    return volume


def _roi(text: str | None):
    if not text:
        return None
    try:
        roi = json.loads(text)
        array = np.asarray(roi, dtype=float)
    except (ValueError, TypeError) as error:
        raise UploadError(f"X-Roi is not JSON numbers ({error}).") from None
    if array.shape != (2, 3) or not np.isfinite(array).all() or (array[1] <= 0).any():
        raise UploadError("X-Roi must be [[centre x,y,z RAS mm], [size x,y,z mm]] with sizes > 0.")
    return array.tolist()
