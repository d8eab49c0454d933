"""The engine server (FastAPI). Versioned under /v1; every route but /v1/health needs
`Authorization: Bearer <token>` (the token is in the server's private token file).

    GET    /v1/health                  liveness only (no model, paths or token details)
    GET    /v1/info                    model card, vocabulary, presets, device, queue, cache
    POST   /v1/volumes                 upload (raw array + geometry, or NIfTI/NRRD/MHA) -> 202
    GET    /v1/volumes/{id}            state and progress of the background encode
    POST   /v1/volumes/{id}/segment    {"query": preset | free text | {attributes}, "threshold"}
    POST   /v1/volumes/{id}/recut      {"result_id", "threshold"}
    POST   /v1/volumes/{id}/find       {"threshold"}   (all lesions + predicted attributes)
    POST   /v1/volumes/{id}/cancel
    GET    /v1/volumes/{id}/results/{result_id}/dicom-seg   DICOM SEG of a result (DICOM uploads)
    DELETE /v1/volumes/{id}
    GET    /v1/openapi.json, /v1/docs

Errors are JSON `{"detail": message}`: 400 malformed input, 401 token, 404 unknown volume,
409 not encoded yet (or no DICOM references), 413 body too large (every request: uploads up
to --max-upload-mb, JSON bodies up to MAX_JSON_BYTES), 503 (+ Retry-After) encode queue full.
Segment/find answers carry the labelmap as zlib + base64 int16 (see backend.result_payload).
"""

from __future__ import annotations

import hmac
import math
import time

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from malenia.attributes import resolve_query
from malenia.errors import MaleniaError
from malenia.server.backend import EngineBackend, result_payload
from malenia.server.jobs import QueueFull, VolumeEntry, VolumeStore
from malenia.server.uploads import parse_upload
from malenia.viewer.routes import create_router

API = "/v1"
RETRY_AFTER_S = 5
# Every body but an upload is a small JSON object (a query, a threshold): a larger one is a
# mistake or an attack, refused before it is read.
MAX_JSON_BYTES = 64 << 10
UPLOAD_PATHS = (f"{API}/volumes", f"{API}/volumes/archive")  # the viewer's zip upload too


class BodyLimit:
    """ASGI middleware: one body-size limit for every request, checked on Content-Length
    before the body is read and counted while it streams (chunked bodies declare nothing).
    Uploads (POST to UPLOAD_PATHS) may carry ``upload_bytes`` (the route streams and
    counts them); everything else MAX_JSON_BYTES, read here."""

    def __init__(self, app, upload_bytes: int) -> None:
        self.app, self.upload_bytes = app, upload_bytes

    def limit(self, scope) -> int:
        upload = scope.get("method") == "POST" and scope.get("path", "").rstrip("/") in UPLOAD_PATHS
        return self.upload_bytes if upload else MAX_JSON_BYTES

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number.")
                return
            if length > limit:
                await _reply(send, 413, _too_large(length, limit, scope))
                return
        if limit == MAX_JSON_BYTES:
            # Small bodies are read here, whole, so an oversized chunked one gets its 413
            # (FastAPI would turn an error raised while it parses the body into a 400).
            messages, received = [], 0
            while True:
                message = await receive()
                messages.append(message)
                if message.get("type") != "http.request":
                    break
                received += len(message.get("body", b""))
                if received > limit:
                    await _reply(send, 413, _too_large(received, limit, scope))
                    return
                if not message.get("more_body", False):
                    break

            async def replay():
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)  # an upload: the route counts while it reads


async def _reply(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}, ensure_ascii=False).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    backend: EngineBackend,
    token: str,
    max_upload_bytes: int = 2 << 30,
    queue_size: int = 8,
    memory_budget_bytes: int = 3 << 30,
    max_volume_bytes: int | None = None,
) -> FastAPI:
    """The app; ``max_volume_bytes``: memory one uploaded volume may need to be segmented
    (checked on the declared size before the volume is allocated; default: half the RAM)."""
    if len(token) < 16:
        raise MaleniaError("The server token must be at least 16 characters.")
    app = FastAPI(
        title="MaleniaSegment engine",
        version="1",
        description=__doc__,
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    store = VolumeStore(backend, queue_size, memory_budget_bytes)
    app.state.store = store
    app.add_middleware(BodyLimit, upload_bytes=max_upload_bytes)

    def authorised(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise HTTPException(
                401,
                "Missing or wrong token: send 'Authorization: Bearer <token>' with the token "
                "from the server's token file.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(MaleniaError)
    async def malenia_error(request: Request, error: MaleniaError):
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in error.errors()
        )
        return JSONResponse(
            {"detail": f"Malformed request ({problems}). See {API}/docs for the expected body."},
            status_code=400,
        )

    @app.get(f"{API}/health")
    def health() -> dict:
        return {"status": "ok", "api": "v1"}

    @app.get(f"{API}/info", dependencies=[Depends(authorised)])
    def info() -> dict:
        from malenia.attributes import ATTRIBUTE_KEYS, load_presets, load_vocabulary
        from malenia.attributes.locations import location_choices

        vocabulary = load_vocabulary()
        choices = {k: vocabulary.values(k) for k in ATTRIBUTE_KEYS}
        choices["location"] = location_choices(vocabulary)  # whole organs too
        return {
            "model_id": backend.model_id,
            "model_card": backend.card,
            "default_threshold": backend.default_threshold,
            "anatomy_grounding": backend.anatomy_grounding,
            "organ_maps": backend.organ_source,
            "device": backend.device_note,
            "max_upload_bytes": max_upload_bytes,
            "vocabulary": choices,
            "presets": [p.to_dict() for p in load_presets().values()],
            "queue": store.stats(),
        }

    @app.post(f"{API}/volumes", status_code=202, dependencies=[Depends(authorised)])
    async def upload(request: Request) -> dict:
        """Upload a volume; it is encoded in the background (poll GET /v1/volumes/{id}).
        Body: raw array bytes (Content-Type application/x-malenia-array with X-Shape,
        X-Dtype and X-Ijk-To-Ras or X-Spacing/X-Origin/X-Direction) or a NIfTI/NRRD/MHA file."""
        body = await _read_limited(request, max_upload_bytes)
        volume, roi = await run_in_threadpool(parse_upload, request.headers, body, max_volume_bytes)
        try:
            entry = store.submit(volume, roi)
        except QueueFull:
            raise HTTPException(
                503,
                f"The engine is busy: {store.queue_size} volumes are already waiting to be "
                f"encoded. Retry in a few seconds.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        return entry.status()

    def entry_or_404(volume_id: str) -> VolumeEntry:
        entry = store.get(volume_id)
        if entry is None:
            raise HTTPException(
                404,
                f"Unknown volume {volume_id} (deleted, dropped from the cache to stay within "
                "the memory budget, or the server restarted): upload it again.",
            )
        return entry

    def ready(volume_id: str) -> VolumeEntry:
        entry = entry_or_404(volume_id)
        if entry.state != "ready":
            reason = f": {entry.error}" if entry.error else ""
            raise HTTPException(
                409,
                f"Volume {volume_id} is {entry.state}{reason}; segment it once its state is ready.",
            )
        return entry

    def answer(entry: VolumeEntry, compute) -> dict:
        with entry.lock:
            if entry.encoded is None:  # evicted or deleted while waiting for the lock
                raise HTTPException(404, "The volume was deleted meanwhile: upload it again.")
            start = time.perf_counter()
            result = compute(entry.encoded)
            labelled = time.perf_counter()
            payload = result_payload(result, "")
            done = time.perf_counter()
        payload["result_id"] = store.keep_result(entry, result)
        payload["timing"] = {
            "engine_s": round(labelled - start, 4),
            "mask_and_report_s": round(done - labelled, 4),
        }
        return payload

    @app.get(f"{API}/volumes/{{volume_id}}", dependencies=[Depends(authorised)])
    def status(volume_id: str) -> dict:
        return entry_or_404(volume_id).status()

    @app.post(f"{API}/volumes/{{volume_id}}/segment", dependencies=[Depends(authorised)])
    def segment(volume_id: str, body: dict = Body(...)) -> dict:
        """Body: {"query": preset name | free text | {attribute: value}, "threshold"}; no
        threshold (or null): the model's calibrated default."""
        query = body.get("query")
        if query is None or (isinstance(query, str) and not query.strip()):
            raise HTTPException(
                400, "The body needs 'query': a preset name, free text, or an attribute object."
            )
        if not isinstance(query, str | dict):
            raise HTTPException(400, "'query' must be a string or an object of attributes.")
        threshold = _threshold(body)
        resolved = resolve_query(query)  # a bad query is refused before the volume is touched
        entry = ready(volume_id)
        return answer(entry, lambda encoded: backend.segment(encoded, resolved, threshold))

    @app.post(f"{API}/volumes/{{volume_id}}/recut", dependencies=[Depends(authorised)])
    def recut(volume_id: str, body: dict = Body(...)) -> dict:
        """Body: {"result_id": from a segment/find answer, "threshold"}; no network pass."""
        threshold = _threshold(body)
        if threshold is None:
            raise HTTPException(400, "'threshold' is required for a re-cut.")
        entry = ready(volume_id)
        previous = entry.results.get(str(body.get("result_id", "")))
        if previous is None:
            raise HTTPException(
                404, "Unknown result_id (too old, or never made): run segment again."
            )
        return answer(entry, lambda encoded: backend.recut(encoded, previous, threshold))

    @app.post(f"{API}/volumes/{{volume_id}}/find", dependencies=[Depends(authorised)])
    def find(volume_id: str, body: dict | None = Body(None)) -> dict:
        """Every lesion the model sees, with predicted attributes. Body: {"threshold"}."""
        threshold = _threshold(body or {})
        entry = ready(volume_id)
        return answer(entry, lambda encoded: backend.find_lesions(encoded, threshold))

    @app.post(f"{API}/volumes/{{volume_id}}/cancel", dependencies=[Depends(authorised)])
    def cancel(volume_id: str) -> dict:
        entry = store.cancel(volume_id)
        if entry is None:
            raise HTTPException(404, f"Unknown volume {volume_id}.")
        return entry.status()

    @app.get(
        f"{API}/volumes/{{volume_id}}/results/{{result_id}}/dicom-seg",
        dependencies=[Depends(authorised)],
        response_class=Response,
    )
    def dicom_seg(volume_id: str, result_id: str) -> Response:
        """The result as a DICOM SEG referencing the uploaded DICOM series (upload the series
        as a zip, Content-Type application/zip); 409 for a volume without DICOM references."""
        from malenia.inference.dicom_seg import NothingToWrite, no_dicom_reference_message

        entry = ready(volume_id)
        result = entry.results.get(result_id)
        if result is None:
            raise HTTPException(
                404, "Unknown result_id (too old, or never made): run segment again."
            )
        if result.volume.dicom is None:
            raise HTTPException(409, no_dicom_reference_message(result.volume.name))
        try:
            with entry.lock:
                data = backend.dicom_seg(result)
        except NothingToWrite as error:
            raise HTTPException(409, str(error)) from None
        return Response(
            data,
            media_type="application/dicom",
            headers={"Content-Disposition": f'attachment; filename="{result_id}.seg.dcm"'},
        )

    @app.delete(f"{API}/volumes/{{volume_id}}", dependencies=[Depends(authorised)])
    def delete(volume_id: str) -> dict:
        if not store.delete(volume_id):
            raise HTTPException(404, f"Unknown volume {volume_id}.")
        return {"deleted": volume_id}

    app.include_router(create_router(store, token, authorised, max_upload_bytes))  # the viewer
    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) from Content-Length alone or as soon as it passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number.") from None
        if length > limit:
            raise HTTPException(413, _too_large(length, limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, _too_large(len(body), limit))
    return bytes(body)


def _too_large(size: int, limit: int, scope=None) -> str:
    if scope is not None and limit == MAX_JSON_BYTES:
        return (
            f"The request body of {size} bytes exceeds {limit} bytes, the limit for everything "
            "but an upload: a query is a short description, a preset or a few attributes."
        )
    return (
        f"Upload of {size} bytes exceeds the server's upload limit of {limit} bytes "
        f"({limit / 2**20:.0f} MB): crop the volume to a region of interest, or restart the "
        "server with a larger --max-upload-mb."
    )


def _threshold(body: dict) -> float | None:
    """The request's threshold; None (absent or null) lets the engine use its default."""
    value = body.get("threshold")
    if value is None:
        return None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise HTTPException(
            400, f"'threshold' must be a number in (0, 1), got {value!r}."
        ) from None
    if not math.isfinite(threshold) or not 0.0 < threshold < 1.0:
        raise HTTPException(400, f"'threshold' must lie strictly between 0 and 1, got {value!r}.")
    return threshold
