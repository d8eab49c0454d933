"""Lesion attributes: schema, vocabulary, presets, free-text parser and knowledge table."""

from malenia.attributes.knowledge import KnowledgeTable
from malenia.attributes.parser import ParseResult, parse_text
from malenia.attributes.presets import SEEN_CATEGORIES, Preset, get_preset, load_presets
from malenia.attributes.query import ResolvedQuery, resolve_query
from malenia.attributes.schema import ATTRIBUTE_KEYS, ATTRIBUTE_LABELS, LesionDescription
from malenia.attributes.vocabulary import Vocabulary, load_vocabulary

__all__ = [
    "ATTRIBUTE_KEYS",
    "ATTRIBUTE_LABELS",
    "SEEN_CATEGORIES",
    "KnowledgeTable",
    "LesionDescription",
    "ParseResult",
    "Preset",
    "ResolvedQuery",
    "Vocabulary",
    "get_preset",
    "load_presets",
    "load_vocabulary",
    "parse_text",
    "resolve_query",
]
