"""Static checks of the Slicer module: the code, the .ui and the parameter node agree.

The module imports Qt and Slicer's application, which exist only inside Slicer, so it is
parsed, not imported; its logic is tested headless in test_slicer_module_logic.py.
The binding rules below are those of Slicer's parameterNodeWrapper GUI connectors
(Base/Python/slicer/parameterNodeWrapper/guiConnectors.py): a pair they do not support
makes ``connectGui`` raise inside Slicer.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "MaleniaSegment" / "MaleniaSegment.py"
WIDGETS = REPO / "MaleniaSegment" / "MaleniaSegmentWidgets"  # Qt-side, imported by the module
UI = REPO / "MaleniaSegment" / "Resources" / "UI" / "MaleniaSegment.ui"
sys.path.insert(0, str(REPO / "MaleniaSegment"))

EXPECTED_CLASS = {
    "Button": {"QPushButton", "ctkPushButton"},
    "ComboBox": {"QComboBox", "ctkComboBox"},
    "Selector": {"qMRMLNodeComboBox"},
    "Slider": {"ctkSliderWidget"},
    "Label": {"QLabel"},
    "Table": {"QTableWidget"},
    "progressBar": {"QProgressBar"},
    "Edit": {"QTextEdit", "QLineEdit"},
}
# What the issue asks the panel to have.
ISSUE_WIDGETS = {
    "inputVolumeSelector", "roiSelector", "presetComboBox", "locationComboBox", "shapeComboBox",
    "densityComboBox", "densityVariationComboBox", "surfaceComboBox", "enhancementComboBox",
    "relationComboBox", "specificFeaturesComboBox", "freeTextEdit", "fillFromTextButton",
    "thresholdSlider", "deviceComboBox", "gpuLabel", "outputSegmentationSelector",
    "segmentButton", "findAllButton", "progressBar", "resultsTable", "statusLabel",
    "installButton",
}  # fmt: skip
# Slicer's built-in connectors: widget class -> value types it binds (with "Choice" needed).
BUILTIN = {
    "qMRMLNodeComboBox": {"node"},
    "ctkSliderWidget": {"float", "int"},
    "QDoubleSpinBox": {"float", "int"},
    "QLineEdit": {"str"},
    "QTextEdit": {"str"},
    "QLabel": {"str"},
    "QCheckBox": {"bool"},
    "QComboBox": {"choice"},  # str/int/float/bool, only with a Choice annotation
    "ctkComboBox": {"choice"},
}


def module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text(encoding="utf-8"))


def connector_classes() -> list[ast.ClassDef]:
    """The connector classes MaleniaSegmentWidgets.connectors defines and the module imports."""
    tree = ast.parse((WIDGETS / "connectors.py").read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in module_tree().body
        if isinstance(node, ast.ImportFrom) and node.module == "MaleniaSegmentWidgets.connectors"
        for alias in node.names
    }
    return [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in imported]


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def ui_property(widget: ET.Element, name: str) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return next(iter(prop)).text
    return None


def module_constant(name: str):
    for node in module_tree().body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node.value
    raise AssertionError(f"MaleniaSegment.py has no {name}")


def custom_bindings() -> dict[str, tuple[str, str]]:
    """CUSTOM_BINDINGS: parameter -> (widget name, connector class name)."""
    value = module_constant("CUSTOM_BINDINGS")
    return {
        key.value: (item.elts[0].value, item.elts[1].id)
        for key, item in zip(value.keys, value.values, strict=True)
    }


def referenced_widgets() -> set[str]:
    names = set()
    for node in ast.walk(module_tree()):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
        ):
            names.add(node.attr)
    names |= set(ast.literal_eval(module_constant("ATTRIBUTE_WIDGETS")).values())
    names |= {widget for widget, _ in custom_bindings().values()}
    return names


def parameter_kinds() -> dict[str, str]:
    """Parameter-node field -> 'node' | 'str' | 'float' | ... | 'choice' (annotated Choice)."""
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "MaleniaSegmentParameterNode":
            kinds = {}
            for item in node.body:
                if not isinstance(item, ast.AnnAssign):
                    continue
                text = ast.unparse(item.annotation)
                if text.startswith("vtkMRML"):
                    kinds[item.target.id] = "node"
                elif "Choice(" in text:
                    kinds[item.target.id] = "choice"
                else:
                    kinds[item.target.id] = text.removeprefix("Annotated[").split(",")[0]
            return kinds
    raise AssertionError("no parameter node class")


def test_module_and_ui_parse():
    ast.parse(MODULE.read_text(encoding="utf-8"))
    root = ET.parse(UI).getroot()
    assert root.tag == "ui" and root.find("widget").get("class") == "qMRMLWidget"


def test_every_referenced_widget_exists_with_the_expected_class():
    widgets = ui_widgets()
    referenced = referenced_widgets()
    bound = {n for n, w in widgets.items() if ui_property(w, "SlicerParameterName")}
    assert referenced | bound >= ISSUE_WIDGETS, sorted(ISSUE_WIDGETS - referenced - bound)
    for name in referenced | ISSUE_WIDGETS:
        assert name in widgets, f"MaleniaSegment.py uses {name}, which the .ui does not define"
        suffix = next((s for s in EXPECTED_CLASS if name.endswith(s) or name == s), None)
        assert suffix, f"widget name {name} does not say what it is"
        assert widgets[name].get("class") in EXPECTED_CLASS[suffix], (
            name,
            widgets[name].get("class"),
        )


def test_every_parameter_field_is_bound_once_with_a_connector_slicer_has():
    widgets = ui_widgets()
    by_property = {
        ui_property(w, "SlicerParameterName"): name
        for name, w in widgets.items()
        if ui_property(w, "SlicerParameterName")
    }
    custom = custom_bindings()
    kinds = parameter_kinds()
    assert not set(by_property) & set(custom), "a parameter is bound twice"
    assert set(kinds) == set(by_property) | set(custom), sorted(
        set(kinds) ^ (set(by_property) | set(custom))
    )
    for parameter, widget_name in by_property.items():
        widget_class = widgets[widget_name].get("class")
        assert kinds[parameter] in BUILTIN.get(widget_class, set()), (
            f"Slicer has no connector for {parameter} ({kinds[parameter]}) on {widget_class}"
        )
    for parameter, (widget_name, connector) in custom.items():
        assert kinds[parameter] == "str", parameter
        expected = "QTextEdit" if connector == "PlainTextEditToStrConnector" else "QComboBox"
        assert widgets[widget_name].get("class") == expected, widget_name
        if connector == "EditableComboBoxToStrConnector":  # the rows that accept typed text
            assert ui_property(widgets[widget_name], "editable") == "true", widget_name
    classes = {n.name for n in connector_classes()}
    assert {c for _, c in custom.values()} <= classes
    source = MODULE.read_text(encoding="utf-8")
    assert "connectGui(self.ui)" in source and "connectParametersToGui(" in source


def test_node_selectors_list_the_node_types_of_their_parameters():
    widgets = ui_widgets()
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "MaleniaSegmentParameterNode":
            for item in node.body:
                annotation = ast.unparse(item.annotation)
                if not annotation.startswith("vtkMRML"):
                    continue
                (widget,) = [
                    w
                    for w in widgets.values()
                    if ui_property(w, "SlicerParameterName") == item.target.id
                ]
                types = [s.text for s in widget.iter("string")]
                assert annotation in types, (item.target.id, types)


def test_module_metadata_and_self_test_exist():
    text = MODULE.read_text(encoding="utf-8")
    for needle in (
        'categories = ["Segmentation"]',
        "ICLR 2025",
        "ScriptedLoadableModuleTest",
        "parameterNodeWrapper",
        "Ctrl+Return",
        "registerCustomSampleDataSource",
    ):
        assert needle in text, needle
    assert "import torch" not in text and "malenia.inference" not in text


def test_sample_ct_source_points_at_the_file_with_its_checksum(tmp_path):
    from MaleniaSegmentLib.sample_data import SAMPLE_CT_SHA256, sample_ct_path, sample_source

    data = sample_ct_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == SAMPLE_CT_SHA256
    source = sample_source()
    assert source["checksums"] == f"SHA256:{SAMPLE_CT_SHA256}"
    copy = tmp_path / source["fileNames"]
    urllib.request.urlretrieve(source["uris"], copy)  # what Sample Data does with the URI
    assert copy.read_bytes() == data
    assert Path(source["thumbnailFileName"]).is_file()


def test_threshold_parameter_slider_and_calibrated_thresholds_share_one_range():
    """The widget writes the threshold a run used (possibly a calibrated one) into the
    parameter node: a value outside its WithinRange would raise inside Slicer."""
    from malenia.evaluation.calibrate import THRESHOLDS

    bounds = None
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "threshold":
            within = next(
                n for n in ast.walk(node.annotation)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "WithinRange"
            )  # fmt: skip
            bounds = tuple(ast.literal_eval(a) for a in within.args)
    assert bounds is not None, "threshold parameter with WithinRange not found"
    slider = ui_widgets()["thresholdSlider"]
    slider_range = tuple(float(ui_property(slider, k)) for k in ("minimum", "maximum"))
    assert bounds == slider_range
    assert all(bounds[0] <= t <= bounds[1] for t in THRESHOLDS)


def test_text_widgets_use_connectors_that_skip_unchanged_writes():
    """The wrapper writes every connector on each parameter change; a QTextEdit bound with
    Slicer's own connector (setPlainText every time) loses its caret and undo history on each
    keystroke. So no parameter may be bound to a QTextEdit through SlicerParameterName, and every
    custom connector's write() goes through write_if_changed."""
    widgets = ui_widgets()
    for name, widget in widgets.items():
        if widget.get("class") == "QTextEdit":
            assert ui_property(widget, "SlicerParameterName") is None, name
    assert custom_bindings()["freeText"] == ("freeTextEdit", "PlainTextEditToStrConnector")
    connectors = connector_classes()
    assert {c for _, c in custom_bindings().values()} <= {n.name for n in connectors}
    for node in connectors:
        if node.name.endswith("Connector"):
            (write,) = [
                f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "write"
            ]
            calls = {
                getattr(c.func, "id", getattr(c.func, "attr", ""))
                for c in ast.walk(write)
                if isinstance(c, ast.Call)
            }
            assert calls & {"write_if_changed"} or "setCurrentIndex" in calls, node.name
            if "setCurrentIndex" in calls:  # the preset combo compares the index itself
                assert any(isinstance(n, ast.If) for n in ast.walk(write)), node.name


LIB = REPO / "MaleniaSegment" / "MaleniaSegmentLib"
OLDEST_SLICER_PYTHON = "3.9"  # Slicer 5.8: the module must load there to say it is too old
OLDEST_SUPPORTED_PYTHON = "3.10"  # what the engine and MaleniaSegmentLib may use (5.10: 3.12)


def vermin(target: str, *paths: Path) -> subprocess.CompletedProcess:
    """vermin (pinned in the dev extra) with union-type detection: `isinstance(v, list | tuple)`
    passes its default checks yet fails on Python 3.9."""
    code = "import sys, vermin; sys.exit(vermin.main())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-tips", "--violations", "--feature", "union-types",
         f"-t={target}-", *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_module_file_loads_on_the_oldest_slicer_python_and_the_rest_on_the_minimum(tmp_path):
    old = tmp_path / "old.py"
    old.write_text(
        "def f(v):\n    return isinstance(v, list | tuple), list(zip(v, v, strict=True))\n"
    )
    assert vermin(OLDEST_SLICER_PYTHON, old).returncode != 0  # the check sees what 3.9 lacks
    gate = [MODULE, LIB / "__init__.py", LIB / "compat.py", *WIDGETS.glob("*.py")]
    done = vermin(OLDEST_SLICER_PYTHON, *gate)
    assert done.returncode == 0, done.stdout + done.stderr
    done = vermin(OLDEST_SUPPORTED_PYTHON, LIB, REPO / "MaleniaSegment" / "malenia")
    assert done.returncode == 0, done.stdout + done.stderr


def test_parameter_node_annotations_evaluate_on_python_3_9():
    """parameterNodeWrapper evaluates the class's annotations when the module loads, even with
    `from __future__ import annotations`: no `X | Y` there."""
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "MaleniaSegmentParameterNode":
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    assert not any(
                        isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                        for n in ast.walk(item.annotation)
                    ), ast.unparse(item.annotation)


def test_the_minimum_slicer_version_is_the_same_everywhere_it_is_stated():
    from MaleniaSegmentLib.compat import MINIMUM_PYTHON, MINIMUM_SLICER, version_problem

    assert MINIMUM_SLICER == (5, 10) and MINIMUM_PYTHON == (3, 10)
    assert "5.10 or newer" in version_problem((5, 8), (3, 9, 10))
    assert version_problem((5, 10), (3, 12, 10)) is None
    assert version_problem((5, 12), (3, 9)) is not None  # a custom build with an old Python
    for path in ("README.md", "docs/SLICER.md"):
        assert "Slicer 5.10 or newer" in (REPO / path).read_text(encoding="utf-8"), path
    text = MODULE.read_text(encoding="utf-8")
    assert "Needs Slicer 5.10 or newer" in text and "_versionProblem()" in text
