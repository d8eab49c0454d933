"""The engine server on 127.0.0.1 with the real engine, through the stdlib client."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import psutil
import pytest
import torch
from malenia.client import EngineHTTPClient, EngineProcess
from malenia.errors import CancelledError, EngineUnavailableError, MaleniaError
from malenia.model import MaleniaNet
from malenia.weights import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_weights(
        MaleniaNet(), tmp_path_factory.mktemp("w") / "tiny.safetensors", {"name": "malenia-test"}
    )


@pytest.fixture(scope="module")
def server(weights):
    process = EngineProcess(
        weights=str(weights),
        device="cpu",
        extra_args=["--max-upload-mb", "2", "--queue-size", "16"],
    )
    process.start()
    yield process
    process.stop()
    assert (
        not psutil.pid_exists(process.pid or -1)
        or psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE
    )


def body(shape=(30, 40, 40), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000, np.int16)
    array[:, 4:-4, 4:-4] = 40 + rng.normal(0, 10, (shape[0], shape[1] - 8, shape[2] - 8)).astype(
        np.int16
    )
    array[10:18, 12:22, 12:22] = -5 + seed
    return array


AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def raw_request(server, method, path, data=None, token=None, headers=None):
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_token_is_required(server):
    assert raw_request(server, "GET", "/v1/health")[0] == 200
    assert raw_request(server, "GET", "/v1/info")[0] == 401
    assert raw_request(server, "GET", "/v1/info", token="wrong")[0] == 401
    status, info = raw_request(server, "GET", "/v1/info", token=server.token)
    assert status == 200 and "renal cyst" in [p["category"] for p in info["presets"]]
    assert raw_request(server, "GET", "/v1/openapi.json")[0] == 200


def test_oversized_upload_gets_413(server):
    import http.client
    from urllib.parse import urlparse

    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    size = 3 << 20  # 3 MB > the 2 MB limit: the server answers from the headers alone
    connection.putrequest("POST", "/v1/volumes")
    for key, value in {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/x-malenia-array",
        "Content-Length": str(size),
        "X-Shape": "64,128,192",
        "X-Dtype": "<i2",
        "X-Ijk-To-Ras": json.dumps(AFFINE.ravel().tolist()),
    }.items():
        connection.putheader(key, value)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["detail"]
    connection.close()
    client = EngineHTTPClient(server.url, server.token)
    with pytest.raises(MaleniaError, match="upload limit"):
        client.upload(np.zeros((64, 128, 192), np.int16), AFFINE)


def test_corrupt_and_malformed_volumes_get_400(server):
    status, payload = raw_request(
        server,
        "POST",
        "/v1/volumes",
        b"definitely not nifti",
        server.token,
        {"Content-Type": "application/octet-stream", "X-Format": "nifti"},
    )
    assert status == 400 and "Cannot read" in payload["detail"]
    status, payload = raw_request(
        server,
        "POST",
        "/v1/volumes",
        np.zeros((4, 4, 4), np.int16).tobytes(),
        server.token,
        {
            "Content-Type": "application/x-malenia-array",
            "X-Shape": "4,4,4",
            "X-Dtype": "<i2",
            "X-Ijk-To-Ras": json.dumps(AFFINE.ravel().tolist()),
        },
    )
    assert status == 400 and "constant" in payload["detail"]
    status, payload = raw_request(
        server,
        "POST",
        "/v1/volumes",
        b"123",
        server.token,
        {"Content-Type": "application/x-malenia-array", "X-Shape": "9,9,9", "X-Dtype": "<i2"},
    )
    assert status == 400 and "Malformed" in payload["detail"]


def test_eight_concurrent_clients_get_their_own_results(server, weights):
    from malenia.inference import Engine
    from malenia.io import CTVolume

    local = Engine.load(weights, device="cpu")
    results, errors = {}, []

    def run(seed):
        try:
            client = EngineHTTPClient(server.url, server.token)
            shape = (24 + 2 * seed, 36, 36)
            volume_id = client.encode(body(shape, seed), AFFINE)
            results[seed] = (shape, client.segment(volume_id, "renal cyst", 0.5))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == 8
    for seed, (shape, result) in results.items():
        assert result.labelmap.shape == shape
        expected = local.encode(CTVolume.from_ijk_to_ras(body(shape, seed), AFFINE)).segment(
            "renal cyst", 0.5
        )
        assert (result.labelmap == expected.labelmap).mean() > 0.999


def test_cancel_during_encode_frees_the_slot(server):
    client = EngineHTTPClient(server.url, server.token)

    class Token:
        cancelled = False

    token = Token()

    def progress(stage, done, total):
        token.cancelled = True

    with pytest.raises(CancelledError):
        client.encode(body((80, 80, 120)), AFFINE, progress=progress, cancel=token)
    volume_id = client.encode(body(), AFFINE)  # the worker is free again
    assert client.status(volume_id)["state"] == "ready"


def test_killed_server_gives_a_clear_error_and_restart_serves(weights):
    process = EngineProcess(weights=str(weights), device="cpu")
    process.start()
    client = EngineHTTPClient(process.url, process.token)
    volume_id = client.upload(body((80, 80, 120)), AFFINE)
    pid = process.pid
    psutil.Process(pid).kill()
    with pytest.raises(EngineUnavailableError, match="not reachable"):
        client.wait(volume_id)
    assert not process.alive()
    process.start()
    restarted = EngineHTTPClient(process.url, process.token)
    assert restarted.segment(restarted.encode(body(), AFFINE), "renal cyst").labelmap.shape == (
        30,
        40,
        40,
    )
    process.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unknown_query_is_a_readable_400(server):
    client = EngineHTTPClient(server.url, server.token)
    volume_id = client.encode(body(), AFFINE)
    with pytest.raises(MaleniaError, match="400.*Allowed values"):
        client.segment(volume_id, {"density": "sparkly"})
