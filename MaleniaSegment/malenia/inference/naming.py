"""What an answer's segments are called: a category when the knowledge table is sure of it and
it fits the organ asked for, else a plain organ lesion; numbered within one answer."""

from __future__ import annotations

from malenia.attributes import KnowledgeTable, LesionDescription
from malenia.attributes.locations import sub_locations
from malenia.inference.postprocess import LesionInfo

# A category names the segments only when the knowledge table is this sure of it.
NAME_MIN_PROBABILITY = 0.5


def segment_name(knowledge: KnowledgeTable, ranking, description: LesionDescription) -> str:
    """What to call the answer's segments: its most likely category when the knowledge table
    is sure (>= NAME_MIN_PROBABILITY) and it lies in the organ the description names; else
    a plain "Liver lesion" / "Lesion", never an unrelated category."""
    organ = organ_of_location(description.location)
    if ranking:
        category, probability = ranking[0]
        in_organ = organ is None or knowledge.organ_of(category) == organ
        if probability >= NAME_MIN_PROBABILITY and in_organ:
            return category[0].upper() + category[1:]
    return f"{organ[0].upper()}{organ[1:]} lesion" if organ else "Lesion"


def organ_of_location(location: str | None) -> str | None:
    """The one organ a location lies in ("right lower lobe" -> "lung"), or None."""
    if not location:
        return None
    from malenia.attributes import load_vocabulary

    vocabulary = load_vocabulary()
    organs = {vocabulary.organ(p) for p in sub_locations(location, vocabulary)}
    return organs.pop() if len(organs) == 1 else None


def number_names(lesions: list[LesionInfo]) -> None:
    """Number the segments of one answer by name ("Liver cancer 1", "Liver cancer 2"), so
    each is told apart in Slicer's segment list."""
    counts: dict[str, int] = {}
    for lesion in lesions:
        base = lesion.name.rstrip("0123456789 ").strip() or "Lesion"
        counts[base] = counts.get(base, 0) + 1
        lesion.name = f"{base} {counts[base]}"
