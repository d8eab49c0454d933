"""Free text (a report or a phrase, English or Chinese) -> canonical attribute values.

Rule-based on purpose: every value it returns can be traced to the words that produced it
(``ParseResult.evidence``), negation is explicit, and whatever it did not understand is
said in ``ParseResult.notes`` instead of guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from malenia.attributes.schema import ATTRIBUTE_KEYS, LesionDescription
from malenia.attributes.vocabulary import Vocabulary, is_chinese, load_vocabulary

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
    """Parsed attributes, the words behind each, and what was not understood."""

    description: LesionDescription
    evidence: dict[str, str] = field(default_factory=dict)
    negated_features: list[str] = field(default_factory=list)
    not_mentioned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def explain(self) -> str:
        lines = []
        for key in ATTRIBUTE_KEYS:
            value = getattr(self.description, key)
            if key == "specific_features":
                value = ", ".join(value) if value else None
            source = f'  (from "{self.evidence[key]}")' if key in self.evidence else ""
            lines.append(f"{key:18s} {value or '-'}{source}")
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

    def _matches(self, text: str) -> dict[str, list[Match]]:
        lowered = text.lower()
        found: dict[str, list[Match]] = {key: [] for key in ATTRIBUTE_KEYS}
        for key, value, weak, pattern in self._patterns:
            for hit in pattern.finditer(lowered):
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
        return found

    @staticmethod
    def _negated(lowered: str, start: int) -> bool:
        window = lowered[max(0, start - 60) : start]
        window = _CLAUSE_BREAK.split(window)[-1]
        return bool(_NEGATION_EN.search(window) or _NEGATION_ZH.search(window))

    def parse(self, text: str, infer_report_defaults: bool = False) -> ParseResult:
        """Parse ``text``. With ``infer_report_defaults`` (whole reports), an unmentioned
        relation is read as "not closely related" and an unmentioned contrast phase as
        non-contrast, as radiologists write reports; each inference is stated in the notes."""
        if not text or not text.strip():
            result = ParseResult(LesionDescription(), not_mentioned=list(ATTRIBUTE_KEYS))
            result.notes.append("The description is empty: nothing to parse.")
            return result
        found = self._matches(text)
        values: dict[str, object] = {}
        evidence: dict[str, str] = {}
        notes: list[str] = []

        lowered = text.lower()
        if _MIXED_LUNG.search(lowered) or (
            _GROUND_GLASS.search(lowered) and _SOLID.search(lowered)
        ):
            values["density"] = "mixed ground-glass and solid"
            evidence["density"] = (
                _MIXED_LUNG.search(lowered) or _GROUND_GLASS.search(lowered)
            ).group(0)

        for key in ATTRIBUTE_KEYS:
            if key == "specific_features" or key in values:
                continue
            for match in found[key]:
                if not match.negated:
                    values[key], evidence[key] = match.value, match.text
                    break
                if key in _OPPOSITES:
                    values[key] = _OPPOSITES[key][match.value]
                    evidence[key] = f"negated: {match.text}"
                    break

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
        if negated:
            notes.append("Explicitly absent: " + ", ".join(negated) + ".")

        if infer_report_defaults:
            if "relation" not in values:
                values["relation"] = "not closely related to surrounding organs"
                notes.append(
                    "relation not mentioned: read as not closely related (report convention)."
                )
            if "enhancement" not in values:
                values["enhancement"] = "non-contrast CT"
                notes.append(
                    "no contrast phase mentioned: read as non-contrast CT (report convention)."
                )

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
        )


_DEFAULT_PARSER: TextParser | None = None


def parse_text(text: str, infer_report_defaults: bool = False) -> ParseResult:
    """Parse free text with the bundled vocabulary (parser compiled once)."""
    global _DEFAULT_PARSER
    if _DEFAULT_PARSER is None:
        _DEFAULT_PARSER = TextParser()
    return _DEFAULT_PARSER.parse(text, infer_report_defaults=infer_report_defaults)
