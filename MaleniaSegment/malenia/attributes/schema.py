"""The eight lesion attributes and a validated lesion description.

The key order is fixed everywhere: embedding rows, JSON keys, UI rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

ATTRIBUTE_KEYS: tuple[str, ...] = (
    "location",
    "shape",
    "density",
    "density_variation",
    "surface",
    "enhancement",
    "relation",
    "specific_features",
)

ATTRIBUTE_LABELS: dict[str, str] = {
    "location": "Location",
    "shape": "Shape",
    "density": "Density",
    "density_variation": "Density variation",
    "surface": "Surface",
    "enhancement": "Enhancement",
    "relation": "Relation to surrounding organs",
    "specific_features": "Specific features",
}


@dataclass(frozen=True)
class LesionDescription:
    """What a lesion looks like, as canonical English phrases (None = not specified)."""

    location: str | None = None
    shape: str | None = None
    density: str | None = None
    density_variation: str | None = None
    surface: str | None = None
    enhancement: str | None = None
    relation: str | None = None
    specific_features: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every key; specific_features as a list or None when empty."""
        out: dict[str, Any] = {key: getattr(self, key) for key in ATTRIBUTE_KEYS}
        out["specific_features"] = list(self.specific_features) or None
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], vocabulary=None) -> LesionDescription:
        """Build from user input (synonyms and Chinese accepted), validating every value.

        Unknown keys or values raise UnknownAttributeValueError listing what is allowed.
        """
        from malenia.attributes.vocabulary import load_vocabulary
        from malenia.errors import UnknownAttributeValueError

        vocabulary = vocabulary or load_vocabulary()
        unknown = sorted(set(values) - set(ATTRIBUTE_KEYS))
        if unknown:
            raise UnknownAttributeValueError(
                f"Unknown attribute(s) {', '.join(unknown)}. "
                f"Allowed attributes: {', '.join(ATTRIBUTE_KEYS)}."
            )
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if value is None or value == "" or value == []:
                continue
            if key == "specific_features":
                items = [value] if isinstance(value, str) else list(value)
                kwargs[key] = tuple(
                    sorted({vocabulary.canonical(key, item) for item in items if item})
                )
            else:
                kwargs[key] = vocabulary.canonical(key, str(value))
        return cls(**kwargs)

    def phrases(self) -> list[str | tuple[str, ...] | None]:
        """Values in ATTRIBUTE_KEYS order (specific_features as a tuple, None if empty)."""
        return [
            (getattr(self, key) or None)
            if key != "specific_features"
            else (self.specific_features or None)
            for key in ATTRIBUTE_KEYS
        ]

    def specified_keys(self) -> list[str]:
        return [key for key, value in zip(ATTRIBUTE_KEYS, self.phrases(), strict=True) if value]

    def only(self, *keys: str) -> LesionDescription:
        """The same description keeping only ``keys`` (e.g. a location-only prompt)."""
        return LesionDescription(
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name in keys}
        )

    def summary(self) -> str:
        """One readable line, e.g. 'left kidney, round-like, hypodense, ...'."""
        parts = []
        for value in self.phrases():
            if isinstance(value, tuple):
                parts.append("with " + ", ".join(value))
            elif value:
                parts.append(value)
        return ", ".join(parts) or "no attributes specified"
