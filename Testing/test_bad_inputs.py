"""The bad-input matrix (issue 18): hostile and broken files, bad queries and bad output
paths through the CLI (a real subprocess: exit code and stderr) and the Slicer logic (real
MRML nodes); the server's share is in test_bad_inputs_server.py.

Every case must end in one clear message that names the problem, never a traceback; nothing
may be written when a run fails, and a user's existing files and segments stay untouched.
The CLI cases are refused before the model loads (its "model@sha: device" line never
appears, and each takes a second or two, not a model load).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bad_input_files import snapshot, write_bad_files

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return write_bad_files(tmp_path_factory.mktemp("bad"))


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "MaleniaSegment"), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "malenia.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


LONG_TEXT = "hypodense " + "lesion " * 700

# (case id, CLI arguments after `malenia`, exit code, words the message must contain)
CLI_CASES = [
    ("missing-file", ["segment", "nope.nii.gz", "--preset", "renal cyst"], 1, "does not exist"),
    ("2000-cubed-nii", ["segment", "huge.nii", "--preset", "renal cyst"], 1, "2000 x 2000 x 2000"),
    ("2000-cubed-gz", ["segment", "huge.nii.gz", "--preset", "renal cyst"], 1, "2000 x 2000"),
    ("truncated-nii", ["segment", "cut-ct.nii", "--preset", "renal cyst"], 1, "is truncated"),
    ("truncated-gz", ["segment", "cut-ct.nii.gz", "--preset", "renal cyst"], 1, "truncated"),
    ("nan-patch", ["segment", "nan.nii.gz", "--preset", "renal cyst"], 1, "NaN or infinite"),
    ("all-inf", ["segment", "allinf.nii.gz", "--preset", "renal cyst"], 1, "all voxels are NaN"),
    ("empty-file", ["segment", "empty.nii.gz", "--preset", "renal cyst"], 1, "empty (0 bytes)"),
    ("junk-bytes", ["segment", "junk.nii.gz", "--preset", "renal cyst"], 1, "Cannot read"),
    ("2d-image", ["segment", "slice.nrrd", "--preset", "renal cyst"], 1, "2D image"),
    ("rgb-image", ["segment", "rgb.nrrd", "--preset", "renal cyst"], 1, "components"),
    ("absurd-spacing", ["segment", "spacing.nrrd", "--preset", "renal cyst"], 1, "spacing"),
    ("empty-text", ["segment", "ct.nii.gz", "--text", ""], 1, "description is empty"),
    ("blank-text", ["segment", "ct.nii.gz", "--text", "   "], 1, "description is empty"),
    ("text-too-long", ["segment", "ct.nii.gz", "--text", LONG_TEXT], 1, "at most 4000"),
    ("unknown-preset", ["segment", "ct.nii.gz", "--preset", "zebra"], 1, "neither a preset"),
    ("unknown-value", ["segment", "ct.nii.gz", "--attr", "density=purple"], 1, "Allowed values"),
    ("unknown-key", ["segment", "ct.nii.gz", "--attr", "colour=red"], 1, "Unknown attribute"),
    ("no-key-value", ["segment", "ct.nii.gz", "--attr", "density"], 1, "KEY=VALUE"),
    (
        "threshold-out-of-range",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "--threshold", "1.5"],
        2,
        "strictly between 0 and 1",
    ),
    (
        "output-extension",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "-o", "out/o.txt"],
        1,
        "must end in .seg.nrrd",
    ),
    (
        "output-folder-missing",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "-o", "nowhere/r.seg.nrrd"],
        1,
        "does not exist",
    ),
    (
        "output-exists",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "-o", "existing.seg.nrrd"],
        1,
        "already exists",
    ),
    (
        "same-output-twice",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "-o", "out/a.seg.nrrd"]
        + ["--labelmap", "out/a.seg.nrrd"],
        1,
        "name the same file",
    ),
    (
        "dicom-seg-from-nifti",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "--dicom-seg", "out/s.dcm"],
        1,
        "needs a DICOM input",
    ),
    (
        "memory-budget",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "--max-memory-gb", "0.00001"],
        1,
        "memory budget",
    ),
    (
        "series-on-a-file",
        ["segment", "ct.nii.gz", "--preset", "renal cyst", "--series", "1.2"],
        1,
        "is a file",
    ),  # fmt: skip
    ("dicom-empty-folder", ["segment", "dicom/none", "--preset", "renal cyst"], 1, "No DICOM"),
    ("dicom-missing-slice", ["segment", "dicom/gap", "--preset", "renal cyst"], 1, "has a gap"),
    (
        "dicom-truncated-slice",
        ["segment", "dicom/truncated", "--preset", "renal cyst"],
        1,
        "truncated",
    ),  # fmt: skip
    ("dicom-two-series", ["segment", "dicom/two", "--preset", "renal cyst"], 1, "--series"),
    (
        "dicom-unknown-series",
        ["segment", "dicom/two", "--preset", "renal cyst", "--series", "9.9"],
        1,
        "is not in",
    ),  # fmt: skip
    ("dicom-gantry-tilt", ["segment", "dicom/tilt", "--preset", "renal cyst"], 1, "gantry tilt"),
    ("dicom-uneven", ["segment", "dicom/uneven", "--preset", "renal cyst"], 1, "non-uniform"),
    (
        "dicom-duplicate",
        ["segment", "dicom/duplicate", "--preset", "renal cyst"],
        1,
        "same position",
    ),  # fmt: skip
    (
        "dicom-mixed-orientation",
        ["segment", "dicom/mixed", "--preset", "renal cyst"],
        1,
        "mixes slice orientations",
    ),  # fmt: skip
    ("find-on-broken-file", ["find", "cut-ct.nii.gz"], 1, "truncated"),
]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [pytest.param(a, c, m, id=i) for i, a, c, m in CLI_CASES],
)
def test_cli_refuses_bad_input_early_with_one_clear_message(files, args, code, message):
    before = snapshot(files)
    start = time.perf_counter()
    done = run_cli(*args, cwd=files)
    elapsed = time.perf_counter() - start
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert message in done.stderr, done.stderr
    assert "malenia-tiny@" not in done.stderr, "the model was loaded before the input was checked"
    assert snapshot(files) == before, "a failed run wrote or changed files"
    assert elapsed < 30, f"{elapsed:.1f} s: fail-fast cases must not load the model"


def test_the_2000_cubed_header_costs_under_a_second_and_200_mb(files):
    """Acceptance: refused in < 1 s with < 200 MB RSS. The check itself is timed in-process;
    the whole CLI process (interpreter start included) is measured with wait4."""
    from malenia.errors import InvalidVolumeError
    from malenia.validation import check_source

    start = time.perf_counter()
    with pytest.raises(InvalidVolumeError, match="2000 x 2000 x 2000"):
        check_source(files / "huge.nii.gz")
    assert time.perf_counter() - start < 1.0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "MaleniaSegment"), env.get("PYTHONPATH", "")) if p
    )
    # The console script's entry point, then the process's own peak RSS (VmHWM: since exec,
    # so the forking test process's memory is not counted, as ru_maxrss would).
    code = (
        "import sys; from pathlib import Path; from malenia.cli import main; rc = main(sys.argv[1:]); "
        "print([l for l in Path('/proc/self/status').read_text().splitlines() "
        "if l.startswith('VmHWM')][0].split()[1], file=sys.stderr); sys.exit(rc)"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "segment", "huge.nii", "--preset", "renal cyst"],
        cwd=files, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert done.returncode == 1 and "2000 x 2000 x 2000" in done.stderr
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
    assert elapsed < 10, f"{elapsed:.1f} s for the whole process, interpreter start included"


def test_overwrite_is_needed_to_replace_and_unrelated_files_stay(files, tmp_path):
    """An existing output is refused (the case above); the refusal names --overwrite."""
    done = run_cli(
        "segment", "ct.nii.gz", "--preset", "renal cyst", "--report", "existing.seg.nrrd",
        cwd=files,
    )  # fmt: skip
    assert done.returncode == 1 and "must end in .json" in done.stderr
    done = run_cli(
        "segment", "ct.nii.gz", "--preset", "renal cyst", "-o", "existing.seg.nrrd", cwd=files
    )
    assert "--overwrite" in done.stderr
    assert (files / "existing.seg.nrrd").read_bytes() == b"the user's own segmentation"


# ---------------------------------------------------------------------- Slicer logic


class _NoEngine:
    """The engine client the fail-fast cases must never reach."""

    def __getattr__(self, name):
        raise AssertionError(f"the engine was called ({name}) for input that should be refused")


def test_slicer_logic_refuses_before_copying_and_keeps_user_segments(slicer_scene):
    import vtk
    from malenia.errors import MaleniaError
    from MaleniaSegmentLib.logic import SegmentationSession

    scene = slicer_scene.scene
    logic = SegmentationSession(slicer_scene, _NoEngine())
    huge = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "huge")
    image = vtk.vtkImageData()
    image.SetDimensions(2000, 2000, 2000)  # declared, never allocated
    huge.SetAndObserveImageData(image)
    with pytest.raises(MaleniaError, match="2000 x 2000 x 2000"):
        logic.prepare(huge, "renal cyst")

    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    small = vtk.vtkImageData()
    small.SetDimensions(8, 8, 8)
    small.AllocateScalars(vtk.VTK_SHORT, 1)
    ct.SetAndObserveImageData(small)
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    mine = output.GetSegmentation().AddEmptySegment("my tumour", "my tumour")
    for query, message in (("", "Describe the lesion"), ("zebra", "neither a preset")):
        with pytest.raises(MaleniaError, match=message):
            logic.segment(ct, query, output_node=output)
    segmentation = output.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    assert segmentation.GetSegment(mine).GetName() == "my tumour"
