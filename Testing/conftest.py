"""Shared pytest fixtures: paths to real data and a headless Slicer scene."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (always there in CI; absent in a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only CI and developers have it)")
    return SHARED_DATA


@pytest.fixture
def slicer_scene():
    """A real MRML scene with the Slicer module logics MaleniaSegment uses (no Qt)."""
    pytest.importorskip("slicer", reason="slicer-core wheel not installed (pip install .[test])")
    from slicer_harness import create_slicer_scene

    harness = create_slicer_scene()
    yield harness
    harness.close()
