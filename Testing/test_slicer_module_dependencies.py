"""What the module installs into Slicer's Python, and the GPU report it shows."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))

from MaleniaSegmentLib import dependencies  # noqa: E402

# Imports the engine may make that Slicer provides, or that only training/dev tools use.
SHIPPED_WITH_SLICER = {"numpy", "SimpleITK", "requests"}
# pydicom / highdicom: DICOM folders and DICOM SEG files are the CLI's and the server's;
# in Slicer the volume comes from a node and Slicer's own DICOM module exports DICOM SEG
# (installing them would also touch the pydicom Slicer ships).
NOT_NEEDED_IN_SLICER = {"openpyxl", "tensorboard", "einops", "pydicom", "highdicom", "pytest"}


def engine_imports() -> set[str]:
    names = set()
    for path in (REPO / "MaleniaSegment" / "malenia").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "malenia"}


def test_requirements_cover_every_third_party_import_of_the_engine():
    provided = {dependencies.import_name(r) for r in dependencies.requirements()} | {"torch"}
    uncovered = engine_imports() - provided - SHIPPED_WITH_SLICER - NOT_NEEDED_IN_SLICER
    assert not uncovered, f"add these to Resources/requirements.txt: {sorted(uncovered)}"


def test_requirements_never_touch_slicers_own_packages():
    names = {dependencies.distribution_name(r) for r in dependencies.requirements()}
    assert not names & set(dependencies.PROTECTED)
    raw = (REPO / "Resources" / "requirements.txt").read_text(encoding="utf-8").lower().splitlines()
    assert not [
        line
        for line in raw
        if dependencies.distribution_name(line) in {"numpy", "simpleitk", "requests"}
    ]
    constraints = dependencies.protected_constraints()
    import numpy

    assert f"numpy=={numpy.__version__}" in constraints.splitlines()


def test_install_plan_says_how_torch_comes():
    with_extension = dependencies.install_plan(["torch>=2.4,<2.15", "monai>=1.5,<1.6"], True)
    assert "PyTorch extension" in with_extension[0] and with_extension[1] == "monai>=1.5,<1.6"
    fallback = dependencies.install_plan(["torch>=2.4,<2.15"], False)
    assert "not installed" in fallback[0]
    assert with_extension[-1].startswith("(kept as they are: ")


def test_gpu_probe_runs_in_a_child_process_and_is_assessed():
    info = dependencies.probe_gpu(sys.executable)
    import torch

    assert info["torch"] == torch.__version__
    text, warning = dependencies.assess_gpu(info)
    if not torch.cuda.is_available():
        assert text.startswith("CPU") and warning is None


@pytest.mark.parametrize(
    ("arch_list", "capability", "warns"),
    [
        (["sm_80", "sm_86", "sm_90"], [8, 6], False),
        (["sm_80", "sm_90"], [8, 9], False),  # same major, newer minor runs
        (["sm_50", "sm_60", "sm_70"], [9, 0], True),  # Hopper on an old build
        (["sm_70", "sm_80"], [6, 1], True),  # Pascal dropped by the build
    ],
)
def test_gpu_assessment_warns_when_the_build_cannot_run_on_the_gpu(arch_list, capability, warns):
    info = {
        "torch": "2.5.0+cu121",
        "cuda_build": "12.1",
        "arch_list": arch_list,
        "devices": [{"name": "Test GPU", "capability": capability}],
    }
    text, warning = dependencies.assess_gpu(info)
    assert "Test GPU" in text and "12.1" in text and f"{capability[0]}.{capability[1]}" in text
    assert (warning is not None) == warns


def test_missing_torch_and_broken_torch_are_reported():
    assert dependencies.assess_gpu({"torch": None})[1].startswith("Install")
    assert "broken" in dependencies.assess_gpu({"error": "ImportError: libcuda"})[1]
