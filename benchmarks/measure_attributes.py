"""Measure the attribute knowledge base on the real Malenia records.

    python benchmarks/measure_attributes.py [--annotations PATH] [--errors KEY]

Prints (1) free-text parser accuracy per attribute against the annotators' codes, English
reports and Chinese reports, (2) knowledge-table leave-one-out top-1/top-3 category accuracy,
and (3) if the embedding table exists, nearest-canonical-value accuracy of the synonyms.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from malenia.attributes.knowledge import leave_one_out_accuracy
from malenia.attributes.parser import TextParser
from malenia.attributes.records import load_records, records_from_annotation_export
from malenia.attributes.schema import ATTRIBUTE_KEYS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ANNOTATIONS = REPO.parent / "shared" / "data" / "malenia_annotations" / "attributes_en.json"
CODED_KEYS = ATTRIBUTE_KEYS[:-1]


def parser_accuracy(
    records, language: str = "en", errors_for: str | None = None
) -> dict[str, tuple[int, int]]:
    parser = TextParser()
    correct, total = Counter(), Counter()
    for record in records:
        text = record.report if language == "en" else record.report_zh
        if not text:
            continue
        parsed = parser.parse(text, infer_report_defaults=True).description
        for key in CODED_KEYS:
            truth = getattr(record.description, key)
            if truth is None:
                continue
            total[key] += 1
            correct[key] += getattr(parsed, key) == truth
            if errors_for == key and getattr(parsed, key) != truth:
                print(
                    f"  [{record.case_id}] truth={truth!r} parsed={getattr(parsed, key)!r}: {text}"
                )
    return {key: (correct[key], total[key]) for key in CODED_KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS)
    parser.add_argument("--errors", help="print the misparsed reports of this attribute")
    args = parser.parse_args()
    records = records_from_annotation_export(args.annotations)
    print(f"{len(records)} annotated real cases")
    for language in ("en", "zh"):
        scores = parser_accuracy(records, language, args.errors if language == "en" else None)
        print(f"\nparser accuracy vs coded attributes ({language} reports)")
        for key, (ok, n) in scores.items():
            print(f"  {key:18s} {ok:4d}/{n:<4d} = {ok / max(n, 1):.3f}")

    bundled = list(load_records())
    from malenia.attributes.presets import PRESET_ONLY

    extra = {
        c: {
            "prior": 10,
            "counts": {
                k: ({i: 10 for i in v} if isinstance(v, list) else {v: 10})
                for k, v in e["attributes"].items()
            },
            "source": "",
        }
        for c, e in PRESET_ONLY.items()
    }
    loo = leave_one_out_accuracy(bundled, extra_categories=extra)
    print(
        f"\nknowledge table, leave-one-out over {loo['n']} records ({len(extra) + 7} categories): "
        f"top-1 {loo['top1']:.3f}, top-3 {loo['top3']:.3f} (majority class {loo['majority_baseline']:.3f}, "
        f"uniform chance top-1 {1 / (len(extra) + 7):.3f})"
    )

    try:
        from malenia.text import synonym_separation
    except ImportError:
        return
    print("\nfrozen text encoder: nearest canonical value of each English synonym (cosine)")
    for key, (ok, n) in synonym_separation().items():
        print(f"  {key:18s} {ok:4d}/{n:<4d} = {ok / max(n, 1):.3f}")


if __name__ == "__main__":
    main()
