"""The viewer's server side over plain HTTP (no browser): the token gate of the page, the
vendored NiiVue, and the viewer's /v1 routes on a real server with the bundled weights:
parse, zipped DICOM, crop to a box, the CT image, the probability map and the downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import malenia
import numpy as np
import pytest
import SimpleITK as sitk
from malenia.client import EngineProcess
from malenia.inference import default_weights_path
from malenia.paths import resource
from malenia.viewer.cli import viewer_url
from test_server_api import volume

pytestmark = pytest.mark.skipif(
    not default_weights_path().is_file(), reason="bundled weights are not in this checkout"
)
WEB = resource("Web")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, headers: dict | None = None, data: bytes | None = None, method=None):
    """(status, headers, body) without following redirects."""
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def server():
    process = EngineProcess(device="cpu", extra_args=["--max-upload-mb", "8", "--threads", "2"])
    process.start()
    yield process
    process.close()


def bearer(server) -> dict:
    return {"Authorization": f"Bearer {server.token}"}


def cookie(server) -> dict:
    port = server.url.rsplit(":", 1)[1]
    return {"Cookie": f"malenia_{port}={server.token}"}


# ---------------------------------------------------------------------- static files
def test_vendored_niivue_matches_its_recorded_sha256_and_licence():
    record = (WEB / "NIIVUE.md").read_text(encoding="utf-8")
    recorded = re.search(r"sha256\s+([0-9a-f]{64})\s+niivue\.umd\.js", record).group(1)
    assert hashlib.sha256((WEB / "niivue.umd.js").read_bytes()).hexdigest() == recorded
    assert "0.69.0" in record and "BSD 2-Clause" in (WEB / "NIIVUE_LICENSE.txt").read_text(
        encoding="utf-8"
    )


def test_page_and_script_load_nothing_from_outside():
    for name in ("index.html", "app.js"):
        text = (WEB / name).read_text(encoding="utf-8")
        assert not re.search(r"(src|href)\s*=\s*[\"']https?:", text), name
        assert 'fetch("http' not in text and "//cdn" not in text, name


# ---------------------------------------------------------------------- the token gate
def test_the_page_is_refused_without_the_token(server):
    for headers in ({}, {"Cookie": "malenia_1=" + server.token}, {"Cookie": "x=y"}):
        status, _, body = get(server.url + "/", headers)
        assert status == 401 and b"token" in body and server.token.encode() not in body
    status, _, body = get(f"{server.url}/?token=wrong-token-of-some-length")
    assert status == 401 and server.token.encode() not in body
    for path in ("/web/app.js", "/web/niivue.umd.js"):
        assert get(server.url + path)[0] == 401
    for method, path in (("POST", "/v1/volumes/sample"), ("POST", "/v1/parse")):
        assert get(server.url + path, data=b"{}", method=method)[0] == 401
        assert get(server.url + path, cookie(server), b"{}", method)[0] == 401  # cookie: page only


def test_the_url_with_the_token_sets_a_cookie_once_and_the_page_then_loads(server):
    status, headers, _ = get(viewer_url(server.url, server.token, "abc"))
    assert status == 303 and headers["Location"] == "/?volume=abc"
    set_cookie = headers["Set-Cookie"]
    assert set_cookie.startswith(f"malenia_{server.url.rsplit(':', 1)[1]}={server.token}")
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    status, headers, body = get(server.url + "/", cookie(server))
    assert status == 200 and b"/web/app.js" in body and b"__MALENIA_TOKEN__" not in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    status, headers, body = get(server.url + "/web/niivue.umd.js", cookie(server))
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert get(server.url + "/web/../../Weights/x", cookie(server))[0] == 404


# ---------------------------------------------------------------------- routes
def test_parse_fills_attributes_and_says_what_it_did_not_understand(server):
    text = "hypodense round-like lesion in the left kidney, well-defined, zorblax pattern"
    status, _, body = get(
        server.url + "/v1/parse",
        {**bearer(server), "Content-Type": "application/json"},
        json.dumps({"text": text}).encode(),
    )
    parsed = json.loads(body)
    assert status == 200, parsed
    assert parsed["attributes"]["location"] == "left kidney"
    assert parsed["attributes"]["density"] == "hypodense"
    assert any("zorblax" in fragment for fragment in parsed["unparsed"])
    status, _, body = get(
        server.url + "/v1/parse",
        {**bearer(server), "Content-Type": "application/json"},
        b'{"text": "  "}',
    )
    assert status == 400 and "text" in json.loads(body)["detail"]


def dicom_series_zip(ct) -> bytes:
    """A real DICOM series (one file per slice, written by SimpleITK/GDCM), zipped."""
    image = ct.to_sitk()
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v}" for v in (*direction[0:7:3], *direction[1:8:3]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for k in range(image.GetDepth()):
            slice_image = image[:, :, k]
            position = image.TransformIndexToPhysicalPoint((0, 0, k))
            for tag, value in (
                ("0008|0060", "CT"),
                ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.99"),
                ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.98"),
                ("0020|0013", str(k + 1)),
                ("0020|0032", "\\".join(map(str, position))),
                ("0020|0037", orientation),
                ("0018|0050", str(image.GetSpacing()[2])),
                ("0028|1052", "0"),
                ("0028|1053", "1"),
            ):
                slice_image.SetMetaData(tag, value)
            path = folder / f"slice{k:03d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(slice_image)
            archive.write(path, f"series/slice{k:03d}.dcm")
    return buffer.getvalue()


def wait_ready(client, volume_id: str) -> dict:
    status = client.wait(volume_id)
    assert status["state"] == "ready", status
    return status


def test_a_zipped_dicom_series_is_read_with_its_geometry(server):
    ct = volume(3, shape=(24, 40, 40))
    status, _, body = get(
        server.url + "/v1/volumes/archive",
        {**bearer(server), "X-Name": "series.zip"},
        dicom_series_zip(ct),
    )
    assert status == 202, body
    volume_id = json.loads(body)["volume_id"]
    status, _, body = get(f"{server.url}/v1/volumes/{volume_id}/image.nii.gz", bearer(server))
    assert status == 200
    image = _read_nifti(body)
    assert np.array_equal(sitk.GetArrayFromImage(image), ct.array)
    assert np.allclose(image.GetSpacing(), ct.spacing, atol=1e-4)
    assert np.allclose(image.GetOrigin(), ct.origin, atol=1e-3)
    server.client().delete(volume_id)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"PK\x03\x04 cut off", "not a readable zip"),
        (b"", "empty"),
    ],
)
def test_a_bad_zip_gets_a_clear_400(server, body, words):
    status, _, answer = get(server.url + "/v1/volumes/archive", bearer(server), body, "POST")
    assert status == 400 and words in json.loads(answer)["detail"]


def test_a_zip_of_noise_files_says_no_series(server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/readme.txt", "no images here")
    status, _, answer = get(
        server.url + "/v1/volumes/archive", bearer(server), buffer.getvalue(), "POST"
    )
    assert status == 400 and "DICOM" in json.loads(answer)["detail"]


def _read_nifti(data: bytes) -> sitk.Image:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.nii.gz"
        path.write_bytes(data)
        return sitk.ReadImage(str(path))


@pytest.fixture(scope="module")
def lesion_volume(server):
    """A phantom with a renal cyst, encoded, and the engine's answer for the renal cyst preset."""
    client = server.client()
    ct = volume(7, lesion="renal cyst")
    volume_id = client.upload(ct.array, ct.ijk_to_ras())
    wait_ready(client, volume_id)
    answer = client.segment(volume_id, "renal cyst")
    assert answer.lesions, "the bundled model finds no renal cyst in the phantom"
    return ct, volume_id, answer


def test_the_probability_map_recut_in_the_browser_way_matches_the_engine(server, lesion_volume):
    ct, volume_id, answer = lesion_volume
    status, headers, body = get(
        f"{server.url}/v1/volumes/{volume_id}/results/{answer.result_id}/probability",
        bearer(server),
    )
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    meta = json.loads(headers["X-Malenia-Maps"])
    planes = np.frombuffer(gzip.decompress(body), np.uint8)
    (k0, k1), (j0, j1), (i0, i1) = meta["box"]
    shape = (k1 - k0, j1 - j0, i1 - i0)
    probability, colour = planes[: planes.size // 2].reshape(shape), planes[planes.size // 2 :]
    assert colour.size == probability.size and meta["shape"] == list(ct.array.shape)
    # The page's rule: a voxel is shown when probability * 255 > threshold * 255.
    shown = np.zeros(ct.array.shape, bool)
    shown[k0:k1, j0:j1, i0:i1] = probability > answer.threshold * 255
    engine = answer.labelmap > 0
    assert engine.any() and shown[engine].mean() > 0.97  # uint8 rounding at the edges only
    assert (shown & ~engine).sum() <= 0.05 * engine.sum() + 5
    assert meta["colors"] == [[92, 160, 230]]  # the renal cyst colour
    assert set(np.unique(colour)) <= {0, 1}


def test_downloads_are_the_engines_files_at_the_asked_threshold(server, lesion_volume, tmp_path):
    ct, volume_id, answer = lesion_volume
    base = f"{server.url}/v1/volumes/{volume_id}/results/{answer.result_id}/files"
    status, headers, body = get(f"{base}/labelmap.nii.gz", bearer(server))
    assert status == 200 and "labelmap.nii.gz" in headers["Content-Disposition"]
    labelmap = _read_nifti(body)
    assert np.array_equal(sitk.GetArrayFromImage(labelmap), answer.labelmap)
    status, _, body = get(f"{base}/seg.nrrd", bearer(server))
    (tmp_path / "a.seg.nrrd").write_bytes(body)
    segmentation = sitk.ReadImage(str(tmp_path / "a.seg.nrrd"))
    assert np.array_equal(sitk.GetArrayFromImage(segmentation), answer.labelmap)
    assert segmentation.GetMetaData("Segment0_Name") == answer.lesions[0]["name"]
    status, _, body = get(f"{base}/report.json", bearer(server))
    assert [x["name"] for x in json.loads(body)["lesions"]] == [x["name"] for x in answer.lesions]
    recut = server.client().recut(volume_id, answer.result_id, 0.8)
    status, _, body = get(f"{base}/labelmap.nii.gz?threshold=0.8", bearer(server))
    assert np.array_equal(sitk.GetArrayFromImage(_read_nifti(body)), recut.labelmap)
    assert get(f"{base}/labelmap.nii.gz?threshold=1.5", bearer(server))[0] == 400
    assert get(f"{base}/model.safetensors", bearer(server))[0] == 404


def test_crop_encodes_the_same_ct_again_inside_a_box(server, lesion_volume):
    ct, volume_id, answer = lesion_volume
    centre = answer.lesions[0]["centroid_ras"]
    status, _, body = get(
        f"{server.url}/v1/volumes/{volume_id}/crop",
        {**bearer(server), "Content-Type": "application/json"},
        json.dumps({"roi": [centre, [40, 40, 40]]}).encode(),
    )
    assert status == 202, body
    client = server.client()
    cropped = json.loads(body)["volume_id"]
    wait_ready(client, cropped)
    inside = client.segment(cropped, "renal cyst")
    assert inside.labelmap.shape == ct.array.shape and inside.lesions
    status, _, body = get(
        f"{server.url}/v1/volumes/{volume_id}/crop",
        {**bearer(server), "Content-Type": "application/json"},
        b'{"roi": [[0, 0], [1]]}',
    )
    assert status == 400 and "'roi'" in json.loads(body)["detail"]
    client.delete(cropped)


def test_malenia_view_preloads_the_ct_and_prints_the_viewer_url(tmp_path):
    """`malenia view CT --no-browser`: a server of its own, the CT uploaded, the URL printed;
    Ctrl-C stops it and its engine."""
    ct = volume(5, shape=(24, 32, 32))
    path = tmp_path / "small_ct.nii.gz"
    sitk.WriteImage(ct.to_sitk(), str(path))
    env = {**os.environ, "PYTHONPATH": str(Path(malenia.__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "malenia.cli", "view", str(path), "--device", "cpu", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        # As a script's background job starts it: SIGINT ignored, inherited. Ctrl-C must
        # still stop it (Python alone would leave SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("Web viewer: ") or not line:
                break
        url = lines[-1].removeprefix("Web viewer: ").strip()
        assert url.startswith("http://127.0.0.1:") and "token=" in url, "".join(lines)
        query = parse_qs(urlparse(url).query)
        token, volume_id = query["token"][0], query["volume"][0]
        status, headers, _ = get(url)
        assert status == 303 and headers["Location"] == f"/?volume={volume_id}"
        base = url.split("/?")[0]
        status, _, body = get(
            f"{base}/v1/volumes/{volume_id}", {"Authorization": f"Bearer {token}"}
        )
        assert status == 200 and json.loads(body)["state"] in ("queued", "encoding", "ready")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 130
