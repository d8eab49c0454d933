"""The attribute knowledge base measured on the real Malenia records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from malenia.attributes import (
    ATTRIBUTE_KEYS,
    KnowledgeTable,
    LesionDescription,
    get_preset,
    load_presets,
    load_vocabulary,
    parse_text,
)
from malenia.attributes.knowledge import leave_one_out_accuracy
from malenia.attributes.records import (
    ANNOTATED_CATEGORIES,
    load_records,
    records_from_annotation_export,
)
from malenia.errors import UnknownAttributeValueError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="module")
def real_records(shared_data):
    return records_from_annotation_export(
        shared_data / "malenia_annotations" / "attributes_en.json"
    )


def test_all_422_real_cases_are_read(real_records):
    assert len(real_records) == 422
    assert {r.category for r in real_records} == set(ANNOTATED_CATEGORIES)


def test_parser_meets_accuracy_targets_on_real_reports(real_records):
    """Whole reports with report conventions; unstated values come from a knowledge table
    that never saw the record being parsed (leave-one-out)."""
    from measure_attributes import full_table, parser_accuracy

    bundled = list(load_records())
    scores = parser_accuracy(real_records, "en", infer=True, table=full_table(bundled),
                             table_records=bundled)  # fmt: skip
    accuracy = {key: ok / n for key, (ok, n) in scores.items()}
    for key in ("location", "shape", "density", "density_variation", "surface", "relation"):
        assert accuracy[key] >= 0.90, (key, accuracy[key])
    assert accuracy["enhancement"] >= 0.90, accuracy["enhancement"]


def test_parser_stated_values_alone_are_accurate(real_records):
    """Without any inference, what the reports state is read correctly (relation is left
    unset when a report does not mention it, so it is not in this list)."""
    from measure_attributes import parser_accuracy

    scores = parser_accuracy(real_records, "en", infer=False)
    accuracy = {key: ok / n for key, (ok, n) in scores.items()}
    for key in ("location", "shape", "density", "surface", "enhancement"):
        assert accuracy[key] >= 0.90, (key, accuracy[key])
    assert accuracy["density_variation"] >= 0.85  # colon reports never state it


def test_parser_is_accurate_where_density_variation_is_stated(real_records):
    stated = correct = 0
    for record in real_records:
        parsed = parse_text(record.report).description.density_variation
        if parsed is not None:
            stated += 1
            correct += parsed == record.description.density_variation
    assert stated >= 350
    assert correct / stated >= 0.95


def test_parser_negation_and_unknown_text():
    result = parse_text("No pancreatic duct dilatation, no calcification; septations are present.")
    assert "duct dilatation" not in result.description.specific_features
    assert "calcification" not in result.description.specific_features
    assert "septation" in result.description.specific_features
    assert set(result.negated_features) == {"duct dilatation", "calcification"}
    assert parse_text("lesion not closely related to the adjacent organs").description.relation == (
        "not closely related to surrounding organs"
    )
    assert (
        parse_text("the mass is not homogeneous").description.density_variation == "heterogeneous"
    )
    assert parse_text("non-contrast CT").description.enhancement == "non-contrast CT"
    unknown = parse_text("something odd near the thing")
    assert unknown.description == LesionDescription()
    assert any("No known lesion attribute" in note for note in unknown.notes)


def test_parser_reads_chinese():
    result = parse_text("增强CT：胰头见不规则低密度影，密度不均匀，边界不清，胰管扩张。")
    d = result.description
    assert (d.location, d.shape, d.density, d.density_variation, d.surface, d.enhancement) == (
        "pancreatic head", "irregular", "hypodense", "heterogeneous", "ill-defined margin",
        "contrast-enhanced CT",
    )  # fmt: skip
    assert d.specific_features == ("duct dilatation",)


def test_knowledge_table_leave_one_out_beats_chance_clearly():
    records = list(load_records())
    result = leave_one_out_accuracy(records)
    assert result["n"] == 422
    assert result["top1"] >= result["majority_baseline"] + 0.3
    assert result["top3"] >= 0.9


def test_knowledge_table_ranks_typical_descriptions():
    table = KnowledgeTable.load()
    cyst = LesionDescription.from_dict(
        {"location": "left kidney", "density": "hypodense", "density_variation": "homogeneous",
         "surface": "well-defined margin", "shape": "round-like"}
    )  # fmt: skip
    assert table.rank(cyst)[0][0] == "renal cyst"
    soft = {
        "location": {"pancreatic head": 0.9, "pancreatic body": 0.1},
        "specific_features": {"duct dilatation": 0.9},
    }
    assert table.rank(soft)[0][0] == "pancreatic cancer"


def test_presets_cover_at_least_12_categories_and_validate():
    presets = load_presets()
    assert len(presets) >= 12
    assert set(ANNOTATED_CATEGORIES) <= set(presets)
    vocabulary = load_vocabulary()
    for preset in presets.values():
        again = LesionDescription.from_dict(preset.description.to_dict(), vocabulary)
        assert again == preset.description
        assert preset.source
        assert preset.description.location and preset.description.density
    assert {p.category for p in presets.values() if p.seen_in_training} == {
        "renal cell carcinoma", "liver cancer", "pancreatic cyst", "lung cancer",
    }  # fmt: skip
    assert get_preset("Renal cyst").category == "renal cyst"


def test_unknown_values_are_rejected_with_the_allowed_list():
    with pytest.raises(UnknownAttributeValueError) as error:
        LesionDescription.from_dict({"density": "sparkly"})
    assert "hypodense" in str(error.value) and "hyperdense" in str(error.value)
    with pytest.raises(UnknownAttributeValueError) as error:
        LesionDescription.from_dict({"colour": "red"})
    assert "location" in str(error.value)
    with pytest.raises(UnknownAttributeValueError, match="Available presets"):
        get_preset("dragon scale")
    # Synonyms and Chinese terms are accepted and canonicalised.
    d = LesionDescription.from_dict(
        {"density": "low-attenuation", "location": "左肾", "surface": "Well defined"}
    )
    assert (d.density, d.location, d.surface) == ("hypodense", "left kidney", "well-defined margin")


def test_committed_resources_are_what_the_script_generates(real_records):
    import build_attribute_resources as build

    committed = json.loads(
        (REPO / "Resources" / "Attributes" / "presets.json").read_text(encoding="utf-8")
    )
    bundled = list(load_records())
    assert [r.case_id for r in bundled] == [r.case_id for r in real_records]
    for mine, raw in zip(bundled, real_records, strict=True):
        for key in ATTRIBUTE_KEYS[:-1]:
            assert getattr(mine.description, key) == getattr(raw.description, key)
    assert build.build_presets(bundled) == committed


def _run_attributes_cli(argv: list[str], capsys) -> tuple[int, str]:
    """The real `malenia attributes` handlers, without importing the heavy sub-commands."""
    import argparse

    from malenia.attributes import cli

    parser = argparse.ArgumentParser(prog="malenia")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["attributes", *argv])
    code = args.handler(args)
    return code, capsys.readouterr().out


def test_cli_parse_json_has_the_documented_keys(capsys):
    import malenia.cli

    assert "malenia.attributes.cli" in malenia.cli.COMMAND_MODULES
    code, out = _run_attributes_cli(
        ["parse", "--json",
         "irregular hypodense mass in the pancreatic head with ill-defined margins"], capsys
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0
    assert set(ATTRIBUTE_KEYS) <= set(data)
    assert data["location"] == "pancreatic head" and data["relation"] is None
    assert data["specific_features"] is None
    assert data["categories"][0]["category"] == "pancreatic cancer"
    probabilities = [c["probability"] for c in data["categories"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_cli_parse_says_what_it_did_not_understand(capsys):
    code, out = _run_attributes_cli(["parse", "--json", "a sparkly blob"], capsys)
    data = json.loads(out)
    assert code == 1
    assert all(data[key] is None for key in ATTRIBUTE_KEYS)
    assert data["categories"] == []
    assert "sparkly blob" in data["unparsed"]
    assert any("No known lesion attribute" in n for n in data["notes"])


def test_cli_list_and_presets(capsys):
    code, out = _run_attributes_cli(["list", "--json"], capsys)
    assert code == 0 and json.loads(out)["density"] == load_vocabulary().values("density")
    code, out = _run_attributes_cli(["presets", "--json"], capsys)
    presets = json.loads(out)
    assert code == 0 and len(presets) >= 12
    assert all(p["source"] for p in presets)
    code, out = _run_attributes_cli(["presets"], capsys)
    assert "Hepatic cyst" in out and "zero-shot" in out


def test_every_bundled_record_uses_canonical_values():
    """Training embeds these values; one outside the vocabulary would crash a run."""
    vocabulary = load_vocabulary()
    for record in load_records():
        for key in ATTRIBUTE_KEYS[:-1]:
            value = getattr(record.description, key)
            assert value is None or value in vocabulary.values(key), (record.case_id, key, value)
        for feature in record.description.specific_features:
            assert feature in vocabulary.values("specific_features")


def test_parser_reports_unparsed_words_conflicts_and_organ_only_locations():
    result = parse_text("round hypodense blob in the left kidney with sparkles")
    assert result.description.location == "left kidney"
    assert result.unparsed == ["blob", "sparkles"]
    both = parse_text(
        "hypodense lesion in the left kidney and a hyperdense one in the right kidney"
    )
    assert both.description.density == "hypodense"
    assert any("several values" in n and "right kidney" in n for n in both.notes)
    organ = parse_text("hypodense lesion in the liver")
    assert organ.description.location == "liver"  # the whole organ: both lobes are searched
    assert any("left liver lobe, right liver lobe" in n for n in organ.notes)
    assert organ.unparsed == []
    ruled_out = parse_text("not hyperdense")
    assert ruled_out.description.density is None
    assert any("rules out hyperdense" in n for n in ruled_out.notes)
    # A negated weak cue says nothing: "no necrosis" is not "homogeneous".
    assert parse_text("irregular mass, no necrosis").description.density_variation is None
    assert parse_text("mass with necrosis").description.density_variation == "heterogeneous"
    assert parse_text("左肾见类圆形低密度影，奇怪东西").unparsed == ["奇怪东西"]


@pytest.mark.parametrize(
    ("text", "location", "parts"),
    [
        ("round hypodense lesion in the liver", "liver", ("left liver lobe", "right liver lobe")),
        ("hepatic hypodense lesion", "liver", ("left liver lobe", "right liver lobe")),
        ("hypodense lesion in segment VII", "right liver lobe", ("right liver lobe",)),
        ("hypodense lesion in Couinaud segment 3", "left liver lobe", ("left liver lobe",)),
        ("renal cyst, hypodense", "kidney", ("left kidney", "right kidney")),
        ("hypodense lesion of the upper pole", "kidney", ("left kidney", "right kidney")),
        ("hypodense lesion of the left upper pole", "left kidney", ("left kidney",)),
        ("irregular nodule in the lungs", "lung", 5),
        ("spiculated mass in the left lung", "left lung", ("left upper lobe", "left lower lobe")),
        ("hypodense lesion in the pancreas", "pancreas", 3),
        ("肝脏可见类圆形低密度灶", "liver", ("left liver lobe", "right liver lobe")),
        ("右肺结节，边缘毛刺", "right lung", 3),
        ("hepatic flexure mass", "ascending colon", ("ascending colon",)),
        ("adrenal nodule, hypodense", "adrenal gland", 2),
    ],
)
def test_organ_level_locations_resolve_to_the_union_of_canonical_parts(text, location, parts):
    from malenia.attributes.locations import sub_locations

    description = parse_text(text).description
    assert description.location == location
    found = sub_locations(description.location)
    assert (len(found) == parts) if isinstance(parts, int) else found == parts
    vocabulary = load_vocabulary()
    assert all(p in vocabulary.values("location") for p in found)  # what the model knows
    assert LesionDescription.from_dict({"location": location}).location == location


def test_segment_names_follow_a_sure_category_in_the_named_organ():
    from malenia.attributes import KnowledgeTable, resolve_query
    from malenia.inference.naming import segment_name

    knowledge = KnowledgeTable.load()
    for text, expected in (
        ("round hypodense lesion in the liver", "Liver lesion"),  # not "Renal cyst"
        ("purple hypodense thing", "Lesion"),
        ("spiculated irregular mass in the left lung", "Lung cancer"),
    ):
        description = resolve_query(text).description
        assert segment_name(knowledge, knowledge.rank(description)[:3], description) == expected


def test_report_inference_is_stated_and_never_guesses_location():
    report = (
        "Contrast-enhanced CT: Focal irregular thickening of the transverse colon wall, with "
        "attenuation slightly higher than the surrounding bowel wall and a rough margin."
    )
    plain = parse_text(report)
    assert plain.description.density_variation is None and plain.inferred == {}
    inferred = parse_text(report, infer_report_defaults=True)
    assert inferred.description.density_variation == "heterogeneous"
    assert inferred.inferred["density_variation"] >= 0.8
    assert any("density_variation not stated" in n for n in inferred.notes)
    no_place = parse_text("round hypodense homogeneous lesion", infer_report_defaults=True)
    assert no_place.description.location is None


def test_knowledge_table_predicts_a_missing_attribute_and_holds_out_exactly():
    table = KnowledgeTable.load()
    colon = LesionDescription.from_dict({"location": "sigmoid colon", "shape": "irregular"})
    probabilities = table.predict("density_variation", colon)
    assert abs(sum(probabilities.values()) - 1) < 1e-6
    assert max(probabilities, key=probabilities.get) == "heterogeneous"
    record = load_records()[0]
    before = table.rank(record.description)
    with table.held_out(record) as held:
        during = held.rank(record.description)
    assert table.rank(record.description) == before
    assert during != before


def test_a_preset_searches_the_whole_organ_its_lesions_grow_in():
    """Picking "Lung cancer" searches every lobe (a tumour in the left lower lobe must be
    found); the stored typical description keeps the annotations' most frequent lobe."""
    from malenia.attributes.locations import location_choices, sub_locations
    from malenia.attributes.query import resolve_query

    lung = get_preset("lung cancer")
    assert lung.description.location == "right upper lobe"
    assert resolve_query("Lung cancer").description.location == "lung"
    assert "left lower lobe" in sub_locations(resolve_query("lung cancer").description.location)
    assert resolve_query("liver cancer").description.location == "liver"
    assert resolve_query("renal cyst").description.location == "kidney"
    assert resolve_query("splenic cyst").description.location == "spleen"  # one part: itself
    unchanged = {k: v for k, v in lung.query_description.to_dict().items() if k != "location"}
    assert unchanged == {k: v for k, v in lung.description.to_dict().items() if k != "location"}
    choices = location_choices()
    assert {"lung", "liver", "kidney"} <= set(choices) and "right upper lobe" in choices
    assert lung.to_dict()["query_attributes"]["location"] == "lung"
