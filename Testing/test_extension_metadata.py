"""The Slicer extension's build and catalog metadata match the tree.

The catalog checks repeat, offline, what Slicer/ExtensionsIndex runs on a submission
(scripts/check_description_files.py): the description file's name is the top-level
``project()`` name, the JSON fits the catalog-entry schema, the category is one the index
accepts, the repository name contains "Slicer", the icon and screenshot URLs are set the way its
regular expressions read them, and a licence file sits at the repository root. The layout
check follows what Slicer's build does with the module's CMakeLists.txt (CTK's
ctkMacroCompilePythonScript copies each listed file to <qt-scripted-modules>/<path relative to
the module folder>) and what Slicer then loads from there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_CMAKE = REPO / "MaleniaSegment" / "CMakeLists.txt"
CATALOG_ENTRY = REPO / "MaleniaExtension.json"
S4EXT = REPO / "MaleniaExtension.s4ext"
# Slicer/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json: "additionalProperties": false.
SCHEMA_KEYS = {
    "$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
    "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str,
    "enabled": bool, "tier": int,
}  # fmt: skip
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
LICENSE_NAMES = ["LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING"]


def parse_s4ext(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
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
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for needle in (
        'EXTENSION_DEPENDS "PyTorch"',
        'EXTENSION_CATEGORY "Segmentation"',
        "add_subdirectory(MaleniaSegment)",
        "cmake_minimum_required(VERSION 3.20.6",  # what Slicer >= 5.10 itself requires
    ):
        assert needle in top, needle
    module = MODULE_CMAKE.read_text(encoding="utf-8")
    for needle in (
        "slicerMacroBuildScriptedModule",
        "WITH_GENERIC_TESTS",
        "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)",
        "set(MODULE_NAME MaleniaSegment)",
    ):
        assert needle in module, needle


def cmake_list(text: str, name: str) -> list[str]:
    """The entries of ``set(NAME ...)`` in a CMakeLists.txt, comments dropped."""
    body = re.search(rf"set\({name}\n(.*?)\n\s*\)", text, re.S).group(1)
    lines = (line.split("#", 1)[0].strip() for line in body.splitlines())
    return [line for line in lines if line]


def installed_layout(root: Path) -> dict[Path, Path]:
    """Installed path -> source file, as Slicer's build puts each file under
    qt-scripted-modules: module scripts and resources relative to MaleniaSegment/
    (ctkMacroCompilePythonScript, SOURCE_DIR = the module folder), the engine's data relative to
    the repository (configure_file into the same folder)."""
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    layout: dict[Path, Path] = {}
    for name, base in (
        ("MODULE_PYTHON_SCRIPTS", REPO / "MaleniaSegment"),
        ("MODULE_PYTHON_RESOURCES", REPO / "MaleniaSegment"),
        ("ENGINE_RESOURCES", REPO),
    ):
        for path in cmake_list(text, name):
            assert (base / path).is_file(), f"{name} lists a missing {path}"
            assert root / path not in layout, f"{path} would be installed twice"
            layout[root / path] = base / path
    return layout


def test_every_installed_file_lands_where_slicer_looks_for_it(tmp_path):
    """Build the installed qt-scripted-modules folder from the CMake lists, then check it the
    way Slicer uses it: the module factory registers only the .py files at the top of the
    folder (qSlicerAbstractModuleFactoryManager::registerModules); ScriptedLoadableModule
    takes the icon from Resources/Icons/<name>.png beside the module and resourcePath() the
    .ui from Resources/UI; the engine finds its data with malenia.paths from there."""
    root = tmp_path / "qt-scripted-modules"
    for target, source in installed_layout(root).items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    assert sorted(p.name for p in root.glob("*.py")) == ["MaleniaSegment.py"]
    assert (root / "Resources" / "Icons" / "MaleniaSegment.png").is_file()
    assert (root / "Resources" / "UI" / "MaleniaSegment.ui").is_file()
    check = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(root)!r})
        import malenia, MaleniaSegmentLib
        from malenia.paths import resource, resources_dir
        import malenia.attributes  # a nested package, without torch
        from MaleniaSegmentLib.dependencies import requirements_file
        from MaleniaSegmentLib.sample_data import sample_source, verify_sample_ct
        source = sample_source()
        print(json.dumps({{
            "malenia": malenia.__file__, "lib": MaleniaSegmentLib.__file__,
            "resources": str(resources_dir()),
            "needed": [str(p) for p in (
                resource("Weights", "malenia-tiny.safetensors"),
                resource("Weights", "malenia-tiny.json"),
                resource("Attributes", "vocabulary.json"),
                resource("Terminology", "MaleniaSegment.term.json"),
                requirements_file(),
                source["thumbnailFileName"],
            )],
            "sample_ok": verify_sample_ct(),
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "", "MALENIA_RESOURCES": ""},
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["malenia"].startswith(str(root)) and found["lib"].startswith(str(root))
    assert found["resources"] == str(root / "Resources")
    for path in found["needed"]:
        assert Path(path).is_file() and Path(path).is_relative_to(root), path
    assert found["sample_ok"]


def test_s4ext_has_the_required_fields():
    fields = parse_s4ext(S4EXT)
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
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert set(entry) >= SCHEMA_REQUIRED, SCHEMA_REQUIRED - set(entry)
    assert set(entry) <= set(SCHEMA_KEYS), set(entry) - set(SCHEMA_KEYS)  # no extra keys
    for key, value in entry.items():
        assert isinstance(value, SCHEMA_KEYS[key]), key
    for key in ("category", "scm_url", "scm_revision", "build_dependencies", "tier"):
        assert key in entry, key
    s4ext = parse_s4ext(S4EXT)
    assert entry["scm_url"] == s4ext["scmurl"]
    assert entry["scm_revision"] == s4ext["scmrevision"]
    assert entry["category"] == s4ext["category"]
    assert entry["build_dependencies"] == s4ext["depends"].split()
    assert entry["tier"] in (1, 3, 5)


def test_catalog_submission_passes_the_extensions_index_checks():
    """What check_description_files.py checks once it has cloned the repository."""
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    # check_cmakelists_content: the first project() must name the description file.
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", top, re.IGNORECASE | re.MULTILINE)
    assert project and project[0] == CATALOG_ENTRY.stem == S4EXT.stem, (project, CATALOG_ENTRY)
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', top, re.IGNORECASE)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', top, re.IGNORECASE)
    assert icon and shots, (
        "EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS not found as the index reads them"
    )
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    url = urllib.parse.urlsplit(entry["scm_url"])
    assert url.scheme in ("git", "https")  # check_scm_url_syntax
    repo_name = Path(url.path).stem
    assert "slicer" in repo_name.lower()  # check_git_repository_name
    assert entry["category"] == "Segmentation"  # in ACCEPTED_EXTENSION_CATEGORIES
    # The index downloads these URLs; offline, each must name a PNG committed at that path.
    for image in [icon[0], *shots[0].split()]:
        parts = urllib.parse.urlsplit(image).path.split("/")  # /owner/repo/branch/path...
        assert image.startswith("https://raw.githubusercontent.com/") and parts[2] == repo_name
        assert (REPO / "/".join(parts[4:])).is_file(), image
        assert image.endswith(".png")
    assert parse_s4ext(S4EXT)["iconurl"] == icon[0]
    # check_license_file: one of these names at the root; ours is the Apache-2.0 text.
    licence = next((REPO / n for n in LICENSE_NAMES if (REPO / n).is_file()), None)
    assert licence is not None, "no licence file at the repository root"
    assert "Apache License" in licence.read_text(
        encoding="utf-8"
    ) and "Version 2.0" in licence.read_text(encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "Apache-2.0"' in pyproject


def test_icon_is_a_128px_png():
    from PIL import Image

    with Image.open(REPO / "MaleniaSegment" / "Resources" / "Icons" / "MaleniaSegment.png") as icon:
        assert icon.size == (128, 128)
