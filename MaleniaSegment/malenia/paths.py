"""Locate the bundled Resources/ folder in a checkout, an installed Slicer extension, or
wherever $MALENIA_RESOURCES points. The engine never reads ../shared at run time."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """Return the Resources/ folder; raise FileNotFoundError with a hint if absent."""
    candidates = []
    if os.environ.get("MALENIA_RESOURCES"):
        candidates.append(Path(os.environ["MALENIA_RESOURCES"]))
    candidates += [
        _PACKAGE_DIR.parent.parent / "Resources",  # repository checkout (editable install)
        _PACKAGE_DIR.parent / "Resources",  # Slicer extension: Resources/ beside the module
    ]
    for candidate in candidates:
        if (candidate / "Attributes").is_dir() or (candidate / "Terminology").is_dir():
            return candidate
    raise FileNotFoundError(
        "MaleniaSegment resources not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Set MALENIA_RESOURCES to the extension's Resources folder."
    )


def resource(*parts: str) -> Path:
    """Path of a file under Resources/ (it may not exist yet; callers check)."""
    return resources_dir().joinpath(*parts)
