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


def full_table(records):
    """The knowledge table of all records (+ preset-only categories); callers hold one out."""
    from malenia.attributes.knowledge import KnowledgeTable
    from malenia.attributes.presets import preset_only_pseudo_counts

    return KnowledgeTable.from_records(records, extra_categories=preset_only_pseudo_counts())


def parser_accuracy(
    records,
    language: str = "en",
    errors_for: str | None = None,
    infer: bool = True,
    table=None,
    table_records: list | None = None,
) -> dict[str, tuple[int, int]]:
    """Per coded attribute: (parsed == annotators' code, cases with a code).

    ``infer`` applies whole-report conventions; the knowledge table it infers unstated values
    from is ``table`` with record i (``table_records[i]``) held out, so no record informs its
    own parse.
    """
    parser = TextParser()
    correct, total = Counter(), Counter()
    for i, record in enumerate(records):
        text = record.report if language == "en" else record.report_zh
        if not text:
            continue
        if table is not None:
            with table.held_out(table_records[i]) as knowledge:
                parsed = parser.parse(text, infer, knowledge).description
        else:
            parsed = parser.parse(text, infer_report_defaults=infer).description
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
    bundled = list(load_records())  # same cases, with specific features parsed from reports
    table = full_table(bundled)
    print(f"{len(records)} annotated real cases")
    runs = [
        ("en", False, "English reports, stated values only"),
        ("en", True, "English reports, + report conventions and leave-one-out inference"),
        ("zh", False, "Chinese reports, stated values only"),
        ("zh", True, "Chinese reports, + report conventions and leave-one-out inference"),
    ]
    for language, infer, title in runs:
        errors = args.errors if (language, infer) == ("en", True) else None
        scores = parser_accuracy(records, language, errors, infer, table, bundled)
        print(f"\nparser accuracy vs coded attributes: {title}")
        for key, (ok, n) in scores.items():
            print(f"  {key:18s} {ok:4d}/{n:<4d} = {ok / max(n, 1):.3f}")

    from malenia.attributes.presets import preset_only_pseudo_counts

    extra = preset_only_pseudo_counts()
    for uniform in (False, True):
        loo = leave_one_out_accuracy(bundled, extra_categories=extra, uniform_prior=uniform)
        prior = "uniform prior" if uniform else "case-count prior"
        print(
            f"\nknowledge table, leave-one-out over {loo['n']} records ({len(extra) + 7} "
            f"categories, {prior}): top-1 {loo['top1']:.3f}, top-3 {loo['top3']:.3f} "
            f"(majority class {loo['majority_baseline']:.3f}, uniform chance top-1 "
            f"{1 / (len(extra) + 7):.3f})"
        )
    for dropped in ("location",):
        loo = leave_one_out_accuracy(bundled, extra_categories=extra, drop_keys=(dropped,))
        print(
            f"  without {dropped} (appearance only): top-1 {loo['top1']:.3f}, "
            f"top-3 {loo['top3']:.3f}"
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
