"""The real Malenia attribute records, mapped onto our canonical vocabulary.

The raw annotation export (attributes_en.json, from the Malenia repository, MIT) is read only
by scripts/build_attribute_resources.py and by tests; the product reads the small derived
copy Resources/Attributes/records.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from malenia.attributes.schema import LesionDescription

CATEGORY_NAMES: dict[str, str] = {
    "renal cell carcinoma (kidney cancer)": "renal cell carcinoma",
    "renal cyst": "renal cyst",
    "hepatocellular carcinoma (liver cancer)": "liver cancer",
    "pancreatic cancer": "pancreatic cancer",
    "pancreatic cyst": "pancreatic cyst",
    "colorectal (colon) cancer": "colon cancer",
    "lung cancer": "lung cancer",
}
ANNOTATED_CATEGORIES: tuple[str, ...] = tuple(CATEGORY_NAMES.values())

# Labels of the raw export that are not canonical phrases. Bilateral / mixed codes in the
# raw data ("left kidney + right kidney") keep their first site, as the English workbook does.
_RAW_TO_CANONICAL: dict[str, dict[str, str]] = {
    "density": {
        "hypodense (lower than surrounding normal tissue)": "hypodense",
        "iso (soft-tissue density)": "isodense",
        "mixed (ground-glass + soft tissue)": "mixed ground-glass and solid",
    },
    "surface": {"ill-defined margin (with or without spiculation)": "ill-defined margin"},
    "relation": {
        "closely related to a surrounding organ, boundary unclear": "closely related to surrounding organs"
    },
}
_RAW_KEYS = {
    "location": "location",
    "shape": "shape",
    "density": "density",
    "density_variation": "density_variations",
    "surface": "surface",
    "enhancement": "enhancement",
    "relation": "relation",
}


@dataclass(frozen=True)
class AttributeRecord:
    """One annotated real lesion: its category, coded attributes and report."""

    case_id: str
    category: str
    description: LesionDescription
    report: str
    report_zh: str | None

    def to_dict(self) -> dict:
        return {
            "case_id": self.case_id,
            "category": self.category,
            "attributes": self.description.to_dict(),
            "report": self.report,
            "report_zh": self.report_zh,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AttributeRecord:
        attributes = {k: v for k, v in data["attributes"].items() if v is not None}
        attributes["specific_features"] = tuple(attributes.get("specific_features") or ())
        return cls(
            case_id=data["case_id"],
            category=data["category"],
            description=LesionDescription(**attributes),
            report=data["report"],
            report_zh=data.get("report_zh"),
        )


def _canonical_raw(key: str, raw: str | None) -> str | None:
    if raw is None:
        return None
    raw = _RAW_TO_CANONICAL.get(key, {}).get(raw, raw)
    return raw.split(" + ")[0]


def records_from_annotation_export(path: Path) -> list[AttributeRecord]:
    """Read the raw annotation export (attributes_en.json), skipping template/empty rows."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    records = []
    for row in rows:
        if row.get("is_example") or row.get("is_empty"):
            continue
        values = {key: _canonical_raw(key, row.get(raw)) for key, raw in _RAW_KEYS.items()}
        records.append(
            AttributeRecord(
                case_id=str(row["dataset_file"]).removesuffix(".nii"),
                category=CATEGORY_NAMES[row["category"]],
                description=LesionDescription(**values),
                report=row["report"],
                report_zh=row.get("report_zh"),
            )
        )
    return records


@lru_cache(maxsize=2)
def load_records(path: str | None = None) -> tuple[AttributeRecord, ...]:
    """The bundled derived records (Resources/Attributes/records.json)."""
    from malenia.paths import resource

    file = Path(path) if path else resource("Attributes", "records.json")
    data = json.loads(file.read_text(encoding="utf-8"))
    return tuple(AttributeRecord.from_dict(item) for item in data["records"])
