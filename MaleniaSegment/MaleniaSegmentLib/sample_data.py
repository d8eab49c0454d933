"""The bundled sample CT and its checksum (registered with Slicer's Sample Data module)."""

from __future__ import annotations

import hashlib
from pathlib import Path

# SHA-256 of Resources/SampleData/sample_ct.nii.gz; a test checks it against the file.
SAMPLE_CT_SHA256 = "102126e81e34a7e15991fe9399c063d748910988000b666cc10044b2ffef1b29"


def sample_ct_path() -> Path:
    from malenia.paths import resource

    return resource("SampleData", "sample_ct.nii.gz")


def verify_sample_ct() -> bool:
    return hashlib.sha256(sample_ct_path().read_bytes()).hexdigest() == SAMPLE_CT_SHA256
