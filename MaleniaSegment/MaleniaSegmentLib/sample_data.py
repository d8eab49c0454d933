"""The bundled sample CT and its checksum (registered with Slicer's Sample Data module)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLE_NAME = "MaleniaSampleCT"
# The module's own Resources/ (icon, .ui) beside MaleniaSegment.py, in a checkout and in an
# installed extension alike; the engine's data is found with malenia.paths.
MODULE_RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
# SHA-256 of Resources/SampleData/sample_ct.nii.gz; a test checks it against the file.
SAMPLE_CT_SHA256 = "ec5e473e0b5685ab4c914495f84f2d71a5330a5017520ec44d1e0570e05f9fa0"


def sample_ct_path() -> Path:
    from malenia.paths import resource

    return resource("SampleData", "sample_ct.nii.gz")


def verify_sample_ct() -> bool:
    return hashlib.sha256(sample_ct_path().read_bytes()).hexdigest() == SAMPLE_CT_SHA256


def sample_source() -> dict:
    """Keyword arguments for SampleDataLogic.registerCustomSampleDataSource: the local file
    as a file:// URI (Sample Data copies it into its cache and checks the SHA-256)."""

    return {
        "category": "MaleniaSegment",
        "sampleName": SAMPLE_NAME,
        "thumbnailFileName": str(MODULE_RESOURCES / "Icons" / "MaleniaSegment.png"),
        "uris": sample_ct_path().resolve().as_uri(),
        "fileNames": "sample_ct.nii.gz",
        "checksums": f"SHA256:{SAMPLE_CT_SHA256}",
        "nodeNames": SAMPLE_NAME,
        "loadFileTypes": "VolumeFile",
    }
