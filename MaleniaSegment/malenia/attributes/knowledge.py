"""The knowledge table: per lesion category, how likely each attribute value is.

Given a description (or per-value probabilities predicted by the model) it ranks categories
by naive-Bayes posterior. Location is matched at two levels — the exact sub-region and the
organ — so a lesion in an unannotated lobe still points to the right organ's categories.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from malenia.attributes.schema import ATTRIBUTE_KEYS, LesionDescription
from malenia.attributes.vocabulary import Vocabulary, load_vocabulary

SINGLE_KEYS = tuple(k for k in ATTRIBUTE_KEYS if k != "specific_features")
_SMOOTHING = 0.5  # additive smoothing per value (Jeffreys-like)
_ORGAN_WEIGHT = 0.3  # share of location likelihood given to the organ level


@dataclass
class KnowledgeTable:
    """categories -> {"prior": count, "counts": {key: {value: count}}, "source": str}"""

    categories: dict[str, dict]
    vocabulary: Vocabulary

    @classmethod
    def from_records(
        cls,
        records: Iterable,
        vocabulary: Vocabulary | None = None,
        extra_categories: Mapping[str, dict] | None = None,
    ) -> KnowledgeTable:
        """Count attribute values per category from AttributeRecords; add preset-only
        categories as pseudo-counts ({"prior": n, "counts": {...}, "source": ...})."""
        vocabulary = vocabulary or load_vocabulary()
        categories: dict[str, dict] = {}
        for record in records:
            entry = categories.setdefault(
                record.category,
                {
                    "prior": 0,
                    "counts": {k: Counter() for k in ATTRIBUTE_KEYS},
                    "source": "Malenia annotations",
                },
            )
            entry["prior"] += 1
            for key in SINGLE_KEYS:
                value = getattr(record.description, key)
                if value:
                    entry["counts"][key][value] += 1
            for feature in record.description.specific_features:
                entry["counts"]["specific_features"][feature] += 1
        for name, entry in (extra_categories or {}).items():
            categories[name] = {
                "prior": entry["prior"],
                "counts": {k: Counter(entry["counts"].get(k, {})) for k in ATTRIBUTE_KEYS},
                "source": entry.get("source", ""),
            }
        return cls(categories, vocabulary)

    def to_json(self) -> dict:
        return {
            name: {
                "prior": e["prior"],
                "counts": {k: dict(v) for k, v in e["counts"].items()},
                "source": e["source"],
            }
            for name, e in self.categories.items()
        }

    @classmethod
    def load(cls, path: str | Path | None = None) -> KnowledgeTable:
        return _load_table(str(path) if path else None)

    def names(self) -> list[str]:
        return list(self.categories)

    def distribution(self, category: str, key: str) -> dict[str, float]:
        """P(value | category) for every vocabulary value of ``key`` (smoothed)."""
        counts = self.categories[category]["counts"][key]
        values = self.vocabulary.values(key)
        total = sum(counts.get(v, 0) for v in values) + _SMOOTHING * len(values)
        return {v: (counts.get(v, 0) + _SMOOTHING) / total for v in values}

    def _location_likelihood(self, category: str, location: str) -> float:
        exact = self.distribution(category, "location")
        organ = self.vocabulary.organ(location)
        siblings = self.vocabulary.locations_of_organ(organ) if organ else [location]
        organ_mass = sum(exact[s] for s in siblings)
        return (1 - _ORGAN_WEIGHT) * exact[location] + _ORGAN_WEIGHT * organ_mass / len(siblings)

    def organ_of(self, category: str) -> str | None:
        """The organ where this category's lesions lie most often ('hepatic cyst' -> 'liver')."""
        if category not in self.categories:
            return None
        mass: dict[str, float] = {}
        for location, p in self.distribution(category, "location").items():
            organ = self.vocabulary.organ(location)
            if organ:
                mass[organ] = mass.get(organ, 0.0) + p
        return max(mass, key=mass.get) if mass else None  # type: ignore[arg-type]

    def _feature_likelihood(self, category: str, feature: str) -> float:
        entry = self.categories[category]
        return (entry["counts"]["specific_features"].get(feature, 0) + _SMOOTHING) / (
            entry["prior"] + 2 * _SMOOTHING
        )

    def rank(
        self,
        query: LesionDescription | Mapping[str, Mapping[str, float]],
        uniform_prior: bool = False,
    ) -> list[tuple[str, float]]:
        """Categories with posterior probabilities, best first.

        ``query`` is a description, or {key: {value: probability}} as predicted by the model
        (then each key contributes log sum_v p(v) P(v | category)).
        """
        soft = _as_soft(query)
        total_prior = sum(e["prior"] for e in self.categories.values())
        scores = {}
        for name, entry in self.categories.items():
            score = 0.0 if uniform_prior else math.log(entry["prior"] / total_prior)
            for key, probs in soft.items():
                if key == "specific_features":
                    for feature, p in probs.items():
                        score += math.log(p * self._feature_likelihood(name, feature) + (1 - p))
                    continue
                if key == "location":
                    likelihood = sum(
                        p * self._location_likelihood(name, v) for v, p in probs.items()
                    )
                else:
                    dist = self.distribution(name, key)
                    likelihood = sum(p * dist.get(v, 0.0) for v, p in probs.items())
                score += math.log(max(likelihood, 1e-12))
            scores[name] = score
        top = max(scores.values())
        exps = {n: math.exp(s - top) for n, s in scores.items()}
        norm = sum(exps.values())
        return sorted(((n, e / norm) for n, e in exps.items()), key=lambda item: -item[1])

    @contextmanager
    def held_out(self, record) -> Iterator[KnowledgeTable]:
        """This table without one AttributeRecord's counts (leave-one-out), restored after.
        Equivalent to rebuilding the table without the record, and much faster."""
        entry = self.categories[record.category]
        changes = [("prior", None)]
        changes += [
            (key, getattr(record.description, key))
            for key in SINGLE_KEYS
            if getattr(record.description, key)
        ]
        changes += [("specific_features", f) for f in record.description.specific_features]
        self._apply(entry, changes, -1)
        try:
            yield self
        finally:
            self._apply(entry, changes, +1)

    @staticmethod
    def _apply(entry: dict, changes: list[tuple[str, str | None]], step: int) -> None:
        for key, value in changes:
            if value is None:
                entry["prior"] += step
            else:
                entry["counts"][key][value] += step

    def predict(
        self, key: str, query: LesionDescription | Mapping[str, Mapping[str, float]]
    ) -> dict[str, float]:
        """P(value of ``key`` | the other attributes): the category posterior from everything
        except ``key``, mixed over each category's value distribution. Used to fill an
        attribute a whole report leaves unstated (and said so in the parse notes)."""
        soft = {k: v for k, v in _as_soft(query).items() if k != key}
        values = self.vocabulary.values(key)
        out = dict.fromkeys(values, 0.0)
        for name, posterior in self.rank(soft):
            if key == "specific_features":
                for value in values:
                    out[value] += posterior * self._feature_likelihood(name, value)
                continue
            for value, p in self.distribution(name, key).items():
                out[value] += posterior * p
        return out


def _as_soft(query) -> dict[str, dict[str, float]]:
    if isinstance(query, LesionDescription):
        soft = {k: {getattr(query, k): 1.0} for k in SINGLE_KEYS if getattr(query, k)}
        if query.location:  # an organ-level location: its parts, equally likely
            from malenia.attributes.locations import sub_locations

            parts = sub_locations(query.location)
            soft["location"] = {part: 1.0 / len(parts) for part in parts}
        if query.specific_features:
            soft["specific_features"] = {f: 1.0 for f in query.specific_features}
        return soft
    return {k: dict(v) for k, v in query.items() if v}


@lru_cache(maxsize=2)
def _load_table(path: str | None) -> KnowledgeTable:
    from malenia.paths import resource

    file = Path(path) if path else resource("Attributes", "knowledge_table.json")
    data = json.loads(file.read_text(encoding="utf-8"))
    categories = {
        name: {
            "prior": e["prior"],
            "counts": {k: Counter(e["counts"].get(k, {})) for k in ATTRIBUTE_KEYS},
            "source": e["source"],
        }
        for name, e in data["categories"].items()
    }
    return KnowledgeTable(categories, load_vocabulary())


def leave_one_out_accuracy(
    records: list,
    extra_categories=None,
    top_k: int = 3,
    uniform_prior: bool = False,
    drop_keys: tuple[str, ...] = (),
) -> dict[str, float]:
    """Top-1 / top-k category accuracy, each record ranked by a table built without it.

    ``drop_keys`` hides attributes from the query (e.g. location, to see how much the
    appearance attributes alone carry)."""
    full = KnowledgeTable.from_records(records, load_vocabulary(), extra_categories)
    keep = tuple(k for k in ATTRIBUTE_KEYS if k not in drop_keys)
    hits1 = hitsk = 0
    for record in records:
        with full.held_out(record) as table:
            ranking = [
                name for name, _ in table.rank(record.description.only(*keep), uniform_prior)
            ]
        hits1 += ranking[0] == record.category
        hitsk += record.category in ranking[:top_k]
    n = len(records)
    majority = Counter(r.category for r in records).most_common(1)[0][1] / n
    return {"n": n, "top1": hits1 / n, f"top{top_k}": hitsk / n, "majority_baseline": majority}
