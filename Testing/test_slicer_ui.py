"""Static checks of the Slicer module: the code, the .ui and the parameter node agree.

The module imports Qt and Slicer's application, which exist only inside Slicer, so it is
parsed, not imported; its logic is tested headless in test_slicer_module_logic.py.
"""

from __future__ import annotations

import ast
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "MaleniaSegment" / "MaleniaSegment.py"
UI = REPO / "Resources" / "UI" / "MaleniaSegment.ui"
EXPECTED_CLASS = {
    "Button": {"QPushButton", "ctkPushButton"},
    "ComboBox": {"QComboBox", "ctkComboBox", "ctkCheckableComboBox"},
    "Selector": {"qMRMLNodeComboBox"},
    "Slider": {"ctkSliderWidget"},
    "Label": {"QLabel"},
    "Table": {"QTableWidget"},
    "progressBar": {"QProgressBar"},
    "Edit": {"QPlainTextEdit", "QLineEdit"},
}


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def referenced_widgets() -> set[str]:
    tree = ast.parse(MODULE.read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
        ):
            names.add(node.attr)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ATTRIBUTE_WIDGETS" for t in node.targets
        ):
            names |= {value.value for value in node.value.values}
    return names


def parameter_fields() -> list[str]:
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "MaleniaSegmentParameterNode":
            return [item.target.id for item in node.body if isinstance(item, ast.AnnAssign)]
    raise AssertionError("no parameter node class")


def test_module_and_ui_parse():
    ast.parse(MODULE.read_text())
    root = ET.parse(UI).getroot()
    assert root.tag == "ui" and root.find("widget").get("class") == "qMRMLWidget"


def test_every_referenced_widget_exists_with_the_expected_class():
    widgets = ui_widgets()
    referenced = referenced_widgets()
    assert len(referenced) >= 20
    for name in referenced:
        assert name in widgets, (
            f"MaleniaSegment.py uses self.ui.{name}, which the .ui does not define"
        )
        suffix = next((s for s in EXPECTED_CLASS if name.endswith(s) or name == s), None)
        assert suffix, f"widget name {name} does not say what it is"
        assert widgets[name].get("class") in EXPECTED_CLASS[suffix], (
            name,
            widgets[name].get("class"),
        )


def test_every_parameter_field_is_bound_to_a_widget():
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    fields = parameter_fields()
    assert set(fields) == set(bound), sorted(set(fields) ^ set(bound))


def test_module_metadata_and_self_test_exist():
    text = MODULE.read_text()
    for needle in (
        'categories = ["Segmentation"]',
        "ICLR 2025",
        "ScriptedLoadableModuleTest",
        "parameterNodeWrapper",
        "Ctrl+Return",
    ):
        assert needle in text, needle


def test_sample_ct_checksum_matches_the_file():
    import sys

    sys.path.insert(0, str(REPO / "MaleniaSegment"))
    from MaleniaSegmentLib.sample_data import SAMPLE_CT_SHA256, sample_ct_path

    assert hashlib.sha256(sample_ct_path().read_bytes()).hexdigest() == SAMPLE_CT_SHA256


def test_requirements_never_touch_slicers_own_packages():
    from MaleniaSegmentLib.dependencies import PROTECTED, requirements

    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requirements()}
    assert not names & PROTECTED
    raw = (REPO / "Resources" / "requirements.txt").read_text().lower()
    for package in ("numpy", "simpleitk", "requests"):
        assert f"\n{package}" not in raw
