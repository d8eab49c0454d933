"""The engine server on 127.0.0.1 with the real engine and the bundled weights, reached
through raw HTTP and through the stdlib client: auth, limits, malformed input, geometry,
concurrency, cancellation, the full queue (503) and the memory-bounded LRU cache."""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import threading
import urllib.error
import urllib.request
from urllib.parse import urlparse

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from malenia.client import EngineBusyError, EngineHTTPClient, EngineProcess, EngineRequestError
from malenia.errors import CancelledError, EngineUnavailableError, MaleniaError
from malenia.inference import default_weights_path
from malenia.io import CTVolume
from malenia.synth import make_phantom, make_sample

pytestmark = pytest.mark.skipif(
    not default_weights_path().is_file(), reason="bundled weights are not in this checkout"
)

SPACING = (2.0, 2.0, 2.0)  # the tiny model's own spacing: no resampling in the tests
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # IJK-to-RAS of a volume at SPACING
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def phantom(seed: int, shape=(48, 48, 48), lesion: str | None = None) -> np.ndarray:
    """A small synthetic abdomen; with ``lesion``, one lesion of that category rendered in it
    (which the bundled model, asked for that category, finds)."""
    if lesion is None:
        return make_phantom(seed, shape=shape, spacing=SPACING).ct.astype(np.int16)
    for attempt in range(20):
        sample = make_sample(seed * 100 + attempt, (lesion,), shape, SPACING, max_lesions=1)
        if sample.lesions:
            return sample.ct.astype(np.int16)
    raise AssertionError(f"no {lesion} could be placed in a {shape} volume")


def volume(
    seed: int, shape=(48, 48, 48), spacing=SPACING, direction=IDENTITY, lesion=None
) -> CTVolume:
    array = phantom(seed, shape, lesion)
    return CTVolume(array, spacing, (-40.0, 12.0, 300.0), direction, f"p{seed}")


@pytest.fixture(scope="module")
def server():
    process = EngineProcess(
        device="cpu", extra_args=["--max-upload-mb", "2", "--queue-size", "16", "--threads", "2"]
    )
    process.start()
    yield process
    close_and_check(process)


@pytest.fixture(scope="module")
def small_server():
    """Room for one waiting volume and about two encoded 48^3 volumes."""
    process = EngineProcess(
        device="cpu",
        extra_args=["--queue-size", "1", "--cache-mb", "36", "--max-upload-mb", "8"],
    )
    process.start()
    yield process
    close_and_check(process)


def close_and_check(process: EngineProcess) -> None:
    """Stopping the manager ends the server and removes its token file and folder."""
    pid = process.pid
    process.close()
    assert pid is None or not psutil.pid_exists(pid)
    assert not process.token_file.exists() and not process.folder.exists()


def raw(server, method, path, data=None, token=None, headers=None):
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}"), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), error.headers


def array_headers(shape, ijk_to_ras=None, **extra) -> dict:
    headers = {
        "Content-Type": "application/x-malenia-array",
        "X-Shape": ",".join(map(str, shape)),
        "X-Dtype": "<i2",
    }
    if ijk_to_ras is not None:
        headers["X-Ijk-To-Ras"] = json.dumps(np.asarray(ijk_to_ras).ravel().tolist())
    headers.update(extra)
    return headers


# ---------------------------------------------------------------------- security
def test_health_is_open_and_reveals_nothing(server):
    status, payload, _ = raw(server, "GET", "/v1/health")
    assert status == 200 and payload == {"status": "ok", "api": "v1"}


def test_token_is_required_everywhere_else(server):
    for token in (None, "wrong", server.token[:-1]):
        status, payload, headers = raw(server, "GET", "/v1/info", token=token)
        assert status == 401 and "token" in payload["detail"]
        assert headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = raw(server, "GET", "/v1/info", headers={"Authorization": server.token})
    assert status == 401  # the token without the Bearer scheme
    status, _, _ = raw(server, "POST", "/v1/volumes", b"x", token="wrong")
    assert status == 401
    status, _, _ = raw(server, "DELETE", "/v1/volumes/abc", token=None)
    assert status == 401
    status, info, _ = raw(server, "GET", "/v1/info", token=server.token)
    assert status == 200 and "renal cyst" in [p["category"] for p in info["presets"]]
    assert "left kidney" in info["vocabulary"]["location"] and info["model_card"]["sha256"]
    status, schema, _ = raw(server, "GET", "/v1/openapi.json")
    assert status == 200 and "/v1/volumes/{volume_id}/segment" in schema["paths"]


def test_token_file_is_private(server):
    mode = stat.S_IMODE(os.stat(server.token_file).st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(os.stat(server.token_file.parent).st_mode) == 0o700
    content = json.loads(server.token_file.read_text(encoding="utf-8"))
    assert content["token"] == server.token and content["url"] == server.url
    assert urlparse(server.url).hostname == "127.0.0.1"


# ---------------------------------------------------------------------- bad input
def test_oversized_upload_gets_413(server):
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", "/v1/volumes")
    headers = array_headers((64, 128, 192), np.diag([2.0, 2.0, 2.0, 1.0]))
    headers.update({"Authorization": f"Bearer {server.token}", "Content-Length": str(3 << 20)})
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()  # 3 MB announced > the 2 MB limit: answered from the headers
    response = connection.getresponse()
    assert response.status == 413 and "upload limit" in json.loads(response.read())["detail"]
    connection.close()
    # No Content-Length (chunked): refused once the streamed bytes pass the limit.
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    chunks = (b"\0" * (256 << 10) for _ in range(12))
    connection.request(
        "POST",
        "/v1/volumes",
        body=chunks,
        headers={"Authorization": f"Bearer {server.token}", **array_headers((48, 256, 256))},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 413
    connection.close()
    client = EngineHTTPClient(server.url, server.token)
    with pytest.raises(MaleniaError, match="upload limit"):
        client.upload(np.zeros((64, 128, 192), np.int16), np.eye(4))


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (b"definitely not nifti", {"X-Format": "nifti"}, "Cannot read"),
        (b"\x00" * 400, {}, "neither a raw array"),
        (b"NRRD0004\ntype: garbage\n\n", {}, "Cannot read"),
        (np.zeros((4, 4, 4), np.int16).tobytes(), {"_array": (4, 4, 4)}, "constant"),
        (b"123", {"_array": (9, 9, 9)}, "needs 1458"),
        (np.zeros((4, 4), np.int16).tobytes(), {"_array": (4, 4)}, "3D shape"),
        (phantom(0, (8, 8, 8)).tobytes(), {"_array": (8, 8, 8), "_geometry": False}, "geometry"),
        (
            phantom(0, (8, 8, 8)).tobytes(),
            {"_array": (8, 8, 8), "X-Spacing": "1,0,1", "X-Origin": "0,0,0"},
            "positive",
        ),
        (
            phantom(0, (8, 8, 8)).astype(np.complex64).tobytes(),
            {"_array": (8, 8, 8), "X-Dtype": "<c8"},
            "not a CT voxel type",
        ),
        (b"", {"X-Format": "nrrd"}, "empty"),
    ],
)
def test_corrupt_or_malformed_volume_gets_a_readable_400(server, body, headers, expected):
    headers = dict(headers)
    if "_array" in headers:
        geometry = headers.pop("_geometry", True) and "X-Spacing" not in headers
        headers = {
            **array_headers(
                headers.pop("_array"), np.diag([2.0, 2.0, 2.0, 1.0]) if geometry else None
            ),
            **headers,
        }
    else:
        headers.setdefault("Content-Type", "application/octet-stream")
    status, payload, _ = raw(server, "POST", "/v1/volumes", body, server.token, headers)
    assert status == 400, payload
    assert expected in payload["detail"]


def test_malformed_queries_get_a_readable_400(server):
    client = EngineHTTPClient(server.url, server.token)
    volume_id = client.encode(phantom(1), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(EngineRequestError, match="400.*Allowed values") as error:
        client.segment(volume_id, {"density": "sparkly"})
    assert error.value.status == 400
    with pytest.raises(EngineRequestError, match="400.*threshold"):
        client.segment(volume_id, "renal cyst", 1.5)
    with pytest.raises(EngineRequestError, match="400.*query"):
        client.segment(volume_id, "  ")
    path = f"/v1/volumes/{volume_id}/segment"
    status, payload, _ = raw(
        server, "POST", path, b"{not json", server.token, {"Content-Type": "application/json"}
    )
    assert status == 400 and "Malformed request" in payload["detail"]
    with pytest.raises(EngineRequestError, match="404.*result_id"):
        client.recut(volume_id, "r999", 0.5)
    with pytest.raises(EngineRequestError, match="404.*upload it again"):
        client.segment("no-such-volume", "renal cyst")
    client.delete(volume_id)
    with pytest.raises(EngineRequestError, match="404"):
        client.status(volume_id)


# ---------------------------------------------------------------------- results
def test_every_upload_form_lands_on_the_input_grid(server, tmp_path):
    """Raw array + IJK-to-RAS, raw array + LPS geometry, and an NRRD file give the same
    labelmap and lesions, on the uploaded grid (oblique-free but flipped, anisotropic)."""
    ct = volume(
        2, (40, 48, 44), spacing=(2.0, 1.8, 2.2), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1),
        lesion="renal cyst",
    )  # fmt: skip
    client = EngineHTTPClient(server.url, server.token)
    by_matrix = client.upload(ct.array, ct.ijk_to_ras())
    by_geometry = client.upload(
        ct.array, spacing=ct.spacing, origin=ct.origin, direction=ct.direction
    )
    sitk.WriteImage(ct.to_sitk(), str(tmp_path / "ct.nrrd"))
    by_file = client.upload_file(tmp_path / "ct.nrrd")
    results = []
    for volume_id in (by_matrix, by_geometry, by_file):
        client.wait(volume_id)
        result = client.segment(volume_id, "renal cyst")  # the weights' calibrated threshold
        assert result.labelmap.shape == ct.array.shape and result.labelmap.dtype == np.int16
        results.append(result)
        recut = client.recut(volume_id, result.result_id, 0.9)
        assert (recut.labelmap > 0).sum() <= (result.labelmap > 0).sum()
    assert (results[0].labelmap > 0).any(), "the bundled model should find something here"
    for result in results[1:]:
        np.testing.assert_array_equal(result.labelmap, results[0].labelmap)
        assert result.lesions == results[0].lesions
    found = client.find_lesions(by_file, 0.5)
    assert found.labelmap.shape == ct.array.shape


def test_eight_concurrent_clients_each_get_their_own_result(server):
    """Eight clients upload, wait and query at once (two per phantom, each with its own
    upload); each answer equals the one the server gives that phantom alone afterwards,
    and the phantoms' answers differ from each other. Queries use the model's calibrated
    threshold, the answer a user gets (at a fixed 0.5 some weights leave a phantom empty,
    and empty answers cannot tell the clients apart)."""
    results, errors = {}, []

    def run(client_index: int) -> None:
        try:
            client = EngineHTTPClient(server.url, server.token)
            volume_id = client.encode(phantom(10 + client_index % 4, lesion="liver cancer"), AFFINE)
            results[client_index] = client.segment(volume_id, "liver cancer")
            client.delete(volume_id)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors, errors
    assert sorted(results) == list(range(8))
    alone = EngineHTTPClient(server.url, server.token)
    masks = []
    for seed in range(4):
        volume_id = alone.encode(phantom(10 + seed, lesion="liver cancer"), AFFINE)
        expected = alone.segment(volume_id, "liver cancer")
        alone.delete(volume_id)
        for client_index in (seed, seed + 4):
            result = results[client_index]
            np.testing.assert_array_equal(
                result.labelmap, expected.labelmap, err_msg=f"client {client_index}"
            )
            assert result.lesions == expected.lesions
        masks.append(expected.labelmap > 0)
    assert all(m.any() for m in masks), "empty masks cannot tell the clients apart"
    assert len({m.tobytes() for m in masks}) == 4, "the phantoms' answers should differ"


def test_cancel_during_encode_stops_the_work_and_frees_the_slot(server):
    client = EngineHTTPClient(server.url, server.token)

    class Token:
        cancelled = False

    token = Token()
    seen = []

    def progress(stage, done, total):
        seen.append((done, total))
        token.cancelled = True  # the user presses Cancel as soon as encoding is under way

    big = phantom(3, (96, 96, 96))  # 8 model windows
    volume_id = client.upload(big, np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(CancelledError):
        client.wait(volume_id, progress=progress, cancel=token, poll=0.05)
    state = client.status(volume_id)
    for _ in range(200):
        if state["state"] == "cancelled":
            break
        state = client.status(volume_id)
        threading.Event().wait(0.05)
    assert state["state"] == "cancelled"
    done, total = state["progress"]
    assert total == 8 and done < total, "the encode should have stopped before its last window"
    queue = client.info()["queue"]
    assert queue["encoding"] is None and queue["waiting"] == 0
    assert state["memory_bytes"] == 0
    volume_id = client.encode(phantom(4), np.diag([2.0, 2.0, 2.0, 1.0]))  # the worker is free
    assert client.status(volume_id)["state"] == "ready"


def test_full_queue_answers_503_with_retry_after_and_cancel_frees_it(small_server):
    client = EngineHTTPClient(small_server.url, small_server.token, busy_wait_s=0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    big = phantom(5, (96, 96, 96))
    running = client.upload(big, affine)
    waiting = client.upload(big + 1, affine)
    status, payload, headers = raw(
        small_server,
        "POST",
        "/v1/volumes",
        big.tobytes(),
        small_server.token,
        array_headers(big.shape, affine),
    )
    assert status == 503 and "busy" in payload["detail"] and int(headers["Retry-After"]) > 0
    with pytest.raises(EngineBusyError):
        client.upload(big, affine)
    assert client.cancel(waiting)["state"] == "cancelled"  # off the list at once
    third = client.upload(big + 2, affine)
    for volume_id in (running, third):
        client.cancel(volume_id)
    for volume_id in (running, third):
        with pytest.raises(CancelledError):
            client.wait(volume_id, poll=0.05)


def test_encoded_volumes_are_an_lru_cache_within_the_memory_budget(small_server):
    client = EngineHTTPClient(small_server.url, small_server.token)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    first = client.encode(phantom(6), affine)
    size = client.status(first)["memory_bytes"]
    budget = client.info()["queue"]["memory_budget_bytes"]
    assert 2.2 * size < budget < 2.9 * size, (size, budget)  # room for two, not three
    second = client.encode(phantom(7), affine)
    client.segment(first, "renal cyst")  # first is now the most recently used
    third = client.encode(phantom(8), affine)
    with pytest.raises(EngineRequestError, match="404.*memory budget"):
        client.status(second)
    assert client.segment(first, "renal cyst").labelmap.shape == (48, 48, 48)
    assert client.segment(third, "renal cyst").labelmap.shape == (48, 48, 48)
    queue = client.info()["queue"]
    assert queue["cache_bytes"] <= budget and queue["evicted"] >= 1


def test_killed_server_gives_a_clear_error_and_the_restart_serves(small_server):
    """Runs last on small_server: kill it mid-encode, then the manager brings it back."""
    client = small_server.client()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    volume_id = client.upload(phantom(9, (96, 96, 96)), affine)
    errors = []

    def waiting_client() -> None:
        try:
            client.wait(volume_id, poll=0.05)
        except Exception as error:  # asserted below
            errors.append(error)

    thread = threading.Thread(target=waiting_client)
    thread.start()
    while client.status(volume_id)["state"] != "encoding":
        threading.Event().wait(0.05)
    old_pid = small_server.pid
    os.kill(old_pid, signal.SIGKILL)
    small_server.popen.wait(timeout=10)
    thread.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], EngineUnavailableError), errors
    assert "not reachable" in str(errors[0]) and "restarted" in str(errors[0])
    assert small_server.ensure() is True and small_server.restarts == 1
    assert small_server.pid != old_pid and not psutil.pid_exists(old_pid)
    client = small_server.client()
    with pytest.raises(EngineRequestError, match="404.*upload it again"):
        client.status(volume_id)  # the new process does not know the old volume: says so
    result = client.segment(client.encode(phantom(4), affine), "renal cyst")
    assert result.labelmap.shape == (48, 48, 48)
    assert small_server.ensure() is False  # healthy: left alone


def test_a_query_without_threshold_gets_the_models_calibrated_default(server):
    client = EngineHTTPClient(server.url, server.token)
    info = client.info()
    default = info["default_threshold"]
    assert 0.0 < default < 1.0
    assert info["anatomy_grounding"] is True  # the bundled weights have a location head
    assert info["organ_maps"] == "location head"  # the astra extra is opt-in
    volume_id = client.encode(phantom(1), np.diag([2.0, 2.0, 2.0, 1.0]))
    from malenia.attributes import get_preset

    answer = client.segment(volume_id, "renal cyst")
    assert answer.threshold == default
    assert answer.extra["grounded_in"] == get_preset("renal cyst").query_description.location
    assert answer.extra["grounding_warning"] is None  # the phantom's kidney was found
    assert client.segment(volume_id, "renal cyst", 0.65).threshold == 0.65
