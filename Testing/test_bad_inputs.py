"""The bad-input matrix (issue 18): hostile and broken files, bad queries and bad output
paths through the CLI (a real subprocess: exit code and stderr), the server (a real server
on 127.0.0.1: status and JSON) and the Slicer logic (real MRML nodes).

Every case must end in one clear message that names the problem, never a traceback; nothing
may be written when a run fails, and a user's existing files and segments stay untouched.
The CLI cases are refused before the model loads (its "model@sha: device" line never
appears, and each takes a second or two, not a model load).
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_series import read_uid, series_files, write_series
from malenia.io import CTVolume

REPO = Path(__file__).resolve().parents[1]
SPACING = (2.0, 2.0, 2.0)


def body_ct(shape=(24, 32, 32)) -> np.ndarray:
    """A small body-like CT in HU (air around soft tissue, a hypodense sphere)."""
    zz, yy, xx = np.indices(shape)
    array = np.full(shape, -1000, np.int16)
    body = ((yy - shape[1] / 2) / (shape[1] / 2.3)) ** 2 + (
        (xx - shape[2] / 2) / (shape[2] / 2.3)
    ) ** 2 <= 1
    array[body] = 45
    array[(zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2 <= 16] = 5
    return array


def huge_nifti_header() -> bytes:
    """A 352-byte NIfTI whose header declares 2000 x 2000 x 2000 int16 voxels (16 GB)."""
    buffer = io.BytesIO()
    image = sitk.GetImageFromArray(np.zeros((2, 2, 2), np.int16))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"malenia-huge-{os.getpid()}.nii"
    sitk.WriteImage(image, str(path))
    header = bytearray(path.read_bytes()[:352])
    path.unlink()
    struct.pack_into("<8h", header, 40, 3, 2000, 2000, 2000, 1, 1, 1, 1)
    buffer.write(bytes(header))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every broken input, made once."""
    folder = tmp_path_factory.mktemp("bad")
    ct = body_ct()

    def write(array, name, spacing=SPACING, compress=True):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / name), useCompression=compress)

    write(ct, "ct.nii.gz")
    write(ct, "ct.nii", compress=False)
    (folder / "huge.nii").write_bytes(huge_nifti_header())
    (folder / "huge.nii.gz").write_bytes(gzip.compress(huge_nifti_header()))
    for name in ("ct.nii.gz", "ct.nii"):
        data = (folder / name).read_bytes()
        (folder / f"cut-{name}").write_bytes(data[: len(data) // 3])
    nan = ct.astype(np.float32)
    nan[4:8, 4:8, 4:8] = np.nan
    write(nan, "nan.nii.gz")
    write(np.full((8, 8, 8), np.inf, np.float32), "allinf.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "junk.nii.gz").write_bytes(os.urandom(4096))
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(folder / "slice.nrrd"))
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 3), str(folder / "rgb.nrrd"))
    write(ct, "spacing.nrrd", spacing=(2.0, 2.0, 900.0))
    (folder / "existing.seg.nrrd").write_bytes(b"the user's own segmentation")
    (folder / "out").mkdir()

    volume = CTVolume(ct, SPACING, (-30.0, -30.0, 10.0), tuple(np.eye(3).ravel()))
    origin = np.asarray(volume.origin)
    dicom = folder / "dicom"

    def series(name: str, **options) -> Path:
        target = dicom / name
        write_series(volume, target, **options)
        return target

    series_files(series("gap"))[7].unlink()
    cut = series_files(series("truncated"))[5]
    cut.write_bytes(cut.read_bytes()[:-700])
    two = series("two")
    write_series(volume, two, description="second", prefix="b")
    tilt = math.tan(math.radians(12))
    series("tilt", positions=[origin + [0, 2 * k * tilt, 2 * k] for k in range(ct.shape[0])])
    steps = np.cumsum([0] + [2.0] * 10 + [2.6] + [2.0] * (ct.shape[0] - 12))
    series("uneven", positions=[origin + [0, 0, z] for z in steps])
    same = [origin + [0, 0, 2 * k] for k in range(ct.shape[0])]
    same[6] = same[5]
    series("duplicate", positions=same)
    mixed = series("mixed")
    write_series(
        CTVolume(ct[:1], SPACING, volume.origin, volume.direction),
        mixed,
        series_uid=read_uid(series_files(mixed)[0]),
        orientation=(1, 0, 0, 0, 0, -1),
        prefix="localiser",
    )
    (dicom / "none").mkdir()
    series("good")
    return folder


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


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


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


# ---------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server():
    from malenia.client import EngineProcess
    from malenia.inference import default_weights_path

    if not default_weights_path().is_file():
        pytest.skip("bundled weights are not in this checkout")
    process = EngineProcess(
        device="cpu", extra_args=["--max-upload-mb", "4", "--threads", "2", "--queue-size", "4"]
    )
    process.start()
    yield process
    process.close()


def request(server, method, path, data=None, headers=None, timeout=60):
    """(status, JSON or raw bytes) of one request with the token."""
    merged = {"Authorization": f"Bearer {server.token}", **(headers or {})}
    call = urllib.request.Request(server.url + path, data=data, method=method, headers=merged)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            body = response.read()
            status = response.status
            kind = response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        body, status, kind = error.read(), error.code, error.headers.get("content-type", "")
    return status, (json.loads(body or b"{}") if "json" in kind else body)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upload(server, body: bytes, fmt: str = "nifti", **headers):
    return request(
        server, "POST", "/v1/volumes", body, {"Content-Type": "application/octet-stream",
                                              "X-Format": fmt, **headers},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fmt", "message"),
    [
        ("cut-ct.nii.gz", "nifti", "truncated"),
        ("cut-ct.nii", "nii", "truncated"),
        ("nan.nii.gz", "nifti", "NaN or infinite"),
        ("junk.nii.gz", "nifti", "Cannot read"),
        ("rgb.nrrd", "nrrd", "components"),
        ("slice.nrrd", "nrrd", "2D image"),
    ],
)
def test_server_refuses_broken_uploads_with_400(server, files, name, fmt, message):
    status, answer = upload(server, (files / name).read_bytes(), fmt)
    assert status == 400 and message in answer["detail"], answer


def test_server_refuses_the_2000_cubed_header_fast_and_small(server):
    """Acceptance: the server refuses it in < 1 s and its peak RSS grows < 200 MB."""
    if not Path(f"/proc/{server.pid}/status").exists():
        pytest.skip("peak RSS is read from /proc (Linux)")
    before = peak_rss_mb(server.pid)
    start = time.perf_counter()
    status, answer = upload(server, gzip.compress(huge_nifti_header()))
    elapsed = time.perf_counter() - start
    assert status == 400 and "2000 x 2000 x 2000" in answer["detail"]
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert peak_rss_mb(server.pid) - before < 200
    status, answer = request(
        server, "POST", "/v1/volumes", b"\0" * 64,
        {"Content-Type": "application/x-malenia-array", "X-Shape": "2000,2000,2000",
         "X-Dtype": "<i2", "X-Spacing": "1,1,1", "X-Origin": "0,0,0"},
    )  # fmt: skip
    assert status == 400 and "2000 x 2000 x 2000" in answer["detail"]


def test_server_limits_every_body_and_every_query(server):
    """A 6 MB query is refused from its Content-Length (the worker never reads it)."""
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", "/v1/volumes/x/segment")
    for key, value in {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/json",
        "Content-Length": str(6 << 20),
    }.items():
        connection.putheader(key, value)
    start = time.perf_counter()
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["detail"]
    assert time.perf_counter() - start < 5
    connection.close()
    # Chunked: no Content-Length, counted while it streams.
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", "/v1/volumes/x/segment")
    connection.putheader("Authorization", f"Bearer {server.token}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    try:
        chunk = b"x" * 65536
        for _ in range(4):
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        connection.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close early, having answered already
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["detail"]
    connection.close()
    for query, message in (
        ("", "needs 'query'"),
        ("   ", "needs 'query'"),
        ("lesion " * 800, "at most 4000"),
        ("zebra pattern", "neither a preset"),
        ({"colour": "red"}, "Unknown attribute"),
    ):
        status, answer = request(
            server, "POST", "/v1/volumes/x/segment", json.dumps({"query": query}).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 400 and message in answer["detail"], (query, answer)
    assert request(server, "GET", "/v1/health")[0] == 200


def test_fuzzed_uploads_get_a_4xx_with_a_message_and_the_server_stays_up(server, files):
    """Random truncations and corruptions of the critical header fields of a small NIfTI
    (bounded: 40 cases, seeded)."""
    rng = np.random.default_rng(18)
    plain = (files / "ct.nii").read_bytes()
    fields = {  # offset, struct format, values that make the file unusable
        "sizeof_hdr": (0, "<i", [0, 1, 349, -348, 100000]),
        "dims": (40, "<h", [-1, 0, 8, 30000]),
        "dim1": (42, "<h", [0, -5, 32000]),
        "datatype": (70, "<h", [0, 3, 9999, -2]),
        "vox_offset": (108, "<f", [1e9, float("nan"), 3e7]),
    }
    cases = []
    for _ in range(20):
        cut = int(rng.integers(1, len(plain) - 1))
        body = plain[:cut]
        cases.append(("cut", gzip.compress(body) if rng.random() < 0.5 else body))
    for _ in range(20):
        name = list(fields)[int(rng.integers(len(fields)))]
        offset, fmt, values = fields[name]
        corrupt = bytearray(plain)
        struct.pack_into(fmt, corrupt, offset, values[int(rng.integers(len(values)))])
        cases.append((name, bytes(corrupt)))
    for label, body in cases:
        fmt = "nifti" if body[:2] == b"\x1f\x8b" else "nii"
        status, answer = upload(server, body, fmt)
        assert 400 <= status < 500, (label, status, answer)
        assert isinstance(answer, dict) and len(answer.get("detail", "")) > 10, (label, answer)
        assert "Traceback" not in answer["detail"]
    assert request(server, "GET", "/v1/health")[0] == 200
    status, answer = upload(server, (files / "ct.nii.gz").read_bytes())
    assert status == 202, answer


def wait_ready(server, volume_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, answer = request(server, "GET", f"/v1/volumes/{volume_id}")
        if answer["state"] in ("ready", "failed", "cancelled"):
            return answer
        time.sleep(0.5)
    raise AssertionError(f"volume {volume_id} not encoded in {timeout} s")


def test_dicom_seg_download_needs_a_dicom_upload(server, files):
    """A zipped DICOM series is answered as a DICOM SEG that highdicom reads and that
    references the series; a NIfTI upload gets a 409 saying why."""
    pytest.importorskip("highdicom")
    import highdicom as hd

    status, answer = upload(server, (files / "ct.nii.gz").read_bytes())
    nifti = wait_ready(server, answer["volume_id"])
    status, result = request(
        server, "POST", f"/v1/volumes/{nifti['volume_id']}/segment",
        json.dumps({"query": "hypodense round lesion in the liver", "threshold": 0.01}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200, result
    assert result["description"]["location"] == "liver"  # the organ: both lobes searched
    status, answer = request(
        server, "GET", f"/v1/volumes/{nifti['volume_id']}/results/{result['result_id']}/dicom-seg"
    )
    assert status == 409 and "DICOM" in answer["detail"]

    # A series the model finds a lesion in: a validation-seed phantom of a training category
    # (the toy sphere of the other fixtures is not a lesion to weights trained on real CT).
    from malenia.evaluation.run import _volume
    from malenia.evaluation.testset import held_out_cases
    from malenia.synth.split import VALIDATION_SET_SEED

    case = next(iter(held_out_cases(["renal cell carcinoma"], 1, (64, 64, 64), SPACING,
                                    seed=VALIDATION_SET_SEED)))  # fmt: skip
    phantom = _volume(case)
    phantom.array = np.round(phantom.array).astype(np.int16)
    folder = files / "dicom" / "phantom"
    write_series(phantom, folder)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        for path in series_files(folder):
            handle.write(path, f"nested/{path.name}")
    status, answer = request(
        server, "POST", "/v1/volumes", archive.getvalue(), {"Content-Type": "application/zip"}
    )
    assert status == 202, answer
    assert wait_ready(server, answer["volume_id"])["state"] == "ready"
    status, result = request(
        server, "POST", f"/v1/volumes/{answer['volume_id']}/segment",
        json.dumps({"query": "renal cell carcinoma"}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200 and result["lesions"], result
    status, data = request(
        server, "GET", f"/v1/volumes/{answer['volume_id']}/results/{result['result_id']}/dicom-seg"
    )
    assert status == 200, data
    seg = hd.seg.segread(io.BytesIO(data))
    uid = read_uid(series_files(folder)[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert seg.number_of_segments == len({v for v in np.unique(_payload_labelmap(result)) if v > 0})


def _payload_labelmap(payload: dict) -> np.ndarray:
    import base64
    import zlib

    raw = zlib.decompress(base64.b64decode(payload["mask_zlib_b64"]))
    return np.frombuffer(raw, payload["dtype"]).reshape(payload["shape"])


def test_sigterm_removes_the_token_file(server):
    """Last server test: SIGTERM, as a service manager stops it, leaves no token behind."""
    assert server.token_file.exists()
    os.kill(server.pid, signal.SIGTERM)
    server.popen.wait(timeout=60)
    assert not server.token_file.exists()


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
