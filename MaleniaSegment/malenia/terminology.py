"""Our terminology context for lesion segments, and the category -> code/colour tables.

Plain Python (no VTK), so the engine's DICOM SEG writer and the Slicer module use the same
codes; ``MaleniaSegmentLib.terminology`` adds the Slicer terminology-logic calls.

A segment's terminology entry tells Slicer (and DICOM SEG export) *what* it is: a
morphologically altered structure of some kind (cyst, carcinoma, ...) in an anatomic region,
optionally with a Left/Right modifier. The codes live in Resources/Terminology (see its
README for where they come from); this module only maps our vocabulary onto them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from malenia.errors import MaleniaError

TERMINOLOGY_FILE = "MaleniaSegment.term.json"
REGION_CONTEXT_FILE = "MaleniaSegment-AnatomicRegions.json"


class TerminologyError(MaleniaError, ValueError):
    """A lesion kind, region or laterality is not in our terminology context."""


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
    "splenic cyst": "cyst",
}

# For categories the knowledge base adds later: the first word that matches decides the kind.
_KIND_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("metasta", "metastasis"),
    ("carcinoma", "carcinoma"),
    ("cancer", "carcinoma"),
    ("cyst", "cyst"),
    ("nodule", "nodule"),
    ("mass", "mass"),
    ("adenoma", "neoplasm"),
    ("tumor", "neoplasm"),
    ("tumour", "neoplasm"),
    ("neoplasm", "neoplasm"),
)

# Organ word in a category name -> region (CodeMeaning in our anatomic context).
_CATEGORY_ORGAN: tuple[tuple[str, str], ...] = (
    ("renal", "Kidney"),
    ("kidney", "Kidney"),
    ("hepatic", "Liver"),
    ("liver", "Liver"),
    ("pancrea", "Pancreas"),
    ("colon", "Colon"),
    ("colorectal", "Colon"),
    ("rectal", "Rectum"),
    ("lung", "Lung"),
    ("pulmonary", "Lung"),
    ("adrenal", "Adrenal gland"),
    ("splenic", "Spleen"),
    ("spleen", "Spleen"),
    ("gallbladder", "Gallbladder"),
    ("gastric", "Stomach"),
    ("bladder", "Bladder"),
)

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
    # Slicer's own anatomy codes lung lobes as the generic lobe plus a laterality modifier.
    "right upper lobe": ("Upper lobe of lung", "Right"),
    "right middle lobe": ("Middle lobe of right lung", None),
    "right lower lobe": ("Lower lobe of lung", "Right"),
    "left upper lobe": ("Upper lobe of lung", "Left"),
    "left lower lobe": ("Lower lobe of lung", "Left"),
    "spleen": ("Spleen", None),
    "gallbladder": ("Gallbladder", None),
    "left adrenal gland": ("Adrenal gland", "Left"),
    "right adrenal gland": ("Adrenal gland", "Right"),
    "stomach": ("Stomach", None),
    "urinary bladder": ("Bladder", None),
    # Organ-level locations (malenia.attributes.locations): the whole organ, or its side.
    "liver": ("Liver", None),
    "kidney": ("Kidney", None),
    "lung": ("Lung", None),
    "left lung": ("Lung", "Left"),
    "right lung": ("Lung", "Right"),
    "pancreas": ("Pancreas", None),
    "colon": ("Colon", None),
    "adrenal gland": ("Adrenal gland", None),
}


def terminology_dir() -> Path:
    """Resources/Terminology of this checkout or installed extension."""
    from malenia.paths import resource

    return resource("Terminology")


# --- colours ---------------------------------------------------------------------------------


def category_color(category: str | None) -> tuple[float, float, float]:
    """Segment colour (0-1 floats, as vtkSegment.SetColor wants) for a lesion category."""
    from malenia.display import lesion_color

    return tuple(channel / 255.0 for channel in lesion_color(category))  # type: ignore[return-value]


def category_colors() -> dict[str, tuple[float, float, float]]:
    """The whole category -> colour table (0-1 floats), e.g. for a legend."""
    from malenia.display import CATEGORY_COLORS

    return {category: category_color(category) for category in CATEGORY_COLORS}


# --- codes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    value: str
    scheme: str
    meaning: str

    @classmethod
    def from_json(cls, entry: dict) -> Code:
        return cls(entry["CodeValue"], entry["CodingSchemeDesignator"], entry["CodeMeaning"])


_EMPTY = Code("", "", "")


@dataclass(frozen=True)
class Codes:
    """What our two context files contain, read once per folder."""

    terminology_name: str
    region_context_name: str
    category: Code
    kinds: dict[str, Code]  # 3dSlicerLabel -> type code
    regions: dict[str, Code]  # CodeMeaning -> region code
    modifiers: dict[str, dict[str, Code]]  # region CodeMeaning -> {"Left": code, ...}


@functools.lru_cache(maxsize=4)
def read_codes(folder: Path | None = None) -> Codes:
    """Parse our terminology and anatomic context files (cached)."""
    folder = Path(folder or terminology_dir())
    try:
        term = json.loads((folder / TERMINOLOGY_FILE).read_text(encoding="utf-8"))
        anatomic = json.loads((folder / REGION_CONTEXT_FILE).read_text(encoding="utf-8"))
        category = term["SegmentationCodes"]["Category"][0]
        regions = anatomic["AnatomicCodes"]["AnatomicRegion"]
        return Codes(
            terminology_name=term["SegmentationCategoryTypeContextName"],
            region_context_name=anatomic["AnatomicContextName"],
            category=Code.from_json(category),
            kinds={t["3dSlicerLabel"]: Code.from_json(t) for t in category["Type"]},
            regions={r["CodeMeaning"]: Code.from_json(r) for r in regions},
            modifiers={
                r["CodeMeaning"]: {m["CodeMeaning"]: Code.from_json(m) for m in r["Modifier"]}
                for r in regions
                if r.get("Modifier")
            },
        )
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise TerminologyError(
            f"The MaleniaSegment terminology files in {folder} are missing or damaged ({error}). "
            "Reinstall the extension or restore Resources/Terminology from the repository."
        ) from error


# --- vocabulary -> codes ---------------------------------------------------------------------


def category_kind(category: str | None) -> str:
    """Lesion kind (a 3dSlicerLabel of our context) of a category; "lesion" when unknown."""
    name = (category or "").strip().lower()
    if name in CATEGORY_KIND:
        return CATEGORY_KIND[name]
    for word, kind in _KIND_KEYWORDS:
        if word in name:
            return kind
    return "lesion"


def category_region(category: str | None) -> str | None:
    """Organ region named by a category ("renal cyst" -> "Kidney"), or None."""
    name = (category or "").strip().lower()
    for word, region in _CATEGORY_ORGAN:
        if word in name:
            return region
    return None


def location_region(location: str | None) -> tuple[str, str | None] | None:
    """(region, laterality) of a canonical location, or None when it is not one."""
    return LOCATION_REGION.get((location or "").strip().lower())
