"""Write a CT volume as a classic DICOM CT series (one file per slice) with pydicom, and
break it the ways real exports break: a missing or truncated slice, two acquisitions in one
folder, uneven spacing, gantry tilt, a localiser with another orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_series(
    volume,
    folder: Path,
    series_uid: str | None = None,
    study_uid: str | None = None,
    positions: list[np.ndarray] | None = None,
    description: str = "sample CT",
    orientation: tuple[float, ...] | None = None,
    prefix: str = "slice",
) -> str:
    """Write ``volume`` (a malenia.io.CTVolume, int16 HU) into ``folder`` as slice0000.dcm...;
    ``positions`` overrides each slice's ImagePositionPatient (LPS mm). Returns the series UID."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or "1.2.826.0.1.3680043.8.498.1"
    frame_uid = generate_uid()
    direction = np.reshape(volume.direction, (3, 3))
    spacing = np.asarray(volume.spacing, float)
    row, column = direction[:, 0], direction[:, 1]
    iop = orientation or tuple(float(v) for v in (*row, *column))
    array = np.asarray(volume.array)
    for k in range(array.shape[0]):
        position = (
            positions[k]
            if positions is not None
            else np.asarray(volume.origin, float) + direction[:, 2] * spacing[2] * k
        )
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(
            str(folder / f"{prefix}{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128
        )
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "CT", description, 3
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Test^Sample",
            "S1",
            "",
            "O",
        )
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.PixelSpacing = [f"{spacing[1]:.5f}", f"{spacing[0]:.5f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = np.ascontiguousarray(array[k], dtype="<i2").tobytes()
        ds.save_as(folder / f"{prefix}{k:04d}.dcm", enforce_file_format=True)
    return series_uid


def series_files(folder: Path, prefix: str = "slice") -> list[Path]:
    return sorted(folder.glob(f"{prefix}*.dcm"))


def read_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
