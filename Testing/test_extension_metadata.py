"""The Slicer extension's build and catalog metadata match the tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_s4ext(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_cmakelists_lists_every_module_file():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sync_cmake_sources.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        "CMakeLists.txt is out of date; run `python scripts/sync_cmake_sources.py`:\n"
        + result.stdout
    )


def test_cmakelists_builds_a_scripted_module_with_tests():
    text = (REPO / "CMakeLists.txt").read_text()
    for needle in (
        "slicerMacroBuildScriptedModule",
        "WITH_GENERIC_TESTS",
        "slicer_add_python_unittest",
        'EXTENSION_DEPENDS "PyTorch"',
        'EXTENSION_CATEGORY "Segmentation"',
        "MaleniaSegment/MaleniaSegment.py",
    ):
        assert needle in text, needle


def test_s4ext_has_the_required_fields():
    fields = parse_s4ext(REPO / "MaleniaExtension.s4ext")
    required = [
        "scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage",
        "contributors", "category", "iconurl", "status", "description", "screenshoturls",
        "enabled",
    ]  # fmt: skip
    for key in required:
        assert fields.get(key), f"s4ext field '{key}' is missing or empty"
    assert fields["scm"] == "git"
    assert fields["category"] == "Segmentation"
    assert "PyTorch" in fields["depends"].split()


def test_catalog_entry_matches_s4ext_and_schema_fields():
    entry = json.loads((REPO / "MaleniaSegment.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    for key in ("category", "scm_url", "scm_revision", "build_dependencies", "tier"):
        assert key in entry, key
    s4ext = parse_s4ext(REPO / "MaleniaExtension.s4ext")
    assert entry["scm_url"] == s4ext["scmurl"]
    assert entry["scm_revision"] == s4ext["scmrevision"]
    assert entry["category"] == s4ext["category"]
    assert entry["build_dependencies"] == s4ext["depends"].split()
    assert entry["tier"] in (1, 3, 5)


def test_icon_is_a_128px_png():
    from PIL import Image

    with Image.open(REPO / "Resources" / "Icons" / "MaleniaSegment.png") as icon:
        assert icon.size == (128, 128)
