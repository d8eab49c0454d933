"""`malenia attributes list | presets | parse TEXT`."""

from __future__ import annotations

import argparse
import json

from malenia.attributes.knowledge import KnowledgeTable
from malenia.attributes.parser import parse_text
from malenia.attributes.presets import load_presets
from malenia.attributes.schema import ATTRIBUTE_KEYS, ATTRIBUTE_LABELS
from malenia.attributes.vocabulary import load_vocabulary


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attributes", help="lesion attribute vocabulary, presets and text parser"
    )
    commands = parser.add_subparsers(dest="attributes_command", metavar="ACTION", required=True)
    listing = commands.add_parser("list", help="the allowed values of every attribute")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)
    presets = commands.add_parser("presets", help="lesion presets with their attributes")
    presets.add_argument("--json", action="store_true", help="machine-readable output")
    presets.set_defaults(handler=_presets)
    parse = commands.add_parser("parse", help="parse a report or phrase into attributes")
    parse.add_argument(
        "text", help='e.g. "round hypodense lesion in the left kidney, well-defined"'
    )
    parse.add_argument(
        "--json", action="store_true", help="one JSON object with the 8 keys + categories"
    )
    parse.add_argument(
        "--report",
        action="store_true",
        help="whole report: apply report conventions and infer unstated values (stated in notes)",
    )
    parse.add_argument("--top", type=int, default=3, help="how many categories to rank (default 3)")
    parse.set_defaults(handler=_parse)


def _list(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary()
    if args.json:
        print(json.dumps({key: vocabulary.values(key) for key in ATTRIBUTE_KEYS}, indent=1))
        return 0
    for key in ATTRIBUTE_KEYS:
        print(f"{ATTRIBUTE_LABELS[key]} ({key}):")
        for value in vocabulary.values(key):
            print(f"  - {value}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    presets = load_presets()
    if args.json:
        print(json.dumps([p.to_dict() for p in presets.values()], indent=1, ensure_ascii=False))
        return 0
    for preset in presets.values():
        seen = "seen in training" if preset.seen_in_training else "unseen (zero-shot)"
        print(f"{preset.name}  [{seen}]")
        print(f"  {preset.description.summary()}")
        print(f"  source: {preset.source}")
    return 0


def _parse(args: argparse.Namespace) -> int:
    result = parse_text(args.text, infer_report_defaults=args.report)
    ranking = KnowledgeTable.load().rank(result.description)[: args.top] if result.evidence else []
    if args.json:
        out = result.description.to_dict()
        out["categories"] = [{"category": name, "probability": round(p, 4)} for name, p in ranking]
        out["unparsed"] = result.unparsed
        out["inferred"] = {key: round(p, 4) for key, p in result.inferred.items()}
        out["notes"] = result.notes
        print(json.dumps(out, ensure_ascii=False))
        return 0 if result.evidence else 1
    print(result.explain())
    if ranking:
        print("likely categories: " + ", ".join(f"{name} ({p:.0%})" for name, p in ranking))
    return 0 if result.evidence else 1
