"""Organ-level locations: what a radiologist writes ("in the liver", "renal", "left lung",
"segment VII", "upper pole") as the union of the canonical locations the model knows.

The model and the attribute embeddings only know the canonical sub-regions (lobes, parts,
sides), so an organ-level value never reaches them: the engine answers it as the union of
its parts (``sub_locations``), one prompt per part and the union of their organ regions.
The canonical vocabulary (Resources/Attributes/vocabulary.json) is unchanged.
"""

from __future__ import annotations

import re
from functools import lru_cache

from malenia.errors import UnknownAttributeValueError

# Organ-level value -> (organ of the vocabulary, side or None). Its parts are the organ's
# canonical locations, restricted to the side.
ORGAN_LEVEL: dict[str, tuple[str, str | None]] = {
    "liver": ("liver", None),
    "kidney": ("kidney", None),
    "lung": ("lung", None),
    "left lung": ("lung", "left"),
    "right lung": ("lung", "right"),
    "pancreas": ("pancreas", None),
    "colon": ("colon", None),
    "adrenal gland": ("adrenal gland", None),
}

# Surface forms of each organ-level value (matched case-insensitively as whole words;
# Chinese as substrings). Longest first where one contains another.
ORGAN_TERMS: dict[str, tuple[str, ...]] = {
    "left lung": ("left lung", "左肺"),
    "right lung": ("right lung", "右肺"),
    "liver": ("liver", "hepatic", "肝脏", "肝"),
    "kidney": ("kidneys", "kidney", "renal", "肾脏", "肾"),
    "lung": ("lungs", "lung", "pulmonary", "肺"),
    "pancreas": ("pancreas", "pancreatic", "胰腺", "胰"),
    "colon": ("colon", "colonic", "colorectal", "bowel", "结肠"),
    "adrenal gland": ("adrenal glands", "adrenal gland", "adrenals", "adrenal", "肾上腺"),
}

# Couinaud liver segments: I (caudate) belongs to both lobes; II-IV are the left liver,
# V-VIII the right liver (the functional division along Cantlie's line).
_SEGMENT_LOBE = {
    "i": "liver",
    "1": "liver",
    "ii": "left liver lobe",
    "2": "left liver lobe",
    "iii": "left liver lobe",
    "3": "left liver lobe",
    "iv": "left liver lobe",
    "iva": "left liver lobe",
    "ivb": "left liver lobe",
    "4": "left liver lobe",
    "4a": "left liver lobe",
    "4b": "left liver lobe",
    "v": "right liver lobe",
    "5": "right liver lobe",
    "vi": "right liver lobe",
    "6": "right liver lobe",
    "vii": "right liver lobe",
    "7": "right liver lobe",
    "viii": "right liver lobe",
    "8": "right liver lobe",
}
_LIVER_SEGMENT = re.compile(
    r"\b(?:liver\s+|hepatic\s+|couinaud\s+)?segments?\s+(viii|vii|vi|iv[ab]?|v|iii|ii|i|[1-8][ab]?)\b"
    r"|\bs([1-8])\b|肝?s([1-8])段?",
)
# Kidney poles and hilum name the kidney (the side, when written next to them).
_KIDNEY_PART = re.compile(
    r"\b(?:(left|right)\s+)?(?:upper|lower|superior|inferior)\s+pole\b|\b(?:(left|right)\s+)?renal\s+hilum\b"
    r"|([左右])?肾?(?:上极|下极)"
)
_SIDE_BEFORE = re.compile(r"\b(left|right)\s+(?:[a-z]+\s+)?$|([左右])$")


def _term_pattern(term: str) -> re.Pattern:
    if re.search(r"[\u4e00-\u9fff]", term):
        return re.compile(re.escape(term) + ("(?!上腺)" if term in ("肾", "肾脏") else ""))
    return re.compile(rf"\b{re.escape(term)}\b")


_PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (value, _term_pattern(term)) for value, terms in ORGAN_TERMS.items() for term in terms
)


@lru_cache(maxsize=1)
def _vocabulary():
    from malenia.attributes.vocabulary import load_vocabulary

    return load_vocabulary()


def is_organ_level(location: str | None) -> bool:
    return (location or "").strip().lower() in ORGAN_LEVEL


def sub_locations(location: str, vocabulary=None) -> tuple[str, ...]:
    """The canonical locations a location stands for: itself when canonical, the organ's
    parts (on the named side) when organ-level."""
    vocabulary = vocabulary or _vocabulary()
    value = location.strip().lower()
    if value not in ORGAN_LEVEL:
        return (vocabulary.canonical("location", location),)
    organ, side = ORGAN_LEVEL[value]
    parts = [p for p in vocabulary.locations_of_organ(organ) if side is None or side in p]
    if not parts:
        raise UnknownAttributeValueError(f"No canonical location belongs to '{location}'.")
    return tuple(parts)


def organ_level_of(location: str, vocabulary=None) -> str:
    """The whole organ a canonical location belongs to, when the organ has several parts
    ('left lower lobe' -> 'lung'); the location itself otherwise ('spleen')."""
    vocabulary = vocabulary or _vocabulary()
    canonical = vocabulary.canonical("location", location)
    if canonical in ORGAN_LEVEL:
        return canonical
    organ = vocabulary.organ(canonical)
    return organ if organ in ORGAN_LEVEL else canonical


def location_choices(vocabulary=None) -> list[str]:
    """What a location menu offers: every canonical location, then the whole organs."""
    vocabulary = vocabulary or _vocabulary()
    return list(vocabulary.values("location")) + list(ORGAN_LEVEL)


def organ_level_value(text: str) -> str | None:
    """The organ-level value a surface form names exactly ('Hepatic' -> 'liver'), or None."""
    form = re.sub(r"\s+", " ", text.strip().lower())
    for value, terms in ORGAN_TERMS.items():
        if form == value or form in terms:
            return value
    return None


def find_organ_location(lowered: str) -> tuple[str, tuple[int, int], str] | None:
    """(location value, span, words) of the first organ-level mention in lower-cased text,
    with the side written right before it ('left kidney's upper pole' is matched earlier by
    the canonical lexicon). Liver segments give their lobe; kidney poles give the kidney."""
    hits: list[tuple[int, int, str]] = []
    for match in _LIVER_SEGMENT.finditer(lowered):
        number = next(g for g in match.groups() if g)
        hits.append((match.start(), match.end(), _SEGMENT_LOBE[number]))
    for match in _KIDNEY_PART.finditer(lowered):
        side = (
            match.group(1)
            or match.group(2)
            or {"左": "left", "右": "right"}.get(match.group(3) or "")
        )
        hits.append((match.start(), match.end(), f"{side} kidney" if side else "kidney"))
    for value, pattern in _PATTERNS:
        for match in pattern.finditer(lowered):
            hits.append((match.start(), match.end(), value))
    if not hits:
        return None
    start, end, value = min(hits, key=lambda h: (h[0], -(h[1] - h[0])))
    if value in ("kidney", "lung", "adrenal gland"):
        side = _SIDE_BEFORE.search(lowered[max(0, start - 30) : start])
        if side:
            word = side.group(1) or {"左": "left", "右": "right"}[side.group(2)]
            sided = {"kidney": f"{word} kidney", "lung": f"{word} lung"}.get(
                value, f"{word} adrenal gland"
            )
            start = start - len(side.group(0))
            value = sided
    return value, (start, end), lowered[start:end]
