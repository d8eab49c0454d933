"""The browser viewer end to end: a real `malenia serve` on 127.0.0.1 with the bundled weights,
Debian's Chromium driven by Playwright (WebGL2 on the CPU through SwiftShader), the bundled
sample CT. One server, one browser and one page for the whole module; the tests run in file
order, like a person using the page (cancel, load, query, slide, click, download)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from malenia.client import EngineProcess
from malenia.inference import default_weights_path
from malenia.paths import resource

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed (pip install .[test])"
)

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
PRESET = "Renal cyst"  # the sample CT holds a renal cyst
ENCODE_TIMEOUT_MS = 600_000


def chromium_path() -> str | None:
    """Debian's Chromium binary ($MALENIA_CHROMIUM first). The /usr/bin/chromium wrapper
    misbehaves headless, so the binary itself is launched."""
    for candidate in (os.environ.get("MALENIA_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


CHROMIUM = chromium_path()
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "Chromium is not installed (apt-get install -y chromium); .ci/run installs it in CI",
        allow_module_level=True,
    )
pytestmark = pytest.mark.skipif(
    not default_weights_path().is_file(), reason="bundled weights are not in this checkout"
)


@pytest.fixture(scope="module")
def server():
    process = EngineProcess(device="cpu", extra_args=["--threads", "2"])
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "CI needs Chromium: .ci/run installs it with apt-get install -y chromium"
    with playwright_api.sync_playwright() as driver:
        instance = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def page(server, browser):
    """The viewer, opened through the URL that carries the token, with a log of every request
    it makes. The page runs under its own Content-Security-Policy (test_page_* checks it);
    this context bypasses it only so that Playwright may evaluate test expressions."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    viewer = context.new_page()
    viewer.requests = []
    viewer.console_errors = []
    viewer.on("request", lambda request: viewer.requests.append(request.url))
    viewer.on("pageerror", lambda error: viewer.console_errors.append(str(error)))
    viewer.goto(f"{server.url}/?token={server.token}")
    viewer.wait_for_function("window.malenia && window.malenia.ready", timeout=120_000)
    assert viewer.url.rstrip("/") == server.url  # the token left the address bar
    yield viewer
    context.close()


def state(page, expression: str):
    return page.evaluate(f"window.malenia.state.{expression}")


def wait_encoded(page) -> None:
    page.wait_for_function(
        "['ready', 'failed', 'cancelled'].includes(window.malenia.state.volumeState)",
        timeout=ENCODE_TIMEOUT_MS,
    )
    assert state(page, "volumeState") == "ready", page.text_content("#error")


def run_and_wait(page, button: str) -> None:
    before = page.evaluate("window.malenia.state.result && window.malenia.state.result.result_id")
    page.click(button)
    page.wait_for_function(
        "(before) => (window.malenia.state.result && window.malenia.state.result.result_id !== "
        "before) || document.getElementById('error').textContent",
        arg=before,
        timeout=ENCODE_TIMEOUT_MS,
    )
    assert page.text_content("#error") == ""


def canvas_pixels(page) -> np.ndarray:
    """The WebGL canvas as RGB (WebGL pixels read back as 0, so a screenshot is the truth)."""
    from PIL import Image

    time.sleep(0.6)  # NiiVue draws on the next animation frame
    png = page.locator("#gl").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a - b).sum(axis=2) > 30).sum())


def overlay_pixels(page) -> int:
    """Screen pixels the overlay colours: the view with it, minus the view without it."""
    shown = canvas_pixels(page)
    page.uncheck("#show-overlay")
    hidden = canvas_pixels(page)
    page.check("#show-overlay")
    return changed_pixels(shown, hidden)


def test_cancel_during_encoding_leaves_the_page_usable(page):
    page.click("#load-sample")
    page.wait_for_function(
        "window.malenia.state.volumeState === 'encoding' && "
        "document.getElementById('progress').value > 0",
        timeout=120_000,
    )
    page.click("#cancel")
    page.wait_for_function("window.malenia.state.volumeState === 'cancelled'", timeout=60_000)
    assert "cancelled" in page.text_content("#info").lower()
    assert page.text_content("#error") == ""
    assert page.is_enabled("#load-sample") and page.is_enabled("#file")
    assert page.is_disabled("#run")  # nothing to segment: the encode was dropped


def test_sample_ct_loads_and_a_preset_shows_an_overlay_and_the_lesion_table(page, server):
    page.click("#load-sample")  # works again after the cancel
    page.wait_for_function("window.malenia.nv.volumes.length === 1", timeout=120_000)
    assert page.evaluate("Array.from(window.malenia.nv.volumes[0].hdr.dims).slice(1, 4)") == [
        122,
        101,
        112,
    ]
    page.select_option("#preset", PRESET)
    # A preset fills the rows with the organ it searches (both kidneys), not the
    # annotations' most frequent side.
    assert page.input_value("#attr-location") == "kidney"
    run_and_wait(page, "#run")  # waits for the encoding, then segments
    assert state(page, "volumeState") == "ready"
    lesions = state(page, "result.lesions")
    assert lesions, "the renal cyst preset found no lesion on the sample CT"
    rows = page.locator("#lesions tbody tr")
    assert rows.count() == len(lesions)
    assert rows.first.locator("td").first.text_content() == lesions[0]["name"]
    assert state(page, "overlayVoxels") > 0
    assert overlay_pixels(page) > 0
    assert page.is_visible("#info")
    # The table is the engine's answer: ask the same server through the API client.
    client = server.client()
    answer = client.segment(state(page, "volumeId"), PRESET)
    assert [lesion["name"] for lesion in answer.lesions] == [lesion["name"] for lesion in lesions]
    assert [lesion["volume_ml"] for lesion in answer.lesions] == [
        lesion["volume_ml"] for lesion in lesions
    ]
    if answer.extra.get("grounding_warning"):
        assert page.text_content("#warning") == answer.extra["grounding_warning"]


def test_views_are_in_radiological_convention(page):
    """A click on the axial view's screen right lands on the patient's left (smaller RAS x)."""
    assert page.evaluate("window.malenia.nv.opts.isRadiologicalConvention") is True
    tiles = page.evaluate(
        "window.malenia.nv.screenSlices.map(s => [s.axCorSag, s.leftTopWidthHeight])"
    )
    left, top, width, height = next(box for kind, box in tiles if kind == 0)  # axial
    ratio = page.evaluate("window.devicePixelRatio")
    box = page.locator("#gl").bounding_box()

    def click_x(fraction: float) -> float:
        page.mouse.click(
            box["x"] + (left + width * fraction) / ratio, box["y"] + (top + height / 2) / ratio
        )
        time.sleep(0.2)
        return page.evaluate(
            "Array.from(window.malenia.nv.frac2mm(window.malenia.nv.scene.crosshairPos))[0]"
        )

    assert click_x(0.75) < click_x(0.25)


def test_clicking_a_lesion_row_moves_the_crosshair_to_it(page):
    rows = page.locator("#lesions tbody tr")
    target = state(page, "result.lesions")[min(1, rows.count() - 1)]
    rows.nth(min(1, rows.count() - 1)).click()
    crosshair = page.evaluate(
        "Array.from(window.malenia.nv.frac2mm(window.malenia.nv.scene.crosshairPos)).slice(0, 3)"
    )
    assert np.allclose(crosshair, target["centroid_ras"], atol=3.0)  # within a 3 mm voxel
    if os.environ.get("MALENIA_VIEWER_SCREENSHOT"):  # how docs/viewer.png is made
        rows.first.click()
        time.sleep(0.6)
        page.screenshot(path=os.environ["MALENIA_VIEWER_SCREENSHOT"])


def test_the_slider_recuts_the_overlay_without_a_server_request(page):
    default = state(page, "result.threshold")
    assert page.locator("#threshold-marks option").first.get_attribute("value") == str(default)
    voxels_at_default = state(page, "overlayVoxels")
    before = canvas_pixels(page)
    requests_before = len(page.requests)
    page.fill("#threshold", "0.85")
    after = canvas_pixels(page)
    voxels_high = state(page, "overlayVoxels")
    low = round(max(0.06, default / 2), 2)  # below the calibrated default, above the floor
    page.fill("#threshold", str(low))
    voxels_low = state(page, "overlayVoxels")
    assert page.requests[requests_before:] == []  # re-cut in the browser only
    assert voxels_high < voxels_at_default < voxels_low
    assert changed_pixels(before, after) > 0
    assert page.text_content("#threshold-value") == f"{low:.2f}"
    page.fill("#threshold", str(default))
    assert state(page, "overlayVoxels") == voxels_at_default


def test_a_re_query_reuses_the_encoding_and_find_all_lists_lesions(page, server):
    encode_seconds = server.client().status(state(page, "volumeId"))["encode_seconds"]
    page.select_option("#preset", "Liver cancer")
    run_and_wait(page, "#run")
    assert "no re-encoding" in page.text_content("#run-status")
    run_and_wait(page, "#find")
    assert state(page, "result.mode") == "auto"
    assert page.locator("#lesions tbody tr").count() == len(state(page, "result.lesions"))
    assert server.client().status(state(page, "volumeId"))["encode_seconds"] == encode_seconds
    page.select_option("#preset", PRESET)
    run_and_wait(page, "#run")


@pytest.fixture(scope="module")
def engine_result():
    """The engine itself, in this process, on the same sample CT and preset."""
    from malenia.inference import Engine
    from malenia.io import read_volume

    engine = Engine.load(None, "cpu")
    encoded = engine.encode(read_volume(resource("SampleData", "sample_ct.nii.gz")))
    return encoded, encoded.segment(PRESET)


def download(page, selector: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.click(selector)
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def test_downloads_reopen_and_match_the_engines_own_labelmap(page, engine_result, tmp_path):
    encoded, expected = engine_result
    reference = sitk.ReadImage(str(resource("SampleData", "sample_ct.nii.gz")))
    page.fill("#threshold", str(expected.threshold))
    labelmap_path = download(page, "[data-download='labelmap.nii.gz']", tmp_path)
    seg_path = download(page, "[data-download='seg.nrrd']", tmp_path)
    report_path = download(page, "[data-download='report.json']", tmp_path)
    png_path = download(page, "#png", tmp_path)
    assert labelmap_path.name.endswith(".labelmap.nii.gz") and seg_path.name.endswith(".seg.nrrd")

    labelmap = sitk.ReadImage(str(labelmap_path))
    assert labelmap.GetSize() == reference.GetSize()
    assert np.allclose(labelmap.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(labelmap.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(labelmap), expected.labelmap)
    segmentation = sitk.ReadImage(str(seg_path))
    assert np.array_equal(sitk.GetArrayFromImage(segmentation), expected.labelmap)
    assert segmentation.GetMetaData("Segment0_Name") == expected.lesions[0].name
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert [lesion["name"] for lesion in report["lesions"]] == [
        lesion.name for lesion in expected.lesions
    ]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page.fill("#threshold", "0.7")  # the files follow the slider: re-cut by the engine
    labelmap = sitk.ReadImage(str(download(page, "[data-download='labelmap.nii.gz']", tmp_path)))
    assert np.array_equal(sitk.GetArrayFromImage(labelmap), encoded.recut(expected, 0.7).labelmap)
    page.fill("#threshold", str(expected.threshold))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.nii.gz", b"\x1f\x8b\x08\x00" + b"not really a gzip stream" * 10),
        ("series.zip", b"PK\x03\x04 this zip is cut off"),
        ("notes.txt", b"hello"),
    ],
)
def test_a_corrupt_upload_shows_an_error_message(page, name, content):
    page.evaluate("document.getElementById('error').textContent = ''")
    page.set_input_files(
        "#file", files=[{"name": name, "mimeType": "application/octet-stream", "buffer": content}]
    )
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    message = page.text_content("#error")
    assert "Traceback" not in message and len(message) > 20
    assert page.is_visible("#error") and page.is_enabled("#load-sample")


def test_page_runs_under_its_csp_and_fetches_nothing_from_outside(page, server, browser):
    context = browser.new_context(viewport={"width": 900, "height": 700})
    strict = context.new_page()
    errors: list[str] = []
    strict.on("pageerror", lambda error: errors.append(str(error)))
    strict.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    strict.goto(f"{server.url}/?token={server.token}")
    # A function, not an expression: Playwright evals an expression inside the page, which
    # the page's CSP (no unsafe-eval) rightly refuses once the page has loaded.
    strict.wait_for_function(
        "() => Boolean(window.malenia && window.malenia.ready)", timeout=120_000
    )
    assert strict.text_content("#error") == "" and errors == []
    assert "connecting" not in strict.text_content("#model")
    context.close()
    outside = [url for url in page.requests if not url.startswith((server.url, "blob:", "data:"))]
    assert outside == [] and page.console_errors == []
