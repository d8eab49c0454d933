"""Lesion presets: one typical description per lesion category.

The 7 annotated categories get the most frequent value of each attribute in the real
records; the preset-only categories below are written from the cited literature. Both are
materialised in Resources/Attributes/presets.json by scripts/build_attribute_resources.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from malenia.attributes.schema import LesionDescription
from malenia.errors import UnknownAttributeValueError

SEEN_CATEGORIES: tuple[str, ...] = (
    "renal cell carcinoma",
    "liver cancer",
    "pancreatic cyst",
    "lung cancer",
)

# Preset-only categories (never in the annotations, never in training): typical CT look.
PRESET_ONLY: dict[str, dict] = {
    "hepatic cyst": {
        "attributes": {
            "location": "right liver lobe",
            "shape": "round-like",
            "density": "hypodense",
            "density_variation": "homogeneous",
            "surface": "well-defined margin",
            "enhancement": "contrast-enhanced CT",
            "relation": "not closely related to surrounding organs",
        },
        "size_mm": [5, 60],
        "source": "Mortelé KJ, Ros PR. Cystic focal liver lesions in the adult. RadioGraphics 2001;21:895-910 (water attenuation, no enhancement, sharp margins).",
    },
    "hepatic hemangioma": {
        "attributes": {
            "location": "right liver lobe",
            "shape": "round-like",
            "density": "hypodense",
            "density_variation": "heterogeneous",
            "surface": "well-defined margin",
            "enhancement": "contrast-enhanced CT",
            "relation": "not closely related to surrounding organs",
        },
        "size_mm": [10, 80],
        "source": "Vilgrain V et al. Imaging of atypical hemangiomas of the liver. RadioGraphics 2000;20:379-397 (peripheral nodular discontinuous enhancement, well circumscribed).",
    },
    "liver metastasis": {
        "attributes": {
            "location": "right liver lobe",
            "shape": "round-like",
            "density": "hypodense",
            "density_variation": "heterogeneous",
            "surface": "ill-defined margin",
            "enhancement": "contrast-enhanced CT",
            "relation": "not closely related to surrounding organs",
            "specific_features": ["necrosis"],
        },
        "size_mm": [8, 50],
        "source": "Sica GT, Ji H, Ros PR. CT and MR imaging of hepatic metastases. AJR 2000;174:691-698 (hypoattenuating in portal venous phase, often multiple, rim enhancement).",
    },
    "adrenal adenoma": {
        "attributes": {
            "location": "left adrenal gland",
            "shape": "round-like",
            "density": "hypodense",
            "density_variation": "homogeneous",
            "surface": "well-defined margin",
            "enhancement": "non-contrast CT",
            "relation": "not closely related to surrounding organs",
        },
        "size_mm": [10, 40],
        "source": "Boland GW et al. Characterization of adrenal masses using unenhanced CT. AJR 1998;171:201-204 (homogeneous, <10 HU unenhanced, smooth margins).",
    },
    "renal angiomyolipoma": {
        "attributes": {
            "location": "right kidney",
            "shape": "round-like",
            "density": "hypodense",
            "density_variation": "heterogeneous",
            "surface": "well-defined margin",
            "enhancement": "contrast-enhanced CT",
            "relation": "not closely related to surrounding organs",
            "specific_features": ["fat"],
        },
        "size_mm": [10, 80],
        "source": "Jinzaki M et al. Renal angiomyolipoma: a radiological classification and update. Abdom Imaging 2014;39:588-604 (macroscopic fat below -10 HU).",
    },
    "splenic cyst": {
        "attributes": {
            "location": "spleen",
            "shape": "round-like",
            "density": "hypodense",
            "density_variation": "homogeneous",
            "surface": "well-defined margin",
            "enhancement": "contrast-enhanced CT",
            "relation": "not closely related to surrounding organs",
        },
        "size_mm": [10, 80],
        "source": "Urrutia M et al. Cystic masses of the spleen: radiologic-pathologic correlation. RadioGraphics 1996;16:107-129 (unilocular water-attenuation lesion, imperceptible wall).",
    },
}


PRESET_ONLY_PSEUDO_COUNT = 10  # weight of a literature preset in the knowledge table


def preset_only_pseudo_counts() -> dict[str, dict]:
    """Preset-only categories as knowledge-table entries: N pseudo-cases of their preset."""
    extra = {}
    for category, entry in PRESET_ONLY.items():
        counts = {}
        for key, value in entry["attributes"].items():
            items = value if isinstance(value, list) else [value]
            counts[key] = dict.fromkeys(items, PRESET_ONLY_PSEUDO_COUNT)
        extra[category] = {
            "prior": PRESET_ONLY_PSEUDO_COUNT,
            "counts": counts,
            "source": entry["source"],
        }
    return extra


@dataclass(frozen=True)
class Preset:
    """A named, typical description of one lesion category."""

    name: str  # display name, e.g. "Renal cyst"
    category: str  # canonical category name, e.g. "renal cyst"
    description: LesionDescription
    source: str
    seen_in_training: bool
    size_mm: tuple[float, float]

    @property
    def query_description(self) -> LesionDescription:
        """What picking the preset searches for: the typical description with its location
        widened to the whole organ. The stored location is the most frequent sub-region of
        the annotations (lung cancer: right upper lobe), a statistic, not a place to look: a
        radiologist who picks "Lung cancer" wants the tumour in whichever lobe it lies."""
        from malenia.attributes.locations import organ_level_of

        location = self.description.location
        return replace(self.description, location=organ_level_of(location) if location else None)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "category": self.category,
            "attributes": self.description.to_dict(),
            "query_attributes": self.query_description.to_dict(),
            "source": self.source,
            "seen_in_training": self.seen_in_training,
            "size_mm": list(self.size_mm),
        }


@lru_cache(maxsize=2)
def _load(path: str | None) -> dict[str, Preset]:
    from malenia.paths import resource

    file = Path(path) if path else resource("Attributes", "presets.json")
    data = json.loads(file.read_text(encoding="utf-8"))
    presets = {}
    for item in data["presets"]:
        presets[item["category"]] = Preset(
            name=item["name"],
            category=item["category"],
            description=LesionDescription.from_dict(item["attributes"]),
            source=item["source"],
            seen_in_training=item["seen_in_training"],
            size_mm=tuple(item["size_mm"]),
        )
    return presets


def load_presets(path: str | Path | None = None) -> dict[str, Preset]:
    """All presets keyed by canonical category name."""
    return dict(_load(str(path) if path else None))


def get_preset(name: str) -> Preset:
    """Look a preset up by category or display name, case-insensitively."""
    presets = load_presets()
    wanted = name.strip().lower()
    for preset in presets.values():
        if wanted in (preset.category, preset.name.lower()):
            return preset
    raise UnknownAttributeValueError(
        f"Unknown preset '{name}'. Available presets: "
        + "; ".join(p.name for p in presets.values())
    )
