"""Our terminology context for lesion segments, and the category -> entry/colour tables.

A segment's terminology entry tells Slicer (and DICOM SEG export) *what* it is: a
morphologically altered structure of some kind (cyst, carcinoma, ...) in an anatomic region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TERMINOLOGY_FILE = "MaleniaSegment.term.json"
REGION_CONTEXT_FILE = "MaleniaSegment-AnatomicRegions.json"

# Lesion category -> 3dSlicerLabel of its type in MaleniaSegment.term.json.
CATEGORY_KIND: dict[str, str] = {
    "renal cell carcinoma": "carcinoma",
    "renal cyst": "cyst",
    "liver cancer": "carcinoma",
    "pancreatic cancer": "carcinoma",
    "pancreatic cyst": "cyst",
    "colon cancer": "carcinoma",
    "lung cancer": "carcinoma",
    "hepatic cyst": "cyst",
    "hepatic hemangioma": "neoplasm",
    "liver metastasis": "metastasis",
    "adrenal adenoma": "neoplasm",
    "renal angiomyolipoma": "neoplasm",
}

# Canonical location -> (CodeMeaning of the region in our anatomic context, laterality or None).
LOCATION_REGION: dict[str, tuple[str, str | None]] = {
    "left kidney": ("Kidney", "Left"),
    "right kidney": ("Kidney", "Right"),
    "left liver lobe": ("Left lobe of liver", None),
    "right liver lobe": ("Right lobe of liver", None),
    "pancreatic head": ("Head of pancreas", None),
    "pancreatic body": ("Body of pancreas", None),
    "pancreatic tail": ("Tail of pancreas", None),
    "ascending colon": ("Ascending colon", None),
    "transverse colon": ("Transverse colon", None),
    "descending colon": ("Descending colon", None),
    "sigmoid colon": ("Sigmoid colon", None),
    "rectum": ("Rectum", None),
    "right upper lobe": ("Upper lobe of right lung", None),
    "right middle lobe": ("Middle lobe of right lung", None),
    "right lower lobe": ("Lower lobe of right lung", None),
    "left upper lobe": ("Upper lobe of left lung", None),
    "left lower lobe": ("Lower lobe of left lung", None),
    "spleen": ("Spleen", None),
    "gallbladder": ("Gallbladder", None),
    "left adrenal gland": ("Adrenal gland", "Left"),
    "right adrenal gland": ("Adrenal gland", "Right"),
    "stomach": ("Stomach", None),
    "urinary bladder": ("Urinary bladder", None),
}


def terminology_dir() -> Path:
    """Resources/Terminology of this checkout or installed extension."""
    from malenia.paths import resource

    return resource("Terminology")


def category_color(category: str | None) -> tuple[float, float, float]:
    """Segment colour (0-1 floats, as vtkSegment.SetColor wants) for a lesion category."""
    from malenia.display import lesion_color

    return tuple(channel / 255.0 for channel in lesion_color(category))  # type: ignore[return-value]


def load_context(terminologies_logic, folder: Path | None = None) -> tuple[str, str]:
    """Load our terminology and anatomic context into a vtkSlicerTerminologiesModuleLogic.

    Returns (terminology context name, region context name).
    """
    folder = folder or terminology_dir()
    terminology_name = terminologies_logic.LoadTerminologyFromFile(str(folder / TERMINOLOGY_FILE))
    region_name = terminologies_logic.LoadRegionContextFromFile(str(folder / REGION_CONTEXT_FILE))
    if not terminology_name or not region_name:
        raise RuntimeError(f"Could not load the MaleniaSegment terminology from {folder}")
    return terminology_name, region_name


@dataclass(frozen=True)
class _Code:
    value: str
    scheme: str
    meaning: str


def _read_codes(folder: Path) -> tuple[_Code, dict[str, _Code], dict[str, _Code]]:
    term = json.loads((folder / TERMINOLOGY_FILE).read_text())
    category = term["SegmentationCodes"]["Category"][0]
    types = {
        t["3dSlicerLabel"]: _Code(t["CodeValue"], t["CodingSchemeDesignator"], t["CodeMeaning"])
        for t in category["Type"]
    }
    anatomic = json.loads((folder / REGION_CONTEXT_FILE).read_text())
    regions = {
        r["CodeMeaning"]: _Code(r["CodeValue"], r["CodingSchemeDesignator"], r["CodeMeaning"])
        for r in anatomic["AnatomicCodes"]["AnatomicRegion"]
    }
    category_code = _Code(
        category["CodeValue"], category["CodingSchemeDesignator"], category["CodeMeaning"]
    )
    return category_code, types, regions


_LATERALITY = {"Left": _Code("7771000", "SCT", "Left"), "Right": _Code("24028007", "SCT", "Right")}


def terminology_entry(
    terminologies_logic,
    category: str | None,
    location: str | None,
    folder: Path | None = None,
) -> str:
    """Serialized terminology entry for a lesion of ``category`` at canonical ``location``.

    Unknown categories fall back to the generic "lesion" type; unknown locations leave the
    anatomic region empty rather than guessing.
    """
    folder = folder or terminology_dir()
    terminology_name, region_context = load_context(terminologies_logic, folder)
    category_code, types, regions = _read_codes(folder)
    kind = types[CATEGORY_KIND.get((category or "").lower(), "lesion")]
    region = modifier = _Code("", "", "")
    if location and location.lower() in LOCATION_REGION:
        region_meaning, laterality = LOCATION_REGION[location.lower()]
        region = regions[region_meaning]
        if laterality:
            modifier = _LATERALITY[laterality]
    return terminologies_logic.SerializeTerminologyEntry(
        terminology_name,
        category_code.value,
        category_code.scheme,
        category_code.meaning,
        kind.value,
        kind.scheme,
        kind.meaning,
        "",
        "",
        "",
        region_context if region.value else "",
        region.value,
        region.scheme,
        region.meaning,
        modifier.value,
        modifier.scheme,
        modifier.meaning,
    )
