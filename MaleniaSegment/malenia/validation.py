"""Checks that run before any work: what a file's header declares, whether its voxel data
is all there, whether it fits the memory budget, and whether a DICOM folder is one complete
series. Each check reads headers (and, for NIfTI, streams the voxel bytes once in small
chunks), so a hostile or broken file is refused in milliseconds without allocating it.

The CLI, the server and the Slicer logic call these before reading or copying a volume.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from malenia.errors import InvalidVolumeError

# Bytes of working memory per voxel while segmenting, beyond the voxels as stored: float32
# copies for resampling and normalisation, the model-grid labels and the input-grid
# labelmap. Measured on the sample CT (peak RSS / voxels ~ 11); rounded up.
WORKING_BYTES_PER_VOXEL = 12
MAX_VOXELS = 1024 * 1024 * 1200  # ~1.26 billion voxels: beyond any clinical CT series
MEMORY_BUDGET_ENV = "MALENIA_MAX_MEMORY_GB"
SPACING_RANGE_MM = (0.01, 50.0)
CHUNK_BYTES = 8 << 20

# NIfTI datatype code -> numpy dtype (the codes CT exporters write).
_NIFTI_DTYPES = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}


def default_memory_budget() -> int:
    """Bytes a volume may need: $MALENIA_MAX_MEMORY_GB, else half of this machine's memory
    (a CT that needs more would swap the machine to a halt before any answer comes)."""
    text = os.environ.get(MEMORY_BUDGET_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            raise InvalidVolumeError(
                f"${MEMORY_BUDGET_ENV}='{text}' is not a number of gigabytes (e.g. 16)."
            ) from None
        return parse_budget_gb(value, f"${MEMORY_BUDGET_ENV}")
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        import psutil

        total = psutil.virtual_memory().total
    return int(total // 2)


def parse_budget_gb(value: float, option: str = "--max-memory-gb") -> int:
    if not math.isfinite(value) or value <= 0:
        raise InvalidVolumeError(f"{option} must be a positive number of gigabytes, not {value}.")
    return int(value * (1 << 30))


@dataclass(frozen=True)
class VolumeHeader:
    """What a file or series declares, before its voxels are read."""

    name: str
    size: tuple[int, ...]  # (i, j, k) = (x, y, z), as SimpleITK reports it
    dtype: str  # numpy dtype name of one component
    components: int
    spacing: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def voxels(self) -> int:
        return math.prod(self.size)

    @property
    def stored_bytes(self) -> int:
        return self.voxels * self.components * np.dtype(self.dtype).itemsize

    @property
    def needed_bytes(self) -> int:
        """Memory to read and segment it: the voxels as stored plus the working copies."""
        return self.stored_bytes + self.voxels * WORKING_BYTES_PER_VOXEL


def check_header(header: VolumeHeader, budget_bytes: int | None = None) -> None:
    """Refuse what cannot be a 3D CT, or would not fit in memory, from the header alone."""
    name, size = header.name, header.size
    if len(size) != 3 or min(size) < 2:
        if len(size) == 4 and size[3] == 1:
            pass  # a 4D NIfTI with one time point: read as 3D
        else:
            dims = sum(1 for s in size if s > 1)
            raise InvalidVolumeError(
                f"'{name}' is a {dims}D image (size {'x'.join(map(str, size))}): "
                "MaleniaSegment needs one 3D CT volume (several axial slices). Load the whole "
                "series, not a single slice or a time series."
            )
    if header.components != 1:
        raise InvalidVolumeError(
            f"'{name}' has {header.components} components per voxel (colour or vector image); "
            "choose the original greyscale CT series."
        )
    budget = default_memory_budget() if budget_bytes is None else budget_bytes
    shape = " x ".join(map(str, size[:3]))
    if header.voxels > MAX_VOXELS or header.needed_bytes > budget:
        raise InvalidVolumeError(
            f"'{name}' declares {shape} voxels of {header.dtype} ({_gb(header.stored_bytes)} as "
            f"stored, about {_gb(header.needed_bytes)} to segment), more than "
            + (
                f"any CT series ({MAX_VOXELS / 1e9:.2f} billion voxels allowed)"
                if header.voxels > MAX_VOXELS
                else f"the memory budget of {_gb(budget)}"
            )
            + ". Crop it to a region of interest or downsample it first, or raise the budget "
            f"(malenia segment --max-memory-gb, malenia serve --max-volume-mb, or "
            f"${MEMORY_BUDGET_ENV}) if this machine really has the memory."
        )
    spacing = header.spacing[:3]
    low, high = SPACING_RANGE_MM
    if not all(math.isfinite(s) and low <= s <= high for s in spacing):
        raise InvalidVolumeError(
            f"'{name}' declares voxel spacing {tuple(round(s, 4) for s in spacing)} mm; a CT has "
            f"{low}..{high} mm per voxel. The header's spacing (or units) is broken: re-export "
            "the scan."
        )
    if len(header.direction) == 9:
        matrix = np.reshape(header.direction, (3, 3))
        if not np.isfinite(matrix).all() or not np.allclose(
            matrix @ matrix.T, np.eye(3), atol=1e-3
        ):
            raise InvalidVolumeError(
                f"'{name}' has a direction matrix that is not a rotation (sheared, scaled or "
                "NaN axes): re-export the scan, or resample it onto a regular grid first."
            )


def _gb(nbytes: float) -> str:
    return f"{nbytes / (1 << 30):.1f} GB" if nbytes >= 1 << 28 else f"{nbytes / (1 << 20):.0f} MB"


# ------------------------------------------------------------------ files


def read_file_header(path: Path) -> VolumeHeader:
    """The header of an image file, read by ITK without touching its voxel data."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InvalidVolumeError(
            f"Cannot read {path.name} as an image ({_last_line(error)}). Is it a CT in NIfTI, "
            "NRRD, MHA or DICOM format?"
        ) from None
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    dtype = _sitk_dtype(pixel)
    return VolumeHeader(
        path.name,
        tuple(int(s) for s in reader.GetSize()),
        dtype,
        int(reader.GetNumberOfComponents()),
        tuple(float(s) for s in reader.GetSpacing()),
        tuple(float(d) for d in reader.GetDirection()) if reader.GetDimension() == 3 else (),
    )


def _sitk_dtype(pixel: str) -> str:
    words = pixel.replace("vector of ", "").split()
    kind = " ".join(words[:3]) if words[0] == "64-bit" and len(words) > 2 else " ".join(words)
    return {
        "8-bit unsigned integer": "uint8",
        "8-bit signed integer": "int8",
        "16-bit unsigned integer": "uint16",
        "16-bit signed integer": "int16",
        "32-bit unsigned integer": "uint32",
        "32-bit signed integer": "int32",
        "64-bit unsigned integer": "uint64",
        "64-bit signed integer": "int64",
        "32-bit float": "float32",
        "64-bit float": "float64",
    }.get(kind, "float64")


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def check_nifti_data(path: Path) -> None:
    """NIfTI only: ITK reads a truncated NIfTI with the missing part as zeros, and turns NaN
    voxels into 0, so both are checked on the file's own bytes: the data must be complete
    (a .nii.gz must also decompress cleanly), and float data must be finite."""
    compressed = path.name.lower().endswith(".gz")
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as handle:
            head = handle.read(540)
            layout = _nifti_layout(head)
            if layout is None:
                return  # not NIfTI after all (ITK accepted it; its own reader checks)
            dtype, data_bytes, offset = layout
            if not compressed and dtype.kind != "f":  # nothing to scan: the size says it
                got, bad = min(data_bytes, max(0, path.stat().st_size - offset)), 0
            else:
                prefix = head[offset:]  # a .nii.gz cannot seek back: keep what was read
                if compressed:
                    handle.read(max(0, offset - len(head)))
                else:
                    handle.seek(offset)
                    prefix = b""
                got, bad = _stream(handle, dtype, data_bytes, prefix)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as error:
        raise InvalidVolumeError(
            f"{path.name} is a damaged or truncated compressed file ({_last_line(error)}). Copy "
            "or export the file again; nothing was segmented."
        ) from None
    if got < data_bytes:
        raise InvalidVolumeError(
            f"{path.name} is truncated: its header declares {data_bytes} bytes of voxel data but "
            f"the file holds only {got} ({got / max(data_bytes, 1):.0%}). Copy or export the "
            "file again; nothing was segmented."
        )
    if bad:
        raise InvalidVolumeError(non_finite_message(path.name, bad, data_bytes // dtype.itemsize))


def non_finite_message(name: str, bad: int, total: int) -> str:
    """NaN / infinity policy: refuse, saying how much and what to do (a guessed value in the
    middle of an organ would be segmented as tissue or as a lesion)."""
    share = "all" if bad >= total else f"{bad} of {total} ({bad / max(total, 1):.2%})"
    return (
        f"'{name}': {share} voxels are NaN or infinite (missing data, not Hounsfield "
        "units). MaleniaSegment does not guess them: fill them in the source (e.g. with -1000 "
        "HU, air, in Slicer's Simple Filters or numpy) or re-export the scan."
    )


def _nifti_layout(head: bytes) -> tuple[np.dtype, int, int] | None:
    """(dtype, voxel data bytes, data offset) from a NIfTI-1 or NIfTI-2 header."""
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4]) if len(head) >= 4 else (0,)
        if size == 348 and len(head) >= 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            code, bits = struct.unpack(endian + "hh", head[70:74])
            (offset,) = struct.unpack(endian + "f", head[108:112])
            break
        if size == 540 and len(head) >= 540:
            code, bits = struct.unpack(endian + "hh", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (offset,) = struct.unpack(endian + "q", head[168:176])
            break
    else:
        (value,) = struct.unpack("<i", head[:4]) if len(head) >= 4 else (len(head),)
        raise InvalidVolumeError(
            f"The file does not start with a NIfTI header (sizeof_hdr = {value}; a NIfTI has 348 "
            "or 540): it is damaged, or not NIfTI despite its name. Export it again."
        )
    if code not in _NIFTI_DTYPES or not 1 <= dims[0] <= 7:
        return None
    if not math.isfinite(offset) or offset < 0 or offset > 1 << 40:
        raise InvalidVolumeError(
            f"The NIfTI header's data offset (vox_offset = {offset}) is not a usable number: "
            "the header is damaged. Export the file again."
        )
    dtype = np.dtype(_NIFTI_DTYPES[code]).newbyteorder(endian)
    count = math.prod(max(1, int(d)) for d in dims[1 : dims[0] + 1])
    return dtype, count * dtype.itemsize, max(int(offset), 352 if size == 348 else 544)


def _stream(handle, dtype: np.dtype, data_bytes: int, prefix: bytes = b"") -> tuple[int, int]:
    """(bytes read up to ``data_bytes``, non-finite values among them), chunk by chunk;
    ``prefix``: data bytes already read with the header."""
    got = bad = 0
    carry = b""
    floating = dtype.kind == "f"
    while got < data_bytes:
        chunk = prefix[: data_bytes - got] or handle.read(min(CHUNK_BYTES, data_bytes - got))
        prefix = b""
        if not chunk:
            break
        got += len(chunk)
        if floating:
            chunk = carry + chunk
            usable = len(chunk) - len(chunk) % dtype.itemsize
            values = np.frombuffer(chunk[:usable], dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = chunk[usable:]
    if got >= data_bytes and isinstance(handle, gzip.GzipFile):
        while handle.read(CHUNK_BYTES):  # reach the end: a damaged trailer (CRC) is reported
            pass
    return got, bad


# ------------------------------------------------------------------ DICOM


@dataclass
class DicomSeries:
    """One checked DICOM series: its files in slice order and what identifies it."""

    folder: Path
    series_uid: str
    study_uid: str
    files: list[Path]
    header: VolumeHeader
    description: str = ""
    # Each slice's DICOM header (no pixel data), in slice order: what a DICOM SEG references.
    headers: list = field(default_factory=list, repr=False)


def list_series(folder: Path) -> dict[str, list[str]]:
    """Series UID -> file names, as GDCM groups the folder."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "no series found" is ours to say
    try:
        return {
            uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid))
            for uid in reader.GetGDCMSeriesIDs(str(folder))
        }
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def inspect_dicom_folder(
    folder: Path, series_uid: str | None = None, budget_bytes: int | None = None
) -> DicomSeries:
    """Pick the series (the only one, or ``series_uid``) and check that its slices form one
    regular volume: same orientation, no gantry tilt, no missing, duplicate or irregularly
    spaced slices, no truncated slice file; then check the declared size against the budget."""
    import pydicom

    series = list_series(folder)
    if not series:
        raise InvalidVolumeError(
            f"No DICOM series found in folder {folder}. Point at the folder that holds the "
            "CT's .dcm files."
        )
    if series_uid is None and len(series) > 1:
        raise InvalidVolumeError(
            f"{folder} holds {len(series)} DICOM series; choose one with --series UID:\n"
            + "\n".join(_series_line(uid, files) for uid, files in series.items())
        )
    if series_uid is not None and series_uid not in series:
        raise InvalidVolumeError(
            f"Series {series_uid} is not in {folder}; the folder holds:\n"
            + "\n".join(_series_line(uid, files) for uid, files in series.items())
        )
    uid = series_uid or next(iter(series))
    _check_left_out(folder, series, uid)
    slices = []
    for name in series[uid]:
        path = Path(name)
        try:
            dataset = pydicom.dcmread(path, defer_size=1 << 16)
        except Exception as error:  # pydicom raises many kinds on a damaged file
            raise InvalidVolumeError(
                f"DICOM file {path.name} cannot be read ({_last_line(error)}); the series is "
                "damaged. Export it again."
            ) from None
        _check_pixel_data(path, dataset)
        slices.append((path, dataset))
    first = slices[0][1]
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise InvalidVolumeError(
            f"{slices[0][0].name} is a multi-frame (enhanced) DICOM object; convert it to a "
            "classic one-slice-per-file series (or load it in Slicer and save it as NRRD) first."
        )
    positions, normal = _slice_positions(slices)
    order = np.argsort(positions)
    slices = [slices[i] for i in order]
    positions = positions[order]
    _check_spacing(slices, positions)
    _check_tilt(slices, normal)
    rows, columns = int(first.Rows), int(first.Columns)
    bits = int(getattr(first, "BitsAllocated", 16) or 16)
    spacing_rc = [float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0])]
    dz = float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0
    row, column = (
        np.array(first.ImageOrientationPatient[:3], float),
        np.array(first.ImageOrientationPatient[3:], float),
    )
    header = VolumeHeader(
        f"{folder.name} (series {uid})",
        (columns, rows, len(slices)),
        {8: "int8", 16: "int16", 32: "int32"}.get(bits, "int16"),
        int(getattr(first, "SamplesPerPixel", 1) or 1),
        (spacing_rc[1], spacing_rc[0], dz),
        tuple(np.column_stack([row, column, normal]).ravel()),
    )
    check_header(header, budget_bytes)
    headers = []
    for _, dataset in slices:
        del dataset.PixelData  # keep the header only (a few kB per slice)
        headers.append(dataset)
    return DicomSeries(
        folder,
        uid,
        str(getattr(first, "StudyInstanceUID", "")),
        [path for path, _ in slices],
        header,
        str(getattr(first, "SeriesDescription", "")),
        headers,
    )


def _check_left_out(folder: Path, series: dict[str, list[str]], uid: str) -> None:
    """GDCM leaves out a slice file it cannot parse (one cut short by an interrupted copy):
    such a file of this series is an error naming the file, not a silent gap."""
    import pydicom

    listed = {str(Path(f).resolve()) for files in series.values() for f in files}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or str(path.resolve()) in listed:
            continue
        try:
            dataset = pydicom.dcmread(path, defer_size=1 << 16)
        except Exception as error:
            if path.suffix.lower() == ".dcm":
                raise InvalidVolumeError(
                    f"DICOM file {path.name} in {folder.name} cannot be read "
                    f"({_last_line(error)}): a damaged or truncated slice. Copy or export the "
                    "series again; nothing was segmented."
                ) from None
            continue  # not DICOM (a README, a thumbnail): not ours to judge
        if str(getattr(dataset, "SeriesInstanceUID", "")) == uid:
            _check_pixel_data(path, dataset)
            raise InvalidVolumeError(
                f"DICOM slice {path.name} belongs to series {uid} but could not be read with "
                "it (damaged header?). Copy or export the series again."
            )


def _series_line(uid: str, files: list[str]) -> str:
    import pydicom

    try:
        dataset = pydicom.dcmread(files[0], stop_before_pixels=True)
        what = f"{getattr(dataset, 'Modality', '?')} {getattr(dataset, 'SeriesDescription', '')}"
    except Exception:
        what = "unreadable first file"
    return f"  --series {uid}   {len(files)} file(s), {what.strip()}"


def _check_pixel_data(path: Path, dataset) -> None:
    """A slice file cut short (copy interrupted) still has its header: compare the pixel
    data it declares with what is in the file."""
    if "PixelData" not in dataset:
        raise InvalidVolumeError(
            f"DICOM file {path.name} has no pixel data (a report or a truncated file); remove it "
            "or export the series again."
        )
    element = dataset.get_item("PixelData")
    length = getattr(element, "length", None)
    tell = getattr(element, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        return  # encapsulated (compressed) pixel data: its decoder checks it
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    expected = (
        rows
        * columns
        * int(getattr(dataset, "SamplesPerPixel", 1) or 1)
        * int(getattr(dataset, "BitsAllocated", 16) or 16)
        // 8
    )
    have = path.stat().st_size - tell
    if length < expected or have < length:
        raise InvalidVolumeError(
            f"DICOM slice {path.name} is truncated: it holds {max(0, min(have, length))} of the "
            f"{expected} bytes of pixel data a {rows}x{columns} slice needs. Copy or export the "
            "series again; nothing was segmented."
        )


def _slice_positions(slices) -> tuple[np.ndarray, np.ndarray]:
    """Slice positions along the slice normal, after checking every slice has the same
    orientation (a folder mixing scouts, reformats or two orientations is refused)."""
    orientations = []
    for path, dataset in slices:
        try:
            orientations.append(np.array(dataset.ImageOrientationPatient, float))
            np.array(dataset.ImagePositionPatient, float)
        except (AttributeError, ValueError, TypeError):
            raise InvalidVolumeError(
                f"DICOM slice {path.name} has no ImagePositionPatient / ImageOrientationPatient: "
                "it cannot be placed in a volume. Export the CT series again."
            ) from None
    reference = orientations[0]
    differing = [
        slices[i][0].name for i, o in enumerate(orientations) if not np.allclose(o, reference, 1e-3)
    ]
    if differing:
        raise InvalidVolumeError(
            f"The series mixes slice orientations ({len(differing)} of {len(slices)} slices, e.g. "
            f"{differing[0]}, differ from {slices[0][0].name}): a localiser or a reformatted "
            "series is mixed in. Remove those files or pick one series with --series."
        )
    normal = np.cross(reference[:3], reference[3:])
    positions = np.array(
        [np.dot(np.array(d.ImagePositionPatient, float), normal) for _, d in slices]
    )
    return positions, normal


def _check_spacing(slices, positions: np.ndarray) -> None:
    if len(slices) < 2:
        return
    steps = np.diff(positions)
    duplicate = np.flatnonzero(steps < 1e-3)
    if duplicate.size:
        i = int(duplicate[0])
        raise InvalidVolumeError(
            f"DICOM slices {slices[i][0].name} and {slices[i + 1][0].name} lie at the same "
            f"position ({positions[i]:.2f} mm): the folder holds two acquisitions of one series. "
            "Keep one of them, or pick the series with --series."
        )
    step = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * step)
    if gaps.size:
        i = int(gaps[0])
        missing = int(round(steps[i] / step)) - 1
        raise InvalidVolumeError(
            f"The DICOM series has a gap: {steps[i]:.2f} mm between slices {slices[i][0].name} "
            f"({positions[i]:.2f} mm) and {slices[i + 1][0].name} ({positions[i + 1]:.2f} mm) "
            f"where slices are {step:.2f} mm apart, so about {max(missing, 1)} slice(s) are "
            "missing. Copy or export the complete series."
        )
    if float(steps.max() - steps.min()) > 0.1 * step:
        i = int(np.argmax(np.abs(steps - step)))
        raise InvalidVolumeError(
            f"The DICOM series has non-uniform slice spacing ({steps.min():.2f} to "
            f"{steps.max():.2f} mm, e.g. {steps[i]:.2f} mm after {slices[i][0].name}). Resample "
            "it to uniform spacing first (Slicer: Resample Scalar Volume) and save it as NRRD."
        )


def _check_tilt(slices, normal: np.ndarray) -> None:
    """Gantry tilt: slices stacked along a direction that is not their normal."""
    if len(slices) < 2:
        return
    first = np.array(slices[0][1].ImagePositionPatient, float)
    last = np.array(slices[-1][1].ImagePositionPatient, float)
    stack = (last - first) / max(float(np.linalg.norm(last - first)), 1e-9)
    angle = math.degrees(math.acos(min(1.0, abs(float(np.dot(stack, normal))))))
    if angle > 0.5:
        raise InvalidVolumeError(
            f"The DICOM series was acquired with a gantry tilt of {angle:.1f} degrees: its slices "
            "are sheared, and reading them as a regular volume would misplace every lesion. Load "
            "it in Slicer with acquisition geometry regularization (Application settings > DICOM "
            "> Scalar volume), harden the transform, save as NRRD and segment that."
        )


# ------------------------------------------------------------------ one entry


def check_source(
    path: str | Path, series_uid: str | None = None, budget_bytes: int | None = None
) -> VolumeHeader | DicomSeries:
    """Everything about an input that can be known before reading its voxels: it exists and
    is readable, its header is a plausible 3D CT within the memory budget, a NIfTI's data is
    complete and finite, a DICOM folder is one complete regular series."""
    path = Path(path)
    if not path.exists():
        raise InvalidVolumeError(
            f"{path} does not exist. Give the path of a CT file or DICOM folder."
        )
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InvalidVolumeError(f"{path} is not readable by this user; check its permissions.")
    if path.is_dir():
        return inspect_dicom_folder(path, series_uid, budget_bytes)
    if series_uid is not None:
        raise InvalidVolumeError(
            f"--series selects a series in a DICOM folder, but {path.name} is a file."
        )
    if path.stat().st_size == 0:
        raise InvalidVolumeError(f"{path.name} is empty (0 bytes); copy or export it again.")
    header = read_file_header(path)
    check_header(header, budget_bytes)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        check_nifti_data(path)
    return header
