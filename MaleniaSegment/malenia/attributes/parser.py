"""Free text (a report or a phrase, English or Chinese) -> canonical attribute values.

Rule-based on purpose: every value it returns can be traced to the words that produced it
(``ParseResult.evidence``), negation is explicit, and whatever it did not understand is
said in ``ParseResult.notes`` instead of guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from malenia.attributes.schema import ATTRIBUTE_KEYS, LesionDescription
from malenia.attributes.vocabulary import Vocabulary, is_chinese, load_vocabulary

if TYPE_CHECKING:
    from malenia.attributes.knowledge import KnowledgeTable

# Binary attributes: a negated mention of one value means the other value.
_OPPOSITES: dict[str, dict[str, str]] = {
    "shape": {"round-like": "irregular", "irregular": "round-like"},
    "density_variation": {"homogeneous": "heterogeneous", "heterogeneous": "homogeneous"},
    "surface": {
        "well-defined margin": "ill-defined margin",
        "ill-defined margin": "well-defined margin",
    },
    "relation": {
        "closely related to surrounding organs": "not closely related to surrounding organs",
        "not closely related to surrounding organs": "closely related to surrounding organs",
    },
}
_NEGATION_EN = re.compile(
    r"\b(no|not|without|absence of|absent|negative for|free of|nor|lacks?|lacking)\b"
    r"(?:\s+(?:evidence\s+of|signs?\s+of|obvious|definite|clear|significant|any|a|an|the|marked|apparent))*"
    r"(?:\s+\S+){0,2}\s*$"
)
_NEGATION_ZH = re.compile(r"(未见|无|没有|未|非)[^，。；,.;]{0,4}$")
_CLAUSE_BREAK = re.compile(r"[.;:。；：]|\bbut\b|\bhowever\b|\bwhile\b")
_MIXED_LUNG = re.compile(
    r"\bmixed\b[^.;]{0,30}\bnodul|\bmixed\b[^.;]{0,20}ground[- ]glass|混合[^。；]{0,6}结节|混杂[^。；]{0,4}磨玻璃"
)
_GROUND_GLASS = re.compile(r"ground[- ]glass|\bggo\b|磨玻璃")
_SOLID = re.compile(r"\bsolid\b|\bpart[- ]solid|实性")


@dataclass(frozen=True)
class Match:
    key: str
    value: str
    start: int
    end: int
    text: str
    negated: bool
    weak: bool = False


@dataclass
class ParseResult:
    """Parsed attributes, the words behind each, and what was not understood.

    ``unparsed`` lists the fragments of the text that carried no known attribute term
    (shown to the user as "not understood"); ``notes`` explain conflicts, negations that
    set nothing, and every value that was inferred rather than read.
    """

    description: LesionDescription
    evidence: dict[str, str] = field(default_factory=dict)
    negated_features: list[str] = field(default_factory=list)
    not_mentioned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    inferred: dict[str, float] = field(default_factory=dict)

    def explain(self) -> str:
        lines = []
        for key in ATTRIBUTE_KEYS:
            value = getattr(self.description, key)
            if key == "specific_features":
                value = ", ".join(value) if value else None
            source = f'  (from "{self.evidence[key]}")' if key in self.evidence else ""
            lines.append(f"{key:18s} {value or '-'}{source}")
        if self.unparsed:
            lines.append("not understood: " + "; ".join(f'"{u}"' for u in self.unparsed))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _term_pattern(term: str) -> re.Pattern:
    if is_chinese(term):
        return re.compile(re.escape(term.lower()))
    body = re.escape(term.lower()).replace(r"\-", r"[- ]?").replace(r"\ ", r"[\s-]+")
    return re.compile(rf"(?<![\w-]){body}(?![\w])")


class TextParser:
    """Compiled matcher over the vocabulary; reuse one instance for many texts."""

    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or load_vocabulary()
        self._patterns: list[tuple[str, str, bool, re.Pattern]] = []
        for key in ATTRIBUTE_KEYS:
            for term in self.vocabulary.terms(key):
                self._patterns.append((key, term.canonical, term.weak, _term_pattern(term.text)))

    def _matches(self, text: str) -> tuple[dict[str, list[Match]], list[tuple[int, int]]]:
        """Kept matches per key, and the span of every term hit (for ``unparsed``)."""
        lowered = text.lower()
        found: dict[str, list[Match]] = {key: [] for key in ATTRIBUTE_KEYS}
        spans: list[tuple[int, int]] = []
        for key, value, weak, pattern in self._patterns:
            for hit in pattern.finditer(lowered):
                spans.append(hit.span())
                negated = self._negated(lowered, hit.start())
                found[key].append(
                    Match(
                        key,
                        value,
                        hit.start(),
                        hit.end(),
                        text[hit.start() : hit.end()],
                        negated,
                        weak,
                    )
                )
        for key, matches in found.items():
            # Longest match wins where matches overlap ("non-contrast" over "contrast").
            matches.sort(key=lambda m: (m.start, -(m.end - m.start)))
            kept: list[Match] = []
            for match in matches:
                if kept and match.start < kept[-1].end:
                    continue
                kept.append(match)
            # Weak terms ("mixed", "higher than") only speak when nothing stronger did.
            strong = [m for m in kept if not m.weak]
            found[key] = strong if strong else kept
        return found, spans

    @staticmethod
    def _negated(lowered: str, start: int) -> bool:
        window = lowered[max(0, start - 60) : start]
        window = _CLAUSE_BREAK.split(window)[-1]
        return bool(_NEGATION_EN.search(window) or _NEGATION_ZH.search(window))

    def parse(
        self,
        text: str,
        infer_report_defaults: bool = False,
        knowledge: KnowledgeTable | None = None,
    ) -> ParseResult:
        """Parse ``text``.

        With ``infer_report_defaults`` (whole reports): an unmentioned relation is read as
        "not closely related" and an unmentioned contrast phase as non-contrast, as
        radiologists write reports; an unstated shape, density, density variation or surface
        is filled from the knowledge table when the other attributes make one value at least
        REPORT_INFERENCE_MIN_PROBABILITY likely. Every such value is listed in ``inferred``
        and explained in the notes; location is never inferred.
        """
        if not text or not text.strip():
            result = ParseResult(LesionDescription(), not_mentioned=list(ATTRIBUTE_KEYS))
            result.notes.append("The description is empty: nothing to parse.")
            return result
        found, covered = self._matches(text)
        values: dict[str, object] = {}
        evidence: dict[str, str] = {}
        notes: list[str] = []

        mixed = self._mixed_lung_density(text.lower())
        if mixed is not None:
            values["density"], evidence["density"] = "mixed ground-glass and solid", mixed.group(0)
            covered.append(mixed.span())
        self._single_values(found, values, evidence, notes)
        if "location" not in values:
            covered += self._organ_location(text.lower(), values, evidence, notes)
        negated = self._features(found, values, evidence)
        if negated:
            notes.append("Explicitly absent: " + ", ".join(negated) + ".")

        inferred: dict[str, float] = {}
        if infer_report_defaults:
            inferred = self._report_defaults(values, notes, knowledge)

        not_mentioned = [k for k in ATTRIBUTE_KEYS if k not in values and k != "specific_features"]
        if not_mentioned:
            notes.append(
                "Not understood or not mentioned: "
                + ", ".join(not_mentioned)
                + ". Set these with the attribute dropdowns if they matter."
            )
        if not evidence:
            notes.append(
                f'No known lesion attribute found in "{text.strip()[:80]}". '
                "Try words like 'hypodense', 'round-like', 'left kidney', 'ill-defined margin'."
            )
        return ParseResult(
            LesionDescription(**values),  # type: ignore[arg-type]
            evidence=evidence,
            negated_features=negated,
            not_mentioned=not_mentioned,
            notes=notes,
            unparsed=unparsed_fragments(text, covered),
            inferred=inferred,
        )

    @staticmethod
    def _mixed_lung_density(lowered: str) -> re.Match | None:
        """Ground-glass together with a solid part is its own density value (lung)."""
        hit = _MIXED_LUNG.search(lowered)
        if hit is None and _GROUND_GLASS.search(lowered) and _SOLID.search(lowered):
            hit = _GROUND_GLASS.search(lowered)
        return hit

    @staticmethod
    def _organ_location(
        lowered: str, values: dict[str, object], evidence: dict[str, str], notes: list[str]
    ) -> list[tuple[int, int]]:
        """'in the liver', 'renal', 'segment VII', 'upper pole': an organ without a part
        becomes the organ-level location (answered as the union of its canonical parts),
        a liver segment its lobe; the note says what is searched."""
        from malenia.attributes.locations import find_organ_location, sub_locations

        found = find_organ_location(lowered)
        if found is None:
            return []
        value, span, words = found
        values["location"], evidence["location"] = value, words
        parts = sub_locations(value)
        if len(parts) > 1:
            notes.append(
                f"location: '{words}' names the organ, not a part of it; searching all of it "
                f"({', '.join(parts)}). Name the part to narrow the search."
            )
        elif words != value:
            notes.append(f"location: '{words}' read as {value}.")
        return [span]

    @staticmethod
    def _single_values(
        found: dict[str, list[Match]],
        values: dict[str, object],
        evidence: dict[str, str],
        notes: list[str],
    ) -> None:
        """First affirmed mention of each single-valued key wins; conflicts are noted, and a
        negated mention sets the opposite only where the attribute has two values."""
        for key in ATTRIBUTE_KEYS:
            if key == "specific_features" or key in values:
                continue
            ruled_out = []
            for match in found[key]:
                if match.negated and match.weak:
                    continue  # "no necrosis" says nothing about homogeneity
                if not match.negated:
                    values[key], evidence[key] = match.value, match.text
                    break
                if key in _OPPOSITES:
                    values[key] = _OPPOSITES[key][match.value]
                    evidence[key] = f"negated: {match.text}"
                    break
                ruled_out.append(match.value)
            if key not in values and ruled_out:
                notes.append(
                    f"{key}: the text rules out {', '.join(dict.fromkeys(ruled_out))} but does "
                    "not say which value it is, so it was left unset."
                )
            others = [
                m.value
                for m in found[key]
                if not m.negated and not m.weak and m.value != values.get(key)
            ]
            if key in values and others:
                notes.append(
                    f"{key}: several values are mentioned ("
                    + ", ".join(dict.fromkeys([str(values[key]), *others]))
                    + f"); used the first, '{values[key]}'. Set {key} explicitly if the lesion "
                    "is another one."
                )

    @staticmethod
    def _features(
        found: dict[str, list[Match]], values: dict[str, object], evidence: dict[str, str]
    ) -> list[str]:
        """Affirmed specific features go in the description; returns the negated ones."""
        features, negated = [], []
        for match in found["specific_features"]:
            target = negated if match.negated else features
            if match.value not in target:
                target.append(match.value)
        features = [f for f in features if f not in negated]
        if features:
            values["specific_features"] = tuple(sorted(features))
            evidence["specific_features"] = ", ".join(
                m.text for m in found["specific_features"] if not m.negated
            )
        return negated

    @staticmethod
    def _report_defaults(
        values: dict[str, object], notes: list[str], knowledge: KnowledgeTable | None
    ) -> dict[str, float]:
        """Fill what whole reports leave unsaid by convention; say so for each value."""
        inferred: dict[str, float] = {}
        if "relation" not in values:
            values["relation"] = "not closely related to surrounding organs"
            notes.append("relation not mentioned: read as not closely related (report convention).")
        if "enhancement" not in values:
            values["enhancement"] = "non-contrast CT"
            notes.append(
                "no contrast phase mentioned: read as non-contrast CT (report convention)."
            )
        missing = [k for k in INFERABLE_KEYS if k not in values]
        if not missing:
            return inferred
        if knowledge is None:
            from malenia.attributes.knowledge import KnowledgeTable

            knowledge = KnowledgeTable.load()
        stated = LesionDescription(**values)  # type: ignore[arg-type]
        for key in missing:
            probabilities = knowledge.predict(key, stated)
            value, probability = max(probabilities.items(), key=lambda item: item[1])
            if probability < REPORT_INFERENCE_MIN_PROBABILITY:
                continue
            values[key], inferred[key] = value, probability
            notes.append(
                f"{key} not stated: inferred '{value}' from the other attributes via the "
                f"knowledge table (p={probability:.2f})."
            )
        return inferred


# Unstated attributes a whole report may have filled from the knowledge table (never the
# location: a guessed organ would send the model to the wrong place).
INFERABLE_KEYS: tuple[str, ...] = ("shape", "density", "density_variation", "surface")
REPORT_INFERENCE_MIN_PROBABILITY = 0.8

_WORD = re.compile(r"[a-z][a-z'-]*|\d+(?:\.\d+)?")
_FRAGMENT_BREAK = re.compile(r"[.,;:()。，；：、（）]")
# Words that carry no attribute on their own: they neither count as "not understood" nor
# break a not-understood fragment.
_FILLER_EN = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "into",
        "from",
        "by",
        "for",
        "with",
        "within",
        "and",
        "or",
        "but",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "which",
        "who",
        "seen",
        "see",
        "noted",
        "note",
        "shows",
        "show",
        "showing",
        "shown",
        "observed",
        "present",
        "presents",
        "appears",
        "appear",
        "appearing",
        "demonstrates",
        "demonstrated",
        "reveals",
        "revealed",
        "visible",
        "identified",
        "lesion",
        "lesions",
        "mass",
        "masses",
        "nodule",
        "nodules",
        "tumor",
        "tumour",
        "tumors",
        "tumours",
        "focus",
        "foci",
        "area",
        "areas",
        "region",
        "ct",
        "scan",
        "image",
        "images",
        "located",
        "location",
        "site",
        "slightly",
        "slight",
        "mildly",
        "mild",
        "moderately",
        "moderate",
        "markedly",
        "marked",
        "somewhat",
        "relatively",
        "roughly",
        "approximately",
        "about",
        "size",
        "sized",
        "measuring",
        "measures",
        "mm",
        "cm",
        "diameter",
        "density",
        "attenuation",
        "margin",
        "margins",
        "border",
        "borders",
        "boundary",
        "edge",
        "edges",
        "shape",
        "shaped",
        "surrounding",
        "adjacent",
        "organ",
        "organs",
        "tissue",
        "internal",
        "inside",
        "also",
        "both",
        "well",
        "is",
        "lobe",
        "no",
        "not",
        "without",
        "nor",
        "any",
        "evidence",
        "sign",
        "signs",
    ]
)
_FILLER_ZH = re.compile(r"[见可示呈病灶变影肿块结节一个大小约位于的其内周围与及和较稍性区为有并伴]")


def unparsed_fragments(text: str, covered: list[tuple[int, int]]) -> list[str]:
    """Runs of content words outside every matched term: what the parser did not use."""
    lowered = text.lower()
    mask = bytearray(len(text))
    for start, end in covered:
        mask[start:end] = b"\x01" * (end - start)
    fragments: list[str] = []
    if is_chinese(text):
        for clause in re.split(r"[。，；：、,.;:\s]+", lowered):
            offset = lowered.find(clause)
            rest = "".join(ch for i, ch in enumerate(clause) if offset < 0 or not mask[offset + i])
            rest = _FILLER_ZH.sub("", re.sub(r"[a-z0-9]+", "", rest))
            if len(rest) >= 2:
                fragments.append(rest)
        return list(dict.fromkeys(fragments))
    run: list[re.Match] = []
    last_end = 0

    def close() -> None:
        if run:
            fragments.append(text[run[0].start() : run[-1].end()])
            run.clear()

    for word in _WORD.finditer(lowered):
        if _FRAGMENT_BREAK.search(lowered, last_end, word.start()) or any(
            mask[word.start() : word.end()]
        ):
            close()
        last_end = word.end()
        if any(mask[word.start() : word.end()]) or word.group(0) in _FILLER_EN:
            continue
        if word.group(0)[0].isdigit():
            continue
        run.append(word)
    close()
    return list(dict.fromkeys(fragments))


_DEFAULT_PARSER: TextParser | None = None


def parse_text(
    text: str, infer_report_defaults: bool = False, knowledge: KnowledgeTable | None = None
) -> ParseResult:
    """Parse free text with the bundled vocabulary (parser compiled once)."""
    global _DEFAULT_PARSER
    if _DEFAULT_PARSER is None:
        _DEFAULT_PARSER = TextParser()
    return _DEFAULT_PARSER.parse(text, infer_report_defaults, knowledge)
