"""Regenerate the file lists in MaleniaSegment/CMakeLists.txt from the files in the tree.

Slicer's slicerMacroBuildScriptedModule wants every file listed; a hand-kept list goes stale
the day someone adds a module. Run this after adding files; a test fails when it is needed.

    python scripts/sync_cmake_sources.py          # rewrite MaleniaSegment/CMakeLists.txt
    python scripts/sync_cmake_sources.py --check  # exit 1 and list differences

SCRIPTS and RESOURCES are relative to MaleniaSegment/ (the module's folder: CTK copies each
to <qt-scripted-modules>/<path>); ENGINE_RESOURCES are the repository's top-level Resources/,
relative to the repository, copied into the same Resources/ folder beside the module.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = "MaleniaSegment"
CMAKE = REPO / MODULE_DIR / "CMakeLists.txt"
MARKERS = {
    "SCRIPTS": (
        "# BEGIN MODULE_PYTHON_SCRIPTS (scripts/sync_cmake_sources.py)",
        "# END MODULE_PYTHON_SCRIPTS",
    ),
    "RESOURCES": (
        "# BEGIN MODULE_PYTHON_RESOURCES (scripts/sync_cmake_sources.py)",
        "# END MODULE_PYTHON_RESOURCES",
    ),
    "ENGINE_RESOURCES": (
        "# BEGIN ENGINE_RESOURCES (scripts/sync_cmake_sources.py)",
        "# END ENGINE_RESOURCES",
    ),
}


def tree_files() -> list[str]:
    """Tracked plus untracked-but-not-ignored files, as repository-relative POSIX paths."""
    output = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(p for p in output.splitlines() if (REPO / p).is_file())


def expected_lists() -> dict[str, list[str]]:
    files = tree_files()
    prefix = MODULE_DIR + "/"
    module = [p.removeprefix(prefix) for p in files if p.startswith(prefix)]
    scripts = [p for p in module if p.endswith(".py") and not p.startswith("Resources/")]
    resources = [p for p in module if p.startswith("Resources/")]
    engine = [p for p in files if p.startswith("Resources/")]
    return {"SCRIPTS": scripts, "RESOURCES": resources, "ENGINE_RESOURCES": engine}


def current_lists(text: str) -> dict[str, list[str]]:
    lists = {}
    for key, (begin, end) in MARKERS.items():
        block = text.split(begin, 1)[1].split(end, 1)[0]
        lists[key] = [line.strip() for line in block.splitlines() if line.strip()]
    return lists


def render(text: str, lists: dict[str, list[str]]) -> str:
    for key, (begin, end) in MARKERS.items():
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        body = "".join(f"  {path}\n" for path in lists[key])
        text = f"{head}{begin}\n{body}  {end}{tail}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args()
    text = CMAKE.read_text(encoding="utf-8")
    expected, current = expected_lists(), current_lists(text)
    if args.check:
        stale = False
        for key in MARKERS:
            missing = sorted(set(expected[key]) - set(current[key]))
            extra = sorted(set(current[key]) - set(expected[key]))
            for path in missing:
                print(f"{key}: missing {path}")
            for path in extra:
                print(f"{key}: lists a file that does not exist: {path}")
            stale = stale or bool(missing or extra)
        return 1 if stale else 0
    CMAKE.write_text(render(text, expected), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
