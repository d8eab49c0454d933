"""Any query form (preset name, attribute dict, LesionDescription, free text) -> one checked
description, without torch: the CLI, the server and the Slicer logic refuse a bad query
before any volume is read or encoded, and the engine answers the same resolution."""

from __future__ import annotations

from dataclasses import dataclass, field

from malenia.attributes.parser import parse_text
from malenia.attributes.presets import get_preset
from malenia.attributes.schema import LesionDescription
from malenia.errors import UnknownAttributeValueError

MAX_QUERY_CHARS = 4000  # a long report paragraph; more is not a lesion description


@dataclass
class ResolvedQuery:
    """What the engine will search for, and what the user should be told about it."""

    description: LesionDescription
    readable: str
    category: str | None = None  # the preset's category, when the query named a preset
    not_understood: list[str] = field(default_factory=list)  # text fragments the parser ignored
    notes: list[str] = field(default_factory=list)  # the parser's notes (inferred, conflicts)

    def to_dict(self) -> dict:
        return {"not_understood": list(self.not_understood), "notes": list(self.notes)}


def resolve_query(query) -> ResolvedQuery:
    """Resolve ``query``; an empty, unparseable or unknown one raises
    UnknownAttributeValueError with what to do."""
    if isinstance(query, ResolvedQuery):
        return query
    if isinstance(query, LesionDescription):
        return ResolvedQuery(query, query.summary())
    if isinstance(query, dict):
        description = LesionDescription.from_dict(query)
        if not description.specified_keys():
            raise UnknownAttributeValueError(
                "The attribute query sets no attribute: give at least one, e.g. "
                "density=hypodense or location=liver."
            )
        return ResolvedQuery(description, description.summary())
    if query is None or not isinstance(query, str):
        raise UnknownAttributeValueError(
            "The query must be a preset name, a free-text description or attributes."
        )
    text = query.strip()
    if not text:
        raise UnknownAttributeValueError(
            "The description is empty: type what the lesion looks like (e.g. 'round "
            "hypodense lesion in the liver'), pick a preset, or set attributes."
        )
    if len(text) > MAX_QUERY_CHARS:
        raise UnknownAttributeValueError(
            f"The description has {len(text)} characters; at most {MAX_QUERY_CHARS} are "
            "read. Give the sentence(s) about this lesion, not the whole report."
        )
    try:
        preset = get_preset(text)
        return ResolvedQuery(preset.query_description, preset.name, preset.category)
    except UnknownAttributeValueError:
        pass
    parsed = parse_text(text)
    if not parsed.evidence:
        raise UnknownAttributeValueError(
            f'"{text[:120]}" is neither a preset nor a description the parser understands. '
            + " ".join(parsed.notes)
        )
    notes = [n for n in parsed.notes if not n.startswith("Not understood or not mentioned")]
    return ResolvedQuery(parsed.description, text, None, list(parsed.unparsed), notes)
