"""The controlled vocabulary, loaded from Resources/Attributes/vocabulary.json.

``Vocabulary.canonical`` is the one gate between what a user types and what the model sees:
a synonym or Chinese term becomes its canonical phrase, anything else is refused with the
list of allowed values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from malenia.attributes.schema import ATTRIBUTE_KEYS
from malenia.errors import UnknownAttributeValueError

_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalize(text: str) -> str:
    """Lower-case, unify dashes and whitespace so 'Well defined' == 'well-defined'."""
    text = text.strip().lower().replace("\u2013", "-").replace("\u2014", "-")
    text = re.sub(r"\s*-\s*", "-", text)
    return re.sub(r"\s+", " ", text)


@dataclass(frozen=True)
class Term:
    """One surface form (synonym) of a canonical value."""

    key: str
    canonical: str
    text: str
    language: str  # "en" or "zh"
    weak: bool = False  # only used when no regular term of the same key matched


class Vocabulary:
    """Canonical values per attribute key, with synonyms and Chinese terms."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self._entries: dict[str, dict[str, dict]] = data["attributes"]
        self._lookup: dict[str, dict[str, str]] = {}
        for key, values in self._entries.items():
            table = {}
            for value, entry in values.items():
                for form in [
                    value,
                    *entry.get("en", []),
                    *entry.get("zh", []),
                    *entry.get("weak", []),
                ]:
                    table.setdefault(normalize(form), value)
                    table.setdefault(normalize(form).replace("-", " "), value)
            self._lookup[key] = table

    def keys(self) -> tuple[str, ...]:
        return ATTRIBUTE_KEYS

    def values(self, key: str) -> list[str]:
        """Canonical phrases of ``key`` in vocabulary order."""
        self._check_key(key)
        return list(self._entries[key])

    def organ(self, location: str) -> str | None:
        """The organ of a canonical location ('left kidney' -> 'kidney')."""
        return self._entries["location"].get(location, {}).get("organ")

    def locations_of_organ(self, organ: str) -> list[str]:
        return [v for v, e in self._entries["location"].items() if e.get("organ") == organ]

    def terms(self, key: str) -> list[Term]:
        """Every surface form of every value of ``key`` (canonical, English, Chinese)."""
        self._check_key(key)
        out = []
        for value, entry in self._entries[key].items():
            out.append(Term(key, value, value, "en"))
            out += [Term(key, value, t, "en") for t in entry.get("en", []) if t != value]
            out += [Term(key, value, t, "zh") for t in entry.get("zh", [])]
            out += [Term(key, value, t, "en", weak=True) for t in entry.get("weak", [])]
        return out

    def canonical(self, key: str, text: str) -> str:
        """Map a canonical phrase, synonym or Chinese term to the canonical phrase."""
        self._check_key(key)
        form = normalize(text)
        value = self._lookup[key].get(form) or self._lookup[key].get(form.replace("-", " "))
        if value is None and key == "location":
            from malenia.attributes.locations import organ_level_value

            value = organ_level_value(text)  # "liver": the union of its canonical parts
        if value is None:
            raise UnknownAttributeValueError(
                f"'{text}' is not a known value for {key}. Allowed values: "
                + "; ".join(self.values(key))
                + (
                    " (or a whole organ: liver, kidney, lung, left lung, right lung, pancreas, "
                    "colon, adrenal gland)"
                    if key == "location"
                    else ""
                )
                + ". Use one of these (synonyms and Chinese terms are accepted), or describe "
                "the lesion as free text and let the parser map it."
            )
        return value

    def _check_key(self, key: str) -> None:
        if key not in self._entries:
            raise UnknownAttributeValueError(
                f"Unknown attribute '{key}'. Allowed attributes: {', '.join(ATTRIBUTE_KEYS)}."
            )


def default_vocabulary_path() -> Path:
    from malenia.paths import resource

    return resource("Attributes", "vocabulary.json")


@lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None) -> Vocabulary:
    """Load the bundled vocabulary (cached)."""
    file = Path(path) if path else default_vocabulary_path()
    return Vocabulary(json.loads(file.read_text(encoding="utf-8")))


def is_chinese(text: str) -> bool:
    return bool(_CJK.search(text))
