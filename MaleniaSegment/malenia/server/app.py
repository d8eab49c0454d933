"""The local engine server (FastAPI). Versioned under /v1; every route but /v1/health needs
`Authorization: Bearer <token>`.

    POST   /v1/volumes                 upload (raw array + geometry, or NIfTI/NRRD bytes) -> 202
    GET    /v1/volumes/{id}            state and progress of the background encode
    POST   /v1/volumes/{id}/segment    {"query": preset | text | {attributes}, "threshold"}
    POST   /v1/volumes/{id}/recut      {"result_id", "threshold"}
    POST   /v1/volumes/{id}/find       {"threshold"}
    POST   /v1/volumes/{id}/cancel
    DELETE /v1/volumes/{id}
    GET    /v1/info                    model card, vocabulary, presets, device
"""

from __future__ import annotations

import base64
import hmac
import json
import tempfile
import zlib
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from malenia.errors import MaleniaError
from malenia.server.jobs import QueueFull, VolumeStore

API = "/v1"


def create_app(
    engine,
    token: str,
    max_upload_bytes: int = 2 << 30,
    queue_size: int = 8,
    memory_budget_bytes: int = 3 << 30,
) -> FastAPI:
    app = FastAPI(
        title="MaleniaSegment engine",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
    )
    store = VolumeStore(engine, queue_size, memory_budget_bytes)
    app.state.store = store

    def authorised(request: Request) -> None:
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given, token):
            raise HTTPException(
                401,
                "Missing or wrong token: send 'Authorization: Bearer <token>' from the server's token file.",
            )

    @app.exception_handler(MaleniaError)
    async def malenia_error(request: Request, error: MaleniaError):
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.get(f"{API}/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get(f"{API}/info", dependencies=[Depends(authorised)])
    def info() -> dict:
        from malenia.attributes import ATTRIBUTE_KEYS, load_presets, load_vocabulary

        vocabulary = load_vocabulary()
        return {
            "model_id": engine.model_id,
            "model_card": engine.card,
            "device": engine.device_note,
            "max_upload_bytes": max_upload_bytes,
            "vocabulary": {k: vocabulary.values(k) for k in ATTRIBUTE_KEYS},
            "presets": [p.to_dict() for p in load_presets().values()],
        }

    @app.post(f"{API}/volumes", status_code=202, dependencies=[Depends(authorised)])
    async def upload(request: Request) -> dict:
        length = int(request.headers.get("content-length") or 0)
        if length > max_upload_bytes:
            raise HTTPException(
                413,
                f"Upload of {length} bytes exceeds the server limit of {max_upload_bytes} bytes; crop the volume or raise --max-upload-mb.",
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_upload_bytes:
                raise HTTPException(
                    413, f"Upload exceeds the server limit of {max_upload_bytes} bytes."
                )
        volume = _parse_volume(request.headers, bytes(body))
        roi = json.loads(request.headers["x-roi"]) if request.headers.get("x-roi") else None
        try:
            entry = store.submit(volume, roi)
        except QueueFull:
            raise HTTPException(
                503,
                "The engine is busy (encode queue full); retry shortly.",
                headers={"Retry-After": "5"},
            ) from None
        return entry.status()

    def entry_or_404(volume_id: str):
        entry = store.get(volume_id)
        if entry is None:
            raise HTTPException(
                404,
                f"Unknown volume {volume_id} (deleted, evicted from the cache, or the server restarted): upload it again.",
            )
        return entry

    def ready(volume_id: str):
        entry = entry_or_404(volume_id)
        if entry.state != "ready":
            raise HTTPException(
                409,
                f"Volume {volume_id} is {entry.state}{': ' + entry.error if entry.error else ''}; segment it once it is ready.",
            )
        return entry

    @app.get(f"{API}/volumes/{{volume_id}}", dependencies=[Depends(authorised)])
    def status(volume_id: str) -> dict:
        return entry_or_404(volume_id).status()

    @app.post(f"{API}/volumes/{{volume_id}}/segment", dependencies=[Depends(authorised)])
    def segment(volume_id: str, body: dict) -> dict:
        entry = ready(volume_id)
        threshold = float(body.get("threshold", 0.5))
        if "query" not in body:
            raise HTTPException(
                400, "Body needs 'query': a preset name, free text, or an attribute object."
            )
        with entry.lock:
            result = entry.encoded.segment(body["query"], threshold)
            return _result_payload(entry, result)

    @app.post(f"{API}/volumes/{{volume_id}}/recut", dependencies=[Depends(authorised)])
    def recut(volume_id: str, body: dict) -> dict:
        entry = ready(volume_id)
        previous = entry.results.get(body.get("result_id", ""))
        if previous is None:
            raise HTTPException(404, "Unknown result_id: run segment first.")
        with entry.lock:
            return _result_payload(
                entry, entry.encoded.recut(previous, float(body.get("threshold", 0.5)))
            )

    @app.post(f"{API}/volumes/{{volume_id}}/find", dependencies=[Depends(authorised)])
    def find(volume_id: str, body: dict | None = None) -> dict:
        entry = ready(volume_id)
        with entry.lock:
            return _result_payload(
                entry, entry.encoded.find_lesions(float((body or {}).get("threshold", 0.5)))
            )

    @app.post(f"{API}/volumes/{{volume_id}}/cancel", dependencies=[Depends(authorised)])
    def cancel(volume_id: str) -> dict:
        entry = store.cancel(volume_id)
        if entry is None:
            raise HTTPException(404, f"Unknown volume {volume_id}.")
        return entry.status()

    @app.delete(f"{API}/volumes/{{volume_id}}", dependencies=[Depends(authorised)])
    def delete(volume_id: str) -> dict:
        if not store.delete(volume_id):
            raise HTTPException(404, f"Unknown volume {volume_id}.")
        return {"deleted": volume_id}

    return app


def _result_payload(entry, result) -> dict:
    result_id = f"r{len(entry.results) + 1}"
    entry.results[result_id] = result
    labelmap = np.ascontiguousarray(result.labelmap.astype(np.int16))
    payload = result.to_dict()
    payload.update({
        "result_id": result_id,
        "shape": list(labelmap.shape),
        "dtype": "int16",
        "mask_zlib_b64": base64.b64encode(zlib.compress(labelmap.tobytes(), 3)).decode(),
    })  # fmt: skip
    return payload


def _parse_volume(headers, body: bytes):
    """Raw array + geometry headers, or a NIfTI / NRRD file body -> validated CTVolume."""
    from malenia.io import CTVolume, read_volume, validate_ct

    kind = headers.get("content-type", "")
    try:
        if kind.startswith("application/x-malenia-array"):
            shape = [int(v) for v in headers["x-shape"].split(",")]
            array = np.frombuffer(body, dtype=np.dtype(headers.get("x-dtype", "int16"))).reshape(
                shape
            )
            matrix = np.array(json.loads(headers["x-ijk-to-ras"]), dtype=float).reshape(4, 4)
            volume = CTVolume.from_ijk_to_ras(array.copy(), matrix, "upload")
            validate_ct(volume)
            return volume
        suffix = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}.get(
            headers.get("x-format", "nifti"), ".nii.gz"
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(body)
            return read_volume(path)
    except MaleniaError as error:
        raise HTTPException(400, str(error)) from error
    except (KeyError, ValueError, TypeError) as error:
        raise HTTPException(
            400,
            f"Malformed upload ({error}). Send X-Shape, X-Dtype and X-Ijk-To-Ras with a raw array, or a NIfTI/NRRD file with X-Format.",
        ) from error
