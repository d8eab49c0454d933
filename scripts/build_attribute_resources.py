"""Generate Resources/Attributes/* from the Malenia annotation export and our lexicon.

    python scripts/build_attribute_resources.py [--annotations PATH] [--no-embeddings]

Writes vocabulary.json, records.json, presets.json, knowledge_table.json and (unless
--no-embeddings) attribute_embeddings.safetensors. The product reads only these files.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from malenia.attributes.lexicon import LEXICON
from malenia.attributes.presets import (
    PRESET_ONLY,
    PRESET_ONLY_PSEUDO_COUNT,
    SEEN_CATEGORIES,
    preset_only_pseudo_counts,
)
from malenia.attributes.records import ANNOTATED_CATEGORIES, records_from_annotation_export
from malenia.attributes.schema import ATTRIBUTE_KEYS

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "Resources" / "Attributes"
DEFAULT_ANNOTATIONS = REPO.parent / "shared" / "data" / "malenia_annotations" / "attributes_en.json"
SOURCE = (
    "Malenia attribute annotations (Jiang et al., ICLR 2025; GitHub Yankai96/Malenia, MIT), "
    "attributes_en.json export of annotations_of_lesion_descriptions.xlsx"
)
# Typical longest diameters (mm) per annotated category, for presets and the synthetic world.
SIZE_MM = {
    "renal cell carcinoma": (20, 100),
    "renal cyst": (8, 60),
    "liver cancer": (20, 110),
    "pancreatic cancer": (15, 50),
    "pancreatic cyst": (8, 50),
    "colon cancer": (20, 60),
    "lung cancer": (10, 50),
}
FEATURE_SHARE_FOR_PRESET = (
    0.4  # a specific feature joins a preset when this share of reports has it
)


def write_json(name: str, data: dict) -> None:
    (OUT / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote Resources/Attributes/{name}")


def build_vocabulary(records) -> dict:
    counts = {key: Counter() for key in ATTRIBUTE_KEYS}
    for record in records:
        for key in ATTRIBUTE_KEYS:
            value = getattr(record.description, key)
            for item in value if isinstance(value, tuple) else [value]:
                if item:
                    counts[key][item] += 1
    attributes = {}
    for key in ATTRIBUTE_KEYS:
        attributes[key] = {
            value: {**entry, "count_in_annotations": counts[key].get(value, 0)}
            for value, entry in LEXICON[key].items()
        }
    return {
        "source": "MaleniaSegment lexicon (malenia/attributes/lexicon.py); counts from " + SOURCE,
        "attributes": attributes,
    }


def build_presets(records) -> dict:
    presets = []
    for category in ANNOTATED_CATEGORIES:
        subset = [r for r in records if r.category == category]
        attributes = {}
        for key in ATTRIBUTE_KEYS[:-1]:
            values = Counter(
                getattr(r.description, key) for r in subset if getattr(r.description, key)
            )
            attributes[key] = values.most_common(1)[0][0]
        features = Counter(f for r in subset for f in r.description.specific_features)
        attributes["specific_features"] = (
            sorted(f for f, n in features.items() if n / len(subset) >= FEATURE_SHARE_FOR_PRESET)
            or None
        )
        presets.append(
            {
                "name": category[0].upper() + category[1:],
                "category": category,
                "attributes": attributes,
                "source": f"Most frequent value of each attribute over the {len(subset)} annotated {category} cases ({SOURCE}).",
                "seen_in_training": category in SEEN_CATEGORIES,
                "size_mm": list(SIZE_MM[category]),
            }
        )
    for category, entry in PRESET_ONLY.items():
        presets.append(
            {
                "name": category[0].upper() + category[1:],
                "category": category,
                "attributes": {**{k: None for k in ATTRIBUTE_KEYS}, **entry["attributes"]},
                "source": entry["source"],
                "seen_in_training": False,
                "size_mm": list(entry["size_mm"]),
            }
        )
    return {
        "source": SOURCE + "; preset-only categories from the literature cited per preset",
        "presets": presets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS)
    parser.add_argument("--no-embeddings", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    raw_records = records_from_annotation_export(args.annotations)
    # The vocabulary must exist before the parser can run over the reports.
    write_json("vocabulary.json", build_vocabulary(raw_records))
    from malenia.attributes.parser import TextParser
    from malenia.attributes.records import AttributeRecord
    from malenia.attributes.vocabulary import load_vocabulary

    load_vocabulary.cache_clear()
    text_parser = TextParser(load_vocabulary(str(OUT / "vocabulary.json")))
    records = []
    for record in raw_records:
        features = text_parser.parse(record.report).description.specific_features
        records.append(
            AttributeRecord(
                record.case_id,
                record.category,
                type(record.description)(
                    **{**record.description.to_dict(), "specific_features": features}
                ),
                record.report,
                record.report_zh,
            )
        )
    write_json("vocabulary.json", build_vocabulary(records))
    write_json(
        "records.json",
        {
            "source": SOURCE + ". The 7 coded attributes are the annotators' codes mapped to our "
            "canonical phrases; specific_features are parsed from the English report by malenia's parser.",
            "records": [r.to_dict() for r in records],
        },
    )
    write_json("presets.json", build_presets(records))

    from malenia.attributes.knowledge import KnowledgeTable

    table = KnowledgeTable.from_records(
        records, load_vocabulary(str(OUT / "vocabulary.json")), preset_only_pseudo_counts()
    )
    write_json(
        "knowledge_table.json",
        {
            "source": SOURCE
            + f"; preset-only categories as {PRESET_ONLY_PSEUDO_COUNT} pseudo-cases of their literature preset",
            "categories": table.to_json(),
        },
    )
    if not args.no_embeddings:
        from malenia.text import build_embedding_table

        path = build_embedding_table(OUT / "attribute_embeddings.safetensors")
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
