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


@pytest.fixture(scope="session", autouse=True)
def no_engine_processes_left_behind():
    """After the whole session, no engine server started by a test may still run."""
    yield
    import psutil

    leftovers = [
        p
        for p in psutil.Process().children(recursive=True)
        if "malenia.server" in " ".join(p.cmdline())
    ]
    for process in leftovers:
        process.kill()
    assert not leftovers, f"engine server processes left behind: {[p.pid for p in leftovers]}"
